"""Our wheel is the same bytes whoever builds it: two builds of one commit, in different directories,
with different file times and modes, give the same sha256 (PyPA build + hatchling, for real)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from conftest import REPO


def _checkout(into: Path) -> None:
    """The committed files of HEAD plus the working tree's changes to them, as a fresh copy."""
    archive = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    into.mkdir(parents=True)
    with tarfile.open(into / "src.tar", "w") as tar:
        for name in archive.decode().split("\0"):
            if name and (REPO / name).is_file():
                tar.add(REPO / name, arcname=name)
    with tarfile.open(into / "src.tar") as tar:
        tar.extractall(into, filter="fully_trusted")
    (into / "src.tar").unlink()


def _wheel(source: Path, out: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)],
                            capture_output=True, text=True, env=env, cwd=source)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = out.glob("dynamo-*.whl")
    return hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_our_wheel_built_twice_is_identical(tmp_path):
    first, second = tmp_path / "one" / "checkout", tmp_path / "elsewhere" / "two"
    _checkout(first)
    _checkout(second)
    # The second copy looks as a different machine's would: other times, other modes.
    for path in (second / "dynamo").rglob("*.py"):
        os.utime(path, (946684800, 946684800))
        path.chmod(0o600)
    assert _wheel(first, tmp_path / "out-one") == _wheel(second, tmp_path / "out-two")
