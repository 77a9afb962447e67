"""The llama.cpp adapter. llama-cpp-python's API is synchronous and one `Llama` holds one context,
so requests take turns, and each runs in a thread that hands its pieces to the event loop.

Prompts: a GGUF carries its own tokenizer and chat template, which only llama.cpp reads; the
frontend's preprocessing reads a Hugging Face tokenizer.json (frontend/preprocess.py). So by
default the worker templates and tokenizes chats itself, with the GGUF's own; given
`--model-config DIR`, the Hugging Face folder of the model the GGUF was made from, the worker
advertises it, checks at start that its tokenizer gives the GGUF's tokens, and then receives token
ids from the frontend (used as they are; the usage counts them)."""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import os
import random
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

from dynamo.runtime.protocol import Chunk, GenerateRequest, RequestError, logprob_entry
from dynamo.runtime.worker import InferenceError, model_source, tokenizer_folder

DEFAULT_CONTEXT = 4096
_END = object()


def max_tokens(request: GenerateRequest, context_length: int, prompt_tokens: int) -> int:
    """The answer's limit: the request's, else the context's end (as OpenAI). RequestError when the
    prompt and the answer do not fit in the context."""
    room = context_length - prompt_tokens
    limit = room if request.max_tokens is None else request.max_tokens
    if room <= 0 or limit > room:
        raise RequestError(f"the prompt ({prompt_tokens} tokens) plus max_tokens ({limit}) "
                           f"exceed the context length ({context_length}); shorten the prompt, lower max_tokens "
                           f"or start the worker with a larger --context-length")
    return limit


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


def split_at_stop(text: str, stops: list[str]) -> tuple[str, str, bool]:
    """`text` as what can be sent now, what is held back because a stop string may begin there, and
    whether a stop string ends the answer (the text up to it is sent, the stop string is not)."""
    found = [text.index(stop) for stop in stops if stop in text]
    if found:
        return text[:min(found)], "", True
    held = max((size for stop in stops for size in range(min(len(stop) - 1, len(text)), 0, -1)
                if text.endswith(stop[:size])), default=0)
    return text[:len(text) - held], text[len(text) - held:], False


def release(pending: list[tuple[int, Any]], sent: int, held: str, stopped: bool) -> tuple[list[Any], list]:
    """The logprob entries of the tokens whose text was pending, (where it begins, entry), once the
    first `sent` characters go out: those of the tokens that begin there go out with them; the others
    stay while text is `held` back, go out too when none is (tokens without text), and are dropped
    when a stop string cut them off. Returns the entries that go out and those still pending."""
    out = [entry for start, entry in pending if start < sent or not (held or stopped)]
    return out, [(start - sent, entry) for start, entry in pending if start >= sent] if held else []


