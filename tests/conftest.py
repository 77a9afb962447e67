from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MATRIX_FILE = REPO / "matrix" / "support_matrix.toml"
SEEDS = REPO / "tests" / "data" / "seeds"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="session")
def raw_matrix() -> dict:
    """The shipped matrix as parsed TOML; copy it before mutating."""
    return tomllib.loads(MATRIX_FILE.read_text())


@pytest.fixture
def raw(raw_matrix) -> dict:
    return copy.deepcopy(raw_matrix)


@pytest.fixture(scope="session")
def matrix():
    from dynamo.matrix import load
    return load(MATRIX_FILE)


def run_cli(*args: str, cwd: Path = REPO, script: Path = REPO / "build.py", timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python build.py ARGS` as a user would."""
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


REQUIRE_ENGINES = "DYNAMO_REQUIRE_ENGINES"


def require(reason_missing: str | None) -> None:
    """Skip when a real component is missing, with the reason; CI sets DYNAMO_REQUIRE_ENGINES=1,
    which turns that skip into a failure."""
    if reason_missing is None:
        return
    import os
    if os.environ.get(REQUIRE_ENGINES) == "1":
        pytest.fail(f"{reason_missing} (required: {REQUIRE_ENGINES}=1; run .ci/engines)")
    pytest.skip(f"{reason_missing}; run .ci/engines to install it")
