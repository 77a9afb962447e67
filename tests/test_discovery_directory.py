"""Embedded discovery trusts its directory only when no other user can have planted a worker in it:
it is created 0700, and one that another user owns or others can write is refused in one line."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile

import pytest
from conftest import require
from processes import Deployment

from dynamo.runtime import discovery
from dynamo.runtime.discovery import DiscoveryError, EmbeddedDiscovery, Instance

INSTANCE = Instance(id="abc", model="m", framework="mocker", address="127.0.0.1:1", pid=os.getpid(), host="here")


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_directory_is_created_private(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    base = tmp_path / f"dynamo-{os.getuid()}"
    assert discovery.default_directory() == base / "dynamo" / "discovery"
    asyncio.run(EmbeddedDiscovery(discovery.default_directory(), "ns").register(INSTANCE))
    for directory in (base, base / "dynamo", base / "dynamo" / "discovery", base / "dynamo" / "discovery" / "ns"):
        assert mode(directory) == 0o700, directory
    assert (base / "dynamo" / "discovery" / "ns" / "abc.json").exists()


def planted(tmp_path):
    """A directory another user made first, as they could in /tmp: writable by everyone, a worker
    file of theirs in it."""
    base = tmp_path / f"dynamo-{os.getuid()}"
    (base / "test").mkdir(parents=True)
    (base / "test" / "evil.json").write_text(INSTANCE.to_json())
    base.chmod(0o777)
    return base


def test_a_directory_others_can_write_is_refused(tmp_path):
    base = planted(tmp_path)
    with pytest.raises(DiscoveryError, match=f"the discovery directory {base / 'test'} is not private "
                                             f"\\(others can write {base}\\)"):
        asyncio.run(EmbeddedDiscovery(base, "test").register(INSTANCE))
    (base / "test").chmod(0o722)
    base.chmod(0o700)
    with pytest.raises(DiscoveryError, match="not private \\(others can write it\\)"):
        asyncio.run(EmbeddedDiscovery(base, "test").watch(lambda snapshot: None))


def test_a_directory_of_another_user_is_refused(tmp_path):
    require(None if os.geteuid() == 0 else "giving a directory to another user needs root")
    base = tmp_path / "theirs"
    base.mkdir(mode=0o700)
    os.chown(base, 65534, 65534)
    with pytest.raises(DiscoveryError, match="not private \\(it belongs to user 65534\\)"):
        asyncio.run(EmbeddedDiscovery(tmp_path, "theirs").register(INSTANCE))


def test_processes_refuse_a_planted_directory_in_one_line(tmp_path):
    base = planted(tmp_path)
    deployment = Deployment(tmp_path, DYN_DISCOVERY_DIR=str(base))
    try:
        frontend = deployment.start("dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", "0", ready=None)
        worker = deployment.start("dynamo.mocker", "--model-name", "m", ready=None)
        for process in (frontend, worker):
            assert process.popen.wait(60) == 1
            output = process.output()
            assert "is not private (others can write" in output and "Traceback" not in output, output
    finally:
        deployment.stop()
