"""python -m dynamo.frontend [--http-port 8000] [--interactive]"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from dynamo.doctor.preflight import preflight


def parser() -> argparse.ArgumentParser:
    from dynamo.frontend.router import ROUTER_MODES
    from dynamo.runtime import discovery

    flags = argparse.ArgumentParser(prog="python -m dynamo.frontend",
                                    description="OpenAI-compatible HTTP frontend that routes to the workers it discovers.")
    flags.add_argument("--http-host", default=os.environ.get("DYN_HTTP_HOST", "0.0.0.0"),
                       help="address to listen on (default: %(default)s)")
    flags.add_argument("--http-port", type=int, default=int(os.environ.get("DYN_HTTP_PORT", "8000")),
                       help="port to listen on (default: %(default)s, or DYN_HTTP_PORT)")
    flags.add_argument("--router-mode", choices=ROUTER_MODES, default="round-robin",
                       help="how a request picks among the workers of its model (default: %(default)s)")
    flags.add_argument("--migration-limit", type=int, default=int(os.environ.get("DYN_MIGRATION_LIMIT", "0")),
                       help="times an answer moves to another worker when its worker dies mid-answer "
                            "(default: %(default)s, or DYN_MIGRATION_LIMIT)")
    flags.add_argument("--interactive", "-i", action="store_true", help="chat in this terminal instead of serving HTTP")
    flags.add_argument("--model", help="--interactive: the model to chat with (default: the first one served)")
    flags.add_argument("--max-tokens", type=int, help="--interactive: longest answer in tokens")
    flags.add_argument("--skip-preflight", action="store_true", help="start without checking this host")
    discovery.add_arguments(flags)
    return flags


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from dynamo.frontend.interactive import chat
    from dynamo.frontend.metrics import Metrics
    from dynamo.frontend.router import Router
    from dynamo.frontend.server import Frontend
    from dynamo.runtime import discovery

    router = Router(args.router_mode, args.migration_limit, Metrics())
    watcher = asyncio.create_task(discovery.from_arguments(args).watch(router.update))
    try:
        if args.interactive:
            await asyncio.wait([asyncio.create_task(chat(router, args.model, args.max_tokens)), watcher],
                               return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                watcher.result()  # discovery failed: say why
            return
        runner = web.AppRunner(Frontend(router).app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.http_host, args.http_port, backlog=1024).start()
        except OSError as error:
            raise OSError(f"cannot listen on {args.http_host}:{args.http_port} ({error.strerror}); "
                          f"pass another --http-port") from None
        print(f"frontend ready on http://{args.http_host}:{args.http_port} ({args.router_mode} routing, "
              f"{args.discovery} discovery, namespace {args.namespace})", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await asyncio.wait([asyncio.create_task(stop.wait()), watcher], return_when=asyncio.FIRST_COMPLETED)
        if watcher.done():
            watcher.result()
        await runner.cleanup()
    finally:
        watcher.cancel()


def main(argv: list[str] | None = None) -> None:
    argv = preflight("frontend", sys.argv[1:] if argv is None else argv)
    flags = parser()
    args = flags.parse_args(argv)
    if args.migration_limit < 0:
        flags.error(f"--migration-limit {args.migration_limit}: must not be negative")
    from dynamo import runtime

    runtime.configure_logging()
    from dynamo.frontend.router import NoWorker
    from dynamo.runtime.discovery import DiscoveryError

    try:
        runtime.run(serve(args))
    except (OSError, DiscoveryError) as error:
        print(f"frontend: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except NoWorker as error:
        print(f"frontend: error: no worker served {error.model} within a minute; start one", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
