"""Where an image's bytes come from: the commit, its time and the repository it lives in.

The commit's time is the build's SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/):
every timestamp in an image is that one, so that the same commit builds the same bytes.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dynamo.images import DIRTY, split_revision

# What the build context holds (.dockerignore lets in only these): a change there changes the image.
CONTEXT_PATHS = ("pyproject.toml", "README.md", "matrix", "dynamo", "container/constraints", "locks")


@dataclass(frozen=True)
class Source:
    revision: str  # the commit ("<commit>-dirty" with uncommitted changes), "" outside a git checkout
    epoch: int  # SOURCE_DATE_EPOCH: the commit's time
    url: str  # where the source can be fetched ("" when the checkout has no remote)

    @property
    def dirty(self) -> bool:
        """The build context has uncommitted changes: the revision does not describe it."""
        return split_revision(self.revision)[1]


def _git(checkout: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def source_of(checkout: Path) -> Source:
    """The checkout's commit; outside git, no revision and SOURCE_DATE_EPOCH from the environment (else 0)."""
    head = _git(checkout, "log", "-1", "--format=%H %ct")
    if not head:
        epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
        return Source(revision="", epoch=int(epoch) if epoch.isdigit() else 0, url="")
    revision, epoch = head.split()
    dirty = bool(_git(checkout, "status", "--porcelain", "--", *CONTEXT_PATHS))
    return Source(revision=f"{revision}{DIRTY}" if dirty else revision, epoch=int(epoch),
                  url=_git(checkout, "config", "--get", "remote.origin.url") or "")


def export(checkout: Path, revision: str, into: Path) -> None:
    """The build context of `revision` (committed files only) written into `into`."""
    archive = subprocess.run(["git", "-C", str(checkout), "archive", "--format=tar", revision, "--", *CONTEXT_PATHS,
                              ".dockerignore", "container"], capture_output=True)
    if archive.returncode != 0:
        message = archive.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"cannot read commit {revision} from {checkout}: {message[-1] if message else 'git failed'};"
                         f" fetch it (git fetch) or verify in a clone that has it")
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
