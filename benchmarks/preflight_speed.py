"""What the startup preflight adds to the runtime's entry points: the time from `python -m ...` to
its "ready" line, with the preflight and with it skipped (DYN_SKIP_PREFLIGHT=1), run alternately.

A start reads its preflight plan (dynamo.doctor.plan), which the image build writes and any start that
judged in full writes outside an image; the first start on a host without one judges in full: its
cost is printed too (each such start runs with no plan, in a cache folder of its own).

Our modules are byte-compiled first, as they are when pip installs the wheel (in the images, say);
without that, every start compiles the sources again (PYTHONDONTWRITEBYTECODE=1 on a checkout).

Target: at most 10 ms added to a worker (issue 19). Run: python benchmarks/preflight_speed.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from runtime_start import REPO, installed_env, load_average, start

sys.path.insert(0, str(REPO))
from dynamo.doctor import plan  # noqa: E402 (after the checkout is on the path)

ENTRY_POINTS = {
    "frontend": ["dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", "0"],
    "mocker worker": ["dynamo.mocker", "--model-name", "bench"],
}


def remove_plan(module: str) -> None:
    """No plan for this entry point beside our package; the runs that call this give it a fresh user's
    cache (DYNAMO_CACHE_DIR), so the developer's own cache is neither read nor removed."""
    plan.entries(module.split(".")[1])[0].unlink(missing_ok=True)


def start_ms(module_args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock milliseconds from `python -m` to "ready", and the CPU milliseconds the process used in all
    (killed at once when ready: this machine's other work skews the first figure, far less the second)."""
    began = time.perf_counter()
    process = start(module_args, env)
    elapsed = time.perf_counter() - began
    process.kill()
    usage = os.wait4(process.pid, 0)[2]
    process.returncode = -9
    return elapsed * 1000, (usage.ru_utime + usage.ru_stime) * 1000


IN_PROCESS = """import sys, time
import {module}.__main__
began = time.perf_counter()
from dynamo.doctor.preflight import preflight
preflight({entry!r}, [])
print((time.perf_counter() - began) * 1000)
"""


def in_process_ms(module: str, env: dict[str, str]) -> float:
    """The preflight's own time in a fresh process that imported the entry point's modules first: what
    the start-to-ready figures measure, without the noise of a whole start."""
    code = IN_PROCESS.format(module=module, entry=module.split(".")[1])
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as discovery:
        skipped = installed_env(DYN_DISCOVERY_DIR=discovery, DYN_SKIP_PREFLIGHT="1")
        checked = {**skipped, "DYN_SKIP_PREFLIGHT": "0"}
        for name, module_args in ENTRY_POINTS.items():
            with_preflight, without, unplanned = [], [], []
            for _ in range(args.runs):
                without.append(start_ms(module_args, skipped))
                with_preflight.append(start_ms(module_args, checked))
                with tempfile.TemporaryDirectory() as cache:
                    remove_plan(module_args[0])
                    unplanned.append(start_ms(module_args, {**checked, "DYNAMO_CACHE_DIR": cache}))
            own = [in_process_ms(module_args[0], checked) for _ in range(args.runs)]
            own_unplanned = []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as cache:
                    remove_plan(module_args[0])
                    own_unplanned.append(in_process_ms(module_args[0], {**checked, "DYNAMO_CACHE_DIR": cache}))
            for kind, index in (("start to ready", 0), ("CPU time", 1)):
                base, full = (statistics.median(run[index] for run in runs) for runs in (without, with_preflight))
                # each run's starts follow one another: the median of their differences cancels slow drifts
                added = statistics.median(w[index] - s[index] for w, s in zip(with_preflight, without))
                first = statistics.median(u[index] - s[index] for u, s in zip(unplanned, without))
                # the target is a worker's (issue 19); the frontend's start imports much of what the preflight does
                verdict = f" (target <= 10 ms: {'met' if added <= 10 else 'NOT met'})" if "worker" in name else ""
                print(f"{name:14} {kind:14}: {base:6.1f} ms skipped, {full:6.1f} ms with the preflight (medians of"
                      f" {args.runs}); added {added:5.1f} ms{verdict}; a first start with no plan: added {first:5.1f} ms")
            print(f"{'':14} the preflight's own time in the process: {statistics.median(own):5.1f} ms with its plan,"
                  f" {statistics.median(own_unplanned):5.1f} ms with none (medians of {args.runs})")
        print(f"load average: {load_average()}")


if __name__ == "__main__":
    main()
