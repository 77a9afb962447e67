"""The llama.cpp adapter. llama-cpp-python's API is synchronous and one `Llama` holds one context,
so requests take turns, and each runs in a thread that hands its pieces to the event loop."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from dynamo.runtime.protocol import Chunk, GenerateRequest, RequestError
from dynamo.runtime.worker import EngineError, model_source

DEFAULT_CONTEXT = 4096
_END = object()


def completion_kwargs(request: GenerateRequest, context_length: int, prompt_tokens: int) -> dict[str, Any]:
    """Our request as `Llama.create_completion` arguments (its defaults where we have none).
    RequestError when the prompt and the answer do not fit in the context."""
    kwargs = request.sampling()
    if request.logprobs is not None:
        kwargs["logprobs"] = request.logprobs
    room = context_length - prompt_tokens
    kwargs.setdefault("max_tokens", room)  # as OpenAI: up to the context's end
    if room <= 0 or kwargs["max_tokens"] > room:
        raise RequestError(f"the prompt ({prompt_tokens} tokens) plus max_tokens ({kwargs['max_tokens']}) "
                           f"exceed the context length ({context_length}); shorten the prompt, lower max_tokens "
                           f"or start the worker with a larger --context-length")
    return kwargs


def grammar(request: GenerateRequest) -> Any:
    """The llama.cpp grammar that holds the answer to the request's JSON schema (a forced tool call,
    response_format), or None."""
    schema = request.output_schema()
    if schema is None:
        return None
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        raise RequestError(f"response_format: llama.cpp cannot turn this JSON schema into a grammar ({error})") \
            from None


def logprobs(piece: dict[str, Any] | None, wanted: int) -> list[dict[str, Any]] | None:
    """llama.cpp's logprobs of one streamed piece, as ours: the token, its logprob, the top `wanted`."""
    if piece is None:
        return None
    entries = []
    for token, logprob, top in zip(piece["tokens"], piece["token_logprobs"], piece["top_logprobs"]):
        best = sorted((top or {}).items(), key=lambda item: item[1], reverse=True)[:wanted]
        entries.append({"token": token, "logprob": logprob,
                        "top": [{"token": text, "logprob": value} for text, value in best]})
    return entries


class TokenCap:
    """A llama.cpp stopping criterion that holds an answer to max_tokens. llama-cpp-python 0.3.16 checks
    max_tokens only once a token completes a UTF-8 character: an answer that reaches the limit in the
    middle of a character runs past it (the `multibyte_fix` `continue` in `Llama._create_completion`,
    https://github.com/abetlen/llama-cpp-python/blob/v0.3.16/llama_cpp/llama.py; no upstream issue).
    llama.cpp calls this after sampling each token, with the tokens before it."""

    def __init__(self, prompt_tokens: int, max_tokens: int) -> None:
        self.limit = prompt_tokens + max_tokens
        self.reached = False

    def __call__(self, input_ids: Any, _logits: Any) -> bool:
        self.reached = self.reached or len(input_ids) >= self.limit
        return self.reached


