"""The frontend's own cost: non-streaming chat completions against the mocker at zero delay, driven
by wrk (Debian's `wrk`) at 1, 16 and 64 concurrent connections, with one frontend process and with
one per core (--processes). For each row: requests/s, p50 and p99 latency, and the frontend's CPU
milliseconds per request (all its processes, from /proc); and the frontend's memory when idle.

On a small machine wrk and the mocker share the cores with the frontend, so requests/s alone
cannot show the processes scaling: CPU per request says what the frontend costs, and --pin puts
wrk and the mocker on the last core, the frontend on the others.
--baseline DIR runs the same rows (one process) for another checkout of this repository, for
example the code before a change: `git worktree add /tmp/old <commit>`.

Targets at 16 clients: p99 under 20 ms; CPU per request and idle memory of one process within
20 % of the baseline's.
Run: python benchmarks/frontend_speed.py [--seconds S] [--max-tokens N] [--pin] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from runtime_start import REPO, installed_env

CONCURRENCY = (1, 16, 64)
LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    clients: int
    rps: float
    p50: float
    p99: float
    errors: int
    cpu_ms: float  # the frontend's CPU time per request


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def family(pid: int) -> list[int]:
    """The process and its children (the frontend's processes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def memory_mib(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over the processes; PSS shares what forked processes share."""
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss / 1024, pss / 1024


def run_wrk(url: str, script: Path, connections: int, seconds: int, pin: list[str]) -> tuple[float, float, float,
                                                                                             int, int]:
    output = subprocess.run([*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                             url + "/v1/chat/completions"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rps, p50, p99, int(errors.group(1)) if errors else 0, total


def start(repo: Path, module_args: list[str], env: dict[str, str], pin: list[str]) -> subprocess.Popen:
    """`python -m MODULE ARGS` from `repo`'s code, returned once it prints its "ready" line."""
    process = subprocess.Popen([*pin, sys.executable, "-m", *module_args], cwd=repo, env=env, stderr=subprocess.PIPE,
                               text=True)
    for line in process.stderr:
        if "ready" in line:
            return process
    raise SystemExit(f"{module_args[0]} exited before it was ready")


def measure(repo: Path, processes: int, args: argparse.Namespace) -> tuple[list[Row], tuple[float, float]]:
    last_core = str(max(os.sched_getaffinity(0)))
    others = ",".join(str(core) for core in sorted(os.sched_getaffinity(0)) if str(core) != last_core)
    load_pin = ["taskset", "-c", last_core] if args.pin else []
    frontend_pin = ["taskset", "-c", others] if args.pin and others else []
    compileall.compile_dir(repo / "dynamo", quiet=1)
    with tempfile.TemporaryDirectory() as scratch:
        env = installed_env(DYN_DISCOVERY_DIR=scratch, DYN_SKIP_PREFLIGHT="1", PYTHONPATH=str(repo))
        port = 18000 + os.getpid() % 1000
        worker = start(repo, ["dynamo.mocker", "--model-name", "bench"], env, load_pin)
        flags = ["--processes", str(processes)] if processes > 1 else []
        frontend = start(repo, ["dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port), *flags], env,
                         frontend_pin)
        url = f"http://127.0.0.1:{port}"
        try:
            while b"bench" not in urllib.request.urlopen(url + "/v1/models").read():
                time.sleep(0.1)
            time.sleep(1)  # every process ready and idle
            pids = family(frontend.pid)
            idle = memory_mib(pids)
            body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Hello, how are you?"}],
                               "max_tokens": args.max_tokens})
            script = Path(scratch) / "post.lua"
            script.write_text(LUA.format(body=body))
            run_wrk(url, script, 16, 2, load_pin)  # warm up
            rows = []
            for connections in CONCURRENCY:
                before = cpu_seconds(pids)
                rps, p50, p99, errors, total = run_wrk(url, script, connections, args.seconds, load_pin)
                cpu_ms = (cpu_seconds(pids) - before) * 1000 / max(total, 1)
                rows.append(Row(connections, rps, p50, p99, errors, cpu_ms))
            return rows, idle
        finally:
            for process in (frontend, worker):
                process.terminate()
                process.wait()


def report(title: str, rows: list[Row], idle: tuple[float, float]) -> None:
    print(f"{title}: idle memory RSS {idle[0]:.1f} MiB, PSS {idle[1]:.1f} MiB")
    print(f"{'clients':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'errors':>7}")
    for row in rows:
        print(f"{row.clients:>8} {row.rps:>9.0f} {row.p50:>8.2f} {row.p99:>8.2f} {row.cpu_ms:>11.3f} {row.errors:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--pin", action="store_true", help="wrk and the mocker on the last core, the frontend on "
                                                           "the others")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way (one process)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if args.pin and not shutil.which("taskset"):
        raise SystemExit("taskset is not installed: apt-get install util-linux")
    cores = len(os.sched_getaffinity(0))
    frontend_cores = cores - 1 if args.pin and cores > 1 else cores
    print(f"frontend + mocker (zero delay, {args.max_tokens} tokens per answer), {cores} cores, wrk on the same "
          f"machine{' pinned with the mocker to the last core' if args.pin else ''}, {args.seconds} s per row")
    one, one_idle = measure(REPO, 1, args)
    report("this code, 1 process", one, one_idle)
    if frontend_cores > 1:
        many, many_idle = measure(REPO, frontend_cores, args)
        report(f"this code, {frontend_cores} processes (one per core)", many, many_idle)
    sixteen = next(row for row in one if row.clients == 16)
    print(f"target at 16 clients, 1 process (p99 < 20 ms): {'met' if sixteen.p99 < 20 else 'NOT met'}")
    if args.baseline:
        old, old_idle = measure(args.baseline.resolve(), 1, args)
        report(f"baseline {args.baseline}, 1 process", old, old_idle)
        old_sixteen = next(row for row in old if row.clients == 16)
        cpu_growth = sixteen.cpu_ms / old_sixteen.cpu_ms - 1
        memory_growth = one_idle[0] / old_idle[0] - 1
        print(f"vs baseline at 16 clients: CPU per request {cpu_growth:+.1%}, idle RSS {memory_growth:+.1%} "
              f"(target: at most +20 % each): {'met' if cpu_growth <= 0.2 and memory_growth <= 0.2 else 'NOT met'}")


if __name__ == "__main__":
    main()
