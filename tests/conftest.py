from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
import sys
import time
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


# The real container tooling from .ci/engines: stand-in base images (debootstrap; nothing can be pulled here).
STANDIN = "localhost/standin:bookworm"  # amd64 + arm64 manifest list (buildah/podman storage)
STANDIN_AMD64 = "localhost/standin:bookworm-amd64"
DOCKER_STANDIN = "standin:bookworm-amd64"
CA = "/etc/ssl/certs/ca-certificates.crt"  # this machine's bundle: its proxy intercepts TLS


def rows(report: str) -> list[list[str]]:
    """The rows of `build.py verify`'s table: mark, check, expected, found."""
    return [re.split(r" {2,}", line) for line in report.splitlines() if line.startswith(("✓", "✗"))]


def buildah_ready() -> str | None:
    """None when buildah and the stand-in base image are here, else what is missing."""
    if not shutil.which("buildah"):
        return "buildah is not installed"
    if subprocess.run(["buildah", "inspect", "--type", "image", STANDIN_AMD64], capture_output=True).returncode:
        return f"the stand-in base image {STANDIN_AMD64} is missing"
    return None


def docker_ready() -> str | None:
    """None when a Docker daemon runs and has the stand-in base image, else what is missing."""
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode:
        return "no Docker daemon is running"
    if subprocess.run(["docker", "image", "inspect", DOCKER_STANDIN], capture_output=True).returncode:
        return f"the stand-in base image {DOCKER_STANDIN} is missing from Docker"
    return None


@pytest.fixture
def registry(tmp_path):
    """A docker-registry on a free port, serving from tmp_path; yields its host:port."""
    from processes import free_port

    binary = shutil.which("docker-registry")
    require(None if binary else "docker-registry is not installed")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    server = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"localhost:{port}"
    finally:
        server.terminate()
        server.wait()
