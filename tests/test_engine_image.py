"""The engine images CI builds on the Debian stand-in, as a user builds them, then read back from inside:
every claim their labels make, the CUDA their native libraries need, the worker's preflight judging the
image's own cell, and the adapter's contract tests against the real engine classes each image ships.

- vLLM 0.31.0 (release 1.6.1, CUDA 13.0): the main job's image, and the cell PyPI serves coherently.
- SGLang 0.5.11 (release 1.2.1, CUDA 13.0): the newest SGLang cell lockable here (1.6.1's SGLang 0.5.21 pins
  cuda-tile 1.6.0rc5, of which PyPI has only a wheel-stub of pypi.nvidia.com: locks/1.6.1/unlockable.list).

One build per image for the module (5 to 11 minutes cold, about 9 GiB each; buildah's layer cache serves
later runs)."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import CA, REPO, STANDIN_AMD64, buildah_ready, require, rows, run_cli

IMAGE = "localhost/dynamo:1.6.1-vllm-cuda13.0"
SGLANG_IMAGE = "localhost/dynamo:1.2.1-sglang-cuda13.0"


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


@pytest.mark.parametrize("framework, release", [("vllm", "1.6.1"), ("sglang", "1.2.1")])
def test_the_workers_preflight_judges_the_images_own_cell(framework, release, request):
    # No GPU here: the worker must refuse for the host's reasons, judging the image's release and engine on
    # CUDA 13.0, never for the versions inside the image.
    image = request.getfixturevalue(f"{framework}_image")
    started = podman("run", "--rm", image, "python3", "-m", f"dynamo.{framework}", "--model-path", "/nonexistent")
    assert started.returncode == 1, started.stdout + started.stderr
    lines = started.stderr.splitlines()
    assert lines[0] == f"preflight: this host cannot run {framework} {release}:", started.stderr
    assert not [line for line in lines if "✗ package" in line], started.stderr
    assert [line for line in lines if line.startswith("✗ ")], started.stderr


def test_the_doctor_in_the_image_judges_its_cell(vllm_image):
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


def test_the_image_carries_the_preflight_plans_its_starts_read(vllm_image):
    """The build wrote the plans of the image's entry points (dynamo.doctor.plan), and the frontend's start
    reads its plan alone: the file times the build stamps on every file afterwards do not make it stale."""
    started = podman("run", "--rm", vllm_image, "python3", "-c",
                     "import sys; from dynamo.doctor import plan; from dynamo.doctor.preflight import preflight;"
                     " print(*[plan.entries(e)[0].name for e in ('vllm', 'frontend', 'mocker')"
                     " if plan.entries(e)[0].is_file()]); preflight('frontend', []);"
                     " print('matrix loaded' if 'dynamo.matrix' in sys.modules else 'plan read')")
    assert started.returncode == 0, started.stderr
    assert started.stdout.split() == ["preflight-vllm.json", "preflight-frontend.json", "preflight-mocker.json",
                                      "plan", "read"], started.stdout + started.stderr


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


@pytest.fixture(scope="module")
def sglang_image():
    require(buildah_ready())
    built = run_cli("--framework", "sglang", "--release", "1.2.1", "--cuda", "13.0", "--python", "3.11", "--base-image",
                    STANDIN_AMD64, "--ca-cert", CA, "--engine", "buildah", timeout=3600)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "  tagged dynamo:1.2.1-sglang-cuda13.0" in built.stdout.splitlines(), built.stdout
    return SGLANG_IMAGE


@pytest.fixture(scope="module")
def libcuda_stub(tmp_path_factory):
    """The driver's libcuda.so.1 stand-in (tests/data/libcuda_stub.c), for a host without a GPU."""
    folder = tmp_path_factory.mktemp("libcuda")
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(folder / "libcuda.so.1"),
                    str(REPO / "tests" / "data" / "libcuda_stub.c")], check=True)
    folder.chmod(0o755)  # the image's user (dynamo, uid 1000) reads it; pytest makes its folders 0700
    return folder


def test_the_sglang_image_holds_what_its_labels_say(sglang_image):
    verified = run_cli("verify", sglang_image, "--engine", "buildah", timeout=1800)
    table = {row[1]: row for row in rows(verified.stdout)}
    assert table["sglang"][2:] == ["0.5.11", "0.5.11"], verified.stdout
    assert table["nixl"][2:] == ["1.0.1", "1.0.1"], verified.stdout
    assert table["torch's CUDA"][0] == "✓" and table["torch's CUDA"][3] == "13.0", verified.stdout
    assert table["libcudart of native libraries"][3].startswith("libcudart.so.13 ("), verified.stdout
    assert table["installed = lock"][0] == "✓", verified.stdout
    assert table["label dev.dynamo.cuda.version"][2:] == ["13.0", "13.0"], verified.stdout


def test_the_sglang_adapters_contract_tests_pass_inside_the_image(sglang_image, libcuda_stub):
    """tests/contract against the SGLang the image ships. sgl_kernel links the driver's libcuda.so.1, which
    the NVIDIA toolkit mounts on a GPU host: here its stand-in is on the library path. The image's own
    system libraries (libnuma.so.1, the matrix's system_packages) must be there already."""
    contract = REPO / "tests" / "contract"
    ran = podman("run", "--rm", "-v", f"{contract}:/contract:ro", "-v", f"{libcuda_stub}:/opt/libcuda-stub:ro",
                 "-e", "LD_LIBRARY_PATH=/opt/libcuda-stub", "-e", "DYNAMO_CONTRACT_REQUIRE=sglang",
                 "-e", "DYN_SKIP_PREFLIGHT=1", sglang_image, "python3", "-m", "unittest", "discover", "-s", "/contract",
                 "-v", timeout=1200)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-4000:]
    assert "test_sglang_contract" in output and "engine not installed: sglang" not in output, output[-4000:]
