"""Our requests and flags onto vLLM's AsyncLLMEngine (vLLM's V1 engine behind the same name).

The worker advertises the model's tokenizer folder (worker.tokenizer_folder), so the frontend sends
token ids, which vLLM takes as they are ({"prompt_token_ids": [...]}); and vLLM's own KV cache
events are relayed to the frontend's KV router (runtime/engine_kv_events.py)."""

from __future__ import annotations

import argparse
import inspect
import uuid
from collections.abc import AsyncIterator
from typing import Any

from dynamo.runtime import worker
from dynamo.runtime.engine_kv_events import EngineKvEvents, relayed
from dynamo.runtime.kv_events import DEFAULT_BLOCK_SIZE
from dynamo.runtime.protocol import OPTIONAL_FEATURES, Chunk, GenerateRequest, RequestError, logprob_entry
from dynamo.runtime.worker import engine_prompt, finish_reason, missing_engine, tokenizer_folder


def engine_argv(args: argparse.Namespace, engine_flags: list[str]) -> list[str]:
    """vLLM's own command line."""
    return worker.engine_argv(args, engine_flags, "--model", "--max-model-len")


def sampling_kwargs(request: GenerateRequest) -> dict[str, Any]:
    """SamplingParams arguments; vLLM's defaults stand where the request gives nothing."""
    kwargs = request.sampling()
    if request.logprobs is not None:
        kwargs["logprobs"] = request.logprobs
    if request.n > 1:
        kwargs["n"] = request.n  # one request, n sequences (each its own seed when one is given)
    return kwargs


def structured_output(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The SamplingParams argument that holds the answer to a JSON schema (a forced tool call, a
    response_format)."""
    if schema is None:
        return {}
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # vLLM before 0.11 named it guided decoding
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}
    return {"structured_outputs": StructuredOutputsParams(json=schema)}


def logprob_entries(token_ids: list[int], logprobs: list[dict[int, Any]] | None, wanted: int
                    ) -> list[dict[str, Any]] | None:
    """vLLM's per-token {token id: Logprob(logprob, rank, decoded_token)} as our entries."""
    if logprobs is None:
        return None
    return [logprob_entry(alternatives[token_id].decoded_token, alternatives[token_id].logprob,
                          ((option.decoded_token, option.logprob) for option in alternatives.values()), wanted)
            for token_id, alternatives in zip(token_ids, logprobs)]


class DeltaTracker:
    """vLLM's outputs, asked for as deltas, turned into our chunks: one per sequence (CompletionOutput,
    `index` among the request's n); a sequence has finished when its finish_reason is set (should
    vLLM list it again, the worker drops what follows its end). vLLM's finish reasons (stop,
    length, abort, repetition, error) become OpenAI's through worker.finish_reason."""

    def __init__(self, request: GenerateRequest | None = None) -> None:
        self.wanted = request.logprobs or 0 if request else 0
        self.resumed_tokens = request.resumed_tokens if request else 0

    def chunks(self, output: Any) -> list[Chunk]:
        prompt_tokens = max(len(output.prompt_token_ids or []) - self.resumed_tokens, 0)  # the answer so far is no prompt
        result = []
        for completion in output.outputs:
            finish = completion.finish_reason
            result.append(Chunk(text=completion.text, tokens=len(completion.token_ids),
                                finish=None if finish is None else finish_reason("vLLM", finish),
                                prompt_tokens=prompt_tokens if finish is not None else None,
                                logprobs=logprob_entries(completion.token_ids, getattr(completion, "logprobs", None),
                                                         self.wanted), index=completion.index))
        return result


class VllmEngine:
    features = frozenset({*OPTIONAL_FEATURES, "n"})

    def __init__(self, engine: Any, tokenizer: Any, kv_relay: EngineKvEvents | None = None, model_dir: str = "") -> None:
        self.engine, self.tokenizer = engine, tokenizer
        self.kv_relay = kv_relay  # vLLM's KV events, relayed (kv_events: what the frontend subscribes to)
        if kv_relay is not None:
            self.kv_events = kv_relay.publisher
        self.model_dir = model_dir

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        prompt = engine_prompt(self.tokenizer, request)
        try:
            params = SamplingParams(**sampling_kwargs(request), **structured_output(request.output_schema()),
                                    output_kind=RequestOutputKind.DELTA)
            tracker = DeltaTracker(request)
            async for output in self.engine.generate(prompt if isinstance(prompt, str) else {"prompt_token_ids": prompt},
                                                     params, uuid.uuid4().hex):
                for chunk in tracker.chunks(output):
                    yield chunk
        except refusals() as error:  # vLLM's own server answers these with a 400
            raise RequestError(f"vLLM refused the request: {error}") from None


def refusals() -> tuple[type[Exception], ...]:
    """What vLLM raises for a request it will not serve (a prompt longer than the model's context, a
    sampling value out of range): VLLMClientError where vLLM has it (0.31.0's VLLMValidationError is
    one, and no ValueError), ValueError everywhere (SamplingParams' checks, older vLLM)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (ValueError, VLLMClientError)


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
    from vllm.distributed.kv_events import KVEventBatch

    kv_relay, engine_flags = relayed(engine_flags, DEFAULT_BLOCK_SIZE, KVEventBatch)
    engine = AsyncLLMEngine.from_engine_args(parse_engine_args(engine_argv(args, engine_flags)))
    tokenizer = engine.get_tokenizer()
    if inspect.isawaitable(tokenizer):  # a coroutine in older vLLM; plain in 0.20.1 and 0.31.0
        tokenizer = await tokenizer
    config = engine.vllm_config
    if kv_relay is not None:
        kv_relay.publisher.block_size = config.cache_config.block_size
        kv_relay.start()
    return VllmEngine(engine, tokenizer, kv_relay,
                      tokenizer_folder(config.model_config.tokenizer, config.model_config.tokenizer_revision))
