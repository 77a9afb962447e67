"""Our requests and flags onto TensorRT-LLM's LLM API (LLM.generate_async with streaming).

The worker advertises the model's tokenizer folder (worker.tokenizer_folder), so the frontend sends
token ids, which generate_async takes as the prompt (a list of ints)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dynamo.runtime.protocol import OPTIONAL_FEATURES, Chunk, GenerateRequest, logprob_entry
from dynamo.runtime.worker import (
    InferenceError,
    engine_prompt,
    finish_reason,
    missing_engine,
    model_source,
    tokenizer_folder,
)


def llm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of tensorrt_llm.LLM: ours, then --extra-engine-args (a YAML mapping of
    LLM arguments, as trtllm-serve's --extra_llm_api_options), which wins."""
    kwargs: dict[str, Any] = {"model": model_source(args), "tensor_parallel_size": args.tensor_parallel_size,
                              "guided_decoding_backend": "xgrammar"}  # for tool calls and response_format
    if args.context_length:
        kwargs["max_seq_len"] = args.context_length
    if args.max_batch_size:
        kwargs["max_batch_size"] = args.max_batch_size
    if args.extra_engine_args:
        import yaml

        path = Path(args.extra_engine_args)
        try:
            extra = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise InferenceError(f"--extra-engine-args {path}: cannot read it ({error})") from None
        if not isinstance(extra, dict):
            raise InferenceError(f"--extra-engine-args {path}: expected a mapping of LLM arguments, got "
                              f"{type(extra).__name__}")
        kwargs.update(extra)
    return kwargs


def sampling_kwargs(request: GenerateRequest) -> dict[str, Any]:
    """SamplingParams arguments. TensorRT-LLM's LLM API decodes greedily when no top_p or top_k is
    given (SamplingParams._greedy_decoding; older versions whatever the temperature) and refuses
    n > 1 then: a request that is not greedy gets OpenAI's default top_p of 1, and samples as it
    would on vLLM and SGLang. (Greedy n > 1 never reaches the engine: worker.answer.)"""
    kwargs = request.sampling()
    if not request.greedy():
        kwargs.setdefault("top_p", 1.0)
    if request.logprobs is not None:
        kwargs["logprobs"] = request.logprobs
    if request.n > 1:
        kwargs["n"] = request.n  # one request, n sequences: RequestOutput.outputs, each with its index
    return kwargs


def guided_decoding(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The SamplingParams argument that holds the answer to a JSON schema (a forced tool call, a
    response_format); the LLM is built with a guided_decoding_backend for it (llm_kwargs)."""
    if schema is None:
        return {}
    from tensorrt_llm.sampling_params import GuidedDecodingParams

    return {"guided_decoding": GuidedDecodingParams(json=schema)}


class TrtllmEngine:
    features = frozenset({*OPTIONAL_FEATURES, "n"})

    def __init__(self, llm: Any, model_dir: str = "") -> None:
        self.llm = llm
        self.model_dir = model_dir

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        from tensorrt_llm import SamplingParams

        prompt = engine_prompt(self.llm.tokenizer, request)
        params = SamplingParams(**sampling_kwargs(request), **guided_decoding(request.output_schema()))
        async for output in self.llm.generate_async(prompt, sampling_params=params, streaming=True):
            for piece in chunks(output, request, self.llm.tokenizer):
                yield piece


def chunks(output: Any, request: GenerateRequest | None = None, tokenizer: Any = None) -> list[Chunk]:
    """One streamed RequestOutput: a chunk per sequence (n of them, each with its index) that has
    news. TensorRT-LLM lists every sequence in each output, a finished one too: the worker drops
    what follows a sequence's end."""
    return [chunk(output, completion, request, tokenizer) for completion in output.outputs
            if completion.text_diff or completion.token_ids_diff or completion.finish_reason is not None]


def chunk(output: Any, completion: Any, request: GenerateRequest | None = None, tokenizer: Any = None) -> Chunk:
    """One sequence of a streamed RequestOutput: its newest text and tokens (text_diff,
    token_ids_diff) and their logprobs (logprobs_diff: a float per token, or {token id: Logprob}
    with the alternatives)."""
    finish = completion.finish_reason
    resumed = request.resumed_tokens if request else 0
    logprobs = None
    if request is not None and request.logprobs is not None:
        logprobs = []
        for token_id, value in zip(completion.token_ids_diff, getattr(completion, "logprobs_diff", None) or []):
            if isinstance(value, dict):
                logprobs.append(logprob_entry(tokenizer.decode([token_id]), value[token_id].logprob,
                                              ((tokenizer.decode([option]), entry.logprob)
                                               for option, entry in value.items()), request.logprobs))
            else:
                logprobs.append(logprob_entry(tokenizer.decode([token_id]), value))
    return Chunk(text=completion.text_diff, tokens=len(completion.token_ids_diff),
                 finish=None if finish is None else finish_reason("TensorRT-LLM", finish),
                 prompt_tokens=max(len(output.prompt_token_ids) - resumed, 0) if finish else None,
                 logprobs=logprobs, index=completion.index)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TensorRT-LLM")
    group.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per model (default: 1)")
    group.add_argument("--max-batch-size", type=int, help="largest batch the engine schedules")
    group.add_argument("--extra-engine-args", help="YAML file of further tensorrt_llm.LLM arguments")


def create(args: argparse.Namespace, _engine_flags: list[str]) -> TrtllmEngine:
    kwargs = llm_kwargs(args)
    try:
        from tensorrt_llm import LLM
    except ImportError:
        raise missing_engine("TensorRT-LLM", "trtllm") from None
    tokenizer = kwargs.get("tokenizer") or kwargs["model"]
    return TrtllmEngine(LLM(**kwargs), tokenizer_folder(tokenizer if isinstance(tokenizer, str) else None,
                                                        kwargs.get("revision")))
