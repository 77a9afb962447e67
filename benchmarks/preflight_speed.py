"""What the startup preflight adds to the runtime's entry points: the time from `python -m ...` to
its "ready" line, with the preflight and with it skipped (DYN_SKIP_PREFLIGHT=1), run alternately.

Our modules are byte-compiled first, as they are when pip installs the wheel (in the images, say);
without that, every start compiles the sources again (PYTHONDONTWRITEBYTECODE=1 on a checkout).

Target: under 50 ms added. Run: python benchmarks/preflight_speed.py [--runs N]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {
    "frontend": ["dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", "0"],
    "mocker worker": ["dynamo.mocker", "--model-name", "bench"],
}


def start_ms(module_args: list[str], skip: bool, discovery: str) -> float:
    env = {**os.environ, "DYN_DISCOVERY_DIR": discovery, "DYN_SKIP_PREFLIGHT": "1" if skip else "0"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", *module_args], cwd=REPO, env=env, stderr=subprocess.PIPE,
                               text=True)
    for line in process.stderr:
        if "ready" in line:
            break
    else:
        raise SystemExit(f"{module_args[0]} exited before it was ready")
    elapsed = time.perf_counter() - start
    process.terminate()
    process.wait()
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    compileall.compile_dir(REPO / "dynamo", quiet=1)
    with tempfile.TemporaryDirectory() as discovery:
        for name, module_args in ENTRY_POINTS.items():
            with_preflight, without = [], []
            for _ in range(args.runs):
                without.append(start_ms(module_args, True, discovery))
                with_preflight.append(start_ms(module_args, False, discovery))
            base, full = statistics.median(without), statistics.median(with_preflight)
            added = full - base
            print(f"{name:14} start to ready: {base:6.1f} ms skipped, {full:6.1f} ms with the preflight "
                  f"(medians of {args.runs}); added {added:5.1f} ms (target < 50 ms: {'met' if added < 50 else 'NOT met'})")


if __name__ == "__main__":
    main()
