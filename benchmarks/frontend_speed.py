"""The frontend's own cost: non-streaming chat completions against the mocker at zero delay, driven
by wrk (Debian's `wrk`) at 1, 16 and 64 concurrent connections. For each row: requests/s, p50 and
p99 latency, and the frontend's CPU milliseconds per request (all its processes, from /proc); for
each layout the frontend's memory when idle and the machine's load average (other programs on the
machine skew every figure: compare runs taken at similar load).

Layouts, each named in the output with the cores it used:
- shared: wrk, the mocker and the frontend wherever the kernel puts them, with 1 frontend process
  and with one per core (--processes). On a small machine they compete for the cores, so req/s
  alone cannot show the processes scaling.
- pinned: wrk and the mocker on the last core (taskset), the frontend alone on the others, with 1
  process and with one per frontend core: the frontend's latency and capacity without the load
  generator in its way.
CPU per request says what the frontend costs: with it equal at 1 and at N processes, N cores give
N times the capacity (1000 / CPU ms per request, per core), which the output states beside what the
machine let us measure.
--baseline DIR runs the same rows (one process, shared) for another checkout of this repository,
for example the code before a change: `git worktree add /tmp/old <commit>`.

Targets at 16 clients: p99 under 20 ms; CPU per request and idle memory of one process within
20 % of the baseline's.
Run: python benchmarks/frontend_speed.py [--seconds S] [--max-tokens N] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from runtime_start import REPO, installed_env, load_average

CONCURRENCY = (1, 16, 64)
ROUNDS = 2  # further 16-client rows of this code and the baseline, in turn, for the CPU comparison
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


@dataclass
class Layout:
    """Where each program runs: a taskset prefix for the frontend and one for wrk and the mocker."""
    name: str
    frontend: list[str]
    load: list[str]

    def describe(self, processes: int) -> str:
        where = f"frontend ({processes} process{'es' * (processes > 1)}) on core(s) {self.frontend[-1]}, wrk and " \
                f"the mocker on core {self.load[-1]}" if self.frontend else \
                f"frontend ({processes} process{'es' * (processes > 1)}), wrk and the mocker on any core"
        return f"{self.name}: {where}"


def layouts(cores: list[int]) -> tuple[Layout, Layout | None]:
    """(shared, pinned); pinned needs a core for the frontend besides the load generator's."""
    shared = Layout("shared", [], [])
    if len(cores) < 2:
        return shared, None
    frontend = ",".join(str(core) for core in cores[:-1])
    return shared, Layout("pinned", ["taskset", "-c", frontend], ["taskset", "-c", str(cores[-1])])


