"""Preprocessing in the frontend, as upstream does: a chat goes through the model's chat template and
tokenizer here, and the worker receives token ids (so the KV router hashes the very tokens the
engine caches, and the usage counts them).

The model folder is the one a worker advertises (discovery.Instance.model_dir; only engines that
take token ids advertise one). From it: tokenizer.json (Hugging Face `tokenizers`), and the chat
template from chat_template.jinja or tokenizer_config.json's "chat_template" (a string, or named
templates: "tool_use" for a chat with tools when there is one, else "default"), rendered with the
semantics of transformers' apply_chat_template: a sandboxed Jinja environment with trim_blocks and
lstrip_blocks and loop controls, its `tojson` filter, `raise_exception` and `strftime_now`, the
special tokens (bos_token, eos_token, ...) as variables, `add_generation_prompt=True` and the tools;
the text is then tokenized without adding special tokens, as the template writes them.

Speed: fastokens encodes where it reads every part of the tokenizer.json (byte-level BPE, as Llama 3's,
Qwen's and DeepSeek's): a Rust tokenizer for serving that gives `tokenizers`' ids (its authors' claim;
tests/test_preprocess.py compares them over tokenizers of each kind) about ten times faster, a
2,000-token chat the first time in about 0.1 ms of CPU, not 1.5 (benchmarks/kv_routing.py
--preprocessing). It refuses, when loading, a tokenizer with a part it lacks (NFKC, Metaspace, ...):
those go to `tokenizers`. Either way: `tokenizers` splits a text at its added tokens (<|im_start|> and
the like) before anything else, and normalizes and pre-tokenizes each piece between them on its own, so
the text between two of them is tokenized the same wherever it stands. The tokens of each such piece are
kept (the most recently used, up to CACHED_CHARACTERS of text), and a long system prompt that comes
again costs a dictionary lookup, not a second tokenization. That holds unless an added token strips or
normalizes its neighbours (lstrip, rstrip, single_word, normalized) or a Metaspace pre-tokenizer marks
only the text's first piece (prepend_scheme "first", as Llama and Mistral tokenizers have): such
tokenizers tokenize the whole text every time. Tokens are counted as transformers does, without the
truncation or padding a tokenizer.json may carry. tests/test_preprocess.py checks the cached tokens
against the whole text's, property-based, over tokenizers of each kind.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

from dynamo.runtime.protocol import GenerateRequest, RequestError

log = logging.getLogger("dynamo.frontend")

CACHED_CHARACTERS = 16 * 1024 * 1024
# Through both tokenizers at load: case, contractions, digits, whitespace runs, accents, CJK, an emoji.
SAMPLE = "Hello, World! It's 2026-12-03: 3.14 x 10^9 isn't   much.\n\n\t naïve café Ñandú 東京 🚀 ok?"
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class PreprocessError(Exception):
    """The model folder cannot be used; the message names the file and the fix."""


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise RequestError(f"the model's chat template refused the chat: {message}")


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json gives it: a string, or an AddedToken's fields."""
    return value.get("content") if isinstance(value, dict) else value


def _marks_first_piece(pre_tokenizer: dict[str, Any]) -> bool:
    """Whether a pre-tokenizer as tokenizer.json writes it (or one in its sequence) is a Metaspace that
    prepends its replacement to the text's first piece only."""
    return pre_tokenizer.get("type") == "Metaspace" and pre_tokenizer.get("prepend_scheme") == "first" or \
        any(_marks_first_piece(inner) for inner in pre_tokenizer.get("pretokenizers", []))


def _fast_tokenizer(path: Path, reference: Any) -> Any | None:
    """fastokens' tokenizer of this tokenizer.json, without truncation or padding; None where fastokens
    lacks a part of it (it raises ValueError naming the part) or encodes SAMPLE, with the tokenizer's
    added tokens, otherwise than `reference` (tokenizers' own, of the same file) does."""
    import fastokens

    try:
        tokenizer = fastokens.Tokenizer.from_file(str(path))
    except ValueError:
        return None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    sample = SAMPLE + "".join(token.content for token in reference.get_added_tokens_decoder().values())
    # Its first encode also sets it up (1.7 ms): at load, not in a request.
    if tokenizer.encode(sample, add_special_tokens=True).ids != reference.encode(sample, add_special_tokens=True).ids:
        log.warning("%s: fastokens encodes it otherwise than tokenizers; the frontend encodes with tokenizers", path)
        return None
    return tokenizer


