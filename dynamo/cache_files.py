"""Where our caches keep their entries (the validated matrix, the preflight's plans), and writing one
so that a reader sees no entry or a whole one. Importing this costs a start-up nothing it did not pay."""

from __future__ import annotations

import _imp  # CPython's import machinery, loaded in every process (importlib.util would cost a start 0.4 ms)
import os
from collections.abc import Iterable
from pathlib import Path

CACHE_ENV = "DYNAMO_CACHE_DIR"
KEY_VERSION = 1  # a new number makes every key new


def contents(files: Iterable[Path]) -> bytes:
    """These files' bytes, joined; a file absent counts too. Contents, not file times: an image build
    stamps every file with the commit's time after the caches are written."""
    parts = []
    for path in files:
        try:
            parts.append(path.read_bytes())
        except OSError:
            parts.append(b"\xff(absent)")
    return b"\0".join(parts)


def key(data: bytes) -> str:
    """A cache key of `data`: the hash Python's hash-checked bytecode carries (importlib.util.source_hash,
    64 bits), in hex."""
    return _imp.source_hash(KEY_VERSION, data).hex()


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
