"""What one client may ask of the frontend: how big a request may be, how long it may take to
arrive, how many connections may be open at once, and how long a stopping frontend waits for the
answers in flight. The sizes bound the work done before a request is refused: each list is checked
while it is parsed, so a body of 500,000 empty messages stops at the first one too many."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from json.decoder import scanstring
from typing import Annotated

from pydantic import Field

MAX_BODY = 16 * 1024 * 1024  # bytes of one request body
MAX_MESSAGES = 4096  # messages of a chat, items of a Responses input, parts of a message's content
MAX_PROMPT_TOKENS = 1 << 20  # token ids of one prompt: beyond any model's context
MAX_TOOLS = 128  # OpenAI's own limit on tools

# What a body may hold, counted before it is parsed: the parser's tree costs ~800 bytes an object
# and the capped lists are checked only once the whole body is parsed, so 560,000 empty messages
# (15.5 MB) would cost 443 MB to refuse. The most a legitimate request needs: 2^20 token ids, and
# objects for 4,096 messages with their content parts, tools and schemas.
MAX_OBJECTS = 1 << 16
MAX_VALUES = MAX_PROMPT_TOKENS + MAX_OBJECTS

# A token id as engines store it (int32); vocabularies are far smaller, and the engine checks its own.
TokenId = Annotated[int, Field(ge=0, lt=1 << 31)]


def excess(body: bytes) -> str | None:
    """What the JSON body holds more of than a request may (objects or values), or None. Counted
    outside its strings, at C speed, stopping at the first count over its limit: the bytes'
    counts (strings included) are an upper bound, and only a body over it is counted exactly."""
    objects, values = body.count(b"{"), body.count(b"{") + body.count(b"[") + body.count(b",")
    if objects <= MAX_OBJECTS and values <= MAX_VALUES:
        return None
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None  # the parser names it
    objects = values = end = 0
    while True:
        quote = text.find('"', end)
        stop = len(text) if quote < 0 else quote
        objects += text.count("{", end, stop)
        values += text.count("[", end, stop) + text.count(",", end, stop)
        if objects > MAX_OBJECTS:
            return f"more than {MAX_OBJECTS} JSON objects"
        if objects + values > MAX_VALUES:
            return f"more than {MAX_VALUES} JSON values"
        if quote < 0:
            return None
        try:
            end = scanstring(text, quote + 1)[1]
        except ValueError:
            return None  # not JSON: the parser names it


@dataclass(frozen=True)
class ConnectionLimits:
    """`read_timeout`: seconds a client has to send a request's headers (from connecting, or from its
    previous answer: an idle connection closes after it too) and again its body. `max_connections`:
    connections open at once in one frontend process; more are answered 503 and closed.
    `shutdown_timeout`: seconds SIGTERM waits for the answers in flight before cutting them."""
    read_timeout: float = 30
    max_connections: int = 4096
    shutdown_timeout: float = 25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ConnectionLimits()
    parser.add_argument("--read-timeout", type=float,
                        default=float(os.environ.get("DYN_HTTP_READ_TIMEOUT", defaults.read_timeout)),
                        help="seconds a client has to send a request's headers, and again its body; an idle "
                             "connection closes after it too (default: %(default)s, or DYN_HTTP_READ_TIMEOUT)")
    parser.add_argument("--max-connections", type=int,
                        default=int(os.environ.get("DYN_HTTP_MAX_CONNECTIONS", defaults.max_connections)),
                        help="connections open at once per frontend process; more are answered 503 "
                             "(default: %(default)s, or DYN_HTTP_MAX_CONNECTIONS)")
    parser.add_argument("--shutdown-timeout", type=float,
                        default=float(os.environ.get("DYN_SHUTDOWN_TIMEOUT", defaults.shutdown_timeout)),
                        help="seconds SIGTERM waits for the answers in flight before closing them; below "
                             "Kubernetes' 30-second grace period (default: %(default)s, or DYN_SHUTDOWN_TIMEOUT)")


def from_arguments(args: argparse.Namespace) -> ConnectionLimits:
    """The limits the flags ask for; a value that cannot work is refused in one line (ValueError)."""
    for flag, value in (("--read-timeout", args.read_timeout), ("--max-connections", args.max_connections)):
        if not value > 0:
            raise ValueError(f"{flag} {value}: must be more than 0")
    if not args.shutdown_timeout >= 0:
        raise ValueError(f"--shutdown-timeout {args.shutdown_timeout}: must not be negative")
    return ConnectionLimits(args.read_timeout, args.max_connections, args.shutdown_timeout)
