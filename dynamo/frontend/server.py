"""The HTTP server: OpenAI's completion and Responses endpoints, the models, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pydantic_core
from aiohttp import web

from dynamo.frontend import auth
from dynamo.frontend.connections import ClientGone, read_body
from dynamo.frontend.events import EventResponse, EventStream
from dynamo.frontend.limits import MAX_BODY, ConnectionLimits
from dynamo.frontend.metrics import CONTENT_TYPE, Metrics
from dynamo.frontend.openai import (
    ChatRequest,
    CompletionRequest,
    InvalidRequest,
    Response,
    ResponsesRequest,
    ResponsesResponse,
    error_body,
    parse,
    tool_calls,
    usage,
)
from dynamo.frontend.router import NoWorker, Router, WorkerFailed, WorkerGone
from dynamo.runtime.discovery import Discovery
from dynamo.runtime.interleave import interleave
from dynamo.runtime.protocol import GenerateRequest

log = logging.getLogger("dynamo.frontend")
SSE_DONE = b"data: [DONE]\n\n"
METRICS = web.AppKey("metrics", Metrics)
WORKER_HEADER = "x-dynamo-worker"  # the instance that answered, for debugging and tests


def _json(body: Any, status: int = 200) -> web.Response:
    """The body as UTF-8 JSON: pydantic's Rust encoder, in a third of json.dumps's time or less."""
    return web.Response(body=pydantic_core.to_json(body), status=status, content_type="application/json")


def _sse(body: Any) -> bytes:
    return b"data: " + pydantic_core.to_json(body) + b"\n\n"


def _event(body: dict[str, Any]) -> bytes:
    return f"event: {body['type']}\n".encode() + _sse(body)


def no_worker_error(error: NoWorker) -> InvalidRequest:
    if error.known or not error.available:
        return InvalidRequest(f"no worker serves model {error.model!r} right now; start one, for example "
                              f"`python -m dynamo.vllm {error.model}`, and retry", param="model", status=503,
                              kind="service_unavailable", code="no_worker")
    return InvalidRequest(f"the model {error.model!r} does not exist; models served now: "
                          f"{', '.join(error.available)}", param="model", status=404, code="model_not_found")


def failure(error: WorkerFailed | WorkerGone, model: str) -> InvalidRequest:
    if isinstance(error, WorkerFailed):
        kind = "invalid_request_error" if error.status < 500 else "server_error"
        return InvalidRequest(str(error), param=error.param, status=error.status, kind=kind)
    return InvalidRequest(f"the worker serving {model!r} stopped while answering ({error}); retry", status=503,
                          kind="service_unavailable", code="worker_gone")


@web.middleware
async def openai_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error is an OpenAI-style JSON body; nothing escapes as a bare 500 page. A request whose
    body was not read to its end (too slow, too big) closes its connection with the answer."""
    answer = await _answer_or_error(request, handler)
    if answer.status >= 400 and not request.content.is_eof():
        answer.force_close()
    return answer


