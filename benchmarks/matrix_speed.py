"""How long `python build.py matrix list` takes, end to end and in-process.

Run: python benchmarks/matrix_speed.py [--runs N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def wall(command: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (user + system) seconds of each run: CPU time barely moves when other
    work shares the machine, wall time does."""
    times, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return times, cpu


def report(label: str, times: list[float] | tuple[list[float], list[float]]) -> None:
    times, cpu = times if isinstance(times, tuple) else (times, [])
    ms = sorted(t * 1000 for t in times)
    cpu_text = f"   CPU median {statistics.median(cpu) * 1000:7.1f} ms" if cpu else ""
    print(f"{label:<44} median {statistics.median(ms):7.1f} ms   min {ms[0]:7.1f} ms   max {ms[-1]:7.1f} ms"
          f"{cpu_text}   ({len(ms)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from dynamo.matrix import load, targets
    from dynamo.matrix.report import targets_table

    report("python -c pass (interpreter start-up)", wall([sys.executable, "-c", "pass"], args.runs))
    report("python build.py matrix list", wall([sys.executable, "build.py", "matrix", "list"], args.runs))
    report("python build.py matrix check", wall([sys.executable, "build.py", "matrix", "check"], args.runs))

    times = []
    for _ in range(args.runs * 10):
        start = time.perf_counter()
        found = targets(load())
        targets_table(found)
        times.append(time.perf_counter() - start)
    report(f"in-process load + list {len(found)} targets", times)


if __name__ == "__main__":
    main()
