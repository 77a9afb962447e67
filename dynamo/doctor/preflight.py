"""The doctor's preflight, run first by every runtime entry point (the frontend and each worker).

A failed check stops the process with the doctor's message and fix; `--skip-preflight` or
DYN_SKIP_PREFLIGHT=1 bypasses it with a warning.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from dynamo.doctor.facts import HostFacts
    from dynamo.doctor.judge import Subject
    from dynamo.matrix import Matrix

SKIP_FLAG = "--skip-preflight"
SKIP_ENV = "DYN_SKIP_PREFLIGHT"


def preflight(framework: str | None, argv: list[str], facts: HostFacts | None = None,
              out: TextIO = sys.stderr) -> list[str]:
    """Check this host for `framework` (None or a name outside the matrix, like the mocker: the host
    checks only); exit 1 on a failed check. Returns argv without --skip-preflight, for the entry
    point's own parser. Asking for --help checks nothing."""
    rest = [arg for arg in argv if arg != SKIP_FLAG]
    if "-h" in argv or "--help" in argv:
        return rest
    if SKIP_FLAG in argv or os.environ.get(SKIP_ENV) == "1":
        print(f"warning: preflight skipped ({SKIP_FLAG if SKIP_FLAG in argv else SKIP_ENV + '=1'}); this host"
              f" was not checked against the support matrix", file=out)
        return rest
    # Imported here, so that a skipped preflight costs nothing.
    from dynamo.doctor.facts import RecordingInvalid, gather
    from dynamo.doctor.judge import FAIL, MARKS, judge
    from dynamo.matrix import MatrixInvalid, load

    try:
        matrix = load()
        facts = facts or gather()
    except (MatrixInvalid, RecordingInvalid) as exc:
        lines = exc.lines() if isinstance(exc, MatrixInvalid) else exc.problems
        print("preflight: cannot check this host:", *lines, sep="\n", file=out)
        print(f"(fix the above; {SKIP_FLAG} or {SKIP_ENV}=1 starts anyway)", file=out)
        raise SystemExit(1) from None
    subject = _subject(matrix, facts, framework)
    failures = [f for f in judge(matrix, facts, subject) if f.status == FAIL]
    if failures:
        print(f"preflight: this host cannot run {subject.framework or 'dynamo'} {subject.release}:", file=out)
        for finding in failures:
            print(f"{MARKS[FAIL]} {finding.check}: {finding.message}", file=out)
            if finding.fix:
                print(f"  fix: {finding.fix}", file=out)
        print(f"(run `dynamo doctor` for every check; {SKIP_FLAG} or {SKIP_ENV}=1 starts anyway)", file=out)
        raise SystemExit(1)
    return rest


def _subject(matrix: Matrix, facts: HostFacts, framework: str | None) -> Subject:
    """What to judge: in one of our images, the release it was built as and, for its own engine, its device;
    elsewhere the installed release and the host's device."""
    from dynamo.doctor.image import baked
    from dynamo.doctor.judge import Subject, host_device, release_to_judge

    known = framework in matrix.framework
    cell = baked()
    if cell is not None and cell.release in matrix.release:
        release = cell.release
        # the image's device for its own engine; another entry point (the frontend, the mocker) runs on the host's
        device = cell.device if framework == cell.framework else host_device(matrix, facts, framework if known else None)
    else:
        device = host_device(matrix, facts, framework if known else None)
        release = release_to_judge(matrix, facts.packages.get("dynamo"), framework if known else None, device)
    return Subject(release, framework if framework in matrix.release[release].engines else None, device)
