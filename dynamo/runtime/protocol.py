"""The wire between the frontend and a worker.

One TCP connection per frontend and worker pair carries many requests at once: newline-delimited
JSON frames, each tagged with the request's id.

frontend → worker   {"id": 7, "generate": {...GenerateRequest...}}   {"id": 7, "cancel": true}
worker → frontend   {"id": 7, "text": "Hello", "tokens": 1}          a piece of the answer
                    {"id": 7, "text": " you", "tokens": 1, "logprobs": [...]}
                                                                      with logprobs when asked for
                    {"id": 7, "text": "", "tokens": 0, "finish": "stop", "prompt_tokens": 12,
                     "cached_tokens": 8}                              the last frame of a choice
                                                                      (cached_tokens: those of the
                                                                      prompt found in the KV cache)
                    {"id": 7, "index": 2, "text": " I", "tokens": 1}  choice 2 of a request with n > 1
                                                                      (no index: choice 0); the
                                                                      request ends when all n finish
                    {"id": 7, "error": "message", "status": 400}      the request failed

frontend → worker   {"id": 0, "subscribe": "kv"}                     send me your KV cache events
worker → frontend   {"id": 0, "kv": {"block_size": 64, "stored": [...], "removed": [...]}}
                                                                      (kv_events.py)
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

# A frame is one line; a long prompt fits easily, a runaway peer does not.
MAX_FRAME = 64 * 1024 * 1024
# The request fields an engine may not support, each named as the OpenAI parameter it comes from.
OPTIONAL_FEATURES = ("tools", "logprobs", "response_format")
# Temperatures below this are greedy decoding (vLLM's _SAMPLING_EPS; SGLang's is 1e-6).
GREEDY_TEMPERATURE = 1e-5


@dataclass
class GenerateRequest:
    """One completion for a worker: a chat (messages), a plain prompt or prompt token ids, and the
    sampling and output controls.

    `tools` and `tool_choice` are OpenAI's chat format; `logprobs` is the number of alternatives
    per token (0: only the chosen token's; None: no logprobs); `response_format` is
    {"type": "json_object"} or {"type": "json_schema", "schema": {...}}. `resumed_text` and
    `resumed_tokens` are the answer a worker that died had already produced: the engine goes on
    from there (migration), and `max_tokens` already counts them out. `n` is the number of choices:
    one engine request where the engine can (its features hold "n"), else the worker runs n; a
    greedy request's n choices are one answer, sent n times (worker.answer)."""
    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    resumed_text: str = ""
    resumed_tokens: int = 0

    def sampling(self) -> dict[str, Any]:
        """The sampling controls that were given (None means: the engine's default)."""
        values = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                  "seed": self.seed, "stop": self.stop or None}
        return {key: value for key, value in values.items() if value is not None}

    def greedy(self) -> bool:
        """Whether the answer is the likeliest one, the same every time: a temperature of 0 (below
        vLLM's 1e-5, which it takes for 0)."""
        return self.temperature is not None and self.temperature < GREEDY_TEMPERATURE

    def choice(self, index: int) -> GenerateRequest:
        """Choice `index` of an n-choice request as a request of its own: its seed, when one is given,
        moved by the index so that the choices differ."""
        return dataclasses.replace(self, n=1, seed=None if self.seed is None else self.seed + index)

    def features(self) -> list[str]:
        """The optional features (OPTIONAL_FEATURES) this request uses."""
        used = {"tools": bool(self.tools), "logprobs": self.logprobs is not None,
                "response_format": self.response_format is not None}
        return [name for name in OPTIONAL_FEATURES if used[name]]

    def forced_tool_call(self) -> bool:
        """Whether the answer must be a call of one of the tools (tool_choice "required" or named)."""
        return bool(self.tools) and (self.tool_choice == "required" or isinstance(self.tool_choice, dict))

    def output_schema(self) -> dict[str, Any] | None:
        """The JSON schema the answer must match, for an engine's structured output: a forced tool
        call ({"name": ..., "arguments": {...}}), or the response_format's JSON; None when free."""
        if self.forced_tool_call():
            wanted = self.tool_choice["function"]["name"] if isinstance(self.tool_choice, dict) else None
            calls = [{"type": "object", "required": ["name", "arguments"],
                      "properties": {"name": {"const": tool["function"]["name"]},
                                     "arguments": tool["function"].get("parameters") or {"type": "object"}}}
                     for tool in self.tools if wanted in (None, tool["function"]["name"])]
            return calls[0] if len(calls) == 1 else {"anyOf": calls}
        if self.response_format is None:
            return None
        return self.response_format.get("schema") or {"type": "object"}


