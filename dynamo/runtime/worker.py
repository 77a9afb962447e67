"""What every worker shares: its command line, its request port, and its registration.

An engine adapter supplies an `InferenceEngine`: an object whose `generate(request)` yields `Chunk`s.
`main()` runs the preflight, parses the flags (flags it does not know go to the engine),
starts the engine, serves requests and registers with discovery until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Protocol

from dynamo import runtime
from dynamo.runtime import discovery
from dynamo.runtime.interleave import interleave
from dynamo.runtime.protocol import (
    MAX_FRAME,
    Chunk,
    FrameWriter,
    GenerateRequest,
    RequestError,
    chunk_frame,
    decode,
    error_frame,
    request_from_frame,
)

log = logging.getLogger("dynamo.worker")


class InferenceEngine(Protocol):
    """`features`: the optional request features (protocol.OPTIONAL_FEATURES) the engine can serve,
    and "n" when one engine request can answer n choices (its chunks then carry their `index`).
    An engine with a KV cache may also have `kv_events`, a kv_events.KvPublisher: frontends that
    route by KV cache subscribe to it. One that takes token ids may have `model_dir`, the model folder
    the frontend then templates and tokenizes chats with (frontend/preprocess.py)."""
    features: frozenset[str]

    def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]: ...


class InferenceError(Exception):
    """The engine could not start (a missing model file, say); the message says what to do."""


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every worker takes; an adapter adds its own."""
    result = argparse.ArgumentParser(prog=prog, description=description, usage=f"{prog} [MODEL] [flags]",
                                     epilog="MODEL, first when given: a Hugging Face name or a local path. "
                                            "Flags this worker does not know go to the engine.")
    result.set_defaults(model=None)
    result.add_argument("--model-path", help="a local model directory or file (instead of the name)")
    result.add_argument("--model-name", help="the name clients ask for (default: the model's name)")
    result.add_argument("--context-length", type=int, help="the longest prompt plus answer, in tokens")
    result.add_argument("--host", default="127.0.0.1", help="address for the request port (default: %(default)s)")
    result.add_argument("--port", type=int, default=0, help="request port (default: any free port)")
    result.add_argument("--advertise-host", help="address the frontend uses to reach this worker "
                                                 "(default: --host, or this machine's name for 0.0.0.0)")
    result.add_argument("--skip-preflight", action="store_true", help="start without checking this host")
    discovery.add_arguments(result)
    return result


