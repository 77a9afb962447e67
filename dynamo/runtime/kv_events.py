"""KV cache events: which blocks of prompt tokens a worker holds, told to the frontend's router.

A prompt's tokens are cut into blocks of `block_size`; a block is named by a hash chained over the
blocks before it (`block_hashes`), so one hash names a whole prefix, and two prompts share a block
exactly when they share every token up to its end. Engines and the frontend hash the same way.

Transport: the connection the frontend already keeps to each worker (protocol.py). The frontend
sends {"id": 0, "subscribe": "kv"}; the worker answers with everything it holds now
({"kv": {"block_size": 64, "stored": [...], "clear": true}}), then with each change as it happens
({"kv": {"block_size": 64, "stored": [...], "removed": [...]}}). Upstream 1.6.1 publishes the same
events over ZMQ or NATS; here the existing connection needs no new service, no new dependency and
no address of its own, reaches workers on any machine discovery finds, and its end is the worker's
death: the frontend drops a worker's blocks when the connection breaks, and a reconnecting
frontend gets the whole state again, so no event can be lost between two sockets.

vLLM and SGLang publish their own events over ZMQ, which their adapters relay in these names
(engine_kv_events.py).

Engines that see no tokens (a chat passed through to the worker) are hashed on `word_tokens`: a
message is its role, its whitespace-separated words and an end token, each word a stable number.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dynamo.runtime.protocol import GenerateRequest, encode

if TYPE_CHECKING:
    from dynamo.runtime.protocol import FrameWriter

DEFAULT_BLOCK_SIZE = 64
SUBSCRIBE = encode({"id": 0, "subscribe": "kv"})
ROOT = 0x6B76  # the parent of a prompt's first block
_END_OF_MESSAGE = 1


def chained_hash(parent: int, block: Sequence[int]) -> int:
    """The hash of a block of tokens after the block hashed `parent`. Python hashes tuples of ints
    the same in every process (PYTHONHASHSEED changes only str and bytes)."""
    return hash((parent, *block))


def block_hashes(tokens: list[int], block_size: int) -> list[int]:
    """The chained hash of each full block of `tokens` (a partial last block has none)."""
    hashes: list[int] = []
    parent = ROOT
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = chained_hash(parent, tokens[start:start + block_size])
        hashes.append(parent)
    return hashes


def _word(word: str) -> int:
    return zlib.crc32(word.encode()) + 2  # 0 and 1 are ours


def word_tokens(request: GenerateRequest) -> list[int]:
    """The prompt's tokens as an engine without a tokenizer counts them (see the module's docstring)."""
    if request.messages is None:
        return [_word(word) for word in (request.prompt or "").split()]
    tokens: list[int] = []
    for message in request.messages:
        tokens.append(_word(str(message.get("role"))))
        tokens.extend(_word(word) for word in str(message.get("content") or "").split())
        tokens.append(_END_OF_MESSAGE)
    return tokens


def prompt_tokens(request: GenerateRequest) -> list[int]:
    """The prompt's token ids where the frontend gave them, else its word tokens."""
    return list(request.prompt_token_ids) if request.prompt_token_ids is not None else word_tokens(request)


def kv_frame(block_size: int, stored: Sequence[int] = (), removed: Sequence[int] = (), clear: bool = False) -> bytes:
    body: dict[str, Any] = {"block_size": block_size}
    if stored:
        body["stored"] = list(stored)
    if removed:
        body["removed"] = list(removed)
    if clear:
        body["clear"] = True
    return encode({"id": 0, "kv": body})


class KvPublisher:
    """An engine's side: sends its block changes to every subscribed frontend connection.
    `held()`: every block the engine holds now, which a new subscriber gets first."""

    def __init__(self, block_size: int, held: Callable[[], list[int]]) -> None:
        self.block_size = block_size
        self.held = held
        self.subscribers: set[FrameWriter] = set()

    def subscribe(self, frames: FrameWriter) -> None:
        self.subscribers.add(frames)
        frames.send(kv_frame(self.block_size, self.held(), clear=True))

    def unsubscribe(self, frames: FrameWriter) -> None:
        self.subscribers.discard(frames)

    def publish(self, stored: list[int], removed: list[int], clear: bool = False) -> None:
        """`clear`: the engine dropped every block (before those `stored` here)."""
        if not (stored or removed or clear) or not self.subscribers:
            return
        frame = kv_frame(self.block_size, stored, removed, clear)
        for frames in self.subscribers:
            frames.send(frame)
