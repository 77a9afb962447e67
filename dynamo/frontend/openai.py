"""The OpenAI API's shapes: parsing requests into a GenerateRequest, and building responses and errors."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dynamo.runtime.protocol import GenerateRequest

MAX_STOP_SEQUENCES = 16


class InvalidRequest(Exception):
    """A request the API refuses: `param` names the field, the message says what is wrong."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.status, self.kind, self.code = param, status, kind, code

    def body(self) -> dict[str, Any]:
        return error_body(str(self), self.kind, self.param, self.code)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Text(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Text] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    """Fields both endpoints take. Unknown fields are accepted and ignored, as OpenAI's clients
    send some this server does not use."""
    model_config = ConfigDict(extra="allow")
    model: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Common):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=0)] | None = None

    def to_generate(self) -> GenerateRequest:
        return GenerateRequest(model=self.model, messages=[{"role": m.role, "content": m.text()} for m in self.messages],
                               max_tokens=self.max_completion_tokens if self.max_completion_tokens is not None
                               else self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                               seed=self.seed, stop=self.stops())


class CompletionRequest(_Common):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    def to_generate(self) -> GenerateRequest:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return GenerateRequest(model=self.model, prompt=prompt, max_tokens=self.max_tokens,
                               temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=self.stops())


def parse(kind: type[_Common], body: bytes) -> _Common:
    """The request, or InvalidRequest naming the first bad field."""
    try:
        data = json.loads(body)
    except ValueError as error:
        raise InvalidRequest(f"the request body is not valid JSON ({error}); send a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"the request body is a JSON {type(data).__name__}; send a JSON object")
    try:
        return kind.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"] if not _is_type_tag(part)) or None
        message = first["msg"]
        if param == "n":
            message = "only n=1 is supported; send one request per answer"
        raise InvalidRequest(f"{param}: {message}" if param else message, param=param) from None


def _is_type_tag(part: Any) -> bool:
    """pydantic names the union member tried ('str', 'list[str]'); the API's param does not."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


class Response:
    """Builds one request's response objects: ids and timestamps are fixed once per request."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _object(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def complete(self, text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish}
            return {**self._object("chat.completion", [choice]), "usage": usage}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self._object("text_completion", [choice]), "usage": usage}

    def chunk(self, text: str, finish: str | None = None, first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
            if finish and not text:
                delta = {}
            return self._object("chat.completion.chunk", [{"index": 0, "delta": delta, "logprobs": None,
                                                            "finish_reason": finish}])
        return self._object("text_completion", [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}])

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._object("chat.completion.chunk" if self.chat else "text_completion", []), "usage": usage}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