@dataclass
class Chunk:
    """A piece of an engine's answer. The last chunk of a choice carries `finish` ("stop" or
    "length", as worker.finish_reason maps the engine's reason) and the token counts. `logprobs`,
    when asked for: one entry per token of `text`, {"token": str, "logprob": float, "top":
    [{"token": str, "logprob": float}, ...]}. `index`: which of the request's n choices it belongs to."""
    text: str = ""
    tokens: int = 0
    finish: str | None = None
    prompt_tokens: int | None = None
    logprobs: list[dict[str, Any]] | None = None
    index: int = 0
    cached_tokens: int | None = None


def logprob_entry(token: str, logprob: float, alternatives: Iterable[tuple[str, float]] = (),
                  wanted: int | None = None) -> dict[str, Any]:
    """One token's entry in a chunk's logprobs: the token, its logprob, and of the alternatives
    (text, logprob) the `wanted` likeliest (all, when None), best first."""
    best = sorted(alternatives, key=lambda alternative: alternative[1], reverse=True)[:wanted]
    return {"token": token, "logprob": logprob, "top": [{"token": text, "logprob": value} for text, value in best]}


class RequestError(ValueError):
    """The request cannot be served as asked (a prompt longer than the context, say): the client's
    fault, answered with 400 and this message."""


def chunk_frame(request_id: int, chunk: Chunk) -> bytes:
    frame: dict[str, Any] = {"id": request_id, "text": chunk.text, "tokens": chunk.tokens}
    if chunk.index:
        frame["index"] = chunk.index
    if chunk.logprobs is not None:
        frame["logprobs"] = chunk.logprobs
    if chunk.finish:
        frame["finish"] = chunk.finish
        frame["prompt_tokens"] = chunk.prompt_tokens or 0
        if chunk.cached_tokens:
            frame["cached_tokens"] = chunk.cached_tokens
    return encode(frame)


def error_frame(request_id: int, message: str, status: int, param: str | None = None) -> bytes:
    """`param`: the request parameter at fault, which the frontend names to its client."""
    frame: dict[str, Any] = {"id": request_id, "error": message, "status": status}
    if param:
        frame["param"] = param
    return encode(frame)


def encode(frame: dict[str, Any]) -> bytes:
    """A frame as one line of UTF-8 JSON (pydantic's Rust encoder: a tenth of the json module's time)."""
    return pydantic_core.to_json(frame) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """A frame from its line (a third of json.loads's time); ValueError when it is not JSON."""
    return pydantic_core.from_json(line)


class FrameWriter:
    """Frames to one peer, written together once per turn of the event loop: the frames that many
    requests (or a burst of tokens) produce in one turn leave in one write, not a system call each."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._loop = asyncio.get_running_loop()  # once: each lookup asks the system for the process id
        self._pending: list[bytes] = []

    def send(self, frame: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(frame)

    def _flush(self) -> None:
        frames, self._pending = self._pending, []
        if not self.writer.is_closing():
            self.writer.write(b"".join(frames))

    async def drain(self) -> None:
        """Wait while the peer reads slower than we write (the socket's buffer is full)."""
        await self.writer.drain()


def split_frames(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """The whole frames in what was read so far, and the start of the next one."""
    lines = (pending + data).split(b"\n") if pending else data.split(b"\n")
    rest = lines.pop()
    if len(rest) > MAX_FRAME:
        raise ValueError(f"a frame longer than {MAX_FRAME} bytes")
    return lines, rest


_LEFT_OUT = {"stop": [], "n": 1, "resumed_text": "", "resumed_tokens": 0}  # defaults a frame need not carry


def generate_frame(request_id: int, request: GenerateRequest) -> bytes:
    body = {key: value for key, value in vars(request).items()
            if value is not None and _LEFT_OUT.get(key) != value}
    return encode({"id": request_id, "generate": body})


def request_from_frame(body: dict[str, Any]) -> GenerateRequest:
    return GenerateRequest(**body)
