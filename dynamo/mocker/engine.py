"""The mocker's engine: words from a fixed vocabulary, one token each, at a chosen pace.

The answer depends only on the seed (or the prompt, when no seed is given), so tests can check it;
a request resumed after a migration goes on exactly where the first worker stopped. A "token" is a
whitespace-separated word, for the prompt's count as for the answer's, or one prompt token id (with
--model-path the frontend templates and tokenizes, and sends only ids). It serves none of the
optional features (tools, logprobs, response_format).

Timing, divided by the speed-up factor: a request waits `ttft`, then its prefill takes
`prefill_per_token` for each prompt token not found in the paged KV cache (kv_cache.py), one prefill
at a time (one accelerator); the answer's tokens then come every `itl`, requests decoding side by
side. The usage reports the prompt tokens that came from the cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dynamo.mocker.kv_cache import KvCache
from dynamo.runtime.kv_events import DEFAULT_BLOCK_SIZE, block_hashes, prompt_tokens
from dynamo.runtime.protocol import Chunk, GenerateRequest, RequestError
from dynamo.runtime.worker import InferenceError

VOCABULARY = ("the", "model", "says", "hello", "and", "then", "thinks", "about", "tokens", "while",
              "a", "frontend", "routes", "requests", "to", "workers", "that", "stream", "answers", "back")


@dataclass
class MockEngine:
    ttft: float = 0.0  # seconds before the first token
    itl: float = 0.0  # seconds between tokens
    default_max_tokens: int = 16
    context_length: int = 8192
    prefill_per_token: float = 0.0  # seconds per prompt token not cached
    speedup: float = 1.0  # every delay is divided by it
    block_size: int = DEFAULT_BLOCK_SIZE
    kv_blocks: int = 16384  # the KV cache's capacity in blocks
    model_dir: str = ""  # a model folder: the frontend sends token ids of its tokenizer
    features = frozenset()

    def __post_init__(self) -> None:
        self.cache = KvCache(self.block_size, self.kv_blocks)
        self.kv_events = self.cache.events
        self._prefilling = asyncio.Lock()

    async def _prefill(self, uncached_tokens: int) -> None:
        if self.ttft:
            await asyncio.sleep(self.ttft / self.speedup)
        compute = self.prefill_per_token * uncached_tokens / self.speedup
        if compute:
            async with self._prefilling:
                await asyncio.sleep(compute)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        tokens = prompt_tokens(request)
        cached_blocks, taken = self.cache.acquire(block_hashes(tokens, self.block_size))
        try:
            async for chunk in self._answer(request, len(tokens), cached_blocks * self.block_size):
                yield chunk
        finally:
            self.cache.release(taken)

    async def _answer(self, request: GenerateRequest, prompt_tokens: int, cached_tokens: int
                      ) -> AsyncIterator[Chunk]:
        limit = request.max_tokens if request.max_tokens is not None \
            else max(self.default_max_tokens - request.resumed_tokens, 0)  # the whole answer, resumed or not
        if prompt_tokens + limit > self.context_length:
            raise RequestError(f"the prompt ({prompt_tokens} tokens) plus max_tokens ({limit}) exceed this "
                               f"model's context length ({self.context_length}); shorten the prompt or lower max_tokens")
        rng = random.Random(request.seed if request.seed is not None
                            else repr(request.messages or request.prompt or request.prompt_token_ids))
        for _ in range(request.resumed_tokens):  # the words the first worker already said
            rng.choice(VOCABULARY)
        await self._prefill(prompt_tokens - cached_tokens)
        text = request.resumed_text
        itl = self.itl / self.speedup
        for index in range(request.resumed_tokens, request.resumed_tokens + limit):
            if index > request.resumed_tokens and itl:
                await asyncio.sleep(itl)
            piece = ("" if index == 0 else " ") + rng.choice(VOCABULARY)
            cut = _stop_at(text + piece, request.stop)
            if cut is not None:
                yield Chunk(text=cut[len(text):], tokens=1, finish="stop", prompt_tokens=prompt_tokens,
                            cached_tokens=cached_tokens)
                return
            text += piece
            last = index == request.resumed_tokens + limit - 1
            yield Chunk(text=piece, tokens=1, finish="length" if last else None,
                        prompt_tokens=prompt_tokens if last else None, cached_tokens=cached_tokens if last else None)
        if limit == 0:
            yield Chunk(finish="length", prompt_tokens=prompt_tokens, cached_tokens=cached_tokens)


def _stop_at(text: str, stops: list[str]) -> str | None:
    """The text up to the first stop sequence in it, or None when it holds none."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return text[:min(positions)] if positions else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mocker")
    group.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token (default: 0)")
    group.add_argument("--itl-ms", type=float, default=0.0, help="delay between tokens (default: 0)")
    group.add_argument("--max-tokens", type=int, default=16, help="answer length when a request gives none")
    group.add_argument("--prefill-us-per-token", type=float, default=0.0,
                       help="prefill time per prompt token not in the KV cache, in microseconds (default: 0)")
    group.add_argument("--speedup-ratio", type=float, default=1.0, help="divides every delay (default: 1)")
    group.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                       help="tokens per KV cache block (default: %(default)s)")
    group.add_argument("--num-gpu-blocks", type=int, default=16384,
                       help="the KV cache's capacity in blocks (default: %(default)s)")


def create(args: argparse.Namespace, engine_flags: list[str]) -> MockEngine:
    if not args.model_name:
        raise InferenceError("the mocker needs --model-name NAME, the model it pretends to serve")
    for flag in ("ttft_ms", "itl_ms", "max_tokens", "prefill_us_per_token"):
        if getattr(args, flag) < 0:
            raise InferenceError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must not be negative")
    for flag in ("speedup_ratio", "block_size", "num_gpu_blocks"):
        if getattr(args, flag) <= 0:
            raise InferenceError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be positive")
    model_dir = ""
    if args.model_path:
        model_dir = os.path.abspath(os.path.expanduser(args.model_path))
        if not os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
            raise InferenceError(f"--model-path {args.model_path}: no tokenizer.json there; give a Hugging Face model "
                              f"folder (python -m dynamo.mocker.tiny_model DIR writes a small one)")
    return MockEngine(ttft=args.ttft_ms / 1000, itl=args.itl_ms / 1000, default_max_tokens=args.max_tokens,
                      context_length=args.context_length or 8192,
                      prefill_per_token=args.prefill_us_per_token / 1e6, speedup=args.speedup_ratio,
                      block_size=args.block_size, kv_blocks=args.num_gpu_blocks, model_dir=model_dir)
