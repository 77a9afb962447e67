"""container/run.sh against the real Docker engine, with an image built by build.py (`--gpus none`)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import CA, DOCKER_STANDIN, REPO, docker_ready, require, run_cli
from processes import free_port

RUN_SH = REPO / "container" / "run.sh"
NO_DRIVER = re.compile(r"✗ driver  no NVIDIA driver found( \([^)]*\))?; CUDA 12\.9 needs >= 575\.51\.03")
TAG = f"dynamo-test:runsh-{uuid.uuid4().hex[:8]}"


def run_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN_SH), *args], capture_output=True, text=True, timeout=300)


def daemon_hard_limits() -> dict[str, int] | None:
    """The Docker daemon's hard memlock and nofile limits, read from /proc as an operator would
    (`cat /proc/$(pidof dockerd)/limits`); None when it may raise them (CAP_SYS_RESOURCE)."""
    pid = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()[0]
    status = (Path("/proc") / pid / "status").read_text()
    if int(re.search(r"^CapEff:\s+(\w+)", status, re.M).group(1), 16) & (1 << 24):
        return None
    limits = (Path("/proc") / pid / "limits").read_text()
    hard = {}
    for name, row in (("memlock", "Max locked memory"), ("nofile", "Max open files")):
        value = re.search(rf"^{row}\s+\S+\s+(\S+)", limits, re.M).group(1)
        hard[name] = -1 if value == "unlimited" else int(value)
    return hard


@pytest.fixture(scope="module")
def image():
    require(docker_ready())
    result = run_cli("--framework", "frontend", "--engine", "docker", "--base-image", DOCKER_STANDIN, "--python", "3.11",
                     "--ca-cert", CA, "--tag", TAG)
    assert result.returncode == 0, result.stderr
    yield TAG
    subprocess.run(["docker", "rmi", "-f", TAG], capture_output=True)


@pytest.fixture(scope="module")
def cuda_image():
    require(docker_ready())
    tag = f"{TAG}-cuda"
    # labels as build.py writes them, and the requirement our images carried before they had NVIDIA's clauses
    dockerfile = (f"FROM {DOCKER_STANDIN}\nLABEL dev.dynamo.release=0.8.1 dev.dynamo.framework=vllm"
                  " dev.dynamo.device=cuda12.9 dev.dynamo.cuda.version=12.9 dev.dynamo.cuda.min-driver=575.51.03\n"
                  'ENV NVIDIA_REQUIRE_CUDA="cuda>=12.9"\n')
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, check=True,
                   capture_output=True)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


SMALL_LIMITS = ("--ulimit", "memlock=65536", "--ulimit", "nofile=1024:1024", "--ulimit", "stack=8388608")


def test_dry_run_prints_the_exact_command(tmp_path):
    # --image: without it, an SGLang image some other test built would be run in its stead (the newest here)
    result = run_sh("--dry-run", "--image", "dynamo:latest-sglang", "-p", "8000:8000", "-e", "A=1", "-it",
                    *SMALL_LIMITS, "--", "python3", "-V")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "docker run --rm -it --gpus all --shm-size=10G --ulimit memlock=65536 --ulimit nofile=1024:1024"
        " --ulimit stack=8388608 --ipc host -p 8000:8000 -e A=1 dynamo:latest-sglang python3 -V")
    cache = tmp_path / "hf-cache"
    workspace = run_sh("--dry-run", "--mount-workspace", "--hf-cache", str(cache), "--gpus", "none")
    assert f"-v {REPO}:/workspace -w /workspace -e HF_TOKEN -v {cache}:/home/dynamo/.cache/huggingface" \
        in workspace.stdout and "--gpus" not in workspace.stdout and "--network host" in workspace.stdout
    assert not cache.exists()  # a dry run writes nothing


@pytest.mark.parametrize("image, gpus", [("dynamo:0.8.1-llama_cpp-cpu", False), ("dynamo:latest-frontend", False),
                                         ("dynamo:0.8.1-vllm-cuda12.9", True), ("dynamo:latest-vllm", True)])
def test_gpu_flags_only_for_a_cuda_image(image, gpus):
    """An image that is not here is judged by our tag scheme; one that is, by its labels (below). Docker
    gets `--gpus all`, podman (whose store has the image, e.g. test_engine_image's vLLM) CDI's device."""
    result = run_sh("--dry-run", "--image", image, *SMALL_LIMITS)
    assert result.returncode == 0, result.stderr
    assert ("--gpus all" in result.stdout or "--device nvidia.com/gpu=all" in result.stdout) == gpus, result.stdout


def test_default_ulimits_are_lowered_to_what_the_daemon_grants():
    require(docker_ready())
    hard = daemon_hard_limits()
    result = run_sh("--dry-run", "--engine", "docker", "--framework", "frontend")
    assert result.returncode == 0, result.stderr
    memlock = re.search(r"--ulimit memlock=(\S+)", result.stdout).group(1)
    nofile = re.search(r"--ulimit nofile=(\S+)", result.stdout).group(1)
    if hard is None or hard["memlock"] == -1:
        assert memlock == "-1" and result.stderr == ""
        return
    assert memlock == str(hard["memlock"])
    assert (f"run.sh: warning: memlock lowered from -1 to {hard['memlock']}, the Docker daemon's hard limit"
            " (pass --ulimit memlock=VALUE to choose)") in result.stderr.splitlines()
    if hard["nofile"] != -1 and hard["nofile"] < 65536:
        assert nofile == f"{hard['nofile']}:{hard['nofile']}"
    refused = run_sh("--dry-run", "--engine", "docker", "--framework", "frontend", "--ulimit", "memlock=-1")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"run.sh: error: --ulimit memlock=-1 is above the Docker daemon's hard limit ({hard['memlock']});"
        f" pass --ulimit memlock={hard['memlock']} or raise the engine's limit")


CACHED = ("from dynamo.matrix import cache, default_path; p = default_path();"
          " print('cached' if cache.read(p, p.read_bytes()) else 'not cached')")


def test_runs_a_command_with_the_expected_limits(image):
    result = run_sh("--image", image, "--",
                    "sh", "-c", f"id -u; ulimit -s; echo $NVIDIA_REQUIRE_CUDA; python3 -c \"{CACHED}\";"
                    " dynamo matrix check >/dev/null && echo ok")
    assert result.returncode == 0, result.stderr
    # non-root, stack 64 MiB, the preflight reads the matrix the build validated, our package works
    assert result.stdout.split() == ["1000", "65536", "cached", "ok"], result.stderr


def test_refuses_a_cuda_image_on_a_host_without_the_driver(cuda_image):
    result = run_sh("--image", cuda_image, "--", "true")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"run.sh: this host cannot run {cuda_image}:"
    assert NO_DRIVER.fullmatch(lines[1]), lines[1]  # with the probe's reason in parentheses
    assert lines[2:] == ["          fix: install NVIDIA driver >= 575.51.03 (branch R575)",
                         "run.sh: nothing was started; fix the above, or pass --skip-preflight to try anyway"]


def test_a_cuda_image_needs_gpus(cuda_image):
    result = run_sh("--image", cuda_image, "--gpus", "none", "--", "true")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"run.sh: error: {cuda_image} is a CUDA 12.9 image and needs GPUs; drop --gpus none"
                                     " (or pass --skip-preflight)")


def test_bad_input_is_one_line():
    require(docker_ready())
    missing = run_sh("--image", "dynamo-test:does-not-exist", "--", "true")
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("run.sh: error: image dynamo-test:does-not-exist is in neither Docker's nor"
                                      " podman's image store; build it: python build.py --framework vllm"
                                      " --tag dynamo-test:does-not-exist")
    ours = run_sh("--image", "dynamo:0.8.0-llama_cpp-cpu", "--", "true")
    assert ours.returncode == 1 and ours.stderr.strip().endswith(
        "build it: python build.py --framework llama_cpp --release 0.8.0 --cuda cpu")
    unknown = run_sh("--bogus")
    assert unknown.returncode == 2 and unknown.stderr.strip().startswith("run.sh: error: unknown option '--bogus'")
    assert run_sh("--ulimit", "memlock").stderr.strip() == "run.sh: error: --ulimit expects NAME=VALUE, got 'memlock'"


@pytest.mark.parametrize("args, message", [
    (("-p", "notaport"), "-p 'notaport': expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]"),
    (("-p", "8000:70000"), "-p '8000:70000': expected"),
    (("--gpus", "all;x"), "--gpus 'all;x': expected auto, all, none, a count or device=ID[,ID...]"),
    (("--shm-size", "-1"), "--shm-size '-1': expected a size above 0 such as 10G or 512m"),
    (("--shm-size", "0"), "--shm-size '0': expected a size above 0"),
    (("--image", "x;y"), "--image 'x;y' is not an image reference"),
])
def test_values_the_engine_would_refuse_are_one_line(args, message):
    """Checked before any engine is asked: these once reached `docker run` as given."""
    result = run_sh(*args, "--dry-run")
    assert result.returncode == 2 and result.stderr == f"run.sh: error: {result.stderr.removeprefix('run.sh: error: ')}"
    assert result.stderr.startswith(f"run.sh: error: {message}") and result.stderr.count("\n") == 1, result.stderr


def test_without_image_the_frameworks_newest_release_here_runs():
    """No --image and no dynamo:latest-trtllm: the newest release of the framework that is here (not the
    newest built), said in one warning; with none at all, the one-line error and the build command."""
    require(docker_ready())
    tags = ["dynamo:1.2.1-trtllm-cuda13.1", "dynamo:0.8.1-trtllm-cuda12.9", "dynamo:1.2.1-trtllm-cpu"]
    for tag in tags:  # the newest release built first, the older one after it
        subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=f"FROM {DOCKER_STANDIN}\nLABEL tag={tag}\n",
                       text=True, check=True, capture_output=True)
    try:
        result = run_sh("--framework", "trtllm", "--engine", "docker", "--dry-run", "--", "true")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[-2:] == ["dynamo:1.2.1-trtllm-cuda13.1", "true"]
        assert "run.sh: warning: no dynamo:latest-trtllm here; running dynamo:1.2.1-trtllm-cuda13.1, the newest" \
               " trtllm image in docker's image store (--image picks another)" in result.stderr.splitlines()
    finally:
        subprocess.run(["docker", "rmi", *tags], capture_output=True)
    none = run_sh("--framework", "trtllm", "--engine", "docker", "--", "true")
    assert none.returncode == 1 and none.stderr.strip() == (
        "run.sh: error: image dynamo:latest-trtllm is not in docker's image store; build it:"
        " python build.py --framework trtllm")


@pytest.mark.parametrize("args", [("-p", "8000:8000"), ("-p", "127.0.0.1:8000-8010:8000-8010/udp"), ("--gpus", "2"),
                                  ("--gpus", "device=0,1"), ("--gpus", "none"), ("--shm-size", "1.5GiB")])
def test_values_docker_takes_are_taken(args):
    from dynamo.run_image import parse

    parse(list(args))  # raises UsageError otherwise


def test_doctor_reads_an_images_labels(cuda_image, image):
    result = run_cli("doctor", "--image", cuda_image, "--scope", "host")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("dynamo doctor: release 0.8.1, vllm, CUDA 12.9 on ")
    assert any(NO_DRIVER.fullmatch(line) for line in result.stdout.splitlines()), result.stdout
    assert run_cli("doctor", "--image", image, "--scope", "host").returncode == 0  # a CPU image runs here
    missing = run_cli("doctor", "--image", "dynamo-test:absent")
    assert missing.returncode == 2 and missing.stderr.startswith("error: image dynamo-test:absent is not in the image store of")


def test_doctor_judges_the_requirement_the_image_carries(cuda_image):
    """An H200 on R570 (tests/data/hosts): the image's own `cuda>=12.9` is refused there, though the matrix's
    image for the same cell (with NVIDIA's forward-compatibility clauses) would start."""
    host = str(REPO / "tests" / "data" / "hosts" / "h200-r570-ollama")
    result = run_cli("doctor", "--image", cuda_image, "--facts", host, "--scope", "host", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["subject"]["requirements"] == ["cuda>=12.9"]
    (toolkit,) = [f for f in report["findings"] if f["check"] == "toolkit"]
    assert toolkit["status"] == "fail" and "unsatisfied condition: cuda>=12.9," in toolkit["message"]
    matrix_image = run_cli("doctor", "--release", "0.8.1", "--framework", "vllm", "--cuda", "12.9", "--facts", host,
                           "--scope", "host")
    assert matrix_image.returncode == 0, matrix_image.stdout


def test_the_containers_environment_is_the_images_with_each_e(monkeypatch):
    from dynamo.run_image import container_env, parse

    monkeypatch.setenv("NVIDIA_DISABLE_REQUIRE", "true")
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    options = parse(["-e", "NVIDIA_REQUIRE_CUDA=cuda>=12.4", "-e", "NVIDIA_DISABLE_REQUIRE", "-e", "NOT_SET_HERE"])
    image = {"NVIDIA_REQUIRE_CUDA": "cuda>=12.9", "PATH": "/usr/bin"}
    assert container_env(options, image) == {"NVIDIA_REQUIRE_CUDA": "cuda>=12.4", "PATH": "/usr/bin",
                                             "NVIDIA_DISABLE_REQUIRE": "true"}


def test_the_image_serves_the_frontend_by_default(image):
    """No command: the runtime image starts the frontend; a worker started beside it is found and serves."""
    name, port = f"dynamo-serve-{uuid.uuid4().hex[:8]}", free_port()
    server = subprocess.Popen(["bash", str(RUN_SH), "--image", image,
                               "--name", name, "-p", f"127.0.0.1:{port}:8000"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def get(path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(url + path, data=json.dumps(body).encode() if body else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert get("/live") == {"status": "live"}
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the frontend did not answer on /live"
                time.sleep(0.5)
        subprocess.run(["docker", "exec", "-d", name, "python3", "-m", "dynamo.mocker", "--model-name", "mock"],
                       check=True)
        while not get("/v1/models")["data"]:
            assert time.monotonic() < deadline + 30, "the worker was not discovered"
            time.sleep(0.5)
        answer = get("/v1/chat/completions", {"model": "mock", "messages": [{"role": "user", "content": "hi"}],
                                              "max_tokens": 3})
        assert answer["usage"]["completion_tokens"] == 3
        health = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", name],
                                capture_output=True, text=True, check=True).stdout
        assert "/live" in health
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        server.wait(30)


def test_the_preflight_asks_the_doctor_about_the_way_the_gpus_come():
    """docker --gpus goes through the toolkit's hook, which checks the container's NVIDIA_REQUIRE_*;
    podman gets --device nvidia.com/gpu=all, CDI, which checks none (NVIDIA/nvidia-container-toolkit#1470).
    An H200 on R570 (tests/data/hosts): the toolkit refuses `cuda>=12.9`, the driver itself runs it."""
    from dynamo import run_image
    from dynamo.containers import ImageInfo
    from dynamo.doctor.facts import from_recording

    facts = from_recording(REPO / "tests" / "data" / "hosts" / "h200-r570-ollama")
    image = ImageInfo(id="", size=0, labels={"dev.dynamo.release": "0.8.1", "dev.dynamo.framework": "vllm",
                                             "dev.dynamo.cuda.version": "12.9"}, env={"NVIDIA_REQUIRE_CUDA": "cuda>=12.9"})
    options = run_image.parse(["--image", "x"])
    with pytest.raises(run_image.RunError) as refused:
        run_image.preflight(options, image, True, "docker", facts)
    assert str(refused.value).splitlines()[1].startswith("✗ toolkit ") and "cuda>=12.9" in str(refused.value)
    assert not any("✗" in line for line in run_image.preflight(options, image, True, "podman", facts))
    assert "--device" in run_image.command(options, "podman", True, {}) and \
        "--gpus" in run_image.command(options, "docker", True, {})


def test_the_preflight_says_when_the_matrix_does_not_know_the_images_release():
    from dynamo import run_image
    from dynamo.containers import ImageInfo

    image = ImageInfo(id="", size=0, labels={"dev.dynamo.release": "0.0.1", "dev.dynamo.framework": "vllm"})
    (warning,) = run_image.preflight(run_image.parse(["--image", "x"]), image, False, "docker")
    assert warning.startswith("the host check could not run (") and "0.0.1" in warning
