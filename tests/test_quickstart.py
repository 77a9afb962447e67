"""The README's own commands, as a new user types them: its first line builds an image (with
whichever engine build.py finds first), and the quick start's `container/run.sh` line serves
`/v1/models` from that image."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

from conftest import REPO, buildah_ready, require
from processes import free_port

README = (REPO / "README.md").read_text()


def readme_build_command() -> list[str]:
    """README line 1 after its setup steps: `.venv/bin/python build.py ...`, as this interpreter."""
    first = next(line for line in README.splitlines() if line.startswith("bash .ci/setup"))
    command = shlex.split(first.split("&&")[-1].split("#")[0])
    assert command[:2] == [".venv/bin/python", "build.py"], command
    return [sys.executable, str(REPO / "build.py"), *command[2:]]


def readme_serve_command(port: int) -> list[str]:
    """The quick start's run.sh line, on a free port instead of 8000."""
    quickstart = README.split("## From a fresh clone to a served request")[1].split("\n## ")[0]
    line = next(line for line in quickstart.splitlines() if line.startswith("container/run.sh"))
    assert "-p 8000:8000" in line, line
    command = shlex.split(line.replace("-p 8000:8000", f"-p 127.0.0.1:{port}:8000"))
    return ["bash", str(REPO / command[0]), *command[1:]]


def test_readme_builds_an_image_and_run_sh_serves_it():
    require(buildah_ready())
    build = subprocess.run(readme_build_command(), cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stderr[-3000:]
    summary = build.stdout.splitlines()
    engine = re.match(r"built \w+ \([^)]*\) with (\S+) in ", summary[0])
    assert engine, summary
    where = summary[1]
    assert where.startswith("  in ") and ("containers-storage" in where or "Docker" in where), summary
    tags = [line.split()[-1] for line in summary if line.startswith("  tagged ")]
    assert "dynamo:latest-frontend" in tags, summary  # what `run.sh --framework frontend` runs
    cli = "podman" if "containers-storage" in where else "docker"
    env = json.loads(subprocess.run([cli, "image", "inspect", "--format", "{{json .Config.Env}}", "dynamo:latest-frontend"],
                                    capture_output=True, text=True, check=True).stdout)
    assert not [e for e in env if e.startswith("DEBIAN_FRONTEND=")], env  # a build-time setting only
    history = subprocess.run([cli, "history", "--no-trunc", "--format", "{{.CreatedBy}}", "dynamo:latest-frontend"],
                             capture_output=True, text=True, check=True).stdout
    assert "/tmp/wheels" not in history, history  # the wheels never reach a shipped layer

    port = free_port()
    server = subprocess.Popen(readme_serve_command(port), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        models: list = []
        while not models:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "no model was served on /v1/models"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as response:
                    models = json.loads(response.read())["data"]
            except OSError:
                pass
            time.sleep(0.5)
        assert [model["id"] for model in models] == ["mock"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
