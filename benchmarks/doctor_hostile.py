"""The doctor on hostile recordings (issue 20): each is read and judged, or refused, in well under a second.

Target: under 1 s for each case (time linear in the input: its parsers skip lines no tool prints, and
it refuses names, GPU counts and files no real host has before judging them).
Run: python benchmarks/doctor_hostile.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dynamo.doctor.facts import RecordingInvalid, from_recording  # noqa: E402
from dynamo.doctor.judge import Subject, judge  # noqa: E402
from dynamo.matrix import load  # noqa: E402

HOST = json.dumps({"arch": "x86_64", "python": "3.12.3"})
TABLE = (REPO / "tests/data/hosts/b200x2-r610/nvidia-smi.txt").read_text()


def nvml(*names: str) -> str:
    return json.dumps({"driver": "580.95.05", "cuda_driver_version": 13000,
                       "gpus": [{"name": name, "memory_mib": 81559, "compute_capability": "9.0"} for name in names]})


CASES = {
    "nvidia-smi line of 60,000 spaces": {"host.json": HOST, "nvidia-smi.txt": TABLE.replace(
        "NVIDIA B200", "NVIDIA B200" + " " * 60_000, 1)},
    "GPU name 'NVIDIA H100' + ' -' x 2,000 + 'x' (nvml.json)": {"host.json": HOST,
                                                               "nvml.json": nvml("NVIDIA H100" + " -" * 2000 + "x")},
    "GPU name 'NVIDIA H100' + ' -' x 2,000 + 'x' (nvidia-smi.csv)": {
        "host.json": HOST, "nvidia-smi.csv": f"NVIDIA H100{' -' * 2000}x, 580.95.05, 81559 MiB, 9.0\n"},
    "GPU name 'NVIDIA H100' + ' -' x 41 + 'x' (under the name cap)": {"host.json": HOST,
                                                                      "nvml.json": nvml("NVIDIA H100" + " -" * 41 + "x")},
    "10,000 GPUs in nvml.json": {"host.json": HOST, "nvml.json": nvml(*["NVIDIA H100 80GB HBM3"] * 10_000)},
    "64 GPUs in nvml.json (the cap)": {"host.json": HOST, "nvml.json": nvml(*["NVIDIA H100 80GB HBM3"] * 64)},
    "host.json nested 1,000 deep": {"host.json": '{"packages": ' + "[" * 1000 + "]" * 1000 + "}"},
    "host.json nested 100,000 deep": {"host.json": "[" * 100_000 + "]" * 100_000},
}


def main() -> None:
    matrix = load()
    worst = 0.0
    for label, files in CASES.items():
        with tempfile.TemporaryDirectory() as folder:
            for name, text in files.items():
                (Path(folder) / name).write_text(text)
            start = time.perf_counter()
            try:
                facts = from_recording(Path(folder))
                findings = judge(matrix, facts, Subject(matrix.latest, "trtllm", None))
                outcome = f"judged, {len(findings)} findings"
            except RecordingInvalid as exc:
                outcome = f"refused: {exc.problems[0].removeprefix(folder + '/')[:70]}"
            elapsed = time.perf_counter() - start
        worst = max(worst, elapsed)
        print(f"{label:<62} {elapsed * 1000:8.1f} ms  {outcome}")
    print(f"worst {worst * 1000:.1f} ms (target: under 1000 ms each)")


if __name__ == "__main__":
    main()
