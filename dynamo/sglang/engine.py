"""Our requests and flags onto SGLang's offline Engine (sglang.Engine.async_generate).

The worker advertises the model's tokenizer folder (worker.tokenizer_folder), so the frontend sends
token ids, which SGLang takes as input_ids; and SGLang's own KV cache events are relayed to the
frontend's KV router (runtime/engine_kv_events.py). SGLang's blocks are its pages (--page-size,
1 token by default): for KV routing give it a page of 16 or more tokens, as upstream Dynamo advises,
or the frontend hashes every prompt token by token."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from dynamo.runtime import worker
from dynamo.runtime.engine_kv_events import EngineKvEvents, relayed
from dynamo.runtime.kv_events import DEFAULT_BLOCK_SIZE
from dynamo.runtime.protocol import OPTIONAL_FEATURES, Chunk, GenerateRequest, RequestError, logprob_entry
from dynamo.runtime.worker import engine_prompt, fan_out, finish_reason, missing_engine, tokenizer_folder

# Our names for SGLang's sampling parameters.
SAMPLING_NAMES = {"max_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
                  "seed": "sampling_seed", "stop": "stop"}


def engine_argv(args: argparse.Namespace, engine_flags: list[str]) -> list[str]:
    """SGLang's server arguments."""
    return worker.engine_argv(args, engine_flags, "--model-path", "--context-length")


def sampling_params(request: GenerateRequest) -> dict[str, Any]:
    """SGLang's sampling parameters; the JSON schema of a forced tool call or a response_format
    constrains the answer (json_schema, a JSON string)."""
    params = {SAMPLING_NAMES[key]: value for key, value in request.sampling().items()}
    if request.n > 1:
        params["n"] = request.n  # one request, n answers; each streamed output names its `index`
    schema = request.output_schema()
    if schema is not None:
        params["json_schema"] = json.dumps(schema)
    return params


def generate_kwargs(request: GenerateRequest, prompt: str | list[int]) -> dict[str, Any]:
    """Engine.async_generate's arguments: the prompt (text or input_ids), sampling, logprobs (token
    ids and logprobs: async_generate has no return_text_in_logprobs, so TextTracker decodes them)."""
    kwargs: dict[str, Any] = {"prompt": prompt} if isinstance(prompt, str) else {"input_ids": prompt}
    kwargs["sampling_params"] = sampling_params(request)
    if request.logprobs is not None:
        kwargs.update(return_logprob=True, top_logprobs_num=request.logprobs)
    return kwargs


def finish(reason: dict[str, Any] | None) -> str | None:
    """SGLang's finish_reason ({"type": "stop" | "length" | "abort", ...}) as OpenAI's. An abort
    with a status code is SGLang refusing or failing the request: a 400 is the request's fault
    (its message says why), any other code the engine's; an abort without one ends the answer."""
    if not reason:
        return None
    status = reason.get("status_code")
    if reason.get("type") == "abort" and status is not None:
        message = reason.get("message") or "SGLang aborted the request"
        if status == 400:
            raise RequestError(message)
        raise RuntimeError(f"SGLang aborted the request ({int(status)}): {message}")
    return finish_reason("SGLang", reason.get("type", "stop"))


class TextTracker:
    """SGLang streams the whole text so far (unless --incremental-streaming-output); we send the new
    part. `tokenizer` decodes the tokens of the logprobs."""

    def __init__(self, request: GenerateRequest | None = None, tokenizer: Any = None) -> None:
        self.text = ""
        self.tokens = 0
        self.logprobs_sent = 0
        self.resumed_tokens = request.resumed_tokens if request else 0
        self.tokenizer = tokenizer

    def chunk(self, output: dict[str, Any]) -> Chunk:
        meta = output.get("meta_info", {})
        text = output.get("text", "")
        if text.startswith(self.text):
            delta, self.text = text[len(self.text):], text
        else:  # incremental output: each piece is new
            delta, self.text = text, self.text + text
        completion_tokens = meta.get("completion_tokens", self.tokens)
        tokens, self.tokens = completion_tokens - self.tokens, completion_tokens
        reason = finish(meta.get("finish_reason"))
        prompt_tokens = max(meta.get("prompt_tokens", 0) - self.resumed_tokens, 0) if reason else None
        return Chunk(text=delta, tokens=tokens, finish=reason, prompt_tokens=prompt_tokens,
                     logprobs=self._logprobs(meta, tokens))

    def _logprobs(self, meta: dict[str, Any], tokens: int) -> list[dict[str, Any]] | None:
        """output_token_logprobs [(logprob, id, None)] and output_top_logprobs [[(logprob, id, None)]]:
        the whole answer's so far (or only the new ones, with incremental output)."""
        chosen = meta.get("output_token_logprobs")
        if chosen is None:
            return None
        tops = meta.get("output_top_logprobs") or [[] for _ in chosen]
        if len(chosen) == self.tokens:  # cumulative: the new ones are at the end
            chosen, tops = chosen[self.logprobs_sent:], tops[self.logprobs_sent:]
        self.logprobs_sent += len(chosen)
        decode = self.tokenizer.decode
        return [logprob_entry(decode([token_id]), logprob,
                              ((decode([top_id]), top_logprob) for top_logprob, top_id, _ in top or []))
                for (logprob, token_id, _), top in zip(chosen, tops)]


class SglangEngine:
    features = frozenset({*OPTIONAL_FEATURES, "n"})

    def __init__(self, engine: Any, kv_relay: EngineKvEvents | None = None, model_dir: str = "") -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer_manager.tokenizer
        self.kv_relay = kv_relay  # SGLang's KV events, relayed (kv_events: what the frontend subscribes to)
        if kv_relay is not None:
            self.kv_events = kv_relay.publisher
        self.model_dir = model_dir

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        if request.n > 1 and request.seed is not None:
            # SGLang gives each of the n choices the one sampling_seed: they would be one answer n
            # times. Each choice is asked for on its own, with the seed moved by its index, as vLLM
            # seeds its n sequences.
            async with aclosing(fan_out(self, request)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        trackers: dict[int, TextTracker] = {}  # one per choice: each streams its own text
        stream = await self.engine.async_generate(**generate_kwargs(request, engine_prompt(self.tokenizer, request)),
                                                  stream=True)
        async for output in stream:
            index = output.get("index", 0)
            if index not in trackers:
                trackers[index] = TextTracker(request, self.tokenizer)
            yield dataclasses.replace(trackers[index].chunk(output), index=index)


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
    from sglang.srt.disaggregation.kv_events import KVEventBatch

    kv_relay, engine_flags = relayed(engine_flags, DEFAULT_BLOCK_SIZE, KVEventBatch)
    settings = server_args(engine_argv(args, engine_flags))
    engine = sglang.Engine(server_args=settings)
    if kv_relay is not None:
        # SGLang's event blocks: its pages (times the decode context parallel size, which pages with them)
        kv_relay.publisher.block_size = (settings.page_size or 1) * (getattr(settings, "dcp_size", None) or 1)
        kv_relay.start()
    # ServerArgs may leave the tokenizer unset until the engine resolves it: the model's, then.
    return SglangEngine(engine, kv_relay, tokenizer_folder(settings.tokenizer_path or settings.model_path,
                                                           settings.revision))
