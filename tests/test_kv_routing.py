"""KV-aware routing: the mocker's paged KV cache and its events, the frontend's index of them, and
requests going where their prefix is cached."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from processes import Deployment
from test_frontend import client, deployment, http, metrics_text, wait_for_instances  # noqa: F401 (fixture)

from dynamo.frontend.kv_index import KvIndex, KvRouting
from dynamo.frontend.router import Router, WorkerClient
from dynamo.mocker.engine import MockEngine
from dynamo.mocker.kv_cache import KvCache
from dynamo.runtime.discovery import EmbeddedDiscovery, Instance
from dynamo.runtime.kv_events import block_hashes, prompt_tokens
from dynamo.runtime.protocol import GenerateRequest, decode


class Recorder:
    """Stands for a frontend's connection: keeps the frames a publisher sends."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(decode(frame)["kv"])


def worker(name: str) -> WorkerClient:
    return WorkerClient(Instance(id=name, model="m", framework="mocker", address="127.0.0.1:1", pid=1, host="h"))


def words(count: int, start: int = 0) -> str:
    return " ".join(f"w{number}" for number in range(start, start + count))


def request(prompt: str) -> GenerateRequest:
    return GenerateRequest(model="m", prompt=prompt)


def test_block_hashes_name_whole_prefixes():
    first = block_hashes(list(range(10)), 4)
    assert len(first) == 2  # the partial last block has no hash
    assert block_hashes([0, 1, 2, 3, 9, 9, 9, 9], 4)[0] == first[0]
    assert block_hashes([0, 1, 2, 3, 9, 9, 9, 9], 4)[1] != first[1]
    assert block_hashes([7, 1, 2, 3, 4, 5, 6, 7], 4)[1] != first[1]  # same block, other prefix


def test_cache_reuses_prefixes_and_evicts_least_recently_used():
    cache = KvCache(block_size=2, capacity=4)
    events = Recorder()
    cache.events.subscribe(events)
    a = block_hashes([1, 2, 3, 4, 5, 6], 2)
    cached, taken = cache.acquire(a)
    assert cached == 0 and events.frames[-1]["stored"] == a
    cache.release(taken)
    shared = block_hashes([1, 2, 3, 4, 8, 8], 2)  # a's first two blocks, then its own
    cached, taken = cache.acquire(shared)
    assert cached == 2 and events.frames[-1]["stored"] == shared[2:]
    cache.release(taken)
    other = block_hashes([9, 9], 2)  # the cache is full: a's last block was used least recently
    assert cache.acquire(other)[0] == 0
    assert events.frames[-1] == {"block_size": 2, "stored": other, "removed": [a[2]]}
    assert cache.cached_prefix(a) == 2 and cache.cached_prefix(shared) == 3


def test_held_blocks_are_not_evicted():
    cache = KvCache(block_size=1, capacity=2)
    cache.acquire([1, 2])
    cached, taken = cache.acquire([3, 4])  # no room: computed, not kept
    assert (cached, taken) == (0, []) and sorted(cache.blocks()) == [1, 2]


def test_a_new_subscriber_gets_every_block_first():
    cache = KvCache(block_size=1, capacity=8)
    cache.release(cache.acquire([1, 2])[1])
    events = Recorder()
    cache.events.subscribe(events)
    [frame] = events.frames
    assert frame["clear"] and sorted(frame["stored"]) == [1, 2]


def test_mocker_reports_cached_tokens_and_takes_longer_for_uncached_ones():
    engine = MockEngine(prefill_per_token=0.0005, block_size=16, kv_blocks=64, default_max_tokens=1)

    async def answer(prompt: str) -> tuple[float, int]:
        started = time.perf_counter()
        chunks = [chunk async for chunk in engine.generate(request(prompt))]
        return time.perf_counter() - started, chunks[-1].cached_tokens

    async def run() -> list[tuple[float, int]]:
        return [await answer(words(100)), await answer(words(100)), await answer(words(100) + " other")]

    (cold, none), (warm, cached), (_, longer) = asyncio.run(run())
    assert (none, cached, longer) == (0, 96, 96)  # 6 full blocks of 16
    assert cold >= 0.05 > warm


def test_longest_cached_prefix_wins():
    routing = KvRouting()
    a, b, c = worker("a"), worker("b"), worker("c")
    hashes = block_hashes(prompt_tokens(request(words(64 * 4))), 64)
    routing.on_event("a", "m", {"block_size": 64, "stored": hashes[:1]})
    routing.on_event("b", "m", {"block_size": 64, "stored": hashes[:3]})
    routing.on_event("c", "m", {"block_size": 64, "stored": hashes[1:]})  # no first block: no prefix
    for _ in range(3):
        chosen, ticket = routing.choose(request(words(64 * 4)), [a, b, c])
        assert chosen is b
        ticket.done()


def test_eviction_events_move_routing():
    routing = KvRouting()
    a, b = worker("a"), worker("b")
    hashes = block_hashes(prompt_tokens(request(words(64 * 4))), 64)
    routing.on_event("a", "m", {"block_size": 64, "stored": hashes[:2]})
    routing.on_event("b", "m", {"block_size": 64, "stored": hashes})
    assert routing.choose(request(words(64 * 4)), [a, b])[0] is b
    routing.on_event("b", "m", {"block_size": 64, "removed": hashes[1:]})
    assert routing.choose(request(words(64 * 4)), [a, b])[0] is a


