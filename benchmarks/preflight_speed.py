"""What the startup preflight adds to the runtime's entry points: the time from `python -m ...` to
its "ready" line, with the preflight and with it skipped (DYN_SKIP_PREFLIGHT=1), run alternately.

Our modules are byte-compiled first, as they are when pip installs the wheel (in the images, say);
without that, every start compiles the sources again (PYTHONDONTWRITEBYTECODE=1 on a checkout).

Target: at most 10 ms added to a worker (issue 19). Run: python benchmarks/preflight_speed.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from runtime_start import installed_env, start

ENTRY_POINTS = {
    "frontend": ["dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", "0"],
    "mocker worker": ["dynamo.mocker", "--model-name", "bench"],
}


def start_ms(module_args: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    process = start(module_args, env)
    elapsed = time.perf_counter() - began
    process.terminate()
    process.wait()
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as discovery:
        skipped = installed_env(DYN_DISCOVERY_DIR=discovery, DYN_SKIP_PREFLIGHT="1")
        checked = {**skipped, "DYN_SKIP_PREFLIGHT": "0"}
        for name, module_args in ENTRY_POINTS.items():
            with_preflight, without = [], []
            for _ in range(args.runs):
                without.append(start_ms(module_args, skipped))
                with_preflight.append(start_ms(module_args, checked))
            base, full = statistics.median(without), statistics.median(with_preflight)
            added = full - base
            print(f"{name:14} start to ready: {base:6.1f} ms skipped, {full:6.1f} ms with the preflight "
                  f"(medians of {args.runs}); added {added:5.1f} ms (target <= 10 ms: {'met' if added <= 10 else 'NOT met'})")


if __name__ == "__main__":
    main()
