"""KV-aware routing against round-robin on a shared-prefix workload (issue 22's, as measured on
upstream Dynamo 1.6.1): 8 system prompts of about 2,000 tokens; 480 streamed chat requests, each one
of them plus a short question; 8 connections; two mockers, each with a KV cache of 160 blocks of 64
tokens (tight: 4 of the 8 prompts fit in each), then a large one (all 8 fit). For each row: the
part of the prompt tokens that came from the KV cache (the answers' usage.prompt_tokens_details.
cached_tokens), time to first token p50/p99/mean and requests/s.

The model is a tiny one written here (dynamo.mocker.tiny_model: its tokenizer and chat template; a
system prompt of 1,000 of its words is about 2,000 tokens); the frontend templates and tokenizes, the
mockers get token ids. The mocker's timing (its flags below): prefill runs one at a time per worker
at PREFILL_US per uncached token, answers decode side by side at ITL_MS per token, MAX_TOKENS each.
Before the rows: the frontend's CPU time to template and tokenize one of these chats, the first
time and again (preprocess.py encodes with fastokens where it reads the tokenizer.json, and keeps the
tokens of the text between special tokens).

--upstream VENV runs the same rows on upstream Dynamo installed there (its Rust frontend with
--router-mode kv or round-robin, its mockers with --num-gpu-blocks-override and --block-size 64 at
its own timing model, DYN_LOG=warn), one stack after the other on the same machine. Its mocker's
tokens decode to empty text with the tiny tokenizer, so its TTFT is to its first chunk (the role,
which it sends with the first token); ours is to the first token. The connections are kept alive:
upstream's server does not set TCP_NODELAY, which costs it about 40 ms per streamed response
(../shared/notes/upstream-peer.md), in its TTFT too.

--short instead measures the frontends themselves, ours against upstream's (with --upstream):
16 connections of short streamed chats (a 12-word question, 16 tokens of answer), round-robin, the
mockers as fast as they go (ours without delays, upstream's at --speedup-ratio 1000). Each row
also gives the CPU milliseconds per request of the frontend (all its processes), of the two mockers
and of this client, and the load average: the machine is shared, and a frontend with more threads
(upstream's Rust runtime runs one per core) gets more of it when other programs want the cores too;
--processes 0 gives ours one process per core. --close opens a connection per request.

Targets: kv on the tight cache caches at least the 82-84 % upstream reached; its mean TTFT gain over
our round-robin is at least upstream's 12 %; templating and tokenizing costs <= 0.3 ms; with
--short ours serves at least upstream's req/s.
Run (needs `tokenizers`): python benchmarks/kv_routing.py [--repeat N] [--requests N] [--upstream VENV]
    [--short [--processes N] [--close]] [--preprocessing]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from frontend_speed import cpu_seconds, family
from runtime_start import installed_env, load_average

from dynamo.frontend.kv_index import DEFAULT_WEIGHT
from dynamo.mocker import tiny_model

PROMPTS = 8
PROMPT_WORDS = 1000  # about 2,000 tokens of the tiny model's
CONNECTIONS = 8
SHORT_CONNECTIONS = 16
BLOCK_SIZE = 64
CACHES = {"tight": 160, "large": 4096}  # blocks per worker
PREFILL_US = 40  # per uncached prompt token
ITL_MS = 5
MAX_TOKENS = 32
VOCABULARY = [f"{syllable}{number}" for syllable in ("ka", "lo", "mi", "ru", "te", "zo") for number in range(50)]
UPSTREAM_ENV = {"DYN_DISCOVERY_BACKEND": "file", "DYN_REQUEST_PLANE": "tcp", "DYN_EVENT_PLANE": "zmq",
                "DYN_TCP_RPC_HOST": "127.0.0.1", "DYN_TCP_RESPONSE_STREAM_HOST": "127.0.0.1",
                "DYN_EVENT_PLANE_HOST": "127.0.0.1", "DYN_LOG": "warn"}


@dataclass
class Row:
    stack: str
    cache: str
    mode: str
    cached: float  # fraction of prompt tokens
    ttft_p50: float  # ms
    ttft_p99: float
    ttft_mean: float
    rps: float
    frontend_cpu: float  # ms per request, all the frontend's processes
    mocker_cpu: float  # ms per request, both mockers
    client_cpu: float  # ms per request, this benchmark's client (the same for both stacks)
    load: str  # the load average when the row ended


def workload(requests: int, short: bool = False, seed: int = 22) -> list[str]:
    """The requests' prompts: a system prompt (which of the 8 at random) and a short question; with
    `short`, the question alone."""
    rng = random.Random(seed)
    systems = [" ".join(rng.choices(VOCABULARY, k=PROMPT_WORDS)) for _ in range(PROMPTS)]

    def messages() -> list[dict[str, str]]:
        question = [{"role": "user", "content": " ".join(rng.choices(VOCABULARY, k=12)) + "?"}]
        return question if short else [{"role": "system", "content": rng.choice(systems)}, *question]

    return [json.dumps({"model": "mock", "stream": True, "max_tokens": 16 if short else MAX_TOKENS,
                        "stream_options": {"include_usage": True}, "messages": messages()})
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
            if first is None and chunk["choices"]:  # ours: the first token; upstream's: its role chunk
                first = time.perf_counter() - started
            if chunk.get("usage"):
                usage = chunk["usage"]
    details = usage.get("prompt_tokens_details") or {}
    return first, usage["prompt_tokens"], details.get("cached_tokens") or 0


async def drive(url: str, bodies: list[str], connections: int, close: bool = False
                ) -> tuple[list[tuple[float, int, int]], float]:
    """The answers' figures and the seconds they took; `close`: a new connection per request."""
    queue = list(reversed(bodies))
    results: list[tuple[float, int, int]] = []

    async def connection(session: aiohttp.ClientSession) -> None:
        while queue:
            results.append(await one(session, url, queue.pop()))

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections, force_close=close)) as session:
        await asyncio.gather(*(connection(session) for _ in range(connections)))
    return results, time.perf_counter() - started