def parse(flags: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our flags, and the rest for the engine. The model name is taken only from the first place, as
    a positional argument would swallow the value of an engine flag it cannot know (`--tp 2`)."""
    model = argv[0] if argv and not argv[0].startswith("-") else None
    args, extra = flags.parse_known_args(argv[1:] if model else argv)
    args.model = model
    return args, extra


def model_source(args: argparse.Namespace) -> str:
    """The model as the engine loads it: the name or the path, never both."""
    source = args.model_path or args.model
    if not source:
        raise InferenceError("no model: give a model name (for example Qwen/Qwen3-0.6B) or --model-path PATH")
    if args.model_path and args.model:
        raise InferenceError(f"both a model name ({args.model}) and --model-path ({args.model_path}): give one")
    return os.path.expanduser(source)


def engine_argv(args: argparse.Namespace, engine_flags: list[str], model_flag: str, context_flag: str) -> list[str]:
    """An engine's own command line: our model and context length under its flag names, then its
    flags as the user gave them."""
    argv = [model_flag, model_source(args)]
    if args.context_length:
        argv += [context_flag, str(args.context_length)]
    return argv + engine_flags


def served_name(args: argparse.Namespace) -> str:
    """The name clients use: --model-name, else the model name as given, else the path's last part."""
    if args.model_name:
        return args.model_name
    if args.model:
        return args.model
    path = Path(os.path.expanduser(args.model_path))
    return path.stem if path.suffix == ".gguf" else path.name


class WorkerServer:
    """Serves the frames of protocol.py: many requests at once on each connection."""

    def __init__(self, engine: InferenceEngine, framework: str) -> None:
        self.engine = engine
        self.framework = framework
        self.active: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        running: dict[int, asyncio.Task] = {}
        frames = FrameWriter(writer)
        try:
            while line := await reader.readline():
                frame = decode(line)
                request_id = frame["id"]
                if "generate" in frame:
                    task = asyncio.create_task(self._answer(request_id, frame["generate"], frames))
                    running[request_id] = task
                    self.active.add(task)
                    task.add_done_callback(lambda done, rid=request_id: (running.pop(rid, None),
                                                                         self.active.discard(done)))
                elif frame.get("subscribe") == "kv" and getattr(self.engine, "kv_events", None):
                    self.engine.kv_events.subscribe(frames)
                elif frame.get("cancel") and request_id in running:
                    log.info("request %s cancelled by the frontend", request_id)
                    running[request_id].cancel()
        except (ConnectionError, ValueError, KeyError):
            pass  # the frontend went away, or sent something that is not ours: drop the connection
        except asyncio.CancelledError:
            # The worker is stopping. The handler ends quietly instead of cancelled: start_server's callback
            # calls task.exception() on it and logs a traceback on Python before 3.12.2
            # (python/cpython#113538, fixed by python/cpython#113690).
            pass
        finally:
            for task in list(running.values()):
                task.cancel()
            if getattr(self.engine, "kv_events", None):
                self.engine.kv_events.unsubscribe(frames)
            writer.close()

    async def _answer(self, request_id: int, body: dict, frames: FrameWriter) -> None:
        try:
            request = request_from_frame(body)
        except TypeError as error:  # a frontend of another version
            frames.send(error_frame(request_id, f"the worker cannot read this request: {error}", 400))
            return
        unsupported = [name for name in request.features() if name not in self.engine.features]
        if unsupported:
            frames.send(error_frame(request_id, f"{unsupported[0]}: the {self.framework} engine serving "
                                                 f"{request.model!r} does not support it; leave it out", 400,
                                    param=unsupported[0]))
            return
        finished: set[int] = set()  # choices that ended: an engine that lists one again says nothing more of it
        try:
            # Closed when this returns or is cancelled, not when the garbage collector gets to it: the
            # engine stops generating for a request nobody waits for.
            async with aclosing(answer(self.engine, request)) as chunks:
                async for chunk in chunks:
                    if chunk.index in finished:
                        continue
                    frames.send(chunk_frame(request_id, chunk))
                    await frames.drain()
                    if chunk.finish:
                        finished.add(chunk.index)
                        if len(finished) == request.n:
                            return
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            return
        except RequestError as error:
            frames.send(error_frame(request_id, str(error), 400))
        except Exception as error:  # the engine failed on this request; the worker goes on
            frames.send(error_frame(request_id, f"the engine failed: {type(error).__name__}: {error}", 500))


def answer(engine: InferenceEngine, request: GenerateRequest) -> AsyncIterator[Chunk]:
    """The chunks of a request's n choices: one engine request where the engine answers n ("n" in
    its features), else n requests at once (fan_out). A greedy request's choices would all be the
    same answer: it is asked for once and sent as each choice (vLLM and TensorRT-LLM refuse greedy
    n > 1; SGLang and llama.cpp would compute the same answer n times)."""
    if request.n == 1:
        return engine.generate(request)
    if request.greedy():
        return copies(engine.generate(request.choice(0)), request.n)
    if "n" in engine.features:
        return engine.generate(request)
    return fan_out(engine, request)


async def copies(chunks: AsyncIterator[Chunk], n: int) -> AsyncIterator[Chunk]:
    """One answer's chunks as each of n choices."""
    async with aclosing(chunks):
        async for chunk in chunks:
            for index in range(n):
                yield dataclasses.replace(chunk, index=index)


async def fan_out(engine: InferenceEngine, request: GenerateRequest) -> AsyncIterator[Chunk]:
    """n choices from an engine that answers one per request: n requests at once (a seed, when
    given, differs per choice so that they differ), their chunks tagged with their choice's index
    as they come."""
    choices = [engine.generate(request.choice(index)) for index in range(request.n)]
    async with aclosing(interleave(choices)) as chunks:
        async for index, chunk in chunks:
            yield dataclasses.replace(chunk, index=index)


def _advertised(args: argparse.Namespace, port: int) -> str:
    host = args.advertise_host or (discovery.this_host() if args.host in ("0.0.0.0", "::") else args.host)
    return f"{host}:{port}"


async def serve(engine: InferenceEngine, args: argparse.Namespace, framework: str) -> None:
    """Serve until SIGTERM or SIGINT, registered with discovery the whole time."""
    backend = discovery.from_arguments(args)
    worker = WorkerServer(engine, framework)
    server = await asyncio.start_server(worker.handle, args.host, args.port, limit=MAX_FRAME)
    port = server.sockets[0].getsockname()[1]
    instance = discovery.Instance(id=uuid.uuid4().hex[:12], model=served_name(args), framework=framework,
                                  address=_advertised(args, port), pid=os.getpid(), host=discovery.this_host(),
                                  model_dir=getattr(engine, "model_dir", ""))
    await backend.register(instance)
    runtime.freeze_startup_objects()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"worker ready: model {instance.model!r} ({framework}) on {instance.address}, instance {instance.id}, "
          f"{args.discovery} discovery, namespace {args.namespace}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await backend.unregister()
        server.close()
        for task in list(worker.active):
            task.cancel()
        print("worker stopped", file=sys.stderr, flush=True)


def main(framework: str, prog: str, description: str,
         create: Callable[[argparse.Namespace, list[str]], InferenceEngine | Awaitable[InferenceEngine]],
         add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
         engine_flags: bool = True, argv: list[str] | None = None) -> None:
    """A worker's whole life. `create(args, engine_flags)` builds the engine from our flags plus the
    ones we do not know, which belong to the engine (refused when `engine_flags` is False)."""
    flags = parser(prog, description)
    if add_arguments:
        add_arguments(flags)
    from dynamo.doctor.preflight import preflight

    argv = preflight(framework, sys.argv[1:] if argv is None else argv)
    args, extra = parse(flags, argv)
    if extra and not engine_flags:
        flags.error(f"unrecognized arguments: {' '.join(extra)}")
    runtime.configure_logging()

    async def run() -> None:
        engine = create(args, extra)
        if asyncio.iscoroutine(engine):
            engine = await engine
        await serve(engine, args, framework)

    try:
        runtime.run(run())
    except (InferenceError, discovery.DiscoveryError, OSError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


def chat_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> str:
    """A chat as the model's prompt text, through the Hugging Face tokenizer's own chat template
    (which also lays out the tools, where the model knows them)."""
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    except ValueError as error:  # transformers: the model has no chat template
        raise RequestError(f"the model cannot format a chat ({error}); use /v1/completions with a prompt") from None


def finish_reason(engine: str, reason: str) -> str:
    """An engine's reason for ending a sequence as OpenAI's: "length" when the token limit cut it,
    "stop" for every other end (an end-of-sequence token or stop string, an abort, vLLM's
    repetition detection, TensorRT-LLM's timeout or cancellation). vLLM's "error" is no answer: the
    request failed inside the engine, and the client gets a 500, as from vLLM's own server."""
    if reason == "error":
        raise RuntimeError(f"{engine} failed the request inside the engine (finish reason 'error'); retry it")
    return "length" if reason == "length" else "stop"


def missing_engine(package: str, extra: str) -> InferenceError:
    return InferenceError(f"{package} is not installed here; use the dynamo {extra} image, or pip install 'dynamo[{extra}]'")


def tokenizer_folder(source: str | None, revision: str | None = None) -> str:
    """The local folder holding a Hugging Face model's tokenizer.json: `source` itself when it is a
    folder, else the snapshot of that model name in the Hugging Face cache, which the engine filled
    when it loaded the tokenizer (looked up, never downloaded). The worker advertises it, and the
    frontend then templates and tokenizes chats with it (frontend/preprocess.py); "" when there is
    none (a tokenizer of another kind, a GGUF): the worker then gets the chats themselves."""
    if not source:
        return ""
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        return str(path.resolve()) if (path / "tokenizer.json").is_file() else ""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(source, "tokenizer.json", revision=revision)
    except ValueError:  # not a model name either
        return ""
    return os.path.dirname(found) if isinstance(found, str) else ""


def engine_prompt(tokenizer, request: GenerateRequest) -> str | list[int]:
    """What a Hugging Face-tokenized engine is given: the prompt text (a chat through its template) or
    the prompt's token ids, followed by the answer so far when the request was migrated."""
    if request.prompt_token_ids is not None:
        resumed = tokenizer.encode(request.resumed_text, add_special_tokens=False) if request.resumed_text else []
        return list(request.prompt_token_ids) + resumed
    text = request.prompt if request.messages is None else chat_prompt(tokenizer, request.messages, request.tools)
    return (text or "") + request.resumed_text
