"""How long rendering every generated file for the whole matrix takes.

Run: python benchmarks/render_speed.py [--runs N]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from dynamo import render
    from dynamo.matrix import load

    matrix = load()
    times, outputs = [], {}
    for _ in range(args.runs):
        start = time.perf_counter()
        outputs = render.render_all(matrix)  # a new Jinja environment each time: templates compile again
        times.append(time.perf_counter() - start)
    size = sum(len(text) for text in outputs.values())
    ms = sorted(t * 1000 for t in times)
    print(f"render_all: {len(outputs)} files, {size} bytes: median {statistics.median(ms):.1f} ms,"
          f" min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms ({args.runs} runs, in-process)")

    walls, cpu = [], []
    for _ in range(max(3, args.runs // 2)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "build.py", "render", "--check"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        walls.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    walls.sort()
    # CPU time (user + system) barely moves when other work shares the machine; wall time does.
    print(f"python build.py render --check: median {statistics.median(walls):.1f} ms,"
          f" min {walls[0]:.1f} ms, max {walls[-1]:.1f} ms; CPU median {statistics.median(cpu):.1f} ms"
          f" ({len(walls)} runs, end to end)")


if __name__ == "__main__":
    main()
