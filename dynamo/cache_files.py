"""Where our caches keep their entries (the validated matrix, the preflight's plans), and writing one
so that a reader sees no entry or a whole one. Importing this costs a start-up nothing it did not pay."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CACHE_ENV = "DYNAMO_CACHE_DIR"


def user_dir() -> Path:
    """$DYNAMO_CACHE_DIR, else $XDG_CACHE_HOME/dynamo, else ~/.cache/dynamo."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dynamo"


def write(entries: Iterable[Path], payload: bytes, stale: str | None = None) -> Path | None:
    """Write `payload` to the first of `entries` this user may write, atomically, and remove the files
    beside it matching the glob `stale`, if given (entries of earlier texts or code, never read again).
    Returns the entry written, or None where none could be."""
    import tempfile  # only a miss writes

    for entry in entries:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=entry.parent, prefix=".tmp-", delete=False) as file:
                file.write(payload)
        except OSError:
            continue
        try:
            os.chmod(file.name, 0o644)
            os.replace(file.name, entry)
        except OSError:
            Path(file.name).unlink(missing_ok=True)
            continue
        for old in entry.parent.glob(stale) if stale else ():
            if old != entry:
                old.unlink(missing_ok=True)
        return entry
    return None
