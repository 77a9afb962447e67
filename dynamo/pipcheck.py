"""`python -m dynamo.pipcheck LOCK`: pip check for an environment installed from a lock, which may leave out
(the lock's "# dropped:" line) another CUDA major's builds that a meta-package asks for (see
dynamo.cuda_builds.other_major_alternates) and what the framework's matrix entry says is never imported
(never_imported). Every other problem pip finds fails the build."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

DROPPED = "# dropped: "
_MISSING = re.compile(r"^\S+ \S+ requires (\S+?)(?:\[[^\]]*\])?, which is not installed\.$")


def dropped(lock_text: str) -> set[str]:
    """The canonical names a lock's header says it left out."""
    for line in lock_text.splitlines():
        if line.startswith(DROPPED):
            return {canonicalize_name(name) for name in line.removeprefix(DROPPED).split()}
        if not line.startswith("#"):
            break
    return set()


def real_problems(pip_check_output: str, left_out: set[str]) -> list[str]:
    """pip check's lines, less the missing requirements the lock left out on purpose."""
    found = []
    for line in pip_check_output.splitlines():
        missing = _MISSING.match(line.strip())
        if line.strip() and not (missing and canonicalize_name(missing[1]) in left_out):
            found.append(line.strip())
    return [line for line in found if line != "No broken requirements found."]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m dynamo.pipcheck LOCK_FILE", file=sys.stderr)
        return 2
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    problems = real_problems(result.stdout + result.stderr, dropped(Path(argv[0]).read_text()))
    for line in problems:
        print(f"pip check: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