def wait_ready(url: str, workers: int, processes: list[subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                instances = json.loads(response.read()).get("instances", [])
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as response:
                models = [model["id"] for model in json.loads(response.read())["data"]]
            # upstream lists each worker's endpoints: its "generate" ones are the workers
            if sum(instance.get("endpoint", "generate") == "generate" for instance in instances) == workers \
                    and "mock" in models:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the frontend at {url} did not see {workers} workers in {timeout} s")
        time.sleep(0.2)


def commands(stack: str, mode: str, cache: str, port: int, model: Path, args: argparse.Namespace
             ) -> tuple[list[str], list[str]]:
    """The frontend's and a mocker's command lines."""
    if stack == "ours":
        python = [sys.executable, "-m"]
        return ([*python, "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port), "--router-mode",
                 mode, "--kv-overlap-weight", str(args.weight), "--skip-preflight", "--processes", str(args.processes)],
                [*python, "dynamo.mocker", "--model-name", "mock", "--model-path", str(model), "--skip-preflight",
                 "--block-size", str(BLOCK_SIZE), "--num-gpu-blocks", str(CACHES[cache]),
                 *([] if args.short else ["--prefill-us-per-token", str(PREFILL_US), "--itl-ms", str(ITL_MS)])])
    python = [str(args.upstream / "bin" / "python"), "-m"]
    return ([*python, "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port), "--router-mode", mode],
            [*python, "dynamo.mocker", "--model-name", "mock", "--model-path", str(model),
             "--block-size", str(BLOCK_SIZE), "--num-gpu-blocks-override", str(CACHES[cache]),
             *(["--speedup-ratio", "1000"] if args.short else [])])


def measure(stack: str, cache: str, mode: str, bodies: list[str], model: Path, args: argparse.Namespace) -> Row:
    with tempfile.TemporaryDirectory() as scratch:
        if stack == "ours":
            env = installed_env(DYN_DISCOVERY_DIR=scratch, DYN_NAMESPACE="kvbench")
        else:  # from a directory of its own: our checkout's dynamo/ must not shadow upstream's
            env = {key: value for key, value in installed_env().items() if key != "PYTHONPATH"}
            env.update(UPSTREAM_ENV, DYN_FILE_KV=scratch)
        frontend, mocker = commands(stack, mode, cache, args.port, model, args)
        processes = [subprocess.Popen(frontend, env=env, cwd=scratch, stderr=subprocess.DEVNULL)]
        processes += [subprocess.Popen(mocker, env=env, cwd=scratch, stderr=subprocess.DEVNULL) for _ in range(2)]
        url = f"http://127.0.0.1:{args.port}"
        try:
            wait_ready(url, 2, processes)
            frontend, mockers = family(processes[0].pid), [process.pid for process in processes[1:]]
            before = cpu_seconds(frontend), cpu_seconds(mockers), time.process_time()
            results, seconds = asyncio.run(drive(url, bodies, SHORT_CONNECTIONS if args.short else CONNECTIONS,
                                                        args.close))
            spent = cpu_seconds(frontend) - before[0], cpu_seconds(mockers) - before[1], time.process_time() - before[2]
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait()
    ttfts = sorted(result[0] * 1000 for result in results)
    return Row(stack, cache, mode, sum(r[2] for r in results) / sum(r[1] for r in results),
               statistics.median(ttfts), ttfts[int(0.99 * (len(ttfts) - 1))], statistics.fmean(ttfts),
               len(results) / seconds, *(part * 1000 / len(results) for part in spent), load_average())


@dataclass
class Preprocessing:
    """CPU ms per chat (means over the workload's chats in order), and the tokens of one."""
    first: float  # templating and tokenizing a chat whose system prompt comes for the first time
    again: float  # ... one whose system prompt came before
    library: float  # the tokenizers library alone on a first-time chat's whole text (encode)
    tokens: int
    encoder: str  # what the frontend encodes with: fastokens where it reads the tokenizer.json, else tokenizers
    workload: float  # ... every chat of the workload, in its order (first times included)


def preprocessing_cost(model: Path, bodies: list[str]) -> Preprocessing:
    from dynamo.frontend.preprocess import Preprocessor
    from dynamo.runtime.protocol import GenerateRequest

    preprocessor = Preprocessor(model)
    seen: set[str] = set()
    first: list[float] = []
    again: list[float] = []
    library: list[float] = []
    tokens = 0
    for body in bodies:
        messages = json.loads(body)["messages"]
        request = GenerateRequest(model="mock", messages=messages)
        started = time.process_time()
        tokens = len(preprocessor.prepare(request).prompt_token_ids)
        spent = (time.process_time() - started) * 1000
        if messages[0]["content"] in seen:
            again.append(spent)
            continue
        seen.add(messages[0]["content"])
        first.append(spent)
        text = preprocessor.chat_text(messages)
        started = time.process_time()
        preprocessor.tokenizer.encode(text, add_special_tokens=False)
        library.append((time.process_time() - started) * 1000)
    encoder = "fastokens" if preprocessor.fast else "tokenizers"
    return Preprocessing(statistics.fmean(first), statistics.fmean(again), statistics.fmean(library), tokens,
                         f"{encoder} {importlib.metadata.version(encoder)}", statistics.fmean(first + again))


def report_preprocessing(cost: Preprocessing) -> None:
    print(f"templating + tokenizing one chat of {cost.tokens} tokens in our frontend (encoding with {cost.encoder}): "
          f"{cost.first:.3f} ms CPU the first time its system prompt comes (the tokenizers library's encode alone: "
          f"{cost.library:.3f} ms), {cost.again:.3f} ms when it came before")
    print(f"per chat of the workload ({cost.tokens} tokens each, first times included): {cost.workload:.3f} ms CPU")
    print(f"target <= 0.3 ms: {'met' if cost.workload <= 0.3 else 'NOT met'} per chat of the workload, "
          f"{'met' if cost.again <= 0.3 else 'NOT met'} for a chat whose system prompt came before, "
          f"{'met' if cost.first <= 0.3 else 'NOT met'} the first time (the tokenizers library's encode "
          f"alone: {'met' if cost.library <= 0.3 else 'NOT met'})")


def short(args: argparse.Namespace, stacks: list[str], bodies: list[str], model: Path) -> None:
    print(f"{args.requests} short streamed chats over {SHORT_CONNECTIONS} connections, round-robin over 2 mockers "
          f"without delays, {args.processes} process(es) of our frontend, "
          f"{'a connection per request' if args.close else 'kept-alive connections'}; load average {load_average()}")
    print(f"{'stack':9} {'TTFT p50':>9} {'p99':>7} {'req/s':>6} {'CPU ms/req: frontend':>20} {'mockers':>8} "
          f"{'client':>7}  load average")
    rows: dict[str, list[Row]] = {stack: [] for stack in stacks}
    for _ in range(args.repeat):
        for stack in stacks:
            row = measure(stack, "large", "round-robin", bodies, model, args)
            rows[stack].append(row)
            print(f"{stack:9} {row.ttft_p50:7.1f}ms {row.ttft_p99:5.0f}ms {row.rps:6.1f} {row.frontend_cpu:20.3f} "
                  f"{row.mocker_cpu:8.3f} {row.client_cpu:7.3f}  {row.load}", flush=True)
    for stack in stacks:
        print(f"{stack}: {statistics.median(row.rps for row in rows[stack]):.1f} req/s (median), frontend "
              f"{statistics.median(row.frontend_cpu for row in rows[stack]):.3f} CPU ms per request (median)")


def main() -> None:
    flags = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    flags.add_argument("--requests", type=int, default=480)
    flags.add_argument("--repeat", type=int, default=1, help="rounds of every row, in turn (default: 1)")
    flags.add_argument("--port", type=int, default=18022)
    flags.add_argument("--weight", type=float, default=DEFAULT_WEIGHT, help="our frontend's --kv-overlap-weight")
    flags.add_argument("--caches", nargs="+", choices=CACHES, default=list(CACHES))
    flags.add_argument("--modes", nargs="+", choices=("round-robin", "kv", "kv-approx"), default=["round-robin", "kv"])
    flags.add_argument("--upstream", type=Path, help="a venv with upstream Dynamo (ai-dynamo) to run the rows on too")
    flags.add_argument("--short", action="store_true", help="the frontends' own speed on short chats instead")
    flags.add_argument("--preprocessing", action="store_true", help="only the CPU cost of templating and tokenizing")
    flags.add_argument("--close", action="store_true", help="a connection per request (Connection: close), which "
                       "spares upstream's server the stall of its small writes on kept-alive connections")
    flags.add_argument("--processes", type=int, default=1, help="our frontend's --processes (default: 1)")
    args = flags.parse_args()
    if args.upstream and not (args.upstream / "bin" / "python").exists():
        flags.error(f"--upstream {args.upstream}: no bin/python there; give the venv upstream Dynamo is installed in")
    stacks = ["ours", "upstream"] if args.upstream else ["ours"]
    if args.short:
        args.caches, args.modes = ["large"], ["round-robin"]
    bodies = workload(args.requests, args.short)
    with tempfile.TemporaryDirectory() as scratch:
        model = tiny_model.write(Path(scratch) / "tiny")
        if args.short:
            short(args, stacks, bodies, model)
            return
        cost = preprocessing_cost(model, bodies)
        if args.preprocessing:
            report_preprocessing(cost)
            return
        print(f"{args.requests} streamed chats over {CONNECTIONS} connections, {PROMPTS} system prompts "
              f"({cost.tokens} tokens with the question); 2 mockers: blocks of {BLOCK_SIZE}, ours at {PREFILL_US} us per "
              f"uncached token (one prefill at a time), {ITL_MS} ms/token, {MAX_TOKENS} tokens; "
              f"load average {load_average()}")
        report_preprocessing(cost)
        print(f"{'stack':9} {'cache':6} {'mode':12} {'cached':>7} {'TTFT p50':>9} {'p99':>7} {'mean':>7} {'req/s':>6} "
              f"{'frontend CPU ms/req':>19}  load average")
        rows: list[Row] = []
        for _ in range(args.repeat):
            for cache in args.caches:
                for stack in stacks:
                    for mode in args.modes:
                        if stack == "upstream" and mode == "kv-approx":
                            continue
                        row = measure(stack, cache, mode, bodies, model, args)
                        rows.append(row)
                        print(f"{stack:9} {cache:6} {mode:12} {row.cached:7.1%} {row.ttft_p50:7.1f}ms "
                              f"{row.ttft_p99:5.0f}ms {row.ttft_mean:5.1f}ms {row.rps:6.1f} {row.frontend_cpu:19.3f}  "
                              f"{row.load}", flush=True)
    for stack in stacks:
        for cache in args.caches:
            chosen = [row for row in rows if row.stack == stack and row.cache == cache]
            mean = {mode: statistics.fmean(r.ttft_mean for r in chosen if r.mode == mode) for mode in ("round-robin", "kv")}
            rps = {mode: statistics.fmean(r.rps for r in chosen if r.mode == mode) for mode in ("round-robin", "kv")}
            print(f"{stack} {cache}: kv against round-robin: mean TTFT {mean['kv'] / mean['round-robin'] - 1:+.0%}, "
                  f"throughput x{rps['kv'] / rps['round-robin']:.2f}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
