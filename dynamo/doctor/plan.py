"""The preflight's plan: what the doctor's judge settled for one entry point in one environment, so
that a start needs neither the matrix nor the judge.

Judging a host loads the matrix and the judge, which cost a worker's start about 15 ms. Most of what
the judge reads cannot change between two starts of one environment, and none of it inside an image:
the release, framework and device judged, the CPU, OS and Python, the installed engine and NIXL.
A plan keeps those facts as the judge passed them, and the thresholds for the rest, which the host
decides at each start: the driver's floor, the compute capabilities the engine's kernels run on,
/dev/shm per GPU, memlock. A start whose facts equal the kept ones and meet the thresholds passes.
Anything else (another fact, a threshold missed, a driver below its floor that forward compatibility
might still run, a stale or absent plan) goes to the judge, which decides and says why.

So the plan passes only hosts the judge passes (tests/test_preflight_plan.py checks it over every
recorded host), and at worst sends a passing host to the judge, which costs time, never a verdict.
Plans are JSON beside our package (`python -m dynamo.doctor.plan ENTRY...`, which the image build
runs) or in the user's cache, written by any start that judged in full; `cat` one to see what a
start assumes. Any change to the matrix or to the doctor's code makes them stale (a hash of their
contents, as Python's hash-checked bytecode carries).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynamo import cache_files
from dynamo.doctor.image import baked

if TYPE_CHECKING:
    from dynamo.doctor.facts import HostFacts
    from dynamo.doctor.judge import Finding, Subject
    from dynamo.matrix import Matrix

Plan = dict[str, Any]
VERSION = 1
_DYNAMO_DIR = Path(__file__).resolve().parents[1]
_ROOT = _DYNAMO_DIR.parent
# The code whose change may change a verdict: every module of ours that loading the matrix and judging
# import (tests/test_preflight_plan.py checks that none is missing), beside our package.
CODE = tuple(f"dynamo/{name}.py" for name in (
    "__init__", "cache_files", "cuda_builds", "frozen", "nvidia_require", "doctor/__init__", "doctor/facts",
    "doctor/image", "doctor/judge", "doctor/plan", "doctor/preflight", "matrix/__init__", "matrix/cache",
    "matrix/checks", "matrix/convert", "matrix/load", "matrix/model", "matrix/query", "matrix/validate"))


def entries(entry: str) -> list[Path]:
    """Where the plan of an entry point ("vllm", "frontend", "mocker") may be, in the order read."""
    name = f"preflight-{entry}.json"
    return [_DYNAMO_DIR / "doctor" / "__pycache__" / name, cache_files.user_dir() / name]


def read(entry: str) -> Plan | None:
    for path in entries(entry):
        try:
            plan = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(plan, dict) and plan.get("version") == VERSION:
            return plan
    return None


def passes(plan: Plan | None, entry: str, facts: HostFacts) -> bool:
    """Whether the plan vouches for this start: the judge would find no failure. False sends it to the judge."""
    try:
        return plan is not None and plan["entry"] == entry and _current(plan) and _meets(plan, facts)
    except (KeyError, TypeError, ValueError):  # a plan of another shape: the judge decides, and writes a new one
        return False


def _current(plan: Plan) -> bool:
    """The plan was written by this code, for this matrix and this image's cell."""
    cell = baked()
    return bool(plan["cell"] == ([cell.release, cell.framework, cell.device] if cell else None)
                and plan["matrix_env"] == os.environ.get("DYNAMO_MATRIX") and plan["key"] == _key(plan["sources"]))


def _key(sources: list[str]) -> str:
    """The key of these files (relative to the folder holding our package) as they are now."""
    return cache_files.key(cache_files.contents(_ROOT / name for name in sources))


def settled_facts(facts: HostFacts) -> dict[str, Any]:
    """The facts a plan keeps: the judge's verdicts on them hold while they stay equal."""
    return {"arch": facts.arch, "os": [facts.os_id, facts.os_version], "python": facts.python.split(".")[:2],
            "container_cuda": facts.container_cuda, "packages": facts.packages}


def _numbers(version: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in version.split(".")) if version else None
    except ValueError:
        return None


def _meets(plan: Plan, facts: HostFacts) -> bool:
    # a JSON round trip makes tuples lists: compare the facts as the plan holds them
    if json.loads(json.dumps(settled_facts(facts) | _host_shape(plan, facts))) != plan["facts"]:
        return False
    if facts.gpu_error or (facts.kernel_module and facts.driver and facts.kernel_module != facts.driver):
        return False  # the driver could not answer, or differs from its kernel module: the judge says which
    gpus = facts.gpus
    if (driver := plan["driver"]) is not None:  # a CUDA target
        host = _numbers(facts.driver)
        if facts.jetson or not gpus or host is None:
            return False
        floor = (driver["windows"],) if facts.wsl else _numbers(driver["linux"])
        if floor is None or host < floor:
            return False  # below the floor: forward or minor-version compatibility may run it, the judge says
        if any(gpu.compute_capability not in plan["compute_capabilities"] for gpu in gpus):
            return False
    if (limits := plan["limits"]) is not None:
        if gpus and facts.shm_bytes is not None and facts.shm_bytes < limits["shm_per_gpu"] * len(gpus):
            return False
        if limits["memlock"] and facts.memlock is not None and facts.memlock[0] != -1:
            return False
    return True