def test_load_outweighs_a_small_overlap():
    """The weight prices a block to prefill against a block of running work."""
    routing = KvRouting(weight=1.0)
    a, b = worker("a"), worker("b")
    hashes = block_hashes(prompt_tokens(request(words(64 * 2))), 64)
    routing.on_event("a", "m", {"block_size": 64, "stored": hashes[:1]})
    busy = [routing.choose(request(words(64 * 8, start=1000 * n)), [a])[1] for n in range(3)]  # 24 blocks on a
    assert routing.choose(request(words(64 * 2)), [a, b])[0] is b
    for ticket in busy:
        ticket.done()
    assert routing.choose(request(words(64 * 2)), [a, b])[0] is a


def test_approximate_mode_routes_repeats_together_without_events():
    routing = KvRouting(approximate=True, block_size=16)
    workers = [worker("a"), worker("b")]
    prompts = [words(100, start=1000 * n) for n in range(4)]
    first = {}
    for prompt in prompts:
        chosen, ticket = routing.choose(request(prompt), workers)
        first[prompt] = chosen
        ticket.done()
    assert {chosen.instance.id for chosen in first.values()} == {"a", "b"}  # new prompts spread
    for _ in range(3):
        for prompt in prompts:
            chosen, ticket = routing.choose(request(prompt), workers)
            assert chosen is first[prompt]
            ticket.done()


def test_approximate_predictions_expire():
    index = KvIndex(ttl=10)
    index.store("a", [1, 2], now=100)
    assert index.overlaps([1, 2], now=105) == {"a": 2}
    assert index.overlaps([1, 2], now=111) == {}
    index.store("b", [3], now=200)  # a later store purges what expired
    assert index.blocks == {3: {"b": 210}} and index.of_worker == {"a": set(), "b": {3}}


def test_a_dead_workers_blocks_leave_the_index(tmp_path):
    """A real mocker's events reach the router over its connection; SIGKILL drops its blocks."""
    processes = Deployment(tmp_path)
    try:
        process = processes.mocker("m", "--block-size", "16")
        [instance] = EmbeddedDiscovery(tmp_path / "discovery", "test").snapshot().values()

        async def run() -> tuple[set, set]:
            router = Router("kv")
            router.update({instance.id: instance})
            frames = [frame async for frame in router.generate(request(words(100)))]
            assert frames[-1]["prompt_tokens"] == 100
            deadline = time.monotonic() + 10
            while len(router.kv.index("m").of_worker.get(instance.id, ())) < 6:
                assert time.monotonic() < deadline, "no KV events came"
                await asyncio.sleep(0.01)
            before = set(router.kv.index("m").of_worker[instance.id])
            process.stop(signal.SIGKILL)
            while router.kv.index("m").of_worker.get(instance.id):
                assert time.monotonic() < deadline + 10, "the dead worker's blocks stayed"
                await asyncio.sleep(0.01)
            return before, set(router.kv.index("m").blocks)

        before, after = asyncio.run(run())
        assert before == set(block_hashes(prompt_tokens(request(words(100))), 16)) and after == set()
    finally:
        processes.stop()


def chat(url: str, prompt: str) -> tuple[str, int]:
    """(the worker that answered, the cached prompt tokens it reported)."""
    status, body, headers = http(url + "/v1/chat/completions", {
        "model": "mock", "messages": [{"role": "user", "content": prompt}], "max_tokens": 2})
    assert status == 200, body
    return headers["x-dynamo-worker"], body["usage"]["prompt_tokens_details"]["cached_tokens"]


@pytest.mark.parametrize("mode", ["kv", "kv-approx"])
def test_frontend_sends_a_prompt_where_it_is_cached(deployment, mode):  # noqa: F811
    url = deployment.frontend("--router-mode", mode, "--kv-block-size", "16")
    for _ in range(2):
        deployment.mocker("mock", "--block-size", "16")
    wait_for_instances(url, 2)
    prompts = [words(200, start=1000 * n) for n in range(4)]
    first = {prompt: chat(url, prompt) for prompt in prompts}
    assert all(cached == 0 for _, cached in first.values())
    assert len({worker for worker, _ in first.values()}) == 2
    for prompt in prompts:
        assert chat(url, prompt + " and one more question") == (first[prompt][0], 192)  # 12 blocks of 16
    text = metrics_text(url)
    decisions = sum(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith("dynamo_frontend_kv_routing_decisions_total"))
    cached = sum(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("dynamo_frontend_worker_cached_prompt_tokens_total"))
    assert (decisions, cached) == (8, 4 * 192)


def test_usage_reports_cached_tokens_on_every_endpoint(deployment):  # noqa: F811
    url = deployment.frontend()
    deployment.mocker("mock", "--block-size", "4")
    wait_for_instances(url, 1)
    api = client(url)
    prompt = words(10)
    api.completions.create(model="mock", prompt=prompt, max_tokens=1)
    again = api.completions.create(model="mock", prompt=prompt, max_tokens=1)
    assert again.usage.prompt_tokens_details.cached_tokens == 8
    stream = list(api.completions.create(model="mock", prompt=prompt, max_tokens=1, stream=True,
                                         stream_options={"include_usage": True}))
    assert stream[-1].usage.prompt_tokens_details.cached_tokens == 8
    status, body, _ = http(url + "/v1/responses", {"model": "mock", "input": prompt, "max_output_tokens": 1})
    assert status == 200, json.dumps(body)
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 0  # a chat's tokens: the role, the words
    status, body, _ = http(url + "/v1/responses", {"model": "mock", "input": prompt, "max_output_tokens": 1})
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 12  # 3 full blocks of 4
