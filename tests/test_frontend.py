"""The frontend and the mocker as users run them, driven by the official openai client and plain HTTP."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from processes import Deployment


@pytest.fixture
def deployment(tmp_path):
    deployment = Deployment(tmp_path)
    yield deployment
    deployment.stop()


def http(url: str, body: bytes | str | dict | None = None, method: str | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one request."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def wait_for_models(url: str, models: set[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        served = {model["id"] for model in http(url + "/v1/models")[1]["data"]}
        if served == models:
            return
        assert time.monotonic() < deadline, f"the frontend serves {served}, expected {models}"
        time.sleep(0.1)


def wait_for_instances(url: str, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while len(http(url + "/health")[1]["instances"]) != count:
        assert time.monotonic() < deadline, http(url + "/health")[1]
        time.sleep(0.1)


def client(url: str):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def served(deployment):
    """A frontend with one mocker serving `mock`."""
    url = deployment.frontend()
    deployment.mocker("mock")
    wait_for_models(url, {"mock"})
    return url


def test_chat_completion_with_usage_and_seed(served):
    api = client(served)
    messages = [{"role": "user", "content": "four words of prompt"}]
    first = api.chat.completions.create(model="mock", messages=messages, max_tokens=5, seed=7, temperature=0.5, top_p=0.9)
    again = api.chat.completions.create(model="mock", messages=messages, max_tokens=5, seed=7)
    other = api.chat.completions.create(model="mock", messages=messages, max_tokens=5, seed=8)
    assert first.object == "chat.completion" and first.model == "mock"
    assert first.choices[0].message.role == "assistant"
    assert len(first.choices[0].message.content.split()) == 5
    assert first.choices[0].finish_reason == "length"
    # The mocker counts words: 4 in the message plus 2 for its role.
    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens) == (6, 5, 11)
    assert first.choices[0].message.content == again.choices[0].message.content  # the seed reached the engine
    assert first.choices[0].message.content != other.choices[0].message.content


def test_chat_streaming_ends_with_done_and_usage(served):
    api = client(served)
    chunks = list(api.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=4, seed=1, stream=True,
                                              stream_options={"include_usage": True}))
    whole = api.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}], max_tokens=4, seed=1)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    # On the wire: server-sent events, the last one [DONE].
    request = urllib.request.Request(served + "/v1/chat/completions", method="POST", data=json.dumps(
        {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in response.read().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(event.startswith("data: ") for event in events)


def test_completions_stop_sequence_and_max_tokens(served):
    api = client(served)
    full = api.completions.create(model="mock", prompt="a b c", max_tokens=12, seed=3)
    words = full.choices[0].text.split()
    assert full.object == "text_completion" and len(words) == 12 and full.usage.prompt_tokens == 3
    stop = " " + words[4]
    cut = api.completions.create(model="mock", prompt="a b c", max_tokens=12, seed=3, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full.choices[0].text[:full.choices[0].text.index(stop)]
    streamed = "".join(c.choices[0].text for c in api.completions.create(
        model="mock", prompt="a b c", max_tokens=12, seed=3, stop=stop, stream=True) if c.choices)
    assert streamed == cut.choices[0].text
    # An empty stop string, which every text contains, is left out rather than ending every answer at once.
    assert api.completions.create(model="mock", prompt="a b c", max_tokens=12, seed=3, stop=["", stop]
                                  ).choices[0].text == cut.choices[0].text
    assert api.completions.create(model="mock", prompt="a b c", max_tokens=12, seed=3, stop=""
                                  ).choices[0].text == full.choices[0].text


@pytest.mark.parametrize("body, status, param", [
    ("{not json", 400, None),
    ("[1, 2]", 400, None),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ({"model": "mock"}, 400, "messages"),
    ({"model": "mock", "messages": []}, 400, "messages"),
    ({"model": "mock", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
    ({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, 400, "temperature"),
    ({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}, 400, "top_p"),
    ({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "n": 0}, 400, "n"),
    ({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "stream": "perhaps"}, 400, "stream"),
    ({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, 400, None),
    ({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
])
def test_bad_requests_get_openai_errors(served, body, status, param):
    code, answer, _ = http(served + "/v1/chat/completions", body)
    assert code == status, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["message"]
    assert answer["error"]["param"] == param
    if status == 404:
        assert "mock" in answer["error"]["message"]  # names what is served


def test_unknown_route_and_method(served):
    assert http(served + "/v2/nothing")[0] == 404
    code, answer, _ = http(served + "/v1/chat/completions", method="GET")
    assert code == 405 and "error" in answer


def test_no_worker_is_503(deployment):
    url = deployment.frontend()
    code, answer, _ = http(url + "/v1/completions", {"model": "mock", "prompt": "hi"})
    assert code == 503 and "no worker serves model 'mock'" in answer["error"]["message"]
    assert http(url + "/health")[0] == 503
    assert http(url + "/live")[:2] == (200, {"status": "live"})


def test_workers_join_and_leave_while_running(deployment):
    url = deployment.frontend()
    wait_for_models(url, set())
    first = deployment.mocker("alpha")
    wait_for_models(url, {"alpha"})
    deployment.mocker("beta")
    wait_for_models(url, {"alpha", "beta"})
    assert first.stop() == 0  # SIGTERM: the worker unregisters
    wait_for_models(url, {"beta"})
    code, answer, _ = http(url + "/v1/completions", {"model": "alpha", "prompt": "hi"})
    assert code == 503, answer  # it was served: the worker is missing, not the model


def test_round_robin_and_least_loaded(deployment):
    url = deployment.frontend()
    for _ in range(2):
        deployment.mocker("mock", "--itl-ms", "20")
    wait_for_instances(url, 2)
    body = {"model": "mock", "prompt": "hi", "max_tokens": 1}
    workers = [http(url + "/v1/completions", body)[2]["x-dynamo-worker"] for _ in range(4)]
    assert workers[0] != workers[1] and workers[0::2] == [workers[0]] * 2 and workers[1::2] == [workers[1]] * 2

    least = deployment.frontend("--router-mode", "least-loaded")
    wait_for_instances(least, 2)
    busy: list[str] = []
    slow = threading.Thread(target=lambda: busy.append(http(least + "/v1/completions", {
        "model": "mock", "prompt": "hi", "max_tokens": 100})[2]["x-dynamo-worker"]))
    slow.start()
    time.sleep(0.5)  # the long request is running on one worker
    quick = {http(least + "/v1/completions", body)[2]["x-dynamo-worker"] for _ in range(3)}
    slow.join()
    assert len(quick) == 1 and quick != set(busy)


def test_worker_dying_mid_stream(deployment):
    url = deployment.frontend()
    doomed = deployment.mocker("mock", "--itl-ms", "50")
    wait_for_models(url, {"mock"})
    api = client(url)
    stream = api.completions.create(model="mock", prompt="hi", max_tokens=200, stream=True)
    received = [next(iter(stream))]
    doomed.stop(signal.SIGKILL)
    with pytest.raises(openai.APIError, match="stopped while answering"):
        for chunk in stream:
            received.append(chunk)
    assert 1 <= len(received) < 200
    deployment.mocker("mock")  # the frontend keeps serving: a new worker answers
    deadline = time.monotonic() + 15
    while True:
        code, answer, _ = http(url + "/v1/completions", {"model": "mock", "prompt": "hi", "max_tokens": 2})
        if code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 200, answer
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'endpoint="completions",model="mock",request_type="stream",status="error"} 1.0' in metrics


def test_client_leaving_mid_stream_stops_the_engine(tmp_path):
    deployment = Deployment(tmp_path, DYN_LOG="info")
    try:
        url = deployment.frontend()
        worker = deployment.mocker("mock", "--itl-ms", "50")
        wait_for_models(url, {"mock"})
        stream = client(url).completions.create(model="mock", prompt="hi", max_tokens=1000, stream=True)
        next(iter(stream))
        stream.close()  # the client hangs up after one piece of a 50-second answer
        worker.wait_for("cancelled by the frontend", timeout=10)
        deadline = time.monotonic() + 10
        while http(url + "/health")[1]["instances"][0]["inflight"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        deployment.stop()


def test_metrics(served):
    api = client(served)
    api.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    list(api.completions.create(model="mock", prompt="hi", max_tokens=3, stream=True))
    http(served + "/v1/completions", "{")
    with urllib.request.urlopen(served + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'dynamo_frontend_requests_total{endpoint="chat_completions",model="mock",request_type="unary",status="success"} 1.0' in text
    assert 'dynamo_frontend_requests_total{endpoint="completions",model="mock",request_type="stream",status="success"} 1.0' in text
    assert 'dynamo_frontend_time_to_first_token_seconds_count{model="mock"} 2.0' in text
    assert 'dynamo_frontend_inter_token_latency_seconds_count{model="mock"} 4.0' in text  # 2 gaps in each answer
    assert 'dynamo_frontend_inflight_requests{model="mock"} 0.0' in text
    assert 'dynamo_frontend_output_tokens_total{model="mock"} 6.0' in text


def test_interactive_chat(deployment):
    deployment.mocker("mock")
    chat = deployment.start("dynamo.frontend", "--interactive", "--max-tokens", "3", ready=None,
                            stdin=subprocess.PIPE)
    chat.popen.stdin.write("Hello, how are you?\nAnd now?\n".encode())
    chat.popen.stdin.close()
    assert chat.popen.wait(30) == 0, chat.output()
    output = chat.output()
    assert "chatting with mock" in output
    assert output.count("✔ User · ") == 3  # two questions, then the prompt that met the end of input
    answers = [line.split("✔ User · ")[-1] for line in output.splitlines() if line.startswith("✔ User · ")]
    assert all(len(answer.split()) == 3 for answer in answers[:2])


def test_bad_flags_are_one_line(deployment, tmp_path):
    for module, args, message in [
        ("dynamo.mocker", [], "needs --model-name"),
        ("dynamo.mocker", ["--model-name", "m", "--itl-ms", "-1"], "--itl-ms -1.0: must not be negative"),
        ("dynamo.mocker", ["--model-name", "m", "--unknown-flag"], "unrecognized arguments: --unknown-flag"),
        ("dynamo.mocker", ["--model-name", "m", "--model-path", str(tmp_path)], "no tokenizer.json there"),
        ("dynamo.mocker", ["--model-name", "m", "--num-gpu-blocks", "0"], "--num-gpu-blocks 0: must be positive"),
        ("dynamo.frontend", ["--router-mode", "kv", "--kv-ttl", "0"], "--kv-ttl 0.0: must be positive"),
        ("dynamo.frontend", ["--http-port", "not-a-port"], "invalid int value"),
        ("dynamo.llama_cpp", ["--model-path", str(tmp_path / "missing.gguf")], "no such GGUF file"),
    ]:
        process = deployment.start(module, *args, ready=None)
        assert process.popen.wait(60) != 0
        output = process.output()
        assert message in output and "Traceback" not in output, output


def test_operator_metrics(deployment):
    url = deployment.frontend()
    deployment.mocker("mock", "--itl-ms", "30")
    wait_for_models(url, {"mock"})
    api = client(url)
    api.completions.create(model="mock", prompt="one two three", max_tokens=5)
    api.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    stream = api.completions.create(model="mock", prompt="hi", max_tokens=1000, stream=True)
    next(iter(stream))
    worker = http(url + "/health")[1]["instances"][0]["id"]
    during = metrics_text(url)
    stream.close()  # the client leaves mid-answer
    body = json.dumps({"model": "mock", "prompt": "hi", "max_tokens": 20}).encode()
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as impatient:  # and one not streaming
        impatient.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.2)
    http(url + "/v1/completions", {"model": "mock", "prompt": "word " * 9000, "max_tokens": 1})  # the worker refuses
    deadline = time.monotonic() + 10
    while 'dynamo_frontend_client_disconnects_total{model="mock"} 2.0' not in (after := metrics_text(url)):
        assert time.monotonic() < deadline, after
        time.sleep(0.1)
    assert f'dynamo_frontend_worker_inflight_requests{{model="mock",worker="{worker}"}} 1.0' in during
    assert f'dynamo_frontend_worker_inflight_requests{{model="mock",worker="{worker}"}} 0.0' in after
    assert 'dynamo_frontend_queued_requests{model="mock"} 0.0' in after
    # Lengths of the three finished answers: prompts of 3, 3 (1 word + 2 for the role) and 1 tokens,
    # answers of 5, 2 and 20 (the one whose client left without reading it).
    assert 'dynamo_frontend_input_sequence_tokens_bucket{le="4.0",model="mock"} 3.0' in after
    assert 'dynamo_frontend_input_sequence_tokens_sum{model="mock"} 7.0' in after
    assert 'dynamo_frontend_output_sequence_tokens_bucket{le="1.0",model="mock"} 0.0' in after
    assert 'dynamo_frontend_output_sequence_tokens_bucket{le="16.0",model="mock"} 2.0' in after
    assert 'dynamo_frontend_output_sequence_tokens_sum{model="mock"} 27.0' in after
    assert f'dynamo_frontend_worker_errors_total{{kind="400",model="mock",worker="{worker}"}} 1.0' in after


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return response.read().decode()


def test_queued_requests_wait_for_their_first_token(deployment):
    url = deployment.frontend()
    deployment.mocker("mock", "--ttft-ms", "1500")
    wait_for_models(url, {"mock"})
    waiting = threading.Thread(target=lambda: client(url).completions.create(model="mock", prompt="hi", max_tokens=1))
    waiting.start()
    time.sleep(0.5)
    during = metrics_text(url)
    waiting.join()
    assert 'dynamo_frontend_queued_requests{model="mock"} 1.0' in during
    assert 'dynamo_frontend_queued_requests{model="mock"} 0.0' in metrics_text(url)


def test_a_model_folder_the_frontend_cannot_use_is_one_line(deployment, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")  # the mocker only needs it there; the frontend reads it
    url = deployment.frontend()
    deployment.mocker("mock", "--model-path", str(folder))
    wait_for_models(url, {"mock"})
    status, body, _ = http(url + "/v1/chat/completions", {"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 500 and body["error"]["type"] == "server_error"
    assert body["error"]["message"].startswith("the frontend cannot preprocess for 'mock': ")
    assert "\n" not in body["error"]["message"]


def test_a_model_folder_not_on_the_frontends_machine_leaves_templating_to_the_worker(deployment, tmp_path):
    """A worker on another machine advertises a path the frontend cannot read: its requests go to it
    as chats (the worker templates them), not as errors."""
    from dynamo.mocker import tiny_model

    folder = tiny_model.write(tmp_path / "model")
    url = deployment.frontend()
    deployment.mocker("mock", "--model-path", str(folder))
    wait_for_models(url, {"mock"})
    shutil.rmtree(folder)
    answer = client(url).chat.completions.create(model="mock", messages=[{"role": "user", "content": "one two three"}],
                                                  max_tokens=2)
    assert answer.usage.prompt_tokens == 5  # the mocker's count of the chat itself: role, three words, end