class LlamaCppEngine:
    """`logits_all`: the model was loaded keeping every position's logits, which logprobs need."""

    def __init__(self, llm: Any, logits_all: bool = False) -> None:
        self.llm = llm
        self.turn = asyncio.Lock()
        self.formatter = _chat_formatter(llm)
        self.features = frozenset({"tools", "response_format"} | ({"logprobs"} if logits_all else set()))

    def prompt_tokens(self, request: GenerateRequest) -> list[int]:
        """The prompt as the model's tokens; chats go through the GGUF's chat template, with the tools."""
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        if request.messages is None:
            return self.llm.tokenize((request.prompt or "").encode(), add_bos=True, special=True)
        if self.formatter is None:
            raise RequestError("this GGUF model has no chat template (tokenizer.chat_template); "
                               "use /v1/completions with a prompt")
        formatted = self.formatter(messages=request.messages, tools=request.tools, tool_choice=request.tool_choice)
        return self.llm.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        async with self.turn:
            prompt = self.prompt_tokens(request)
            # A migrated request goes on after the answer so far, which is not part of the prompt's count.
            resumed = self.llm.tokenize(request.resumed_text.encode(), add_bos=False, special=False) \
                if request.resumed_text else []
            kwargs = completion_kwargs(request, self.llm.n_ctx(), len(prompt) + len(resumed))
            from llama_cpp import StoppingCriteriaList

            counted = 0
            cap = TokenCap(len(prompt) + len(resumed), kwargs["max_tokens"])
            pieces = self.llm.create_completion(prompt=prompt + resumed, stream=True, grammar=grammar(request),
                                                stopping_criteria=StoppingCriteriaList([cap]),
                                                **kwargs)
            async for piece in _threaded(pieces):
                choice = piece["choices"][0]
                text, finish = choice.get("text") or "", choice.get("finish_reason")
                if finish and cap.reached:
                    finish = "length"  # llama-cpp-python calls a stop by a stopping criterion "stop"
                # A piece is a token, except where llama.cpp held back a partial character and joined
                # pieces; at the length limit the count is exact.
                tokens = max(kwargs["max_tokens"] - counted, 0) if finish == "length" else int(bool(text))
                counted += tokens
                yield Chunk(text=text, tokens=tokens, finish=finish, prompt_tokens=len(prompt) if finish else None,
                            logprobs=logprobs(choice.get("logprobs"), request.logprobs or 0)
                            if request.logprobs is not None else None)
                if finish:
                    return
            yield Chunk(finish="stop", prompt_tokens=len(prompt))


async def _threaded(pieces: Iterator[Any]) -> AsyncIterator[Any]:
    """Iterate a blocking generator in a thread; stops it when the consumer goes away."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for piece in pieces:
                loop.call_soon_threadsafe(queue.put_nowait, piece)
                if stop.is_set():
                    break
        except Exception as error:  # handed to the loop, raised there
            loop.call_soon_threadsafe(queue.put_nowait, error)
        finally:
            pieces.close()
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    thread = threading.Thread(target=produce, name="llama-cpp", daemon=True)
    thread.start()
    try:
        while (piece := await queue.get()) is not _END:
            if isinstance(piece, Exception):
                raise piece
            yield piece
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)  # the next request must not share the context with this one


def _chat_formatter(llm: Any):
    """The GGUF's own chat template, as llama-cpp-python itself builds it (None when it has none)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None

    def token_text(token: int) -> str:
        return llm.detokenize([token], special=True).decode(errors="ignore") if token != -1 else ""

    return Jinja2ChatFormatter(template=template, eos_token=token_text(llm.token_eos()),
                               bos_token=token_text(llm.token_bos()), stop_token_ids=[llm.token_eos()])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("llama.cpp")
    group.add_argument("--n-gpu-layers", type=int, default=-1,
                       help="layers to put on the GPU when llama.cpp was built for one (default: all)")
    group.add_argument("--threads", type=int, help="CPU threads (default: llama.cpp's choice)")
    group.add_argument("--logits-all", action="store_true",
                       help="keep every position's logits so that requests may ask for logprobs "
                            "(memory: context length × vocabulary × 4 bytes)")


def create(args: argparse.Namespace, _engine_flags: list[str]) -> LlamaCppEngine:
    path = model_source(args)
    if not os.path.isfile(path):
        raise EngineError(f"{path}: no such GGUF file; download one (for example Qwen3-0.6B-Q8_0.gguf) "
                          f"and pass --model-path")
    try:
        from llama_cpp import Llama
    except ImportError:
        raise EngineError("llama-cpp-python is not installed; pip install 'dynamo[llama_cpp]'") from None
    try:
        llm = Llama(model_path=path, n_ctx=args.context_length or DEFAULT_CONTEXT, n_gpu_layers=args.n_gpu_layers,
                    n_threads=args.threads, logits_all=args.logits_all, verbose=False)
    except ValueError as error:
        raise EngineError(f"{path}: llama.cpp cannot load it ({error})") from None
    return LlamaCppEngine(llm, args.logits_all)
