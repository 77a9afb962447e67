"""Read `support_matrix.toml` into a validated `Matrix`, or raise `MatrixInvalid` listing every problem."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from packaging.version import Version

from dynamo.matrix import cache
from dynamo.matrix.convert import INVALID, Problem, convert, format_path
from dynamo.matrix.model import Matrix, Release, ReleaseFields

ENV_VAR = "DYNAMO_MATRIX"
_PACKAGE_DIR = Path(__file__).resolve().parent
# In a source checkout the matrix lives at the repository root; a wheel carries a copy inside.
CANDIDATES = (_PACKAGE_DIR.parents[1] / "matrix" / "support_matrix.toml",
              _PACKAGE_DIR / "data" / "support_matrix.toml")


class MatrixInvalid(Exception):
    """The matrix could not be read or is inconsistent; `lines()` has one line per problem."""

    def __init__(self, source: str, problems: list[Problem]):
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems

    def lines(self) -> list[str]:
        return [f"{self.source}: {format_path(p.path)}: {p.message}" if p.path
                else f"{self.source}: {p.message}" for p in self.problems]


def default_path() -> Path:
    """$DYNAMO_MATRIX, else the checkout's matrix/support_matrix.toml, else the packaged copy."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    for candidate in CANDIDATES:
        if candidate.is_file():
            return candidate
    return CANDIDATES[-1]


def display_name(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load(path: str | os.PathLike[str] | None = None) -> Matrix:
    """The matrix at `path` (default_path()), validated; from the cache when these very bytes were."""
    path = Path(path) if path is not None else default_path()
    source = display_name(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise MatrixInvalid(source, [Problem((), f"cannot read the matrix ({reason}); "
                                             f"pass --matrix PATH or set {ENV_VAR}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MatrixInvalid(source, [Problem((), f"not UTF-8 text (byte {exc.start}); save the file as UTF-8")]) from None
    if (matrix := cache.read(path, data)) is None:
        matrix = loads(text, source)
        cache.write(path, data, matrix)
    return matrix


def loads(text: str, source: str = "<matrix>") -> Matrix:
    if sys.version_info >= (3, 11):  # imported here: a start-up that reads the cache parses nothing
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MatrixInvalid(source, [Problem((), f"invalid TOML: {exc}")]) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        line = next((i for i, text in enumerate(text.splitlines(), 1) if text.count("[") + text.count("{") > 64), None)
        where = f"line {line}: " if line else ""
        raise MatrixInvalid(source, [Problem((), f"{where}arrays or inline tables nested too deep to read (the"
                                             f" schema needs only a few levels); flatten them")]) from None
    return from_dict(raw, source)


def from_dict(raw: dict[str, Any], source: str = "<matrix>") -> Matrix:
    """Convert and validate parsed TOML. Raises MatrixInvalid with every problem found."""
    problems: list[Problem] = []
    matrix = convert(Matrix, raw, (), problems)
    if matrix is INVALID:
        raise MatrixInvalid(source, problems)
    from dynamo.matrix.validate import validate  # cross-references: all of packaging, some time

    problems.extend(validate(matrix))
    if problems:
        raise MatrixInvalid(source, problems)
    return _complete(matrix)


def _complete(matrix: Matrix) -> Matrix:
    """Fill each release from [defaults], give patch releases their base's CUDA, order newest first."""
    inherited = [f.name for f in dataclasses.fields(ReleaseFields)]
    releases: dict[str, Release] = {}
    for name, release in matrix.release.items():
        filled = {key: getattr(matrix.defaults, key) for key in inherited if getattr(release, key) is None}
        releases[name] = dataclasses.replace(release, **filled)
    for name, release in releases.items():
        if release.patch_of:
            base = releases[release.patch_of]
            engines = {fw: dataclasses.replace(engine, cuda=base.engines[fw].cuda)
                       for fw, engine in release.engines.items()}
            releases[name] = dataclasses.replace(release, engines=engines)
    ordered = dict(sorted(releases.items(), key=lambda item: release_sort_key(item[0]), reverse=True))
    return dataclasses.replace(matrix, release=ordered)


def release_sort_key(name: str) -> tuple[int, Version]:
    """main sorts above every version."""
    return (1, Version("0")) if name == "main" else (0, Version(name))
