"""The frontend under hostile input, as a tester sends it (all on 127.0.0.1): loose types, lone
surrogates, deep JSON, oversized lists, malformed HTTP, half-sent requests, clients hanging up,
too many connections, a missing API key, and SIGTERM with answers in flight."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from unittest import mock

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from processes import Deployment
from test_frontend import client, http, metrics_text, wait_for_models

from dynamo.frontend import limits
from dynamo.frontend.limits import MAX_MESSAGES, MAX_OBJECTS, MAX_VALUES
from dynamo.frontend.openai import ChatRequest, CompletionRequest, InvalidRequest, ResponsesRequest, parse
from dynamo.runtime.protocol import generate_frame

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def deployment(tmp_path):
    deployment = Deployment(tmp_path, DYN_LOG="info")
    yield deployment
    deployment.stop()


@pytest.fixture
def served(deployment):
    url = deployment.frontend("--read-timeout", "1")
    deployment.mocker("mock")
    wait_for_models(url, {"mock"})
    return url


def port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def exchange(url: str, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes; everything the frontend answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port(url)), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def json_answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("extra, param", [
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 4.0}, "max_tokens"),
    ({"stream": "yes"}, "stream"),
    ({"n": "2"}, "n"),
    ({"stop": ["x"] * 17}, "stop"),
    ({"messages": [{"role": "user", "content": "hi"}] * (MAX_MESSAGES + 1)}, "messages"),
])
def test_loose_and_oversized_fields_are_refused_by_name(extra, param):
    with pytest.raises(InvalidRequest) as refused:
        parse(ChatRequest, json.dumps({"model": "m", "messages": HI, **extra}).encode())
    assert refused.value.param == param and refused.value.status == 400
    if param == "stop":
        assert "at most 16" in str(refused.value)  # not "Input should be a valid string"


@pytest.mark.parametrize("prompt, param", [([-1], "prompt.0"), ([10**30], "prompt.0"), ([[5], [2**31]], "prompt.1.0"),
                                           (["a"] * 200, "prompt")])
def test_token_ids_and_prompt_counts_are_bounded(prompt, param):
    with pytest.raises(InvalidRequest) as refused:
        parse(CompletionRequest, json.dumps({"model": "m", "prompt": prompt}).encode())
    assert refused.value.param == param


@pytest.mark.parametrize("kind, body, refused", [
    (ChatRequest, {"model": "m", "messages": [{"role": "user", "content": ""}] * 560_000}, f"{MAX_OBJECTS} JSON objects"),
    (ChatRequest, {"model": "m", "messages": HI, "tools": [{}] * (MAX_OBJECTS + 1)}, f"{MAX_OBJECTS} JSON objects"),
    (CompletionRequest, {"model": "m", "prompt": [0] * 2_000_000}, f"{MAX_VALUES} JSON values"),
    (CompletionRequest, {"model": "m", "prompt": ["ab"] * 2_000_000}, f"{MAX_VALUES} JSON values"),
    (CompletionRequest, {"model": "m", "prompt": "{[,]}" * 1_000_000}, None),  # a prompt of code is no structure
    (CompletionRequest, {"model": "m", "prompt": list(range(2**20))}, None),
])
def test_bodies_holding_too_much_are_refused_before_parsing(kind, body, refused):
    data = json.dumps(body).encode()
    if refused is None:
        parse(kind, data)
        return
    with pytest.raises(InvalidRequest, match=f"holds more than {refused}") as error:
        parse(kind, data)
    assert error.value.status == 413


def structure(value) -> tuple[int, int]:
    """(objects, objects + arrays + commas) of a JSON value, as its text has them outside strings."""
    if not isinstance(value, dict | list):
        return 0, 0
    items = list(value.values()) if isinstance(value, dict) else value
    objects, values = int(isinstance(value, dict)), 1 + max(len(items) - 1, 0)
    for item in items:
        inner = structure(item)
        objects, values = objects + inner[0], values + inner[1]
    return objects, values


_tricky = st.text(st.sampled_from('{[,]}"\\ab\u00e9\U0001f600\n'), max_size=6)  # structure's bytes inside strings
tricky_values = st.recursive(st.none() | st.integers() | _tricky, lambda inner: st.lists(inner, max_size=5)
                             | st.dictionaries(_tricky, inner, max_size=5), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(value=tricky_values, ascii_only=st.booleans())
def test_excess_counts_the_structure_outside_strings(value, ascii_only):
    objects, values = structure(value)
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    with mock.patch.object(limits, "MAX_OBJECTS", 3), mock.patch.object(limits, "MAX_VALUES", 12):
        found = limits.excess(body)
    exceeded = {"more than 3 JSON objects"} if objects > 3 else set()
    exceeded |= {"more than 12 JSON values"} if values > 12 else set()
    assert found in exceeded if exceeded else found is None  # whichever it met first, when both


@pytest.mark.parametrize("body", [
    '{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
    '{"model": "m", "prompt": "a", "stop": ["\\udfff"]}',
    '{"model": "m", "messages": ' + "[" * 1000 + "]" * 1000 + "}",
    "[" * 100_000,
])
def test_surrogates_and_deep_json_are_400(body):
    with pytest.raises(InvalidRequest, match="not valid JSON") as refused:
        parse(CompletionRequest if "prompt" in body else ChatRequest, body.encode())
    assert refused.value.status == 400


# Text as JSON can carry it: lone UTF-16 surrogates ("\ud800") included.
_char = st.characters(categories=("Cs", "Lu", "Ll", "Nd", "Zs", "Po", "Cc", "So"))
_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(_char, max_size=8)
json_values = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
_text = st.text(_char, max_size=12)
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "wizard"]),
                                  "content": _text | st.none() | json_values})
chat_bodies = st.fixed_dictionaries({"model": st.text(max_size=4) | json_values,
                                     "messages": st.lists(_message, max_size=3) | json_values},
                                    optional={"max_tokens": json_values, "stop": st.lists(_text, max_size=18) | _text,
                                              "stream": json_values, "n": st.integers(-2, 200),
                                              "temperature": json_values})
completion_bodies = st.fixed_dictionaries({"model": st.just("m"), "prompt": _text | st.lists(
    st.integers(-2**40, 2**40), max_size=4) | st.lists(_text, max_size=3) | json_values},
    optional={"stop": st.lists(_text, max_size=18), "logprobs": json_values})


def parses_or_refuses(kind: type, body: bytes) -> None:
    """A body is either refused (InvalidRequest, 4xx, naming a field or the JSON) or becomes requests
    that go on the wire to a worker."""
    try:
        for request in parse(kind, body).to_generate():
            generate_frame(1, request)
    except InvalidRequest as refused:
        assert 400 <= refused.status < 500 and str(refused)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=chat_bodies)
def test_any_chat_body_is_served_or_refused(body):
    parses_or_refuses(ChatRequest, json.dumps(body).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=completion_bodies)
def test_any_completion_body_is_served_or_refused(body):
    parses_or_refuses(CompletionRequest, json.dumps(body).encode())


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64) | json_values.map(lambda value: json.dumps(value).encode())
       | st.integers(0, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
       kind=st.sampled_from([ChatRequest, CompletionRequest, ResponsesRequest]))
def test_any_bytes_are_parsed_or_refused(data, kind):
    parses_or_refuses(kind, data)


def test_hostile_bodies_over_http(served):
    code, answer, _ = http(served + "/v1/chat/completions", {"model": "mock", "messages": [{}] * 560_000})
    assert code == 413 and f"more than {MAX_OBJECTS} JSON objects" in answer["error"]["message"]
    code, answer, _ = http(served + "/v1/completions", '{"model": "mock", "prompt": "\\ud800"}')
    assert code == 400 and "not valid JSON" in answer["error"]["message"]
    code, answer, _ = http(served + "/v1/completions", {"model": "mock", "prompt": "hi", "max_tokens": "3"})
    assert code == 400 and answer["error"]["param"] == "max_tokens"


def test_malformed_http_is_a_json_400_without_an_echo(served, deployment):
    for garbage in (b"GARBAGE /\x00\x01 HTTP/1.1\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: nope\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"):
        status, answer = json_answer(exchange(served, garbage))
        assert status == 400 and answer["error"]["message"].startswith("malformed HTTP request (")
        assert "GARBAGE" not in answer["error"]["message"] and "nope" not in answer["error"]["message"]
    log = deployment.processes[0].output()
    assert log.count("malformed HTTP request from") == 3 and "Traceback" not in log, log


def test_half_sent_requests_are_closed_after_the_read_timeout(served):
    started = time.monotonic()
    assert exchange(served, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n") == b""  # headers never end
    assert time.monotonic() - started < 5
    body = b'{"model": "mock", "prompt": "hi"}'
    started = time.monotonic()
    status, answer = json_answer(exchange(served, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                          b"%d\r\n\r\n%s" % (len(body) + 10, body)))  # the body never ends
    assert status == 408 and "did not arrive within 1 s" in answer["error"]["message"]
    assert time.monotonic() - started < 5
    assert http(served + "/v1/completions", {"model": "mock", "prompt": "hi", "max_tokens": 1})[0] == 200


def test_clients_hanging_up_are_one_line_each(served, deployment):
    body = b'{"model": "mock", "prompt": "hi", "max_tokens": 1}'
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port(served))) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body) + 100, body))  # and hang up before the rest
    # paced, so that the client hangs up mid-answer (a whole answer at once can be in the socket's buffers
    # before the client reads its first event)
    deployment.mocker("paced", "--itl-ms", "5")
    wait_for_models(served, {"mock", "paced"})
    stream = client(served).completions.create(model="paced", prompt="hi", max_tokens=1000, stream=True)
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 10
    while 'client_disconnects_total{model="unknown"} 20.0' not in (text := metrics_text(served)) or \
            'client_disconnects_total{model="paced"} 1.0' not in text:
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    log = deployment.processes[0].output()
    assert log.count("hung up while sending POST /v1/completions") == 20, log
    assert log.count("hung up before its answer from paced ended") == 1 and "Traceback" not in log, log


def test_connections_beyond_the_cap_get_503(deployment):
    url = deployment.frontend("--max-connections", "3")
    idle = [socket.create_connection(("127.0.0.1", port(url))) for _ in range(3)]
    try:
        time.sleep(0.2)
        status, answer = json_answer(exchange(url, b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert status == 503 and "--max-connections" in answer["error"]["message"]
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert http(url + "/live")[0] == 200
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_api_key(tmp_path):
    deployment = Deployment(tmp_path, DYN_API_KEY="s3cret")
    try:
        url = deployment.frontend()
        deployment.mocker("mock")
        assert http(url + "/health")[0] in (200, 503) and http(url + "/live")[0] == 200  # probes need no key
        for key in ("wrong", "s3cret-and-more", "s3cre"):
            with pytest.raises(openai.AuthenticationError, match="incorrect API key"):
                openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0).models.list()
        code, answer, _ = http(url + "/v1/models")
        assert code == 401 and answer["error"]["code"] == "invalid_api_key"
        keyed = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        deadline = time.monotonic() + 15
        while [model.id for model in keyed.models.list()] != ["mock"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert keyed.completions.create(model="mock", prompt="hi", max_tokens=2).choices[0].text
    finally:
        deployment.stop()


def test_bad_limit_flags_are_one_line(deployment):
    for args, message in [(["--read-timeout", "0"], "--read-timeout 0.0: must be more than 0"),
                          (["--max-connections", "-1"], "--max-connections -1: must be more than 0"),
                          (["--shutdown-timeout", "nan"], "--shutdown-timeout nan: must not be negative"),
                          (["--api-key", ""], "--api-key: empty")]:
        process = deployment.start("dynamo.frontend", *args, ready=None)
        assert process.popen.wait(60) == 2
        assert message in process.output() and "Traceback" not in process.output(), process.output()


def test_http_host_binds_that_address_only(deployment):
    free = socket.socket()
    free.bind(("127.0.0.2", 0))
    number = free.getsockname()[1]
    free.close()
    deployment.start("dynamo.frontend", "--http-host", "127.0.0.2", "--http-port", str(number))
    assert http(f"http://127.0.0.2:{number}/live")[0] == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", number), timeout=5).close()
    assert "without an API key" not in deployment.processes[-1].output()  # loopback: only this machine reaches it


def test_sigterm_drains_within_the_bound(deployment):
    url = deployment.frontend("--shutdown-timeout", "2")
    deployment.mocker("mock", "--itl-ms", "50")
    wait_for_models(url, {"mock"})
    frontend = deployment.processes[0]
    api = client(url)
    short: list = []
    quick = threading.Thread(target=lambda: short.append(api.completions.create(model="mock", prompt="hi",
                                                                                  max_tokens=20)))
    stream = api.completions.create(model="mock", prompt="hi", max_tokens=2000, stream=True)  # 100 s
    chunks = iter(stream)
    next(chunks)
    with socket.create_connection(("127.0.0.1", port(url))) as holder:
        holder.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")  # half a body
        quick.start()
        time.sleep(0.2)
        started = time.monotonic()
        frontend.popen.send_signal(signal.SIGTERM)
        assert frontend.popen.wait(10) == 0
        took = time.monotonic() - started
    quick.join()
    assert 1 < took < 4, took  # the bound, not the 100-second stream nor the half-sent body
    assert short[0].choices[0].finish_reason == "length"  # a 1-second answer finished within the bound
    with pytest.raises(Exception):
        for _ in chunks:
            pass
    assert "answers in flight get 2 s" in frontend.output() and "Traceback" not in frontend.output()