def measure(repo: Path, processes: int, layout: Layout, args: argparse.Namespace,
            concurrency: tuple[int, ...] = CONCURRENCY) -> tuple[list[Row], tuple[float, float], str]:
    """The rows, the idle memory (RSS, PSS) and the load average before and after."""
    compileall.compile_dir(repo / "dynamo", quiet=1)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as scratch:
        env = installed_env(DYN_DISCOVERY_DIR=scratch, DYN_SKIP_PREFLIGHT="1", PYTHONPATH=str(repo))
        port = 18000 + os.getpid() % 1000
        worker = start(repo, ["dynamo.mocker", "--model-name", "bench"], env, layout.load)
        flags = ["--processes", str(processes)] if processes > 1 else []
        frontend = start(repo, ["dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port), *flags], env,
                         layout.frontend)
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
            run_wrk(url, script, 16, 2, layout.load)  # warm up
            rows = []
            for connections in concurrency:
                before = cpu_seconds(pids)
                rps, p50, p99, errors, total = run_wrk(url, script, connections, args.seconds, layout.load)
                cpu_ms = (cpu_seconds(pids) - before) * 1000 / max(total, 1)
                rows.append(Row(connections, rps, p50, p99, errors, cpu_ms))
            return rows, idle, f"load average {load_before} before, {load_average()} after"
        finally:
            for process in (frontend, worker):
                process.terminate()
                process.wait()


def report(title: str, rows: list[Row], idle: tuple[float, float], load: str) -> None:
    print(f"{title}")
    print(f"  idle memory RSS {idle[0]:.1f} MiB, PSS {idle[1]:.1f} MiB; {load}")
    print(f"{'clients':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'errors':>7}")
    for row in rows:
        print(f"{row.clients:>8} {row.rps:>9.0f} {row.p50:>8.2f} {row.p99:>8.2f} {row.cpu_ms:>11.3f} {row.errors:>7}")


def at_16(rows: list[Row]) -> Row:
    return next(row for row in rows if row.clients == 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way (one process)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if not shutil.which("taskset"):
        raise SystemExit("taskset is not installed: apt-get install util-linux")
    cores = sorted(os.sched_getaffinity(0))
    shared, pinned = layouts(cores)
    print(f"frontend + mocker (zero delay, {args.max_tokens} tokens per answer), {len(cores)} cores, wrk on the same "
          f"machine, {args.seconds} s per row")
    plan = [(shared, 1)] + ([(shared, len(cores))] if len(cores) > 1 else [])
    if pinned:
        plan += [(pinned, 1)] + ([(pinned, len(cores) - 1)] if len(cores) > 2 else [])
    results: dict[tuple[str, int], list[Row]] = {}
    for layout, processes in plan:
        rows, idle, load = measure(REPO, processes, layout, args)
        results[(layout.name, processes)] = rows
        report(layout.describe(processes), rows, idle, load)
        if (layout.name, processes) == ("shared", 1):
            one_idle = idle

    sixteen = at_16(results[("shared", 1)])
    print(f"target at 16 clients, 1 process, shared (p99 < 20 ms): {'met' if sixteen.p99 < 20 else 'NOT met'} "
          f"(p99 {sixteen.p99:.1f} ms)")
    if pinned:
        alone = at_16(results[("pinned", 1)])
        print(f"target at 16 clients, 1 process, pinned (p99 < 20 ms): {'met' if alone.p99 < 20 else 'NOT met'} "
              f"(p99 {alone.p99:.1f} ms)")
    scaling(results, cores)
    if args.baseline:
        old, old_idle, load = measure(args.baseline.resolve(), 1, shared, args)
        report(f"baseline {args.baseline}, " + shared.describe(1), old, old_idle, load)
        compare(args, shared, at_16(old), old_idle, sixteen, one_idle)


def compare(args: argparse.Namespace, shared: Layout, old: Row, old_idle: tuple[float, float], new: Row,
            new_idle: tuple[float, float]) -> None:
    """CPU per request against the baseline's at 16 clients: the rows above, then ROUNDS more of
    each taken in turn (this code, the baseline, ...), so that both see the machine's load alike."""
    ours, theirs = [new.cpu_ms], [old.cpu_ms]
    for _ in range(ROUNDS):
        ours.append(measure(REPO, 1, shared, args, (16,))[0][0].cpu_ms)
        theirs.append(measure(args.baseline.resolve(), 1, shared, args, (16,))[0][0].cpu_ms)
    cpu_growth = statistics.median(ours) / statistics.median(theirs) - 1
    memory_growth = new_idle[0] / old_idle[0] - 1
    print(f"CPU ms per request at 16 clients, taken in turn: this code {' '.join(f'{v:.3f}' for v in ours)}, "
          f"baseline {' '.join(f'{v:.3f}' for v in theirs)}")
    print(f"vs baseline at 16 clients: CPU per request {cpu_growth:+.1%} (medians), idle RSS {memory_growth:+.1%} "
          f"(target: at most +20 % each): {'met' if cpu_growth <= 0.2 and memory_growth <= 0.2 else 'NOT met'}")


def scaling(results: dict[tuple[str, int], list[Row]], cores: list[int]) -> None:
    """What the machine let us show of the processes scaling, in words."""
    one = at_16(results[("shared", 1)])
    many = at_16(results[("shared", len(cores))]) if len(cores) > 1 else None
    print(f"scaling: one frontend process costs {one.cpu_ms:.3f} CPU ms per request, so one core serves at most "
          f"~{1000 / one.cpu_ms:.0f} req/s of the frontend's work", end="")
    if many:
        print(f"; {len(cores)} processes cost {many.cpu_ms:.3f} ms ({many.cpu_ms / one.cpu_ms - 1:+.0%}), so "
              f"{len(cores)} cores given to the frontend alone would serve ~{1000 * len(cores) / many.cpu_ms:.0f} req/s "
              f"(an estimate: with the cores shared with wrk and the mocker, more processes also pay for more "
              f"switching between them, and each gathers fewer requests per turn of its event loop)")
    else:
        print()
    frontend_cores = len(cores) - 1
    if frontend_cores >= 2:
        alone_one, alone_many = at_16(results[("pinned", 1)]), at_16(results[("pinned", frontend_cores)])
        print(f"measured with the frontend alone on {frontend_cores} cores: {alone_one.rps:.0f} req/s with 1 process, "
              f"{alone_many.rps:.0f} req/s with {frontend_cores} (x{alone_many.rps / alone_one.rps:.2f}); the load "
              f"generator and the mocker on one core may be what limits the second figure")
    else:
        print(f"this machine has {len(cores)} core{'s' * (len(cores) > 1)}: with wrk and the mocker on a core of "
              f"their own the frontend has {max(frontend_cores, 0)} left, so several frontend processes running "
              f"alone cannot be measured here; the figure above is CPU time per request, not a measured "
              f"req/s. Run this on 3 cores or more for the measured scaling.")


if __name__ == "__main__":
    main()
