"""python -m dynamo.frontend [--http-host 0.0.0.0] [--http-port 8000] [--api-key KEY] [--processes N]
[--migration-limit N] [--interactive]"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile

from dynamo.doctor.preflight import preflight


def parser() -> argparse.ArgumentParser:
    from dynamo.frontend import auth, limits
    from dynamo.frontend.kv_index import DEFAULT_TTL, DEFAULT_WEIGHT
    from dynamo.frontend.router import ROUTER_MODES
    from dynamo.runtime import discovery
    from dynamo.runtime.kv_events import DEFAULT_BLOCK_SIZE

    flags = argparse.ArgumentParser(prog="python -m dynamo.frontend",
                                    description="OpenAI-compatible HTTP frontend that routes to the workers it discovers.")
    flags.add_argument("--http-host", default=os.environ.get("DYN_HTTP_HOST", "0.0.0.0"),
                       help="address to listen on; 0.0.0.0 (every interface) so that a container's published "
                            "port reaches it, 127.0.0.1 for this machine only (default: %(default)s, or DYN_HTTP_HOST)")
    flags.add_argument("--http-port", type=int, default=int(os.environ.get("DYN_HTTP_PORT", "8000")),
                       help="port to listen on (default: %(default)s, or DYN_HTTP_PORT)")
    flags.add_argument("--processes", type=int, default=int(os.environ.get("DYN_FRONTEND_PROCESSES", "1")),
                       help="HTTP processes sharing the port, each with every worker in view; 0: one per core "
                            "(default: %(default)s, or DYN_FRONTEND_PROCESSES)")
    flags.add_argument("--router-mode", choices=ROUTER_MODES, default="round-robin",
                       help="how a request picks among the workers of its model: kv by the workers' KV cache "
                            "events and load, kv-approx by its own past choices (default: %(default)s)")
    flags.add_argument("--kv-overlap-weight", type=float, default=DEFAULT_WEIGHT,
                       help="kv modes: a block to prefill against a block of running work (default: %(default)s)")
    flags.add_argument("--kv-block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                       help="kv-approx: tokens per block (kv: as the workers say; default: %(default)s)")
    flags.add_argument("--kv-ttl", type=float, default=DEFAULT_TTL,
                       help="kv-approx: seconds a worker is assumed to keep a prompt (default: %(default)s)")
    flags.add_argument("--migration-limit", type=int, default=int(os.environ.get("DYN_MIGRATION_LIMIT", "0")),
                       help="times an answer moves to another worker when its worker dies mid-answer "
                            "(default: %(default)s, or DYN_MIGRATION_LIMIT)")
    flags.add_argument("--interactive", "-i", action="store_true", help="chat in this terminal instead of serving HTTP")
    flags.add_argument("--model", help="--interactive: the model to chat with (default: the first one served)")
    flags.add_argument("--max-tokens", type=int, help="--interactive: longest answer in tokens")
    flags.add_argument("--skip-preflight", action="store_true", help="start without checking this host")
    auth.add_arguments(flags)
    limits.add_arguments(flags)
    discovery.add_arguments(flags)
    return flags


async def serve(args: argparse.Namespace, reuse_port: bool = False) -> None:
    from aiohttp import web

    from dynamo import runtime
    from dynamo.frontend import limits
    from dynamo.frontend.connections import GuardedSite
    from dynamo.frontend.interactive import chat
    from dynamo.frontend.kv_index import KvRouting
    from dynamo.frontend.metrics import Metrics
    from dynamo.frontend.router import Router
    from dynamo.frontend.server import Frontend
    from dynamo.runtime import discovery

    metrics = Metrics()
    kv = KvRouting(args.router_mode == "kv-approx", args.kv_overlap_weight, args.kv_ttl, args.kv_block_size, metrics)
    router = Router(args.router_mode, args.migration_limit, metrics, kv)
    backend = discovery.from_arguments(args)
    watcher = asyncio.create_task(backend.watch(router.update))
    try:
        if args.interactive:
            await asyncio.wait([asyncio.create_task(chat(router, args.model, args.max_tokens)), watcher],
                               return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                watcher.result()  # discovery failed: say why
            return
        bounds = limits.from_arguments(args)
        frontend = Frontend(router, discovery=backend, limits=bounds, api_key=args.api_key)
        runner = web.AppRunner(frontend.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=bounds.shutdown_timeout)
        await runner.setup()
        runtime.freeze_startup_objects()
        try:
            await GuardedSite(runner, args.http_host, args.http_port, bounds, reuse_port).start()
        except OSError as error:
            raise OSError(f"cannot listen on {args.http_host}:{args.http_port} ({error.strerror}); "
                          f"pass another --http-port") from None
        print(f"frontend ready on http://{args.http_host}:{args.http_port} ({args.router_mode} routing, "
              f"{args.discovery} discovery, namespace {args.namespace}, process {os.getpid()})",
              file=sys.stderr, flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await asyncio.wait([asyncio.create_task(stop.wait()), watcher], return_when=asyncio.FIRST_COMPLETED)
        if watcher.done():
            watcher.result()
        await drain(runner, bounds.shutdown_timeout)
    finally:
        watcher.cancel()


async def drain(runner, timeout: float) -> None:
    """Stop listening, let the answers in flight finish for up to `timeout` seconds, then cut them
    (their workers are told to stop) and close."""
    print(f"frontend stopping: answers in flight get {timeout:g} s (--shutdown-timeout)", file=sys.stderr, flush=True)
    try:  # aiohttp's wait, then its cancelling, each get `timeout`: the whole is bounded here
        await asyncio.wait_for(runner.cleanup(), timeout + 1)
    except asyncio.TimeoutError:
        pass


def run_one(args: argparse.Namespace, reuse_port: bool = False) -> int:
    """One frontend process's life; its exit status."""
    from dynamo import runtime
    from dynamo.frontend.router import NoWorker
    from dynamo.runtime.discovery import DiscoveryError

    try:
        runtime.run(serve(args, reuse_port))
    except (OSError, DiscoveryError) as error:
        print(f"frontend: error: {error}", file=sys.stderr)
        return 1
    except NoWorker as error:
        print(f"frontend: error: no worker served {error.model} within a minute; start one", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def check_port(host: str, port: int) -> None:
    """Fail now, in one line, when something else holds the port: the processes share it with
    SO_REUSEPORT, which would otherwise let them join another program's port."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp: closed connections may linger
        try:
            probe.bind((host, port))
            probe.listen()
        except OSError as error:
            raise SystemExit(f"frontend: error: cannot listen on {host}:{port} ({error.strerror}); "
                             f"pass another --http-port") from None


def _die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies, even by SIGKILL (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the processes outlive a killed parent


def run_many(args: argparse.Namespace, count: int) -> int:
    """`count` processes on one port (SO_REUSEPORT: the kernel spreads connections over them). Each
    watches discovery itself; their metrics are summed through PROMETHEUS_MULTIPROC_DIR. SIGTERM or
    SIGINT stops them all; one that fails stops the others."""
    check_port(args.http_host, args.http_port)
    metrics_dir = tempfile.mkdtemp(prefix="dynamo-frontend-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read when prometheus_client is first imported
    children: list[int] = []
    try:
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                _die_with_parent()
                os._exit(run_one(args, reuse_port=True))
            children.append(pid)

        def forward(signum: int, _frame) -> None:
            for child in children:
                try:
                    os.kill(child, signum)
                except ProcessLookupError:
                    pass

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        status = 0
        while children:
            pid, code = os.wait()
            if pid not in children:
                continue
            children.remove(pid)
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, metrics_dir)  # its requests in flight count no more
            code = os.waitstatus_to_exitcode(code)
            if code != 0 and status == 0:
                status = code if code > 0 else 1
                forward(signal.SIGTERM, None)  # a process failed: the port must not half-serve
        return status
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may reach any interface


def main(argv: list[str] | None = None) -> None:
    argv = preflight("frontend", sys.argv[1:] if argv is None else argv)
    flags = parser()
    args = flags.parse_args(argv)
    if args.migration_limit < 0:
        flags.error(f"--migration-limit {args.migration_limit}: must not be negative")
    if args.kv_overlap_weight < 0:
        flags.error(f"--kv-overlap-weight {args.kv_overlap_weight}: must not be negative")
    for flag in ("kv_block_size", "kv_ttl"):
        if getattr(args, flag) <= 0:
            flags.error(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be positive")
    if args.processes < 0:
        flags.error(f"--processes {args.processes}: must be 0 (one per core) or more")
    from dynamo.frontend import auth, limits

    try:
        auth.check(args.api_key)
        limits.from_arguments(args)
    except ValueError as error:
        flags.error(str(error))
    if not (args.api_key or args.interactive or _loopback(args.http_host)):
        print(f"frontend: warning: listening on {args.http_host} without an API key: whoever reaches port "
              f"{args.http_port} can use the models (set {auth.ENVIRONMENT}, or --http-host 127.0.0.1)",
              file=sys.stderr)
    from dynamo import runtime

    runtime.configure_logging()
    count = args.processes or len(os.sched_getaffinity(0))
    if count == 1 or args.interactive:
        status = run_one(args)
    else:
        status = run_many(args, count)
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
