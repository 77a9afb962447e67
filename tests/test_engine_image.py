"""The main job's real engine image: vLLM 0.31.0 (release 1.6.1, CUDA 13.0, the cell PyPI serves coherently)
built on the Debian stand-in as a user builds it, then read back from inside: every claim its labels make,
the CUDA its native libraries need, the worker's preflight judging the image's own cell, and the adapter's
contract tests against the real vLLM classes it ships. One build for the module (about 10 minutes cold,
8.5 GiB; buildah's layer cache serves later runs)."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import CA, REPO, STANDIN_AMD64, buildah_ready, require, rows, run_cli

IMAGE = "localhost/dynamo:1.6.1-vllm-cuda13.0"


def podman(command: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # rootful podman's own nofile and nproc defaults can exceed a sandbox's hard limits (run.sh lowers them
    # the same way, dynamo.run_image); these commands need few of either
    limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"] if command == "run" else []
    return subprocess.run(["podman", command, *limits, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def vllm_image(tmp_path_factory):
    require(buildah_ready())
    built = run_cli("--framework", "vllm", "--release", "1.6.1", "--python", "3.11", "--base-image", STANDIN_AMD64,
                    "--ca-cert", CA, "--engine", "buildah", timeout=3600)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "  tagged dynamo:1.6.1-vllm-cuda13.0" in built.stdout.splitlines(), built.stdout
    assert "  tagged dynamo:latest-vllm" in built.stdout.splitlines(), built.stdout
    return IMAGE


def test_verify_reads_back_every_claim_from_inside_the_image(vllm_image, tmp_path):
    attested = run_cli("attest", vllm_image, "--engine", "buildah", "--out", str(tmp_path), timeout=1800)
    assert attested.returncode == 0, attested.stderr[-2000:]
    verified = run_cli("verify", vllm_image, "--engine", "buildah", "--attestations", str(tmp_path), timeout=1800)
    table = {row[1]: row for row in rows(verified.stdout)}
    failing = [name for name, row in table.items() if row[0] == "✗"]
    # the stand-in is Debian without a CUDA toolkit: verify names it, and that is the one row that fails
    assert failing == ["CUDA toolkit"], verified.stdout
    assert table["CUDA toolkit"][3].startswith("none in the image (no /usr/local/cuda: a stand-in base image?)")
    assert table["vllm"][2:] == ["0.31.0", "0.31.0"]
    assert table["nixl"][2:] == ["1.4.1", "1.4.1"]
    assert table["torch's CUDA"][3] == "13.0"  # torch.version.cuda, read from the installed torch
    assert table["libcudart of native libraries"][3].startswith("libcudart.so.13 (")
    assert table["installed = lock"][3].startswith("all ") and table["installed = lock"][3].endswith(" at their locked versions")
    assert table["label dev.dynamo.cuda.version"][2:] == ["13.0", "13.0"]
    assert max(map(len, verified.stdout.splitlines())) <= 250  # NVIDIA_REQUIRE_CUDA no longer spans 4,000 columns


def test_the_workers_preflight_judges_the_images_own_cell(vllm_image):
    # No GPU here: the worker must refuse for the host's reasons, judging release 1.6.1's vLLM on CUDA 13.0,
    # never for the versions inside the image.
    started = podman("run", "--rm", vllm_image, "python3", "-m", "dynamo.vllm", "--model-path", "/nonexistent")
    assert started.returncode == 1, started.stdout + started.stderr
    lines = started.stderr.splitlines()
    assert lines[0] == "preflight: this host cannot run vllm 1.6.1:", started.stderr
    assert not [line for line in lines if "✗ package" in line], started.stderr
    assert [line for line in lines if line.startswith("✗ ")], started.stderr
    doctor = podman("run", "--rm", vllm_image, "dynamo", "doctor", "--json")
    report = json.loads(doctor.stdout)
    assert (report["subject"]["release"], report["subject"]["framework"], report["subject"]["device"]) == \
        ("1.6.1", "vllm", "13.0"), doctor.stdout[:500]
    assert not [f for f in report["findings"] if f["check"] in ("package", "shm") and f["status"] == "fail"], report


def test_the_frontend_starts_in_the_image_under_the_default_shm(vllm_image):
    """The image's default command, with no GPU and the engine's default 64 MB /dev/shm."""
    started = podman("run", "--rm", vllm_image, "python3", "-c",
                     "import sys; from dynamo.doctor.preflight import preflight; preflight('frontend', []);"
                     " print('preflight passed')")
    assert started.returncode == 0 and started.stdout.strip() == "preflight passed", started.stderr


def test_the_adapters_contract_tests_pass_inside_the_image(vllm_image):
    """tests/contract against the vLLM the image ships (standard library only: the image has no pytest);
    DYNAMO_CONTRACT_REQUIRE=vllm makes a vLLM that cannot be imported an error, never a skip."""
    contract = REPO / "tests" / "contract"
    ran = podman("run", "--rm", "-v", f"{contract}:/contract:ro", "-e", "DYNAMO_CONTRACT_REQUIRE=vllm",
                 "-e", "DYN_SKIP_PREFLIGHT=1", vllm_image, "python3", "-m", "unittest", "discover", "-s", "/contract",
                 "-v", timeout=1200)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-4000:]
    assert "test_vllm_contract" in output and "engine not installed: vllm" not in output, output[-4000:]
