"""The optional API key (--api-key or DYN_API_KEY): OpenAI's `Authorization: Bearer KEY` on every
/v1 request, compared in constant time. Probes and scrapes (/health, /live, /metrics) need none,
as with vLLM's --api-key: they show no prompt, answer or address."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from aiohttp import web

from dynamo.frontend.openai import InvalidRequest

ENVIRONMENT = "DYN_API_KEY"
GUARDED_PREFIX = "/v1/"


def add_arguments(parser) -> None:
    parser.add_argument("--api-key", default=os.environ.get(ENVIRONMENT) or None,
                        help=f"require `Authorization: Bearer KEY` on /v1 requests (default: none, or {ENVIRONMENT}; "
                             f"prefer the variable: a flag shows in the process list)")


def check(key: str | None) -> None:
    """An empty key would quietly mean no key: refused (ValueError)."""
    if key is not None and not key.strip():
        raise ValueError("--api-key: empty; give a key, or leave the flag out to serve without one")


def require(key: str) -> Callable:
    """A middleware refusing /v1 requests without the key (401, OpenAI's invalid_api_key)."""
    expected = key.encode()

    @web.middleware
    async def api_key(request: web.Request, handler) -> web.StreamResponse:
        if request.path.startswith(GUARDED_PREFIX):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(errors="surrogateescape"),
                                                                     expected):
                raise InvalidRequest("missing or incorrect API key; send the header `Authorization: Bearer KEY` "
                                     "with the key the frontend was started with", status=401,
                                     code="invalid_api_key")
        return await handler(request)

    return api_key
