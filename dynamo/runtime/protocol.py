"""The wire between the frontend and a worker.

One TCP connection per frontend and worker pair carries many requests at once: newline-delimited
JSON frames, each tagged with the request's id.

frontend → worker   {"id": 7, "generate": {...GenerateRequest...}}   {"id": 7, "cancel": true}
worker → frontend   {"id": 7, "text": "Hello", "tokens": 1}          a piece of the answer
                    {"id": 7, "text": "", "tokens": 0, "finish": "stop", "prompt_tokens": 12}
                                                                      the last frame of a request
                    {"id": 7, "error": "message", "status": 400}      the request failed
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# A frame is one line; a long prompt fits easily, a runaway peer does not.
MAX_FRAME = 64 * 1024 * 1024


@dataclass
class GenerateRequest:
    """One completion for a worker: a chat (messages) or a plain prompt, and the sampling controls."""
    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def sampling(self) -> dict[str, Any]:
        """The sampling controls that were given (None means: the engine's default)."""
        values = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                  "seed": self.seed, "stop": self.stop or None}
        return {key: value for key, value in values.items() if value is not None}


@dataclass
class Chunk:
    """A piece of an engine's answer. The last chunk of a request carries `finish` ("stop" or
    "length") and the token counts."""
    text: str = ""
    tokens: int = 0
    finish: str | None = None
    prompt_tokens: int | None = None


class RequestError(ValueError):
    """The request cannot be served as asked (a prompt longer than the context, say): the client's
    fault, answered with 400 and this message."""


def chunk_frame(request_id: int, chunk: Chunk) -> bytes:
    frame: dict[str, Any] = {"id": request_id, "text": chunk.text, "tokens": chunk.tokens}
    if chunk.finish:
        frame["finish"] = chunk.finish
        frame["prompt_tokens"] = chunk.prompt_tokens or 0
    return encode(frame)


def error_frame(request_id: int, message: str, status: int) -> bytes:
    return encode({"id": request_id, "error": message, "status": status})


def encode(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    return json.loads(line)


def generate_frame(request_id: int, request: GenerateRequest) -> bytes:
    return encode({"id": request_id, "generate": asdict(request)})


def request_from_frame(body: dict[str, Any]) -> GenerateRequest:
    return GenerateRequest(**body)
