"""`dynamo doctor` wall time on this machine, beside `python -m torch.utils.collect_env`.

Targets: a median of at most 150 ms without a GPU, and at least 10 times faster than torch's collect_env.
Our modules are byte-compiled first, as pip leaves an installed wheel (see runtime_start.installed_env).
Run: python benchmarks/doctor_speed.py [--runs N]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

from runtime_start import installed_env

REPO = Path(__file__).resolve().parents[1]


def wall(command: list[str], runs: int) -> list[float]:
    env = installed_env()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return sorted(times)


def show(label: str, times: list[float]) -> float:
    median = statistics.median(times)
    print(f"{label:<44} median {median * 1000:7.1f} ms  min {times[0] * 1000:7.1f} ms  max {times[-1] * 1000:7.1f} ms"
          f"  ({len(times)} runs)")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    python = sys.executable
    show("python -c pass (interpreter start-up)", wall([python, "-c", "pass"], args.runs))
    doctor = show("python build.py doctor", wall([python, "build.py", "doctor"], args.runs))
    show("python build.py doctor --framework vllm", wall([python, "build.py", "doctor", "--framework", "vllm"], args.runs))
    if importlib.util.find_spec("torch") is None:
        print("torch is not installed: pip install torch to compare with torch.utils.collect_env")
        return
    torch = show("python -m torch.utils.collect_env", wall([python, "-m", "torch.utils.collect_env"], max(3, args.runs // 3)))
    print(f"doctor is {torch / doctor:.1f}x faster than collect_env; target <= 150 ms: {'met' if doctor <= 0.15 else 'NOT met'}")


if __name__ == "__main__":
    main()
