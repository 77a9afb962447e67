"""The frontend's HTTP connections, guarded: at most `max_connections` open at once, a deadline for
a request's headers and then its body, and malformed HTTP or a client hanging up as one log line
(never a traceback) with the answer, if one can still be sent, in OpenAI's error shape."""

from __future__ import annotations

import asyncio
import json
import logging
import re

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from dynamo.frontend.limits import ConnectionLimits
from dynamo.frontend.openai import InvalidRequest, error_body

log = logging.getLogger("dynamo.frontend")
# Seconds spent reading what is left of a refused body before closing, so that the client reads the
# answer rather than a reset (aiohttp's default: 10).
LINGER_SECONDS = 1.0


class ClientGone(Exception):
    """The client hung up before its request arrived whole."""


def error_response(status: int, message: str, kind: str = "invalid_request_error") -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for when no request object exists."""
    body = json.dumps(error_body(message, kind)).encode()
    head = (f"HTTP/1.1 {status} {'Service Unavailable' if status == 503 else 'Bad Request'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def _words(name: str) -> str:
    """BadHttpMethod → bad http method: aiohttp's error, named without the bytes it read."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler with the limits. The header deadline is aiohttp's keep-alive
    timer, which closes a connection still waiting for a whole request when it fires: it starts when
    the connection opens and again after each answer."""

    def __init__(self, manager: web.Server, site: GuardedSite, **kwargs) -> None:
        super().__init__(manager, loop=asyncio.get_running_loop(), keepalive_timeout=site.limits.read_timeout,
                         lingering_time=LINGER_SECONDS, access_log=None, **kwargs)
        self.site = site
        self.counted = False
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.site.open >= self.site.limits.max_connections:
            log.info("refused a connection: %d are open (--max-connections)", self.site.open)
            self.refused = True
            transport.write(error_response(503, f"the frontend has {self.site.open} connections open, its "
                                                f"limit (--max-connections); retry later", "service_unavailable"))
            transport.write_eof()
            # closed once the request has been read (and dropped): closing with it unread would reset
            # the connection, and the client could lose the answer
            self._loop.call_later(LINGER_SECONDS, transport.close)
            return
        self.counted = True
        self.site.open += 1
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.counted:
            self.counted = False
            self.site.open -= 1
        super().connection_lost(exc)

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not read (or a failure outside the handlers): one line, and a JSON answer."""
        if status >= 500:
            log.error("internal error answering %s: %s", request.remote, exc)
            text, kind = "internal error in the frontend; see its log", "server_error"
        else:
            reason = _words(type(exc).__name__) if exc else "unreadable request"
            log.info("malformed HTTP request from %s (%s)", request.remote, reason)
            text, kind = f"malformed HTTP request ({reason}); send HTTP/1.1", "invalid_request_error"
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun; it cannot become an error")
        response = web.Response(status=status, body=json.dumps(error_body(text, kind)).encode(),
                                content_type="application/json")
        response.force_close()
        return response


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are GuardedHandlers; `open` counts them."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: ConnectionLimits,
                 reuse_port: bool = False, backlog: int = 1024) -> None:
        super().__init__(runner, backlog=backlog)
        self.host, self.port, self.limits, self.reuse_port = host, port, limits, reuse_port
        self.open = 0

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GuardedHandler(server, self), self.host, self.port, backlog=self._backlog,
            reuse_address=True, reuse_port=self.reuse_port or None)


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The request's body, which must arrive within `timeout` seconds (408 otherwise)."""
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:  # not TimeoutError itself before Python 3.11
        raise InvalidRequest(f"the request body did not arrive within {timeout:g} s (--read-timeout)",
                             status=408, code="timeout") from None
    except ConnectionError:
        raise ClientGone() from None
