"""Our requests and flags onto SGLang's offline Engine (sglang.Engine.async_generate)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

from dynamo.runtime import worker
from dynamo.runtime.protocol import Chunk, GenerateRequest
from dynamo.runtime.worker import chat_prompt, missing_engine

# Our names for SGLang's sampling parameters.
SAMPLING_NAMES = {"max_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
                  "seed": "sampling_seed", "stop": "stop"}


def engine_argv(args: argparse.Namespace, engine_flags: list[str]) -> list[str]:
    """SGLang's server arguments."""
    return worker.engine_argv(args, engine_flags, "--model-path", "--context-length")


def sampling_params(request: GenerateRequest) -> dict[str, Any]:
    return {SAMPLING_NAMES[key]: value for key, value in request.sampling().items()}


class TextTracker:
    """SGLang streams the whole text so far (unless --incremental-streaming-output); we send the new part."""

    def __init__(self) -> None:
        self.text = ""
        self.tokens = 0

    def chunk(self, output: dict[str, Any]) -> Chunk:
        meta = output.get("meta_info", {})
        text = output.get("text", "")
        if text.startswith(self.text):
            delta, self.text = text[len(self.text):], text
        else:  # incremental output: each piece is new
            delta, self.text = text, self.text + text
        completion_tokens = meta.get("completion_tokens", self.tokens)
        tokens, self.tokens = completion_tokens - self.tokens, completion_tokens
        finish = meta.get("finish_reason")
        reason = None
        if finish:
            reason = "length" if finish.get("type") == "length" else "stop"
        return Chunk(text=delta, tokens=tokens, finish=reason,
                     prompt_tokens=meta.get("prompt_tokens") if reason else None)


class SglangEngine:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer_manager.tokenizer

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        prompt = request.prompt if request.messages is None else chat_prompt(self.tokenizer, request.messages)
        tracker = TextTracker()
        stream = await self.engine.async_generate(prompt=prompt, sampling_params=sampling_params(request), stream=True)
        async for output in stream:
            yield tracker.chunk(output)


def server_args(argv: list[str]) -> Any:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="python -m dynamo.sglang (SGLang server arguments)")
    ServerArgs.add_cli_args(parser)
    return ServerArgs.from_cli_args(parser.parse_args(argv))


def create(args: argparse.Namespace, engine_flags: list[str]) -> SglangEngine:
    try:
        import sglang
    except ImportError:
        raise missing_engine("SGLang", "sglang") from None
    return SglangEngine(sglang.Engine(server_args=server_args(engine_argv(args, engine_flags))))
