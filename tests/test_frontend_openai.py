"""The OpenAI surface beyond chat and completions basics, through the official openai client against
the frontend and a real mocker: the Responses API, lists of prompts, n, model lookup, refusals."""

from __future__ import annotations

import socket

import openai
import pytest
from test_frontend import client, deployment, http, served  # noqa: F401 (fixtures)

from dynamo.runtime.protocol import GenerateRequest, decode, generate_frame

CHAT = [{"role": "user", "content": "four words of prompt"}]


def test_responses_api(served):  # noqa: F811
    api = client(served)
    chat = api.chat.completions.create(model="mock", messages=CHAT, max_tokens=5)
    answer = api.responses.create(model="mock", input="four words of prompt", max_output_tokens=5)
    assert answer.object == "response" and answer.id.startswith("resp_") and answer.model == "mock"
    # The mocker's answer depends on the chat only: the same words as through chat completions.
    assert answer.output_text == chat.choices[0].message.content
    assert answer.status == "incomplete" and answer.incomplete_details.reason == "max_output_tokens"
    assert (answer.usage.input_tokens, answer.usage.output_tokens, answer.usage.total_tokens) == (6, 5, 11)
    listed = api.responses.create(model="mock", instructions="be brief", max_output_tokens=30, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "four words of prompt"}]}])
    assert (listed.usage.input_tokens, listed.usage.output_tokens) == (6 + 4, 30)  # the instructions count too

    events = list(api.responses.create(model="mock", input="four words of prompt", max_output_tokens=5, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]
    assert "".join(event.delta for event in events if event.type == "response.output_text.delta") == answer.output_text
    assert events[-1].response.output_text == answer.output_text and events[-1].response.usage.output_tokens == 5
    assert [event.sequence_number for event in events] == list(range(len(events)))
    with pytest.raises(openai.BadRequestError, match="previous_response_id: responses are not stored here"):
        api.responses.create(model="mock", input="go on", previous_response_id=answer.id)


def test_completions_with_a_list_of_prompts(served):  # noqa: F811
    api = client(served)
    alone = [api.completions.create(model="mock", prompt=prompt, max_tokens=4).choices[0].text
             for prompt in ("a b", "c d e")]
    both = api.completions.create(model="mock", prompt=["a b", "c d e"], max_tokens=4)
    assert [choice.index for choice in both.choices] == [0, 1]
    assert [choice.text for choice in both.choices] == alone
    assert (both.usage.prompt_tokens, both.usage.completion_tokens) == (5, 8)

    streamed = list(api.completions.create(model="mock", prompt=["a b", "c d e"], max_tokens=4, stream=True,
                                           stream_options={"include_usage": True}))
    texts = ["".join(c.choices[0].text for c in streamed if c.choices and c.choices[0].index == i) for i in (0, 1)]
    assert texts == alone and streamed[-1].usage.completion_tokens == 8

    ids = api.completions.create(model="mock", prompt=[[1, 2, 3], [4, 5]], max_tokens=2)
    assert len(ids.choices) == 2 and ids.usage.prompt_tokens == 5
    flat = api.completions.create(model="mock", prompt=[7, 8, 9], max_tokens=2)
    assert len(flat.choices) == 1 and flat.usage.prompt_tokens == 3


def test_n_choices(served):  # noqa: F811
    api = client(served)
    answer = api.chat.completions.create(model="mock", messages=CHAT, max_tokens=6, seed=3, n=3)
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in answer.choices}) == 3  # each choice its own seed
    assert answer.usage.prompt_tokens == 6 and answer.usage.completion_tokens == 18  # the prompt counts once
    streamed = list(api.completions.create(model="mock", prompt=["a", "b"], n=2, max_tokens=2, stream=True))
    assert {chunk.choices[0].index for chunk in streamed if chunk.choices} == {0, 1, 2, 3}


def test_n_is_one_request_to_the_worker(deployment):  # noqa: F811
    """The frontend sends n in one request; a worker whose engine answers one choice per request
    (the mocker, llama.cpp) runs the n choices itself and tags each frame with its choice."""
    worker = deployment.mocker("mock")
    host, port = worker.worker_address().rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as link:
        link.sendall(generate_frame(1, GenerateRequest(model="mock", prompt="a b", n=2, seed=3, max_tokens=2)))
        received = b""
        while received.count(b"finish") < 2 and b'"error"' not in received:
            data = link.recv(65536)
            assert data, f"the worker closed the connection after {received!r}"
            received += data
    frames = [decode(line) for line in received.splitlines()]
    assert all(frame["id"] == 1 and "error" not in frame for frame in frames)
    texts = ["".join(frame["text"] for frame in frames if frame.get("index", 0) == index) for index in (0, 1)]
    assert texts[0] != texts[1] and all(len(text.split()) == 2 for text in texts)  # seeds 3 and 4
    assert [frame.get("index", 0) for frame in frames if "finish" in frame] in ([0, 1], [1, 0])


