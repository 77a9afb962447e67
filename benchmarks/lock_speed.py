"""How long `python build.py lock` takes for every cell of the latest release, and how much it locks.

Locks every cell x Python x architecture into a scratch checkout (the committed locks are left
alone), first with an empty uv cache (cold), then again with the cache it filled (warm).
Cells whose index cannot be reached are counted, not timed.

Run: python benchmarks/lock_speed.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def lock_all(matrix, checkout: Path) -> tuple[float, list, list[str]]:
    from dynamo import lock

    started = time.perf_counter()
    done, failed = [], []
    for target in lock.lock_targets(matrix):
        spec = lock.spec(matrix, target, checkout)
        try:
            done.append((spec, lock.generate(spec, checkout)))
        except lock.LockError as exc:
            failed.append(str(exc))
    return time.perf_counter() - started, done, failed


def main() -> None:
    from dynamo.lock import pinned
    from dynamo.matrix import load

    matrix = load()
    with tempfile.TemporaryDirectory() as scratch:
        checkout = Path(scratch)
        shutil.copy(REPO / "pyproject.toml", checkout / "pyproject.toml")
        os.environ["UV_CACHE_DIR"] = str(checkout / "uv-cache")
        for run in ("cold", "warm"):
            seconds, done, failed = lock_all(matrix, checkout)
            print(f"{run} uv cache: {len(done)} locks in {seconds:.1f}s, {len(failed)} cells x platforms could not"
                  f" be locked")
            if run == "cold":
                for spec, result in done:
                    print(f"  {spec.relative_path:48} {result.packages:4} packages {result.seconds:6.1f}s")
                for line in sorted(set(failed)):
                    print(f"  not locked: {line}")
            print(f"  packages per lock: min {min(r.packages for _, r in done)}, max {max(r.packages for _, r in done)};"
                  f" distinct name==version across all locks:"
                  f" {len({item for _, r in done for item in pinned(r.path.read_text()).items()})}")


if __name__ == "__main__":
    main()