async def _answer_or_error(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidRequest as error:
        return _json(error.body(), error.status)
    except ClientGone:
        log.info("client %s hung up while sending %s %s", request.remote, request.method, request.path)
        request.app[METRICS].disconnects.labels("unknown").inc()
        return _json(error_body("the request did not arrive whole", "invalid_request_error"), 400)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = f"{request.method} {request.path}: {error.reason}"
        if error.status == 413:
            message = f"the request body is larger than {MAX_BODY // 2**20} MiB"
        return _json(error_body(message, "invalid_request_error"), error.status)
    except Exception:
        log.exception("internal error answering %s %s", request.method, request.path)
        return _json(error_body("internal error in the frontend; see its log", "server_error"), 500)


class Answer:
    """One choice's frames, gathered: its text, tokens, logprobs and how it ended."""
    __slots__ = ("texts", "offset", "tokens", "logprobs", "finish", "prompt_tokens", "cached_tokens")

    def __init__(self, logprobs: bool) -> None:
        self.texts: list[str] = []
        # text_offset of the next logprob entry: the length of the entries' tokens so far, as an unstreamed
        # answer counts it (a token's text can straddle two pieces of the text)
        self.offset = 0
        self.tokens = 0
        self.logprobs: list[dict[str, Any]] | None = [] if logprobs else None
        self.finish: str | None = None
        self.prompt_tokens = 0
        self.cached_tokens = 0  # of the prompt's, those the worker found in its KV cache

    def add(self, frame: dict[str, Any]) -> None:
        self.texts.append(frame["text"])
        self.tokens += frame["tokens"]
        if self.logprobs is not None:
            entries = frame.get("logprobs") or []
            self.logprobs.extend(entries)
            self.offset += sum(len(entry["token"]) for entry in entries)
        if "finish" in frame:
            self.finish, self.prompt_tokens = frame["finish"], frame["prompt_tokens"]
            self.cached_tokens = frame.get("cached_tokens", 0)

    def text(self) -> str:
        return "".join(self.texts)


def _usage(answers: list[Answer], n: int) -> dict[str, Any]:
    """The usage of all the answers: a prompt's tokens count once, whatever n."""
    prompts = answers[::n]
    return usage(sum(a.prompt_tokens for a in prompts), sum(a.tokens for a in answers),
                 sum(a.cached_tokens for a in prompts))


def _uses_tools(request: GenerateRequest) -> bool:
    return bool(request.tools) and request.tool_choice != "none"


def _ending(answer: Answer, request: GenerateRequest) -> tuple[str | None, list[dict[str, Any]], str]:
    """(content, tool calls, finish reason) of a finished answer."""
    text = answer.text()
    if not _uses_tools(request):
        return text, [], answer.finish
    content, calls = tool_calls(text, request.forced_tool_call())
    return content, calls, "tool_calls" if calls else answer.finish


class Frontend:
    """`discovery`: its problem, when it has one, shows in /health. `api_key`: required on /v1 when given."""

    def __init__(self, router: Router, metrics: Metrics | None = None, discovery: Discovery | None = None,
                 limits: ConnectionLimits = ConnectionLimits(), api_key: str | None = None) -> None:
        self.router = router
        self.metrics = metrics or router.metrics or Metrics()
        self.discovery = discovery
        self.limits = limits
        self.api_key = api_key
        self.id = uuid.uuid4().hex[:12]  # which frontend process answered /health, naming neither pid nor host
        self.first_seen: dict[str, int] = {}

    def app(self) -> web.Application:
        middlewares = [openai_errors] + ([auth.require(self.api_key)] if self.api_key else [])
        app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
        app[METRICS] = self.metrics
        app.add_routes([
            web.get("/v1/models", self.models),
            web.get("/v1/models/{model:.+}", self.model),
            web.post("/v1/chat/completions", self.chat),
            web.post("/v1/completions", self.completions),
            web.post("/v1/responses", self.responses),
            web.get("/health", self.health),
            web.get("/live", self.live),
            web.get("/metrics", self.exposition),
        ])
        return app

    def _model_object(self, name: str, now: int) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.first_seen.setdefault(name, now), "owned_by": "dynamo"}

    async def models(self, _request: web.Request) -> web.Response:
        now = int(time.time())
        return _json({"object": "list", "data": [self._model_object(name, now) for name in self.router.models()]})

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        served = self.router.models()
        if name not in served:
            raise InvalidRequest(f"the model {name!r} does not exist; models served now: "
                                 f"{', '.join(served) or 'none'}", param="model", status=404,
                                 code="model_not_found")
        return _json(self._model_object(name, int(time.time())))

    async def health(self, _request: web.Request) -> web.Response:
        totals = self.metrics.worker_inflight_totals()  # all processes' requests, when there are several
        instances = [{"id": c.instance.id, "model": c.instance.model, "framework": c.instance.framework,
                      "inflight": c.inflight if totals is None else totals.get(c.instance.id, 0)}
                     for c in self.router.clients.values() if not c.broken]
        problem = self.discovery.problem if self.discovery else None
        body: dict[str, Any] = {"status": "degraded" if problem else "healthy", "instances": instances,
                                "frontend": self.id}
        if problem:
            body["message"] = problem  # the workers known before are still served
        if not instances:
            body.update(status="unhealthy", message=problem or "no worker is registered")
            return _json(body, 503)
        return _json(body)

    async def live(self, _request: web.Request) -> web.Response:
        return _json({"status": "live"})

    async def exposition(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, ChatRequest, "chat_completions")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, CompletionRequest, "completions")

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, ResponsesRequest, "responses")

    async def _serve(self, http: web.Request, kind: type, endpoint: str) -> web.StreamResponse:
        """Parse, route every choice, answer; counts the request whatever happens."""
        start = time.perf_counter()
        parsed = parse(kind, await read_body(http, self.limits.read_timeout))
        prompts = parsed.to_generate()  # one engine request per prompt, each for n choices
        requests = [request for request in prompts for _ in range(parsed.n)]  # each choice's
        model = parsed.model
        label = model if model in self.router.known_models else "unknown"
        status = "error"
        inflight = frames = None
        generators = [self.router.generate(request) for request in prompts]
        try:
            firsts = await self._first_frames(generators, model, label)
            series = self.metrics.of(model)
            inflight = series.inflight
            inflight.inc()
            series.ttft.observe(time.perf_counter() - start)
            frames = _merged(generators, firsts, parsed.n)
            answers = [Answer(request.logprobs is not None) for request in requests]
            if kind is ResponsesRequest:
                result, completed = await self._respond(http, parsed, requests[0], answers[0], frames, firsts[0])
            elif parsed.stream:
                result, completed = await self._stream(http, Response(kind is ChatRequest, model), requests, answers,
                                                       frames, firsts[0]["worker"], parsed.n, parsed.include_usage())
            else:
                result, completed = await self._collect(Response(kind is ChatRequest, model), requests, answers,
                                                        frames, firsts[0]["worker"], parsed.n), True
                if http.transport is None or http.transport.is_closing():  # the client left while we waited
                    self._client_left(http, model)
            if completed:
                status = "success"
                series.duration.observe(time.perf_counter() - start)
            return result
        finally:
            if inflight is not None:
                inflight.dec()
            if frames is not None:
                await frames.aclose()
            for generator in generators:
                await generator.aclose()  # a request cut short: its worker is told to stop
            self.metrics.count_request(label, endpoint, "stream" if parsed.stream else "unary", status)

    async def _first_frames(self, generators: list[AsyncIterator[dict]], model: str, label: str) -> list[dict]:
        """Each choice's first frame, once its worker answers; errors before it are the HTTP status."""
        # A model never served (404 to come) gets its queued series only, not a model's every series.
        queued = self.metrics.of(model).queued if label == model else self.metrics.queued.labels(label)
        queued.inc()
        try:
            if len(generators) == 1:
                results: list[Any] = [await _first(generators[0])]
            else:
                results = await asyncio.gather(*(_first(generator) for generator in generators))
        finally:
            queued.dec()
        for result in results:
            if isinstance(result, NoWorker):
                raise no_worker_error(result)
            if isinstance(result, WorkerFailed | WorkerGone):
                raise failure(result, model)
        return results

    def _client_left(self, http: web.Request, model: str) -> None:
        log.info("client %s hung up before its answer from %s ended", http.remote, model)
        self.metrics.disconnects.labels(model).inc()

    def _finished(self, answer: Answer, model: str) -> None:
        series = self.metrics.of(model)
        series.input_length.observe(answer.prompt_tokens)
        series.output_length.observe(answer.tokens)
        series.output_tokens.inc(answer.tokens)

    async def _frames(self, frames: AsyncIterator[tuple[int, dict]], model: str
                      ) -> AsyncIterator[tuple[int, dict]]:
        """The frames, timed for the inter-token latency; a worker's failure as InvalidRequest."""
        itl = self.metrics.of(model).itl
        last = time.perf_counter()
        try:
            first = True
            async for index, frame in frames:
                if not first:
                    now = time.perf_counter()
                    itl.observe(now - last)
                    last = now
                first = False
                yield index, frame
        except (WorkerFailed, WorkerGone) as error:
            raise failure(error, model) from None

    async def _collect(self, response: Response, requests: list[GenerateRequest], answers: list[Answer],
                       frames: AsyncIterator[tuple[int, dict]], worker: str, n: int) -> web.Response:
        """The whole answer as one object; a prompt's tokens count once in the usage, whatever n."""
        async for index, frame in self._frames(frames, response.model):
            answers[index].add(frame)
        choices = []
        for index, (request, answer) in enumerate(zip(requests, answers)):
            self._finished(answer, response.model)
            content, calls, finish = _ending(answer, request)
            choices.append(response.choice(index, content, finish, answer.logprobs, calls))
        body = response.complete(choices, _usage(answers, n))
        answer = _json(body)
        answer.headers[WORKER_HEADER] = worker
        return answer

    async def _stream(self, http: web.Request, response: Response, requests: list[GenerateRequest],
                      answers: list[Answer], frames: AsyncIterator[tuple[int, dict]], worker: str, n: int,
                      include_usage: bool) -> tuple[web.StreamResponse, bool]:
        """The answer as server-sent events; says whether it ended as the engine meant it to."""
        stream = EventResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       WORKER_HEADER: worker})
        await stream.prepare(http)
        events = EventStream(stream)
        started = [False] * len(requests)
        buffered = [_uses_tools(request) for request in requests]  # tool calls are known at the end only
        completed = False
        try:
            try:
                async for index, frame in self._frames(frames, response.model):
                    answer = answers[index]
                    offset = answer.offset
                    answer.add(frame)
                    if (frame["text"] or not started[index] or frame.get("logprobs")) and not buffered[index]:
                        events.send(_sse(response.chunk(frame["text"], first=not started[index], index=index,
                                                        logprobs=frame.get("logprobs") if answer.logprobs
                                                        is not None else None, offset=offset)))
                        started[index] = True
                    if "finish" in frame:
                        self._finished(answer, response.model)
                        content, calls, finish = _ending(answer, requests[index])
                        if buffered[index]:
                            events.send(_sse(response.chunk(content, first=True, index=index, calls=calls,
                                                            logprobs=answer.logprobs)))
                        events.send(_sse(response.chunk("", finish, index=index)))
                completed = True
                if include_usage:
                    events.send(_sse(response.usage_chunk(_usage(answers, n))))
            except InvalidRequest as problem:
                events.send(_sse(error_body(str(problem), problem.kind, code=problem.code)))
            await events.close(SSE_DONE)
        except ConnectionResetError:
            self._client_left(http, response.model)  # closing the frames tells the worker to stop
        return stream, completed

    async def _respond(self, http: web.Request, parsed: ResponsesRequest, request: GenerateRequest, answer: Answer,
                       frames: AsyncIterator[tuple[int, dict]], first: dict) -> tuple[web.StreamResponse, bool]:
        """A Responses API answer: one object, or its events when streaming."""
        response = ResponsesResponse(parsed)
        if not parsed.stream:
            async for _, frame in self._frames(frames, parsed.model):
                answer.add(frame)
            self._finished(answer, parsed.model)
            content, calls, finish = _ending(answer, request)
            body = response.body("incomplete" if finish == "length" else "completed", response.output(content, calls),
                                 (answer.prompt_tokens, answer.tokens, answer.cached_tokens), finish)
            result = _json(body)
            result.headers[WORKER_HEADER] = first["worker"]
            return result, True
        stream = EventResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       WORKER_HEADER: first["worker"]})
        await stream.prepare(http)
        events = EventStream(stream)
        buffered = _uses_tools(request)
        item = {"item_id": response.message_id, "output_index": 0, "content_index": 0}
        completed = False
        try:
            events.send(_event(response.event("response.created", response=response.body("in_progress", []))))
            events.send(_event(response.event("response.in_progress",
                                              response=response.body("in_progress", []))))
            if not buffered:
                events.send(_event(response.event("response.output_item.added", output_index=0,
                                                  item=response.message("", "in_progress"))))
                events.send(_event(response.event("response.content_part.added", **item, part={
                    "type": "output_text", "text": "", "annotations": []})))
            try:
                async for _, frame in self._frames(frames, parsed.model):
                    answer.add(frame)
                    if frame["text"] and not buffered:
                        events.send(_event(response.event("response.output_text.delta", **item,
                                                          delta=frame["text"], logprobs=[])))
            except InvalidRequest as problem:
                events.send(_event(response.event("error", code=problem.code, message=str(problem),
                                                  param=None)))
                await events.close()
                return stream, False
            self._finished(answer, parsed.model)
            content, calls, finish = _ending(answer, request)
            output = response.output(content, calls)
            if not buffered:
                text = answer.text()
                events.send(_event(response.event("response.output_text.done", **item, text=text,
                                                  logprobs=[])))
                events.send(_event(response.event("response.content_part.done", **item, part={
                    "type": "output_text", "text": text, "annotations": []})))
                events.send(_event(response.event("response.output_item.done", output_index=0,
                                                  item=output[0])))
            else:
                for index, done in enumerate(output):
                    events.send(_event(response.event("response.output_item.added", output_index=index,
                                                      item=done)))
                    events.send(_event(response.event("response.output_item.done", output_index=index,
                                                      item=done)))
            status = "incomplete" if finish == "length" else "completed"
            events.send(_event(response.event(f"response.{status}", response=response.body(
                status, output, (answer.prompt_tokens, answer.tokens, answer.cached_tokens), finish))))
            await events.close()
            completed = True
        except ConnectionResetError:
            self._client_left(http, parsed.model)
        return stream, completed


async def _first(generator: AsyncIterator[dict]) -> Any:
    """The generator's first frame, or the routing error that came instead."""
    try:
        return await anext(generator)
    except (NoWorker, WorkerFailed, WorkerGone) as error:
        return error


async def _merged(generators: list[AsyncIterator[dict]], firsts: list[dict], n: int
                  ) -> AsyncIterator[tuple[int, dict]]:
    """The choices' frames as (choice index, frame), in the order they come; the first frames first.
    Generator p answers prompt p's n choices: its frame for choice i is choice p × n + i."""
    for number, first in enumerate(firsts):
        yield number * n + first.get("index", 0), first
    if len(generators) == 1:
        async for frame in generators[0]:  # ends at once when the first frame was the last
            yield frame.get("index", 0), frame
        return
    async with aclosing(interleave(generators)) as frames:
        async for number, frame in frames:
            yield number * n + frame.get("index", 0), frame
