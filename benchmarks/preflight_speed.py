"""What the startup preflight adds to an entry point: a process that runs it, minus one that does not.

Target: under 50 ms. Run: python benchmarks/preflight_speed.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WITHOUT = "import sys"
# The frontend has no engine: the preflight checks the platform, Python and driver presence.
WITH = "import sys; from dynamo.doctor.preflight import preflight; preflight(None, sys.argv[1:])"


def median_ms(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    base = median_ms(WITHOUT, args.runs)
    with_preflight = median_ms(WITH, args.runs)
    added = with_preflight - base
    print(f"entry point without preflight: median {base:6.1f} ms ({args.runs} runs)")
    print(f"entry point with preflight:    median {with_preflight:6.1f} ms")
    print(f"added by the preflight:        {added:6.1f} ms (target < 50 ms: {'met' if added < 50 else 'NOT met'})")


if __name__ == "__main__":
    main()
