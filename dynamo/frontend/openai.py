"""The OpenAI API's shapes: parsing requests into GenerateRequests (one per prompt), and building
responses and errors."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dynamo.frontend.limits import MAX_MESSAGES, MAX_PROMPT_TOKENS, MAX_TOOLS, TokenId, excess
from dynamo.runtime.protocol import GenerateRequest

MAX_STOP_SEQUENCES = 16
MAX_CHOICES = 128  # prompts × n in one request
IMAGE_TYPES = ("image_url", "input_image", "image")
TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)  # Hermes / Qwen's format


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
    type: Literal["text", "input_text", "output_text"]
    text: str


class _Image(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["image_url", "input_image", "image"]


_Part = Annotated[_Text | _Image, Field(discriminator="type")]


def _text(content: str | list | None, param: str, model: str) -> str:
    """A message's content as text; images are refused, as no engine here reads them."""
    if not isinstance(content, list):
        return content or ""
    for index, part in enumerate(content):
        if isinstance(part, _Image):
            raise InvalidRequest(f"{param}.{index}: images are not supported by this model ({model}); "
                                 f"send text content only", param=f"{param}.{index}")
    return "".join(part.text for part in content)


class _Function(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: _Function


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[_Part], Field(max_length=MAX_MESSAGES)] | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def to_worker(self, param: str, model: str) -> dict[str, Any]:
        """The message as the worker's chat template reads it."""
        message: dict[str, Any] = {"role": self.role, "content": _text(self.content, param + ".content", model)}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            message["name"] = self.name
        return message