class LlamaCppEngine:
    """`logits_all`: the model was loaded keeping every position's logits, which logprobs need."""

    def __init__(self, llm: Any, logits_all: bool = False, model_dir: str = "") -> None:
        self.llm = llm
        self.model_dir = model_dir  # the Hugging Face folder the frontend preprocesses with ("" when none)
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
            limit = max_tokens(request, self.llm.n_ctx(), len(prompt) + len(resumed))
            # Closed here, not when the garbage collector gets to it: the thread must have stopped before
            # the next request takes its turn on the context (two in llama.cpp at once abort the process).
            async with aclosing(_threaded(self._answer(prompt + resumed, request, limit))) as chunks:
                async for chunk in chunks:
                    if chunk.finish:
                        chunk.prompt_tokens = len(prompt)
                    yield chunk

    def _answer(self, tokens: list[int], request: GenerateRequest, limit: int) -> Iterator[Chunk]:
        """The answer, a chunk a token, from llama.cpp's sampled token ids (run in a thread).

        Not `Llama.create_completion`: llama-cpp-python 0.3.16 streams text a token at a time and
        loses characters made of several tokens (abetlen/llama-cpp-python#372), and an answer that
        reaches max_tokens inside such a character runs past it (the `multibyte_fix` `continue` in
        `_create_completion`). `generate`'s sampling defaults are `create_completion`'s."""
        import llama_cpp

        llm, stops = self.llm, request.stop or []
        # llama.cpp's seed is 32 bits, and 0xFFFFFFFF asks it for a random one: any other seed maps below.
        llm.set_seed(random.getrandbits(32) if request.seed is None else request.seed % 0xFFFFFFFF)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")  # as its non-streamed text
        held, produced = "", 0
        pending: list[tuple[int, dict[str, Any]]] = []  # logprob entries of held text: (where it begins, entry)
        given = {"temp": request.temperature, "top_p": request.top_p}
        sampled = llm.generate(tokens, grammar=grammar(request), **{k: v for k, v in given.items() if v is not None})
        try:
            for token in sampled:
                if llama_cpp.llama_token_is_eog(llm._model.vocab, token):  # as _create_completion asks
                    yield Chunk(text=held, finish="stop", logprobs=[entry for _, entry in pending]
                                if request.logprobs is not None else None)
                    return
                produced += 1
                piece = decoder.decode(llm.detokenize([token]))
                if request.logprobs is not None:
                    pending.append((len(held), self._logprobs(token, request.logprobs)))
                text, held, stopped = split_at_stop(held + piece, stops)
                finish = "stop" if stopped else "length" if produced == limit else None
                if finish == "length":  # what was held back goes out; a character cut by the limit does not
                    text, held = text + held, ""
                entries, pending = release(pending, len(text), held, stopped)
                yield Chunk(text=text, tokens=1, finish=finish, logprobs=entries if request.logprobs is not None
                            else None)
                if finish:
                    return
        finally:
            sampled.close()

    def _logprobs(self, token: int, wanted: int) -> dict[str, Any]:
        """The sampled token's logprob and the `wanted` likeliest, from the logits it was sampled from."""
        import numpy
        from llama_cpp import Llama

        llm = self.llm
        logprobs = Llama.logits_to_logprobs(llm.scores[llm.n_tokens - 1])
        best = numpy.argpartition(-logprobs, wanted - 1)[:wanted] if wanted else ()  # not a sort of the vocabulary
        text = lambda other: llm.detokenize([int(other)]).decode(errors="ignore")  # noqa: E731
        return logprob_entry(text(token), float(logprobs[token]), ((text(other), float(logprobs[other]))
                                                                     for other in best))


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
        # The next request must not share the context with this one: wait for the thread even when
        # cancelled again meanwhile (a cancel frame, then the connection dropping), then pass it on.
        joined = asyncio.ensure_future(asyncio.to_thread(thread.join))
        cancelled = False
        while not joined.done():
            try:
                await asyncio.shield(joined)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError


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
    group.add_argument("--model-config", metavar="DIR",
                       help="the Hugging Face folder (tokenizer.json, chat template) of the model the GGUF was made "
                            "from: the frontend then templates and tokenizes, and sends token ids")
    group.add_argument("--logits-all", action="store_true",
                       help="keep every position's logits so that requests may ask for logprobs "
                            "(memory: context length × vocabulary × 4 bytes)")


def create(args: argparse.Namespace, _engine_flags: list[str]) -> LlamaCppEngine:
    path = model_source(args)
    if not os.path.isfile(path):
        raise InferenceError(f"{path}: no such GGUF file; download one (for example Qwen3-0.6B-Q8_0.gguf) "
                          f"and pass --model-path")
    try:
        from llama_cpp import Llama
    except ImportError:
        raise InferenceError("llama-cpp-python is not installed; pip install 'dynamo[llama_cpp]'") from None
    try:
        llm = Llama(model_path=path, n_ctx=args.context_length or DEFAULT_CONTEXT, n_gpu_layers=args.n_gpu_layers,
                    n_threads=args.threads, logits_all=args.logits_all, verbose=False)
    except ValueError as error:
        raise InferenceError(f"{path}: llama.cpp cannot load it ({error})") from None
    return LlamaCppEngine(llm, args.logits_all, matching_folder(llm, args.model_config) if args.model_config else "")


# Text whose tokens tell two tokenizers apart: words, spacing, digits, punctuation, accents, CJK.
TOKENIZER_SAMPLE = "Hello, world!  The KV cache holds 1,234 blocks;\n\tça va? 日本語のテキスト end."


def matching_folder(llm: Any, folder: str) -> str:
    """The --model-config folder, once its tokenizer.json gives the GGUF's tokens for a sample text
    (both without special tokens); InferenceError when it has none or they differ."""
    found = tokenizer_folder(folder)
    if not found:
        raise InferenceError(f"--model-config {folder}: no tokenizer.json there; give the Hugging Face folder of the "
                             f"model the GGUF was made from")
    from tokenizers import Tokenizer

    theirs = Tokenizer.from_file(os.path.join(found, "tokenizer.json")).encode(
        TOKENIZER_SAMPLE, add_special_tokens=False).ids
    ours = llm.tokenize(TOKENIZER_SAMPLE.encode(), add_bos=False, special=False)
    if theirs != ours:
        raise InferenceError(f"--model-config {folder}: its tokenizer.json does not tokenize as the GGUF does; give the "
                             f"folder of the model the GGUF was made from, or leave --model-config out")
    return found
