"""The frontend's view of the workers: a connection to each, and the choice of one per request."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from dynamo.frontend.kv_index import KvRouting, Ticket
from dynamo.runtime.discovery import Instance, Snapshot
from dynamo.runtime.interleave import interleave
from dynamo.runtime.kv_events import SUBSCRIBE
from dynamo.runtime.protocol import (
    FrameWriter,
    GenerateRequest,
    RequestError,
    decode,
    encode,
    generate_frame,
    split_frames,
)

if TYPE_CHECKING:  # prometheus_client must not be imported before the frontend's processes start
    from dynamo.frontend.metrics import Metrics

ROUTER_MODES = ("round-robin", "least-loaded", "kv", "kv-approx")  # kv: kv_index.py
READ_SIZE = 256 * 1024  # bytes read from a worker at a time: many frames, split here
_GONE = {"error": "the worker went away", "status": 503, "gone": True}
log = logging.getLogger("dynamo.frontend")


class WorkerGone(Exception):
    """The worker's connection broke (it died or stopped)."""


class WorkerFailed(Exception):
    """The worker answered the request with an error."""

    def __init__(self, message: str, status: int, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


class NoWorker(Exception):
    """Nothing serves the model now; `known` says whether something ever did."""

    def __init__(self, model: str, known: bool, available: list[str]) -> None:
        super().__init__(model)
        self.model, self.known, self.available = model, known, available


class WorkerClient:
    """One connection to one worker, shared by all requests routed there."""

    def __init__(self, instance: Instance, metrics: Metrics | None = None,
                 on_kv: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.instance = instance
        self.metrics = metrics
        self.on_kv = on_kv  # given: the worker's KV cache events go there (a break clears its blocks)
        self._inflight_gauge = metrics.worker_inflight.labels(instance.id, instance.model) if metrics else None
        self._prompt_tokens = metrics.worker_prompt_tokens.labels(instance.id, instance.model) if metrics else None
        self._cached_tokens = metrics.worker_cached_tokens.labels(instance.id, instance.model) if metrics else None
        self.inflight = 0
        self.broken = False
        self.retired = False
        self._ids = itertools.count(1)
        self._streams: dict[int, asyncio.Queue] = {}
        self._writer: FrameWriter | None = None
        self._connecting = asyncio.Lock()

    async def _connect(self) -> FrameWriter:
        async with self._connecting:
            if self._writer is None:
                host, _, port = self.instance.address.rpartition(":")
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout=5)
                except (OSError, asyncio.TimeoutError) as error:
                    self.broken = True
                    raise WorkerGone(f"cannot connect to worker {self.instance.id} at {self.instance.address}: "
                                     f"{error}") from None
                self._writer = FrameWriter(writer)
                asyncio.create_task(self._read(reader))
                if self.on_kv:
                    self._writer.send(SUBSCRIBE)
        return self._writer

    async def subscribe(self) -> None:
        """Connect now, for the KV cache events (a worker that cannot be reached is marked broken)."""
        try:
            await self._connect()
        except WorkerGone:
            pass

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Hand the frames to their requests, reading many at a time: each request gets the list of
        its frames in what was read (one wake-up for a burst of tokens)."""
        pending = b""
        try:
            while data := await reader.read(READ_SIZE):
                lines, pending = split_frames(pending, data)
                batches: dict[Any, list[dict[str, Any]]] = {}
                for line in lines:
                    frame = decode(line)
                    if "kv" in frame:
                        if self.on_kv:
                            self.on_kv(frame["kv"])
                        continue
                    batches.setdefault(frame.get("id"), []).append(frame)
                for request_id, frames in batches.items():
                    queue = self._streams.get(request_id)
                    if queue is not None:
                        queue.put_nowait(frames)
        except (ConnectionError, ValueError):
            pass
        self.broken = True
        if self.on_kv:
            self.on_kv({"clear": True})
        for queue in self._streams.values():
            queue.put_nowait([_GONE])
        self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.writer.close()

    def retire(self) -> None:
        """Take no new requests; close once the running ones finish."""
        self.retired = True
        if not self.inflight:
            self._close()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[dict[str, Any]]:
        """The worker's frames for this request, until each of its n choices has finished. Raises
        WorkerGone before the first frame when the worker cannot be reached (the router then tries
        another), and after it when it dies."""
        writer = await self._connect()
        request_id = next(self._ids)
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = queue
        self.inflight += 1
        if self._inflight_gauge:
            self._inflight_gauge.inc()
        finished = False
        left = request.n
        try:
            writer.send(generate_frame(request_id, request))
            while True:
                for frame in await queue.get():
                    if "error" in frame:
                        finished = True
                        if self.metrics:
                            self.metrics.worker_errors.labels(self.instance.id, self.instance.model, "gone"
                                                              if frame.get("gone") else str(frame.get("status"))).inc()
                        if frame.get("gone"):
                            raise WorkerGone(f"worker {self.instance.id} at {self.instance.address} went away")
                        raise WorkerFailed(frame["error"], frame.get("status", 500), frame.get("param"))
                    yield frame
                    if "finish" in frame:
                        if self._prompt_tokens:
                            self._prompt_tokens.inc(frame["prompt_tokens"])
                            self._cached_tokens.inc(frame.get("cached_tokens", 0))
                        left -= 1
                        if not left:
                            finished = True
                            return
        finally:
            self.inflight -= 1
            if self._inflight_gauge:
                self._inflight_gauge.dec()
            del self._streams[request_id]
            if not finished and not self.broken:
                writer.send(encode({"id": request_id, "cancel": True}))  # the client left: stop the engine
            if self.retired and not self.inflight:
                self._close()


class Router:
    """Keeps a WorkerClient per registered instance and picks one per request. A request whose
    worker dies mid-answer moves to another worker up to `migration_limit` times."""

    def __init__(self, mode: str = "round-robin", migration_limit: int = 0, metrics: Metrics | None = None,
                 kv: KvRouting | None = None) -> None:
        if mode not in ROUTER_MODES:
            raise ValueError(f"router mode {mode!r}: choose one of {', '.join(ROUTER_MODES)}")
        self.mode = mode
        self.migration_limit = migration_limit
        self.metrics = metrics
        self.kv = (kv or KvRouting(approximate=mode == "kv-approx", metrics=metrics)) if mode.startswith("kv") else None
        self.clients: dict[str, WorkerClient] = {}
        self.known_models: set[str] = set()
        self._turn = itertools.count()
        self._subscribing: set[asyncio.Task] = set()
        self._unreachable_folders: set[str] = set()  # warned about once
        self.changed = asyncio.Event()

    def update(self, snapshot: Snapshot) -> None:
        """Discovery's callback: start using new instances, retire the ones that left."""
        for instance_id in list(self.clients):
            if instance_id not in snapshot or snapshot[instance_id] != self.clients[instance_id].instance:
                gone = self.clients.pop(instance_id)
                gone.on_kv = None
                gone.retire()
                if self.kv:
                    self.kv.forget(instance_id, gone.instance.model)
        for instance_id, instance in snapshot.items():
            if instance_id not in self.clients:
                self.clients[instance_id] = client = WorkerClient(instance, self.metrics, self._kv_events(instance))
                self.known_models.add(instance.model)
                if client.on_kv:
                    task = asyncio.get_running_loop().create_task(client.subscribe())
                    self._subscribing.add(task)  # held until done: the loop keeps only a weak reference
                    task.add_done_callback(self._subscribing.discard)
        self.changed.set()
        self.changed = asyncio.Event()

    def _kv_events(self, instance: Instance) -> Callable[[dict[str, Any]], None] | None:
        if self.kv is None or self.kv.approximate:
            return None
        return lambda event: self.kv.on_event(instance.id, instance.model, event)

    def models(self) -> list[str]:
        return sorted({client.instance.model for client in self.clients.values() if not client.broken})

    def candidates(self, model: str) -> list[WorkerClient]:
        return [client for client in self.clients.values() if client.instance.model == model and not client.broken]

    def pick(self, request: GenerateRequest, exclude: set[str] = frozenset()
             ) -> tuple[WorkerClient, Ticket | None]:
        """The worker for the request, and in kv modes its ticket in that worker's load."""
        model = request.model
        choices = [client for client in self.candidates(model) if client.instance.id not in exclude]
        if not choices:
            raise NoWorker(model, model in self.known_models, self.models())
        if self.kv:
            return self.kv.choose(request, choices)
        turn = next(self._turn)
        if self.mode == "least-loaded":
            fewest = min(client.inflight for client in choices)
            choices = [client for client in choices if client.inflight == fewest]
        return choices[turn % len(choices)], None

    def preprocessed(self, request: GenerateRequest) -> GenerateRequest:
        """The request as token ids where its model's workers take them (frontend/preprocess.py)."""
        if request.prompt_token_ids is not None:
            return request
        folder = next((client.instance.model_dir for client in self.candidates(request.model)
                       if client.instance.model_dir), None)
        if folder is None:
            return request
        from dynamo.frontend.preprocess import PreprocessError, preprocessor

        try:
            return preprocessor(folder).prepare(request)
        except RequestError as error:
            raise WorkerFailed(str(error), 400) from None
        except PreprocessError as error:
            if not os.path.isdir(folder):  # the worker's path, on another machine: the worker templates, as before
                if folder not in self._unreachable_folders:
                    self._unreachable_folders.add(folder)
                    log.warning("the model folder of %r, %s, is not on this machine: its workers get the chats and "
                                "template them (mount it at the same path for the frontend to tokenize)",
                                request.model, folder)
                return request
            raise WorkerFailed(f"the frontend cannot preprocess for {request.model!r}: {error}", 500) from None

    async def generate(self, request: GenerateRequest, migrations: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Route the request; a worker that cannot be reached before answering is skipped, and one
        that dies while answering is replaced (migration): the next worker gets the request with
        the answer so far, and goes on from there. The frames read as one answer. A request for n
        choices goes on as one request per choice not yet finished, each with its own answer so far.
        `migrations`: those the request already had."""
        tried: set[str] = set()
        texts: dict[int, list[str]] = {}  # each choice's answer so far (kept only when it may migrate)
        tokens: dict[int, int] = {}
        finished: set[int] = set()
        started = False
        request = current = self.preprocessed(request)
        while True:
            try:
                client, ticket = self.pick(current, tried)
            except NoWorker:
                if started:
                    raise WorkerGone(f"no other worker serves {request.model!r} to finish the answer") from None
                raise
            try:
                async with aclosing(client.generate(current)) as frames:
                    async for frame in frames:
                        if ticket:
                            ticket.prefilled()
                        if not started:
                            frame["worker"] = client.instance.id  # for the response's x-dynamo-worker
                            started = True
                        if self.migration_limit:
                            index = frame.get("index", 0)
                            texts.setdefault(index, []).append(frame["text"])
                            tokens[index] = tokens.get(index, 0) + frame["tokens"]
                            if "finish" in frame:
                                finished.add(index)
                        yield frame
                return
            except WorkerGone:
                tried.add(client.instance.id)
                if not started:
                    continue  # nothing was said yet: another worker simply answers
                if migrations >= self.migration_limit:
                    raise
                migrations += 1
                log.warning("worker %s died answering a request for %s; migrating it (%d of %d) after %d tokens",
                            client.instance.id, request.model, migrations, self.migration_limit,
                            sum(tokens.values()))
                if self.metrics:
                    self.metrics.migrations.labels(request.model).inc()
                if request.n == 1:
                    current = _resumed(request, 0, texts, tokens)
                    continue
                async for frame in self._resume_choices(request, texts, tokens, finished, migrations):
                    yield frame
                return
            finally:
                if ticket:
                    ticket.done()

    async def _resume_choices(self, request: GenerateRequest, texts: dict[int, list[str]], tokens: dict[int, int],
                              finished: set[int], migrations: int) -> AsyncIterator[dict[str, Any]]:
        """The unfinished choices of a request for several, each as a request of its own that goes on
        from its answer so far; their frames tagged with their choice's index."""
        left = [index for index in range(request.n) if index not in finished]
        choices = [self.generate(_resumed(request, index, texts, tokens), migrations) for index in left]
        try:
            async with aclosing(interleave(choices)) as frames:
                async for number, frame in frames:
                    frame["index"] = left[number]
                    yield frame
        except NoWorker:
            raise WorkerGone(f"no other worker serves {request.model!r} to finish the answer") from None


def _resumed(request: GenerateRequest, index: int, texts: dict[int, list[str]], tokens: dict[int, int]
             ) -> GenerateRequest:
    """Choice `index` of the request as one request going on from its answer so far (its seed as the
    worker gave it when it ran the choices)."""
    done = tokens.get(index, 0)
    return dataclasses.replace(
        request.choice(index),
        resumed_text=request.resumed_text + "".join(texts.get(index, [])), resumed_tokens=request.resumed_tokens + done,
        max_tokens=None if request.max_tokens is None else max(request.max_tokens - done, 0))
