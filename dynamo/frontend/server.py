"""The HTTP server: OpenAI's completion endpoints, the model list, health and metrics."""

from __future__ import annotations

import json
import logging
import time
from contextlib import aclosing
from typing import Any

from aiohttp import web

from dynamo.frontend.metrics import CONTENT_TYPE, Metrics
from dynamo.frontend.openai import (
    ChatRequest,
    CompletionRequest,
    InvalidRequest,
    Response,
    error_body,
    parse,
    usage,
)
from dynamo.frontend.router import NoWorker, Router, WorkerFailed, WorkerGone

log = logging.getLogger("dynamo.frontend")
MAX_BODY = 16 * 1024 * 1024
SSE_DONE = b"data: [DONE]\n\n"
WORKER_HEADER = "x-dynamo-worker"  # the instance that answered, for debugging and tests


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body, ensure_ascii=False).encode(), status=status,
                        content_type="application/json")


def _sse(body: Any) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


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
        return InvalidRequest(str(error), status=error.status, kind=kind)
    return InvalidRequest(f"the worker serving {model!r} stopped while answering ({error}); retry", status=503,
                          kind="service_unavailable", code="worker_gone")


@web.middleware
async def openai_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error is an OpenAI-style JSON body; nothing escapes as a bare 500 page."""
    try:
        return await handler(request)
    except InvalidRequest as error:
        return _json(error.body(), error.status)
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


class Frontend:
    def __init__(self, router: Router, metrics: Metrics | None = None) -> None:
        self.router = router
        self.metrics = metrics or Metrics()
        self.first_seen: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[openai_errors], client_max_size=MAX_BODY)
        app.add_routes([
            web.get("/v1/models", self.models),
            web.post("/v1/chat/completions", self.chat),
            web.post("/v1/completions", self.completions),
            web.get("/health", self.health),
            web.get("/live", self.live),
            web.get("/metrics", self.exposition),
        ])
        return app

    async def models(self, _request: web.Request) -> web.Response:
        now = int(time.time())
        data = [{"id": name, "object": "model", "created": self.first_seen.setdefault(name, now), "owned_by": "dynamo"}
                for name in self.router.models()]
        return _json({"object": "list", "data": data})

    async def health(self, _request: web.Request) -> web.Response:
        instances = [{"id": c.instance.id, "model": c.instance.model, "framework": c.instance.framework,
                      "address": c.instance.address, "inflight": c.inflight}
                     for c in self.router.clients.values() if not c.broken]
        if not instances:
            return _json({"status": "unhealthy", "message": "no worker is registered", "instances": []}, 503)
        return _json({"status": "healthy", "instances": instances})

    async def live(self, _request: web.Request) -> web.Response:
        return _json({"status": "live"})

    async def exposition(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, ChatRequest, "chat_completions")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, CompletionRequest, "completions")

    async def _complete(self, http: web.Request, kind: type, endpoint: str) -> web.StreamResponse:
        start = time.perf_counter()
        parsed = parse(kind, await http.read())
        request = parsed.to_generate()
        request_type = "stream" if parsed.stream else "unary"
        status = "error"
        inflight = None
        try:
            async with aclosing(self.router.generate(request)) as frames:
                try:
                    first = await anext(frames)
                except NoWorker as error:
                    raise no_worker_error(error) from None
                except (WorkerFailed, WorkerGone) as error:
                    raise failure(error, request.model) from None
                inflight = self.metrics.inflight.labels(request.model)
                inflight.inc()
                self.metrics.ttft.labels(request.model).observe(time.perf_counter() - start)
                response = Response(chat=kind is ChatRequest, model=request.model)
                if parsed.stream:
                    result, completed = await self._stream(http, response, first, frames, parsed.include_usage())
                else:
                    result, completed = await self._collect(response, first, frames), True
                if completed:
                    status = "success"
                    self.metrics.duration.labels(request.model).observe(time.perf_counter() - start)
                return result
        finally:
            if inflight is not None:
                inflight.dec()
            model = request.model if request.model in self.router.known_models else "unknown"
            self.metrics.requests.labels(model, endpoint, request_type, status).inc()

    async def _collect(self, response: Response, first: dict, frames) -> web.Response:
        itl = self.metrics.itl.labels(response.model)
        texts, tokens = [first["text"]], first["tokens"]
        frame, last = first, time.perf_counter()
        try:
            while "finish" not in frame:
                frame = await anext(frames)
                now = time.perf_counter()
                itl.observe(now - last)
                last = now
                texts.append(frame["text"])
                tokens += frame["tokens"]
        except (WorkerFailed, WorkerGone) as error:
            raise failure(error, response.model) from None
        self.metrics.output_tokens.labels(response.model).inc(tokens)
        answer = _json(response.complete("".join(texts), frame["finish"], usage(frame["prompt_tokens"], tokens)))
        answer.headers[WORKER_HEADER] = first["worker"]
        return answer

    async def _stream(self, http: web.Request, response: Response, first: dict, frames,
                      include_usage: bool) -> tuple[web.StreamResponse, bool]:
        """The answer as server-sent events; says whether it ended as the engine meant it to."""
        itl = self.metrics.itl.labels(response.model)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                             WORKER_HEADER: first["worker"]})
        await stream.prepare(http)
        frame, tokens, last, started, completed = first, 0, time.perf_counter(), False, False
        try:
            try:
                while True:
                    tokens += frame["tokens"]
                    if frame["text"] or not started:  # the first chunk names the role, even when empty
                        await stream.write(_sse(response.chunk(frame["text"], first=not started)))
                        started = True
                    if "finish" in frame:
                        await stream.write(_sse(response.chunk("", frame["finish"])))
                        if include_usage:
                            await stream.write(_sse(response.usage_chunk(usage(frame["prompt_tokens"], tokens))))
                        completed = True
                        break
                    frame = await anext(frames)
                    now = time.perf_counter()
                    itl.observe(now - last)
                    last = now
            except (WorkerFailed, WorkerGone) as error:
                problem = failure(error, response.model)
                await stream.write(_sse(error_body(str(problem), problem.kind, code=problem.code)))
            await stream.write(SSE_DONE)
            await stream.write_eof()
        except ConnectionResetError:
            pass  # the client left; closing the frames tells the worker to stop
        self.metrics.output_tokens.labels(response.model).inc(tokens)
        return stream, completed
