"""KV-aware routing against round-robin on a shared-prefix workload (issue 22's, as measured on
upstream Dynamo 1.6.1): 8 system prompts of about 2,000 tokens; 480 streamed chat requests, each one
of them plus a short question; 8 connections; two mockers, each with a KV cache of 160 blocks of 64
tokens (tight: 4 of the 8 prompts fit in each), then a large one (all 8 fit). For each row: the
part of the prompt tokens that came from the KV cache (the answers' usage.prompt_tokens_details.
cached_tokens), time to first token p50/p99/mean and requests/s.

The mocker's timing (its flags below): prefill runs one at a time per worker at PREFILL_US per
uncached token, answers decode side by side at ITL_MS per token, MAX_TOKENS tokens each.

Targets: kv on the tight cache caches at least the 82-84 % upstream reached; its mean TTFT gain over
our round-robin is at least upstream's 12 %.
Run: python benchmarks/kv_routing.py [--repeat N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

import aiohttp
from runtime_start import installed_env, load_average

from dynamo.frontend.kv_index import DEFAULT_WEIGHT

PROMPTS = 8
PROMPT_WORDS = 2000
CONNECTIONS = 8
BLOCK_SIZE = 64
CACHES = {"tight": 160, "large": 4096}  # blocks per worker
PREFILL_US = 40  # per uncached prompt token
ITL_MS = 5
MAX_TOKENS = 32
VOCABULARY = [f"{syllable}{number}" for syllable in ("ka", "lo", "mi", "ru", "te", "zo") for number in range(50)]


@dataclass
class Row:
    cache: str
    mode: str
    cached: float  # fraction of prompt tokens
    ttft_p50: float  # ms
    ttft_p99: float
    ttft_mean: float
    rps: float


def workload(requests: int, seed: int = 22) -> list[str]:
    """The requests' prompts: a system prompt (which of the 8 at random) and a short question."""
    rng = random.Random(seed)
    systems = [" ".join(rng.choices(VOCABULARY, k=PROMPT_WORDS)) for _ in range(PROMPTS)]
    return [json.dumps({"model": "mock", "stream": True, "max_tokens": MAX_TOKENS,
                        "stream_options": {"include_usage": True},
                        "messages": [{"role": "system", "content": rng.choice(systems)},
                                     {"role": "user", "content": " ".join(rng.choices(VOCABULARY, k=12)) + "?"}]})
            for _ in range(requests)]


async def one(session: aiohttp.ClientSession, url: str, body: str) -> tuple[float, int, int]:
    """(seconds to the first token, prompt tokens, cached prompt tokens) of one streamed answer."""
    started = time.perf_counter()
    first = None
    usage = None
    async with session.post(url + "/v1/chat/completions", data=body,
                            headers={"Content-Type": "application/json"}) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                usage = chunk["usage"]
    details = usage.get("prompt_tokens_details") or {}
    return first, usage["prompt_tokens"], details.get("cached_tokens") or 0


async def drive(url: str, bodies: list[str]) -> tuple[list[tuple[float, int, int]], float]:
    queue = list(reversed(bodies))
    results: list[tuple[float, int, int]] = []

    async def connection(session: aiohttp.ClientSession) -> None:
        while queue:
            results.append(await one(session, url, queue.pop()))

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:
        await asyncio.gather(*(connection(session) for _ in range(CONNECTIONS)))
    return results, time.perf_counter() - started


def wait_ready(url: str, workers: int, processes: list[subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if len(json.loads(response.read())["instances"]) == workers:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the frontend at {url} did not see {workers} workers in {timeout} s")
        time.sleep(0.2)


def measure(cache: str, mode: str, bodies: list[str], port: int, weight: float) -> Row:
    with tempfile.TemporaryDirectory() as discovery:
        env = installed_env(DYN_DISCOVERY_DIR=discovery, DYN_NAMESPACE="kvbench")
        python = [sys.executable, "-m"]
        processes = [subprocess.Popen([*python, "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port",
                                       str(port), "--router-mode", mode, "--kv-overlap-weight", str(weight),
                                       "--skip-preflight"], env=env,
                                      stderr=subprocess.DEVNULL)]
        processes += [subprocess.Popen([*python, "dynamo.mocker", "--model-name", "mock", "--skip-preflight",
                                        "--block-size", str(BLOCK_SIZE), "--num-gpu-blocks", str(CACHES[cache]),
                                        "--prefill-us-per-token", str(PREFILL_US), "--itl-ms", str(ITL_MS)],
                                       env=env, stderr=subprocess.DEVNULL) for _ in range(2)]
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, 2, processes)
            results, seconds = asyncio.run(drive(url, bodies))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait()
    ttfts = sorted(result[0] * 1000 for result in results)
    return Row(cache, mode, sum(r[2] for r in results) / sum(r[1] for r in results),
               statistics.median(ttfts), ttfts[int(0.99 * (len(ttfts) - 1))], statistics.fmean(ttfts),
               len(results) / seconds)


def main() -> None:
    flags = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    flags.add_argument("--requests", type=int, default=480)
    flags.add_argument("--repeat", type=int, default=1, help="rounds of every row, in turn (default: 1)")
    flags.add_argument("--port", type=int, default=18022)
    flags.add_argument("--weight", type=float, default=DEFAULT_WEIGHT, help="the frontend's --kv-overlap-weight")
    flags.add_argument("--caches", nargs="+", choices=CACHES, default=list(CACHES))
    flags.add_argument("--modes", nargs="+", choices=("round-robin", "kv", "kv-approx"), default=["round-robin", "kv"])
    args = flags.parse_args()
    bodies = workload(args.requests)
    print(f"{args.requests} streamed chats over {CONNECTIONS} connections, {PROMPTS} system prompts of "
          f"{PROMPT_WORDS} words; 2 mockers: blocks of {BLOCK_SIZE}, prefill {PREFILL_US} us/uncached token "
          f"(one at a time), {ITL_MS} ms/token, {MAX_TOKENS} tokens; load average {load_average()}")
    print(f"{'cache':6} {'mode':12} {'cached':>7} {'TTFT p50':>9} {'p99':>7} {'mean':>7} {'req/s':>6}")
    rows: list[Row] = []
    for _ in range(args.repeat):
        for cache in args.caches:
            for mode in args.modes:
                row = measure(cache, mode, bodies, args.port, args.weight)
                rows.append(row)
                print(f"{cache:6} {mode:12} {row.cached:7.1%} {row.ttft_p50:7.1f}ms {row.ttft_p99:5.0f}ms "
                      f"{row.ttft_mean:5.1f}ms {row.rps:6.1f}", flush=True)
    for cache in CACHES:
        mean = {mode: statistics.fmean(r.ttft_mean for r in rows if r.cache == cache and r.mode == mode)
                for mode in ("round-robin", "kv")}
        rps = {mode: statistics.fmean(r.rps for r in rows if r.cache == cache and r.mode == mode)
               for mode in ("round-robin", "kv")}
        print(f"{cache}: kv's mean TTFT {1 - mean['kv'] / mean['round-robin']:.0%} lower than round-robin's, "
              f"throughput x{rps['kv'] / rps['round-robin']:.2f}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