class Preprocessor:
    def __init__(self, folder: str | Path) -> None:
        from jinja2.exceptions import TemplateSyntaxError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        # One request's tokens on this thread: tokenizers' own thread pool would only take cores from the
        # event loop and the other processes (measured: 20 % more CPU per 2,000-token chat).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise PreprocessError("the tokenizers package is not installed here; pip install tokenizers") from None

        folder = Path(folder)
        try:
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as error:  # tokenizers raises its own Exception for a missing or bad file
            raise PreprocessError(f"{folder / 'tokenizer.json'}: cannot load the tokenizer ({error}); "
                                  f"give a model folder with a Hugging Face tokenizer.json") from None
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        templates = config.get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            templates = (folder / "chat_template.jinja").read_text()
        if isinstance(templates, list):
            templates = {entry["name"]: entry["template"] for entry in templates}
        elif templates is not None:
            templates = {"default": templates}
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        environment.filters["tojson"] = _tojson
        environment.globals["raise_exception"] = _raise
        environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
        try:
            self.templates = {name: environment.from_string(text) for name, text in (templates or {}).items()}
        except TemplateSyntaxError as error:
            raise PreprocessError(f"{folder}: its chat template does not parse ({error})") from None
        self.special = {name: _token_text(config[name]) for name in SPECIAL_TOKENS if config.get(name)}
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.fast = _fast_tokenizer(folder / "tokenizer.json", self.tokenizer)
        # encode_batch_fast (tokenizers 0.20 and later) leaves out the offsets that encode tracks: a fifth less time
        self._encode = self.fast.encode_batch if self.fast else \
            getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        added = list(self.tokenizer.get_added_tokens_decoder().values())
        strips = any(token.lstrip or token.rstrip or token.single_word or token.normalized for token in added)
        pre_tokenizer = self.tokenizer.pre_tokenizer
        first_only = pre_tokenizer is not None and _marks_first_piece(json.loads(pre_tokenizer.__getstate__()))
        self._splits = not strips and not first_only  # the pieces between added tokens tokenize alone
        contents = sorted((token.content for token in added), key=len, reverse=True)
        self._added = re.compile("(" + "|".join(map(re.escape, contents)) + ")") if contents else None
        self._pieces: OrderedDict[str, list[int]] = OrderedDict()
        self._cached_characters = 0

    def chat_text(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        template = self.templates.get("tool_use" if tools else "default") or self.templates.get("default")
        if template is None:
            raise RequestError("the model has no chat template; use /v1/completions with a prompt")
        try:
            return template.render(messages=messages, tools=tools, add_generation_prompt=True, **self.special)
        except RequestError:
            raise
        except Exception as error:  # a template's own error (a missing key, a bad loop) is the chat's
            raise RequestError(f"the model's chat template failed on this chat: {error}") from None

    def tokens(self, text: str) -> list[int]:
        if self._added is None or not self._splits:
            return self._ids(text)
        ids: list[int] = []
        for piece in self._added.split(text):
            if piece:
                ids += self._piece(piece)
        return ids

    def _piece(self, piece: str) -> list[int]:
        found = self._pieces.get(piece)
        if found is not None:
            self._pieces.move_to_end(piece)
            return found
        found = self._pieces[piece] = self._ids(piece)
        self._cached_characters += len(piece)
        while self._cached_characters > CACHED_CHARACTERS:
            self._cached_characters -= len(self._pieces.popitem(last=False)[0])
        return found

    def _ids(self, text: str) -> list[int]:
        return self._encode([text], add_special_tokens=False)[0].ids

    def prepare(self, request: GenerateRequest) -> GenerateRequest:
        """The request as token ids; one with ids already stays. A chat goes through the template,
        which writes its special tokens itself; a plain prompt gets the tokenizer's own (a BOS token,
        where the model has one), as the engines add them to a prompt text."""
        if request.prompt_token_ids is not None:
            return request
        if request.messages is None:
            ids = self._encode([request.prompt or ""], add_special_tokens=True)[0].ids
        else:
            ids = self.tokens(self.chat_text(request.messages, request.tools))
        return dataclasses.replace(request, prompt_token_ids=ids, messages=None, prompt=None)


@functools.lru_cache(maxsize=8)
def preprocessor(folder: str) -> Preprocessor:
    """The folder's preprocessor, loaded once per process."""
    return Preprocessor(folder)