def test_model_lookup(served):  # noqa: F811
    api = client(served)
    model = api.models.retrieve("mock")
    assert (model.id, model.object, model.owned_by) == ("mock", "model", "dynamo")
    with pytest.raises(openai.NotFoundError, match="models served now: mock"):
        api.models.retrieve("no-such-model")


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_zero_max_tokens_is_refused(served, field):  # noqa: F811
    with pytest.raises(openai.BadRequestError) as refused:
        client(served).chat.completions.create(model="mock", messages=CHAT, **{field: 0})
    assert refused.value.body["param"] == field and "greater than or equal to 1" in refused.value.body["message"]
    code, answer, _ = http(served + "/v1/completions", {"model": "mock", "prompt": "hi", "max_tokens": 0})
    assert code == 400 and answer["error"]["param"] == "max_tokens"


def test_image_content_is_refused_by_name(served):  # noqa: F811
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    with pytest.raises(openai.BadRequestError, match="images are not supported by this model") as refused:
        client(served).chat.completions.create(model="mock", messages=[{"role": "user", "content": content}])
    assert refused.value.body["param"] == "messages.0.content.1"
    # Text parts alone are fine.
    answer = client(served).chat.completions.create(model="mock", messages=[
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}]}], max_tokens=2)
    assert answer.choices[0].finish_reason == "length"


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("param, extra", [
    ("tools", {"tools": [WEATHER]}),
    ("tools", {"tools": [WEATHER], "tool_choice": "required"}),
    ("logprobs", {"logprobs": True, "top_logprobs": 2}),
    ("response_format", {"response_format": {"type": "json_object"}}),
    ("response_format", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
])
def test_features_the_engine_lacks_are_refused_by_name(served, param, extra):  # noqa: F811
    with pytest.raises(openai.BadRequestError, match=f"{param}: the mocker engine serving 'mock' does not "
                                                     f"support it") as refused:
        client(served).chat.completions.create(model="mock", messages=CHAT, max_tokens=2, **extra)
    assert refused.value.body["param"] == param
    streamed = http(served + "/v1/chat/completions", {"model": "mock", "messages": CHAT, "stream": True, **extra})
    assert streamed[0] == 400 and streamed[1]["error"]["param"] == param  # refused before the stream starts
    code, answer, _ = http(served + "/v1/completions", {"model": "mock", "prompt": "hi", "logprobs": 1})
    assert code == 400 and answer["error"]["param"] == "logprobs"


@pytest.mark.parametrize("extra, param", [
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
])
def test_malformed_tool_and_output_requests(served, extra, param):  # noqa: F811
    code, answer, _ = http(served + "/v1/chat/completions", {"model": "mock", "messages": CHAT, **extra})
    assert code == 400 and answer["error"]["param"] == param, answer


def test_tool_calls_read_from_the_answer():
    from dynamo.frontend.openai import tool_calls

    text, calls = tool_calls('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"unit": "c"}}\n'
                             '</tool_call>', forced=False)  # Hermes / Qwen's format, with tool_choice "auto"
    assert text == "Let me look." and len(calls) == 1
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"unit": "c"}'}
    assert tool_calls('{"name": "get_time", "arguments": {}}', forced=True)[1][0]["function"]["name"] == "get_time"
    assert tool_calls("just words", forced=False) == ("just words", [])
    cut = '{"name": "get_time", "argu'  # the answer hit max_tokens: no call, the text as it is
    assert tool_calls(cut, forced=True) == (cut, [])


def test_a_feature_the_engine_lacks_is_refused_naming_the_parameter(served):  # noqa: F811
    """The mocker serves no logprobs: 400 naming the parameter, from the worker's own refusal."""
    with pytest.raises(openai.BadRequestError, match="the mocker engine serving 'mock' does not support it") as refused:
        client(served).chat.completions.create(model="mock", messages=CHAT, logprobs=True, max_tokens=2)
    assert refused.value.body["param"] == "logprobs"
