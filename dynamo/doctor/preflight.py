"""The doctor's preflight, run first by every runtime entry point (the frontend and each worker).

A failed check stops the process with the doctor's message and fix; `--skip-preflight` or
DYN_SKIP_PREFLIGHT=1 bypasses it with a warning. A start that its plan vouches for (dynamo.doctor.plan:
the same environment, a driver and GPUs that meet the plan's thresholds) needs neither the matrix nor
the judge; any other start is judged in full, and writes the plan the next one reads.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn, TextIO

if TYPE_CHECKING:
    from dynamo.doctor.facts import HostFacts

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
    # Imported here, so that a skipped preflight costs nothing; the matrix and the judge only where no
    # plan vouches for this start (dynamo.doctor.plan).
    from dynamo.doctor import plan
    from dynamo.doctor.facts import RecordingInvalid, gather

    entry = framework or "dynamo"
    try:
        facts = facts or gather()
    except RecordingInvalid as exc:
        _cannot_check(exc.problems, out)
    kept = plan.read(entry)
    if plan.passes(kept, entry, facts):
        return rest

    from dynamo.doctor.judge import FAIL, MARKS, judge, subject_of
    from dynamo.matrix import MatrixInvalid, load

    try:
        matrix = load()
    except MatrixInvalid as exc:
        _cannot_check(exc.lines(), out)
    subject = subject_of(matrix, facts, framework)
    findings = judge(matrix, facts, subject)
    failures = [f for f in findings if f.status == FAIL]
    if (found := plan.build(matrix, facts, entry, subject, findings)) not in (None, kept):
        plan.write(found)  # not again where it holds already (a driver that only the judge passes)
    if failures:
        print(f"preflight: this host cannot run {subject.framework or 'dynamo'} {subject.release}:", file=out)
        for finding in failures:
            print(f"{MARKS[FAIL]} {finding.check}: {finding.message}", file=out)
            if finding.fix:
                print(f"  fix: {finding.fix}", file=out)
        print(f"(run `dynamo doctor` for every check; {SKIP_FLAG} or {SKIP_ENV}=1 starts anyway)", file=out)
        raise SystemExit(1)
    return rest


def _cannot_check(lines: list[str], out: TextIO) -> NoReturn:
    print("preflight: cannot check this host:", *lines, sep="\n", file=out)
    print(f"(fix the above; {SKIP_FLAG} or {SKIP_ENV}=1 starts anyway)", file=out)
    raise SystemExit(1)
