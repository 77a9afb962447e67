"""The mocker's engine: words from a fixed vocabulary, one token each, at a chosen pace.

The answer depends only on the seed (or the prompt, when no seed is given), so tests can check it;
a request resumed after a migration goes on exactly where the first worker stopped. A "token" is a
whitespace-separated word, for the prompt's count as for the answer's, or one prompt token id.
It serves none of the optional features (tools, logprobs, response_format).
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dynamo.runtime.protocol import Chunk, GenerateRequest, RequestError
from dynamo.runtime.worker import EngineError

VOCABULARY = ("the", "model", "says", "hello", "and", "then", "thinks", "about", "tokens", "while",
              "a", "frontend", "routes", "requests", "to", "workers", "that", "stream", "answers", "back")


@dataclass
class MockEngine:
    ttft: float = 0.0  # seconds before the first token
    itl: float = 0.0  # seconds between tokens
    default_max_tokens: int = 16
    context_length: int = 8192
    features = frozenset()

    def prompt_tokens(self, request: GenerateRequest) -> int:
        if request.prompt_token_ids is not None:
            return len(request.prompt_token_ids)
        if request.messages is not None:
            return sum(len(str(message.get("content") or "").split()) + 2 for message in request.messages)
        return len((request.prompt or "").split())

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        prompt_tokens = self.prompt_tokens(request)
        limit = request.max_tokens if request.max_tokens is not None \
            else max(self.default_max_tokens - request.resumed_tokens, 0)  # the whole answer, resumed or not
        if prompt_tokens + limit > self.context_length:
            raise RequestError(f"the prompt ({prompt_tokens} tokens) plus max_tokens ({limit}) exceed this "
                               f"model's context length ({self.context_length}); shorten the prompt or lower max_tokens")
        rng = random.Random(request.seed if request.seed is not None
                            else repr(request.messages or request.prompt or request.prompt_token_ids))
        for _ in range(request.resumed_tokens):  # the words the first worker already said
            rng.choice(VOCABULARY)
        if self.ttft:
            await asyncio.sleep(self.ttft)
        text = request.resumed_text
        for index in range(request.resumed_tokens, request.resumed_tokens + limit):
            if index > request.resumed_tokens and self.itl:
                await asyncio.sleep(self.itl)
            piece = ("" if index == 0 else " ") + rng.choice(VOCABULARY)
            cut = _stop_at(text + piece, request.stop)
            if cut is not None:
                yield Chunk(text=cut[len(text):], tokens=1, finish="stop", prompt_tokens=prompt_tokens)
                return
            text += piece
            last = index == request.resumed_tokens + limit - 1
            yield Chunk(text=piece, tokens=1, finish="length" if last else None,
                        prompt_tokens=prompt_tokens if last else None)
        if limit == 0:
            yield Chunk(finish="length", prompt_tokens=prompt_tokens)


def _stop_at(text: str, stops: list[str]) -> str | None:
    """The text up to the first stop sequence in it, or None when it holds none."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return text[:min(positions)] if positions else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mocker")
    group.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token (default: 0)")
    group.add_argument("--itl-ms", type=float, default=0.0, help="delay between tokens (default: 0)")
    group.add_argument("--max-tokens", type=int, default=16, help="answer length when a request gives none")


def create(args: argparse.Namespace, engine_flags: list[str]) -> MockEngine:
    if not args.model_name:
        raise EngineError("the mocker needs --model-name NAME, the model it pretends to serve")
    for flag in ("ttft_ms", "itl_ms", "max_tokens"):
        if getattr(args, flag) < 0:
            raise EngineError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must not be negative")
    return MockEngine(ttft=args.ttft_ms / 1000, itl=args.itl_ms / 1000, default_max_tokens=args.max_tokens,
                      context_length=args.context_length or 8192)
