"""Migration: real mocker workers serve one model; the one answering is SIGKILLed mid-answer and
the frontend (--migration-limit) finishes the answer on another, as one unbroken answer."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request

import openai
import pytest
from test_frontend import client, deployment, http, wait_for_instances  # noqa: F401 (fixture)

PROMPT = "tell me a long story"
TOKENS = 40


def busy_worker(url: str, workers: dict, timeout: float = 10):
    """The worker process answering the one request in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for instance in http(url + "/health")[1]["instances"]:
            if instance["inflight"]:
                return workers[instance["id"]]
        time.sleep(0.02)
    raise AssertionError("no worker took the request")


def start_workers(deployment, *frontend_args, count=2, mocker_args=()):  # noqa: F811
    url = deployment.frontend(*frontend_args)
    workers = {}
    for _ in range(count):
        process = deployment.mocker("mock", "--itl-ms", "40", *mocker_args)
        workers[process.instance_id()] = process
    wait_for_instances(url, count)
    return url, workers


def metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return response.read().decode()


@pytest.mark.parametrize("mode", ["round-robin", "kv"])
def test_stream_survives_its_worker(deployment, mode):  # noqa: F811
    # Three workers: each answer below loses one.
    url, workers = start_workers(deployment, "--migration-limit", "2", "--router-mode", mode, count=3,
                                 mocker_args=("--max-tokens", str(TOKENS)))
    api = client(url)
    whole = api.completions.create(model="mock", prompt=PROMPT, max_tokens=TOKENS, seed=4)
    stream = api.completions.create(model="mock", prompt=PROMPT, max_tokens=TOKENS, seed=4, stream=True,
                                    stream_options={"include_usage": True})
    chunks = iter(stream)
    received = [next(chunks) for _ in range(5)]
    busy_worker(url, workers).stop(signal.SIGKILL)
    received += list(chunks)
    text = "".join(chunk.choices[0].text for chunk in received if chunk.choices)
    assert text == whole.choices[0].text  # the other worker went on from the very word the first stopped at
    assert [c.choices[0].finish_reason for c in received if c.choices][-1] == "length"
    assert received[-1].usage.completion_tokens == TOKENS and received[-1].usage.prompt_tokens == 5  # once each
    # Without max_tokens the engine's default length (the mocker's --max-tokens) holds for the whole answer.
    default = api.completions.create(model="mock", prompt=PROMPT, seed=4, stream=True)
    chunks = iter(default)
    received = [next(chunks) for _ in range(3)]
    busy_worker(url, workers).stop(signal.SIGKILL)
    received += list(chunks)
    assert "".join(chunk.choices[0].text for chunk in received if chunk.choices) == whole.choices[0].text
    exposition = metrics(url)
    assert 'dynamo_frontend_model_migrations_total{model="mock"} 2.0' in exposition
    assert 'endpoint="completions",model="mock",request_type="stream",status="success"} 2.0' in exposition
    assert 'kind="gone",model="mock"' in exposition  # the dead worker's error, by worker


def test_several_choices_survive_their_worker(deployment):  # noqa: F811
    """n=2 goes to one worker as one request; when it dies each unfinished choice goes on elsewhere."""
    url, workers = start_workers(deployment, "--migration-limit", "1")
    api = client(url)
    whole = api.completions.create(model="mock", prompt=PROMPT, max_tokens=TOKENS, seed=4, n=2)
    stream = api.completions.create(model="mock", prompt=PROMPT, max_tokens=TOKENS, seed=4, n=2, stream=True,
                                    stream_options={"include_usage": True})
    chunks = iter(stream)
    received = [next(chunks) for _ in range(6)]
    busy_worker(url, workers).stop(signal.SIGKILL)
    received += list(chunks)
    texts = ["".join(c.choices[0].text for c in received if c.choices and c.choices[0].index == index)
             for index in (0, 1)]
    assert texts == [choice.text for choice in whole.choices] and texts[0] != texts[1]
    assert received[-1].usage.completion_tokens == 2 * TOKENS and received[-1].usage.prompt_tokens == 5
    assert 'dynamo_frontend_model_migrations_total{model="mock"} 1.0' in metrics(url)


def test_unary_answer_survives_its_worker(deployment):  # noqa: F811
    url, workers = start_workers(deployment, "--migration-limit", "1")
    api = client(url)
    messages = [{"role": "user", "content": PROMPT}]
    whole = api.chat.completions.create(model="mock", messages=messages, max_tokens=TOKENS, seed=9)
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(api.chat.completions.create(
        model="mock", messages=messages, max_tokens=TOKENS, seed=9)))
    thread.start()
    time.sleep(0.3)  # a few words in
    busy_worker(url, workers).stop(signal.SIGKILL)
    thread.join(30)
    assert answers[0].choices[0].message.content == whole.choices[0].message.content
    assert (answers[0].usage.prompt_tokens, answers[0].usage.completion_tokens) == (7, TOKENS)
    assert 'dynamo_frontend_model_migrations_total{model="mock"} 1.0' in metrics(url)


def test_without_migration_the_stream_ends_with_an_error(deployment):  # noqa: F811
    url, workers = start_workers(deployment)  # --migration-limit 0, the default
    stream = client(url).completions.create(model="mock", prompt=PROMPT, max_tokens=TOKENS, stream=True)
    chunks = iter(stream)
    next(chunks)
    busy_worker(url, workers).stop(signal.SIGKILL)
    with pytest.raises(openai.APIError, match="stopped while answering"):
        list(chunks)
    assert "dynamo_frontend_model_migrations_total{" not in metrics(url)


def test_negative_limit_is_one_line(deployment):  # noqa: F811
    process = deployment.start("dynamo.frontend", "--migration-limit", "-1", ready=None)
    assert process.popen.wait(60) != 0
    assert "--migration-limit -1: must not be negative" in process.output() and "Traceback" not in process.output()