class FunctionDefinition(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class _Named(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: _Named


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchema(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    name: str = "response"
    json_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    def to_worker(self) -> dict[str, Any] | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        if self.json_schema is None:
            raise InvalidRequest("response_format.json_schema: required with type json_schema",
                                 param="response_format.json_schema")
        return {"type": "json_schema", "schema": self.json_schema.json_schema}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    """Fields both completion endpoints take. Unknown fields are accepted and ignored, as OpenAI's
    clients send some this server does not use."""
    model_config = ConfigDict(extra="allow")
    model: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1

    def stops(self) -> list[str]:
        """The stop strings; an empty one, which every text contains, would end every answer at its
        first token (llama.cpp's and vLLM's checks both find it), and is left out."""
        if self.stop is None:
            return []
        return [stop for stop in ([self.stop] if isinstance(self.stop, str) else self.stop) if stop]

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _choices(self, requests: list[GenerateRequest]) -> list[GenerateRequest]:
        """The requests, each asking for n choices (choice i of prompt p is choice p × n + i)."""
        if len(requests) * self.n > MAX_CHOICES:
            raise InvalidRequest(f"n: {len(requests)} prompts × n={self.n} make more than {MAX_CHOICES} "
                                 f"choices; send fewer in one request", param="n")
        if self.n == 1:
            return requests
        return [dataclasses.replace(request, n=self.n) for request in requests]


class ChatRequest(_Common):
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None

    def to_generate(self) -> list[GenerateRequest]:
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("top_logprobs: needs logprobs: true", param="top_logprobs")
        tools, tool_choice = check_tools(self.tools, self.tool_choice)
        request = GenerateRequest(
            model=self.model, messages=[message.to_worker(f"messages.{index}", self.model)
                                        for index, message in enumerate(self.messages)],
            max_tokens=self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens,
            temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=self.stops(),
            tools=tools, tool_choice=tool_choice, logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            response_format=self.response_format.to_worker() if self.response_format else None)
        return self._choices([request])


def check_tools(tools: list[Tool] | None, choice: str | NamedToolChoice | None
                ) -> tuple[list[dict[str, Any]] | None, str | dict[str, Any] | None]:
    """tools and tool_choice for the worker; a choice naming no tool given is refused."""
    if choice is not None and not tools:
        raise InvalidRequest("tool_choice: given without tools; send tools too", param="tool_choice")
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in {tool.function.name for tool in tools}:
            raise InvalidRequest(f"tool_choice: names the function {choice.function.name!r}, which is not "
                                 f"among the tools", param="tool_choice")
        choice = choice.model_dump()
    if not tools:
        return None, None
    return [tool.model_dump(exclude_none=True) for tool in tools], choice


_TokenIds = Annotated[list[TokenId], Field(min_length=1, max_length=MAX_PROMPT_TOKENS)]


class CompletionRequest(_Common):
    prompt: (str | Annotated[list[str], Field(min_length=1, max_length=MAX_CHOICES)] | _TokenIds
             | Annotated[list[_TokenIds], Field(min_length=1, max_length=MAX_CHOICES)])
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None

    def to_generate(self) -> list[GenerateRequest]:
        prompts: list = [self.prompt] if isinstance(self.prompt, str) or isinstance(self.prompt[0], int) \
            else self.prompt
        common = {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature,
                  "top_p": self.top_p, "seed": self.seed, "stop": self.stops(), "logprobs": self.logprobs}
        return self._choices([GenerateRequest(**common, prompt=prompt) if isinstance(prompt, str)
                              else GenerateRequest(**common, prompt_token_ids=prompt) for prompt in prompts])


class _InputMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[_Part], Field(max_length=MAX_MESSAGES)]


class _FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class _FunctionOutput(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function_call_output"]
    call_id: str
    output: str


class _ResponsesTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _TextFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")


class _TextOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: _TextFormat | None = None


class _ResponsesNamedChoice(BaseModel):
    type: Literal["function"]
    name: str


class ResponsesRequest(BaseModel):
    """POST /v1/responses: a turn of the Responses API, answered as a chat."""
    model_config = ConfigDict(extra="allow")
    n: ClassVar[int] = 1  # one answer, always
    model: Annotated[str, Field(min_length=1)]
    input: str | Annotated[list[_InputMessage | _FunctionCall | _FunctionOutput],
                           Field(min_length=1, max_length=MAX_MESSAGES)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stream: bool = False
    tools: Annotated[list[_ResponsesTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | _ResponsesNamedChoice | None = None
    text: _TextOptions | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    previous_response_id: str | None = None

    def to_generate(self) -> list[GenerateRequest]:
        if self.previous_response_id is not None:
            raise InvalidRequest("previous_response_id: responses are not stored here; send the whole "
                                 "conversation as input", param="previous_response_id")
        messages = [{"role": "system", "content": self.instructions}] if self.instructions else []
        items = [_InputMessage(role="user", content=self.input)] if isinstance(self.input, str) else self.input
        for index, item in enumerate(items):
            if isinstance(item, _InputMessage):
                messages.append({"role": item.role, "content": _text(item.content, f"input.{index}.content",
                                                                     self.model)})
            elif isinstance(item, _FunctionCall):
                call = {"id": item.call_id, "type": "function",
                        "function": {"name": item.name, "arguments": item.arguments}}
                if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                    messages[-1]["tool_calls"].append(call)
                else:
                    messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            else:
                messages.append({"role": "tool", "content": item.output, "tool_call_id": item.call_id})
        tools = [Tool(type="function", function=FunctionDefinition(
            name=tool.name, description=tool.description, parameters=tool.parameters, strict=tool.strict))
            for tool in self.tools or []] or None
        choice = self.tool_choice
        if isinstance(choice, _ResponsesNamedChoice):
            choice = NamedToolChoice(type="function", function=_Named(name=choice.name))
        worker_tools, worker_choice = check_tools(tools, choice)
        text_format = self.text.format if self.text else None
        response_format = None
        if text_format is not None and text_format.type != "text":
            response_format = {"type": text_format.type}
            if text_format.type == "json_schema":
                response_format["schema"] = text_format.json_schema or {"type": "object"}
        return [GenerateRequest(model=self.model, messages=messages, max_tokens=self.max_output_tokens,
                                temperature=self.temperature, top_p=self.top_p, tools=worker_tools,
                                tool_choice=worker_choice, logprobs=self.top_logprobs,
                                response_format=response_format)]


def parse(kind: type[BaseModel], body: bytes) -> Any:
    """The request, or InvalidRequest naming the first bad field. Parsed and validated in one pass
    (pydantic's JSON mode, which refuses JSON nested deeper than 200 and lone UTF-16 surrogates),
    strictly: "10", true and 4.0 are not integers, "yes" is not a boolean. A body holding more than
    any request needs is refused before it is parsed (limits.excess)."""
    if too_much := excess(body):
        raise InvalidRequest(f"the request body holds {too_much}: more messages, prompts, token ids or tools "
                             f"than a request may have; send fewer", status=413)
    try:
        return kind.model_validate_json(body, strict=True)
    except ValidationError as error:
        raise _invalid(error.errors(include_url=False)) from None


def _invalid(errors: list[Any]) -> InvalidRequest:
    """The first bad field's error. Of a union's errors, one from a member of the input's type (17 stop
    strings: too many, not "not a string"), the one that read the input furthest."""
    first = errors[0]
    if first["type"] == "json_invalid":
        reason = first["msg"].removeprefix("Invalid JSON: ")
        return InvalidRequest(f"the request body is not valid JSON ({reason}); send a JSON object")
    if not first["loc"]:
        return InvalidRequest(f"the request body is a JSON {_json_type(first['input'])}; send a JSON object")
    field = [error for error in errors if error["loc"][:1] == first["loc"][:1]]
    field = [error for error in field if not error["type"].endswith("_type")] or field  # members of another type
    first = max(field, key=lambda error: len(error["loc"]))
    param = ".".join(str(part) for part in first["loc"] if not _is_type_tag(part)) or None
    return InvalidRequest(f"{param}: {first['msg']}" if param else first["msg"], param=param)


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def _is_type_tag(part: Any) -> bool:
    """pydantic names the union member tried ('str', 'list[str]', 'NamedToolChoice'); the API's param does not."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool")
                                      or part.startswith("_") or part[:1].isupper())


def tool_calls(text: str, forced: bool) -> tuple[str | None, list[dict[str, Any]]]:
    """An answer with tools: (its remaining text, its tool calls). A forced call is the whole answer
    as {"name": ..., "arguments": {...}} (the engine's structured output made it so); otherwise
    calls are <tool_call>{...}</tool_call> blocks in the text. Unreadable calls stay text."""
    found: list[dict[str, Any]] = []
    blocks = [text] if forced else TOOL_CALL_BLOCK.findall(text)
    for block in blocks:
        try:
            call = json.loads(block)
            name, arguments = call["name"], call.get("arguments", {})
        except (ValueError, TypeError, KeyError):
            return text, []
        found.append({"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                      "function": {"name": name, "arguments": arguments if isinstance(arguments, str)
                                   else json.dumps(arguments, ensure_ascii=False)}})
    if not found:
        return text, []
    rest = "" if forced else TOOL_CALL_BLOCK.sub("", text).strip()
    return rest or None, found


def chat_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}
    return {"content": [{**one(entry["token"], entry["logprob"]),
                         "top_logprobs": [one(top["token"], top["logprob"]) for top in entry.get("top", [])]}
                        for entry in entries]}


def completion_logprobs(entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": [entry["token"] for entry in entries],
            "token_logprobs": [entry["logprob"] for entry in entries],
            "top_logprobs": [{top["token"]: top["logprob"] for top in entry.get("top", [])} for entry in entries],
            "text_offset": offsets}


class Response:
    """Builds one request's chat or completion objects: ids and timestamps are fixed once per request."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _object(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def _logprobs(self, entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
        if entries is None:
            return None
        return chat_logprobs(entries) if self.chat else completion_logprobs(entries, offset)

    def choice(self, index: int, text: str | None, finish: str, logprobs: list[dict[str, Any]] | None = None,
               calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = calls
            return {"index": index, "message": message, "logprobs": self._logprobs(logprobs),
                    "finish_reason": finish}
        return {"index": index, "text": text, "logprobs": self._logprobs(logprobs), "finish_reason": finish}

    def complete(self, choices: list[dict[str, Any]], usage: dict[str, int]) -> dict[str, Any]:
        return {**self._object("chat.completion" if self.chat else "text_completion", choices), "usage": usage}

    def chunk(self, text: str | None, finish: str | None = None, first: bool = False, index: int = 0,
              logprobs: list[dict[str, Any]] | None = None, offset: int = 0,
              calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
            if calls:
                delta["tool_calls"] = [{"index": number, **call} for number, call in enumerate(calls)]
            elif finish and not text:
                delta = {}
            return self._object("chat.completion.chunk", [{"index": index, "delta": delta,
                                                            "logprobs": self._logprobs(logprobs),
                                                            "finish_reason": finish}])
        return self._object("text_completion", [{"index": index, "text": text,
                                                 "logprobs": self._logprobs(logprobs, offset),
                                                 "finish_reason": finish}])

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._object("chat.completion.chunk" if self.chat else "text_completion", []), "usage": usage}


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's usage object; `cached_tokens`: the prompt's tokens found in the KV cache."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


class ResponsesResponse:
    """Builds one Responses API answer: the response object and its stream events."""

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request
        self.id = "resp_" + uuid.uuid4().hex
        self.message_id = "msg_" + uuid.uuid4().hex
        self.created = int(time.time())
        self.sequence = 0

    def body(self, status: str, output: list[dict[str, Any]], usage_counts: tuple[int, int, int] | None = None,
             finish: str | None = None) -> dict[str, Any]:
        request = self.request
        body: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.created, "status": status, "model": request.model,
            "output": output, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" else None,
            "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
            "temperature": request.temperature, "top_p": request.top_p, "parallel_tool_calls": True,
            "tool_choice": request.tool_choice if isinstance(request.tool_choice, str | None)
            else request.tool_choice.model_dump(), "tools": [tool.model_dump() for tool in request.tools or []],
            "text": {"format": {"type": "text"}}, "metadata": {}, "usage": None}
        if body["tool_choice"] is None:
            body["tool_choice"] = "auto"
        if usage_counts is not None:
            prompt_tokens, completion_tokens, cached_tokens = usage_counts
            body["usage"] = {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": cached_tokens},
                             "output_tokens": completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": prompt_tokens + completion_tokens}
        return body

    def message(self, text: str, status: str = "completed") -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" or text else []
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant", "content": content}

    def output(self, text: str | None, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items = [self.message(text)] if text or not calls else []
        return items + [{"type": "function_call", "id": "fc_" + call["id"].removeprefix("call_"),
                         "call_id": call["id"], "name": call["function"]["name"],
                         "arguments": call["function"]["arguments"], "status": "completed"} for call in calls]

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}
