"""The llama.cpp adapter. llama-cpp-python's API is synchronous and one `Llama` holds one context,
so requests take turns, and each runs in a thread that hands its pieces to the event loop."""

from __future__ import annotations

import argparse
import asyncio
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
    room = context_length - prompt_tokens
    kwargs.setdefault("max_tokens", room)  # as OpenAI: up to the context's end
    if room <= 0 or kwargs["max_tokens"] > room:
        raise RequestError(f"the prompt ({prompt_tokens} tokens) plus max_tokens ({kwargs['max_tokens']}) "
                           f"exceed the context length ({context_length}); shorten the prompt, lower max_tokens "
                           f"or start the worker with a larger --context-length")
    return kwargs


class LlamaCppEngine:
    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.turn = asyncio.Lock()
        self.formatter = _chat_formatter(llm)

    def prompt_tokens(self, request: GenerateRequest) -> list[int]:
        """The prompt as the model's tokens; chats go through the GGUF's chat template."""
        if request.messages is None:
            return self.llm.tokenize((request.prompt or "").encode(), add_bos=True, special=True)
        if self.formatter is None:
            raise RequestError("this GGUF model has no chat template (tokenizer.chat_template); "
                               "use /v1/completions with a prompt")
        formatted = self.formatter(messages=request.messages)
        return self.llm.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        async with self.turn:
            prompt = self.prompt_tokens(request)
            kwargs = completion_kwargs(request, self.llm.n_ctx(), len(prompt))
            counted = 0
            async for piece in _threaded(self.llm.create_completion(prompt=prompt, stream=True, **kwargs)):
                choice = piece["choices"][0]
                text, finish = choice.get("text") or "", choice.get("finish_reason")
                # A piece is a token, except where llama.cpp held back a partial character and joined
                # pieces; at the length limit the count is exact.
                tokens = max(kwargs["max_tokens"] - counted, 0) if finish == "length" else int(bool(text))
                counted += tokens
                yield Chunk(text=text, tokens=tokens, finish=finish, prompt_tokens=len(prompt) if finish else None)
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
                    n_threads=args.threads, verbose=False)
    except ValueError as error:
        raise EngineError(f"{path}: llama.cpp cannot load it ({error})") from None
    return LlamaCppEngine(llm)
