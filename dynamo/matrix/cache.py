"""The validated matrix, kept like Python's hash-checked bytecode: pickled in a `__pycache__` beside the
matrix file (else in the user's cache) under the source hash that such bytecode carries
(cache_files.key: `importlib.util.source_hash`, 64 bits) of the file's bytes and of the code that validates it.
Start-up then reads a matrix it validated before in milliseconds; any other text, a
broken matrix included, misses and is validated in full. The image build validates its packaged
matrix once (`dynamo matrix check`), which leaves the entry in the image.
"""

from __future__ import annotations

import _pickle  # pickle's C half: `import pickle` costs a worker's start 2 ms more, for its Python half
import functools
import sys
from pathlib import Path

from dynamo import cache_files
from dynamo.matrix.model import Matrix

# The modules whose code decides what a validated matrix is (every module validating imports, under
# dynamo/): a change to any of them is a new key; so is another Python, pickle protocol or packaging
# (whose versions and specifiers the checks use).
_CODE = ("__init__.py", "cache_files.py", "frozen.py", "nvidia_require.py", "matrix/__init__.py",
         "matrix/cache.py", "matrix/checks.py", "matrix/convert.py", "matrix/load.py", "matrix/model.py",
         "matrix/query.py", "matrix/validate.py")
_DYNAMO_DIR = Path(__file__).resolve().parents[1]
PROTOCOL = 5  # pickle's newest, on every Python we support


@functools.cache  # once per process: read() and then write() on a miss both need it
def _code() -> bytes:
    import packaging

    return (f"{sys.version_info[:2]} pickle {PROTOCOL} packaging {packaging.__version__}\0".encode()
            + cache_files.contents(_DYNAMO_DIR / name for name in _CODE))


def _entries(path: Path, data: bytes) -> list[Path]:
    key = cache_files.key(_code() + b"\0" + data)
    name = f"{path.stem}.{key}.pickle"
    return [path.resolve().parent / "__pycache__" / name, cache_files.user_dir() / name]


def read(path: Path, data: bytes) -> Matrix | None:
    """The matrix validated from exactly these bytes, if an entry holds it."""
    for entry in _entries(path, data):
        try:
            with entry.open("rb") as file:
                matrix = _pickle.load(file)
        except Exception:  # absent, unreadable or stale: it only costs a validation, like a bad .pyc
            continue
        if isinstance(matrix, Matrix):
            return matrix
    return None


def write(path: Path, data: bytes, matrix: Matrix) -> None:
    """Keep `matrix`, validated from `data`, where this user may write; nowhere if nowhere."""
    cache_files.write(_entries(path, data), _pickle.dumps(matrix, protocol=PROTOCOL), f"{path.stem}.*.pickle")