def _host_shape(plan: Plan, facts: HostFacts) -> dict[str, Any]:
    """The changing facts that chose the subject itself, where the plan keeps them (see build)."""
    return {"gpus_present": bool(facts.gpus), "wsl": facts.wsl} if "gpus_present" in plan["facts"] else {}


# -- writing ------------------------------------------------------------------------------------------


def build(matrix: Matrix, facts: HostFacts, entry: str, subject: Subject,
          findings: list[Finding] | None = None) -> Plan | None:
    """The plan of `entry` judged for `subject` on these facts (`findings`: the judge's, where the caller
    has them); None where the settled facts fail (the image cannot run anywhere) or where the verdict
    depends on more than a plan keeps (the NVIDIA container toolkit, for an engine not installed here)."""
    from dataclasses import replace

    from dynamo.doctor.facts import Gpu
    from dynamo.doctor.judge import (
        FAIL,
        GIB,
        for_an_image,
        judge,
        kernel_problem,
        needs_memlock,
        subject_of,
        target_of,
        windows_floor,
    )
    from dynamo.matrix.load import CANDIDATES, ENV_VAR

    settled_checks = ("cpu", "os", "python", "caveat", "matrix", "package")
    findings = judge(matrix, facts, subject) if findings is None else findings
    if any(f.status == FAIL and f.check in settled_checks for f in findings):
        return None
    kept = settled_facts(facts)
    # Whether a GPU is visible, and WSL, choose the subject in some cases (a CPU framework outside an image
    # runs on the CPU where there is no GPU): the plan keeps them where another value would choose another.
    others = (replace(facts, gpus=[] if facts.gpus else [Gpu("a GPU")]), replace(facts, wsl=not facts.wsl))
    if any(subject_of(matrix, other, entry) != subject for other in others):
        kept |= {"gpus_present": bool(facts.gpus), "wsl": facts.wsl}
    plan: Plan = {"version": VERSION, "entry": entry, "subject": [subject.release, subject.framework, subject.device]}
    cell = baked()
    plan["cell"] = [cell.release, cell.framework, cell.device] if cell else None
    plan["matrix_env"] = os.environ.get(ENV_VAR)
    matrices = [p.resolve() for p in (*CANDIDATES, *([Path(plan["matrix_env"])] if plan["matrix_env"] else []))]
    plan["sources"] = [*CODE, *(str(p.relative_to(_ROOT)) if p.is_relative_to(_ROOT) else str(p) for p in matrices)]
    plan["key"] = _key(plan["sources"])
    plan["facts"] = json.loads(json.dumps(kept))
    plan["driver"] = plan["compute_capabilities"] = plan["limits"] = None
    if subject.framework is not None:
        target = target_of(matrix, facts, subject)[0]
        if target is None or (target.cuda is not None and for_an_image(matrix, facts, target, "all")):
            return None  # the toolkit's verdict on a CUDA image (the judge's _toolkit) is the driver's
        if target.cuda is not None:
            if target.driver_linux is None:
                return None
            plan["driver"] = {"linux": target.driver_linux, "windows": windows_floor(target)}
            known = {*matrix.compute_capability, *matrix.gpu}
            plan["compute_capabilities"] = sorted(cc for cc in known if kernel_problem(matrix, target, cc) is None)
        plan["limits"] = {"shm_per_gpu": GIB, "memlock": needs_memlock(matrix, target)}
    return plan


def write(plan: Plan) -> Path | None:
    return cache_files.write(entries(plan["entry"]), json.dumps(plan, indent=1).encode())


def main(argv: list[str] | None = None) -> int:
    """python -m dynamo.doctor.plan ENTRY...: write the plans of these entry points for this environment.
    The image build runs it, so that no start in the image judges in full."""
    from dynamo.doctor.facts import gather
    from dynamo.doctor.judge import subject_of
    from dynamo.matrix import load

    names = list(dict.fromkeys(sys.argv[1:] if argv is None else argv))
    if not names:
        print("usage: python -m dynamo.doctor.plan ENTRY... (vllm, frontend, mocker...)", file=sys.stderr)
        return 2
    matrix, facts = load(), gather()
    for entry in names:
        plan = build(matrix, facts, entry, subject_of(matrix, facts, entry))
        if plan is None:
            print(f"preflight plan: none for {entry} here (run `dynamo doctor` to see why); its starts judge in"
                  f" full", file=sys.stderr)
        elif (path := write(plan)) is None:
            print(f"preflight plan: cannot write {entries(entry)[0]} nor {entries(entry)[1]}", file=sys.stderr)
            return 1
        else:
            print(f"preflight plan for {entry}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
