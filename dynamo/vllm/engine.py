"""Our requests and flags onto vLLM's AsyncLLMEngine (vLLM's V1 engine behind the same name)."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from typing import Any

from dynamo.runtime import worker
from dynamo.runtime.protocol import Chunk, GenerateRequest
from dynamo.runtime.worker import chat_prompt, missing_engine


def engine_argv(args: argparse.Namespace, engine_flags: list[str]) -> list[str]:
    """vLLM's own command line."""
    return worker.engine_argv(args, engine_flags, "--model", "--max-model-len")


def sampling_kwargs(request: GenerateRequest) -> dict[str, Any]:
    """SamplingParams arguments; vLLM's defaults stand where the request gives nothing."""
    return request.sampling()


class DeltaTracker:
    """vLLM's outputs, asked for as deltas, turned into our chunks."""

    def chunk(self, output: Any) -> Chunk:
        completion = output.outputs[0]
        finish = completion.finish_reason
        return Chunk(text=completion.text, tokens=len(completion.token_ids),
                     finish=("stop" if finish == "abort" else finish) if output.finished else None,
                     prompt_tokens=len(output.prompt_token_ids or []) if output.finished else None)


class VllmEngine:
    def __init__(self, engine: Any, tokenizer: Any) -> None:
        self.engine, self.tokenizer = engine, tokenizer

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        prompt = request.prompt if request.messages is None else chat_prompt(self.tokenizer, request.messages)
        params = SamplingParams(**sampling_kwargs(request), output_kind=RequestOutputKind.DELTA)
        tracker = DeltaTracker()
        async for output in self.engine.generate(prompt, params, uuid.uuid4().hex):
            yield tracker.chunk(output)


def parse_engine_args(argv: list[str]) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # vLLM before 0.11
        from vllm.utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="python -m dynamo.vllm (vLLM engine flags)")
    parser = AsyncEngineArgs.add_cli_args(parser)
    return AsyncEngineArgs.from_cli_args(parser.parse_args(argv))


async def create(args: argparse.Namespace, engine_flags: list[str]) -> VllmEngine:
    try:
        from vllm import AsyncLLMEngine
    except ImportError:
        raise missing_engine("vLLM", "vllm") from None
    engine = AsyncLLMEngine.from_engine_args(parse_engine_args(engine_argv(args, engine_flags)))
    return VllmEngine(engine, await engine.get_tokenizer())
