"""`python build.py ...` against real engines: buildah, podman, Docker's classic builder, a registry.

Stand-in base images come from .ci/engines (debootstrap; nothing can be pulled here). Without an
engine these tests skip with the reason; with DYNAMO_REQUIRE_ENGINES=1 (CI) they fail instead.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import (
    CA,
    DOCKER_STANDIN,
    REPO,
    STANDIN,
    STANDIN_AMD64,
    buildah_ready,
    docker_ready,
    require,
    rows,
    run_cli,
)

RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module", autouse=True)
def remove_test_images():
    """Untag every image these tests made (the layers stay in the cache for the next run)."""
    yield
    for command, listing in ((["buildah", "rmi", "-f"], ["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"]),
                             (["docker", "rmi", "-f"], ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"])):
        if shutil.which(command[0]):
            names = subprocess.run(listing, capture_output=True, text=True).stdout.split()
            mine = [name for name in names if RUN_ID in name]
            if mine:
                subprocess.run(command + mine, capture_output=True)



def build(*args: str, base: str = STANDIN_AMD64, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_cli("--framework", "frontend", "--base-image", base, "--python", "3.11", "--ca-cert", CA, *args,
                   timeout=timeout)


def image_id(engine: str, ref: str) -> str | None:
    command = ["docker", "image", "inspect", "--format", "{{.Id}}", ref] if engine == "docker" else \
        ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref]
    result = subprocess.run(command, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def test_dry_run_prints_pins_tags_labels_and_command():
    # 1.2.1's CUDA 12.9 cells have no lock here (PyPI's vLLM 0.20.1 is a CUDA 13.0 build): --unlocked
    result = run_cli("--framework", "vllm", "--cuda", "12.9", "--platform", "linux/amd64,linux/arm64",
                     "--engine", "buildah", "--dry-run", "--unlocked")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # the latest release (1.6.1) has no CUDA 12.9: the newest release that has it, said on stderr
    assert "warning: the latest release 1.6.1 has no vLLM on CUDA 12.9; using 1.2.1" in result.stderr
    assert "dynamo:latest-vllm" not in out
    for expected in ("engine package        vllm==0.20.1", "nixl                  nixl[cu12]==0.10.1",
                     "12.9 (Linux driver >= 575.51.03; published 575.xx+ / 576.xx+)",
                     "platforms             linux/amd64, linux/arm64", "  dynamo:1.2.1-vllm-cuda12.9",
                     "  dev.dynamo.cuda.min-driver=575.51.03",
                     "buildah build --isolation chroot --layers --format oci --timestamp ",
                     "--platform linux/amd64,linux/arm64", "--build-arg BASE_IMAGE=nvcr.io/nvidia/cuda-dl-base:"
                     "25.06-cuda12.9-devel-ubuntu24.04", "--manifest localhost/dynamo-build-tmp:ID"):
        assert expected in out, expected


@pytest.mark.parametrize("args, message", [
    (["--framework", "tensorrt"], "error: unknown framework 'tensorrt'; valid frameworks: frontend, vllm,"),
    (["--framework", "trtllm", "--cuda", "12.9"], "error: TensorRT-LLM in 1.6.1 ships CUDA 13.1 only; you asked for 12.9"),
    (["--framework", "vllm", "--release", "0.1.0", "--platform", "linux/arm64"],
     "error: 0.1.0 builds container images for x86_64 only; you asked for ARM64"),
    (["--framework", "vllm", "--platform", "linux/ppc64le"], "error: unknown CPU architecture 'linux/ppc64le'"),
    (["--framework", "vllm", "--build-arg", "NOEQUALS"], "error: --build-arg expects KEY=VALUE, got 'NOEQUALS'"),
    (["--framework", "vllm", "--ca-cert", "/nonexistent.pem"], "error: --ca-cert /nonexistent.pem: no such file"),
    (["--framework", "vllm", "--target", "debug"], "error: --target 'debug' is not a stage; choose runtime or dev"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run_cli(*args, "--dry-run")
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_engine_lists_the_valid_ones():
    result = run_cli("--framework", "vllm", "--engine", "kaniko", "--dry-run")
    assert result.returncode == 2 and "invalid choice: 'kaniko' (choose from 'docker', 'buildah', 'podman')" in result.stderr


# buildah 1.28's output of a frontend rebuild (recorded here, shortened): the runtime stage announces its
# `COPY --from=app`, then builds the app stage, each step with its outcome, then prints the COPY's own outcome.
INTERLEAVED = """\
[6/6] STEP 24/30: RUN groupadd --gid 1000 dynamo
--> Using cache 9906801514b362444aca319f258a7b1c04d7e0c0318f
[6/6] STEP 25/30: COPY --from=app /opt/dynamo /opt/dynamo
[4/6] STEP 1/4: FROM b6f0ed3919bec22bd859301354223215ef94932
[4/6] STEP 2/4: COPY --from=wheel /wheels/ /tmp/wheels/
--> Using cache 04d7d62bc82962d9a710a615fee0adc2f26762711698
[4/6] STEP 3/4: ARG LOCK
--> Using cache 25c5198671ccb03ded2bf5024da05b7dbb98ae26698a
[4/6] STEP 4/4: RUN pip install --no-cache-dir --no-index --no-deps /tmp/wheels/dynamo-*.whl
APP_OUTCOME
COPY_OUTCOME
[6/6] STEP 26/30: USER 1000:1000
--> Using cache 7ba0ca6fac4cb71ea4eb045a0145ae9a8a7ff7e6c224
"""


@pytest.mark.parametrize("app, copy", [(True, True), (False, False), (True, False)])
def test_progress_credits_the_cache_to_the_step_it_served(app, copy):
    from dynamo.imagebuild.image import Progress

    outcome = lambda cached, image: f"--> Using cache {image}" if cached else f"--> {image}"  # noqa: E731
    progress = Progress(out=open("/dev/null", "w"))
    for line in INTERLEAVED.replace("APP_OUTCOME", outcome(app, "51f0470960c9")).replace(
            "COPY_OUTCOME", outcome(copy, "9735760807c4")).splitlines():
        progress.line(line)
    assert (progress.steps, progress.cached) == (6, 4 + app + copy)  # the FROM is no step of its own
    assert [(what.split()[0], hit) for what, hit in progress.log] == [
        ("RUN", True), ("COPY", copy), ("FROM", False), ("COPY", True), ("ARG", True), ("RUN", app), ("USER", True)]


def test_progress_shows_the_builds_own_arg_values_not_the_dockerfiles_defaults():
    """Engines print the Dockerfile's text: building 1.2.1 for Python 3.11, an ARG step showed the defaults
    (1.6.1, a cuda13.0 lock)."""
    import io

    from dynamo.imagebuild.image import Progress

    out = io.StringIO()
    progress = Progress(out=out, build_args={"DYNAMO_RELEASE": "1.2.1", "LOCK": "1.2.1/vllm-cuda12.9-py3.11",
                                             "INSTALL": "vllm nixl[cu12]"})
    progress.line('[4/6] STEP 2/5: ARG DYNAMO_RELEASE=1.6.1 INSTALL="vllm[flashinfer] nixl[cu13]"'
                  ' LOCK=1.6.1/vllm-cuda13.0-py3.12 OTHER=kept')
    progress.line("[4/6] STEP 3/5: RUN echo LOCK=1.6.1")  # only ARG steps are rewritten
    shown = [re.sub(r"^\[[^\]]*\] +[\d.]+s  ", "", line) for line in out.getvalue().splitlines()]
    assert shown == ['ARG DYNAMO_RELEASE=1.2.1 INSTALL="vllm nixl[cu12]" LOCK=1.2.1/vllm-cuda12.9-py3.11 OTHER=kept',
                     "RUN echo LOCK=1.6.1"]


def test_buildah_build_verify_and_mismatch(tmp_path):
    require(buildah_ready())
    tag = f"localhost/dynamo-test:{RUN_ID}-frontend"
    result = build("--engine", "buildah", "--tag", tag)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\[stage \d+/\d+ step \d+/\d+\] +\d+\.\ds  ", result.stderr, re.M)  # progress: where it is, elapsed time
    summary = result.stdout.splitlines()
    assert summary[0].startswith("built ") and "steps from cache" in summary[0]
    assert summary[1].startswith("  in containers-storage") and summary[2] == f"  tagged {tag}"
    # Not attested yet (tests/test_attest.py attests): every check passes but the SBOM and provenance one.
    verified = run_cli("verify", tag, "--engine", "buildah", "--attestations", str(tmp_path))
    assert verified.returncode == 1
    assert [row[1] for row in rows(verified.stdout) if row[0] == "✗"] == ["SBOM and provenance"], verified.stdout
    assert verified.stdout.splitlines()[-1] == f"{tag}: 1 of 16 checks fail"

    mismatched = f"localhost/dynamo-test:{RUN_ID}-mismatch"
    result = build("--engine", "buildah", "--release", "0.8.0", "--unlocked", "--tag", mismatched)  # 0.8.0 has no locks
    assert result.returncode == 0 and "warning: this checkout is dynamo 1.6.1 but the image is for release 0.8.0" in result.stderr
    verified = run_cli("verify", mismatched, "--engine", "buildah", "--attestations", str(tmp_path))
    assert verified.returncode == 1
    assert ["✗", "dynamo package", "0.8.0", "1.6.1"] in rows(verified.stdout), verified.stdout
    assert ["✗", "label dev.dynamo.lock", "0.8.0/frontend-cpu-py3.11", "none"] in rows(verified.stdout), \
        verified.stdout  # built --unlocked
    assert verified.stdout.splitlines()[-1] == f"{mismatched}: 3 of 15 checks fail"  # and no attestations


def test_another_cells_lock_leaves_the_build_cached(tmp_path):
    """Only the cell's own lock goes into its image: another cell's lock changing (a release locked
    anew, say) rebuilds no step. Both builds are of the same uncommitted checkout, so that the labels
    that record the revision are the same."""
    require(buildah_ready())
    clone = tmp_path / "dynamo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    other = clone / "locks" / "0.8.1" / "vllm-cuda12.9-py3.12-amd64.txt"
    locked = other.read_text()
    for change in ("first", "second"):
        other.write_text(f"{locked}# {change} change of another cell's lock\n")
        result = run_cli("--framework", "frontend", "--base-image", STANDIN_AMD64, "--python", "3.11", "--ca-cert", CA,
                         "--engine", "buildah", "--tag", f"localhost/dynamo-test:{RUN_ID}-{change}", cwd=clone,
                         script=clone / "build.py", timeout=600)
        assert result.returncode == 0, result.stderr
    cached, steps = re.search(r"(\d+) of (\d+) steps from cache", result.stdout.splitlines()[0]).groups()
    assert cached == steps, result.stdout  # (the old `COPY locks/` made its step and the lock install's again)


def test_failed_build_moves_no_tag():
    require(buildah_ready())
    tag = f"localhost/dynamo-test:{RUN_ID}-keep"
    assert build("--engine", "buildah", "--tag", tag).returncode == 0
    before = image_id("buildah", tag)
    # Python 3.12 is not what the stand-in has: the base stage stops the build with its own message.
    result = run_cli("--framework", "frontend", "--base-image", STANDIN_AMD64, "--python", "3.12",
                     "--engine", "buildah", "--tag", tag, "--tag", f"localhost/dynamo-test:{RUN_ID}-never")
    assert result.returncode == 1
    assert result.stderr.strip().endswith("no tag was moved")
    assert "the base image has Python 3.11, this target needs 3.12" in result.stderr
    assert image_id("buildah", tag) == before
    assert image_id("buildah", f"localhost/dynamo-test:{RUN_ID}-never") is None


def test_missing_base_image_is_one_line():
    require(buildah_ready())
    result = run_cli("--framework", "frontend", "--base-image", "localhost/no-such-image:1", "--engine", "buildah",
                     "--python", "3.11", "--tag", f"localhost/dynamo-test:{RUN_ID}-nobase")
    assert result.returncode == 1
    # (the last line: an uncommitted checkout adds a warning before it)
    assert result.stderr.splitlines()[-1].startswith("error: base image localhost/no-such-image:1 is not here and"
                                                     " could not be pulled")
    assert image_id("buildah", f"localhost/dynamo-test:{RUN_ID}-nobase") is None


def test_podman_build():
    require(buildah_ready() or (None if shutil.which("podman") else "podman is not installed"))
    tag = f"localhost/dynamo-test:{RUN_ID}-podman"
    result = build("--engine", "podman", "--tag", tag)
    assert result.returncode == 0, result.stderr
    labels = json.loads(subprocess.run(["podman", "image", "inspect", tag], capture_output=True, text=True).stdout)[0]["Labels"]
    assert labels["dev.dynamo.framework"] == "frontend" and labels["dev.dynamo.release"] == "1.6.1"


def test_docker_classic_build_and_verify(tmp_path):
    require(docker_ready())
    tag = f"dynamo-test:{RUN_ID}-classic"
    result = build("--engine", "docker", "--tag", tag, base=DOCKER_STANDIN)
    assert result.returncode == 0, result.stderr
    assert "[step " in result.stderr
    verified = run_cli("verify", tag, "--engine", "docker", "--attestations", str(tmp_path))
    assert verified.stdout.splitlines()[-1] == f"{tag}: 1 of 16 checks fail", verified.stdout + verified.stderr  # not attested
    listing = subprocess.run(["docker", "run", "--rm", tag, "sh", "-c", "ls /run/secrets 2>&1; id -u"],
                             capture_output=True, text=True).stdout
    assert "No such file" in listing and listing.strip().endswith("1000")  # no CA left, non-root


def test_docker_classic_refuses_multi_arch():
    require(docker_ready())
    result = build("--engine", "docker", "--platform", "linux/amd64,linux/arm64", base=DOCKER_STANDIN)
    assert result.returncode == 1
    assert "error: docker cannot build linux/amd64, linux/arm64 together; install buildah" in result.stderr



def test_multi_arch_manifest_list_pushed_and_inspected(registry):
    require(buildah_ready())
    require(None if shutil.which("skopeo") else "skopeo is not installed")
    require(None if subprocess.run(["buildah", "manifest", "inspect", STANDIN], capture_output=True).returncode == 0
            else f"the amd64+arm64 stand-in {STANDIN} is missing")
    tag = f"{registry}/dynamo:{RUN_ID}-frontend"
    # arm64 runs under qemu: from empty caches (as in CI) that takes well over 10 minutes on 2 cores.
    result = build("--engine", "buildah", "--platform", "linux/amd64,linux/arm64", "--push", "--tag", tag, base=STANDIN,
                   timeout=2400)
    assert result.returncode == 0, result.stderr
    assert f"  pushed {tag}" in result.stdout
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{tag}"],
                                    capture_output=True, text=True, check=True).stdout)
    platforms = sorted(m["platform"]["architecture"] for m in raw["manifests"])
    assert platforms == ["amd64", "arm64"]
    for arch in platforms:
        config = json.loads(subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--override-arch", arch, f"docker://{tag}"],
            capture_output=True, text=True, check=True).stdout)
        assert config["Architecture"] == arch
        assert config["Labels"]["dev.dynamo.framework"] == "frontend"
        assert config["Labels"]["dev.dynamo.release"] == "1.6.1"


def test_no_engine_is_one_line_with_the_fix(tmp_path):
    import os
    import sys
    env = dict(os.environ, PATH=str(tmp_path), DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    result = subprocess.run([sys.executable, str(REPO / "build.py"), "--framework", "frontend"], env=env,
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    *warnings, error = result.stderr.splitlines()  # warnings: an unpinned base image, an uncommitted checkout
    assert all(line.startswith("warning: ") for line in warnings), warnings
    assert error.startswith("error: no container engine can build here: docker is not installed;"
                            " buildah is not installed (apt-get install buildah);")
    assert error.endswith("Install Docker (apt-get install docker.io, then start dockerd) or buildah")


# ---------------------------------------------------------------------------------------------
# Reproducible images: the same commit built twice from empty caches gives the same image id.
# ---------------------------------------------------------------------------------------------

def _git(*args: str, cwd=REPO) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def clean_checkout(tmp_path_factory):
    """A clone of this checkout's HEAD: only committed files can be rebuilt from the commit an image records."""
    clone = tmp_path_factory.mktemp("checkout") / "dynamo"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", _git("rev-parse", "HEAD")], check=True)
    return clone


def _build_in(checkout, framework: str, tag: str, *args: str) -> subprocess.CompletedProcess:
    device = ["--cuda", "cpu"] if framework == "llama_cpp" else []
    return run_cli("--framework", framework, *device, "--base-image", STANDIN_AMD64, "--python", "3.11", "--ca-cert", CA,
                   "--engine", "buildah", "--no-cache", "--tag", tag, *args, cwd=checkout, script=checkout / "build.py",
                   timeout=3600)


def _reproduce(checkout, tag: str) -> subprocess.CompletedProcess:
    return run_cli("verify", "--reproduce", tag, "--ca-cert", CA, cwd=checkout, script=checkout / "build.py",
                   timeout=3600)


def _image_config(tag: str) -> dict:
    return json.loads(subprocess.run(["buildah", "inspect", "--type", "image", tag], capture_output=True, text=True,
                                     check=True).stdout)["OCIv1"]


EPOCH = 1_000_000_000  # a SOURCE_DATE_EPOCH that is no commit's: 2001-09-09T01:46:40Z, day 11574


@pytest.fixture(scope="module")
def frontend_image(clean_checkout):
    """The frontend image, built once for the tests below with every timestamp set to EPOCH."""
    require(buildah_ready())
    tag = f"localhost/dynamo-test:{RUN_ID}-reproducible"
    result = _build_in(clean_checkout, "frontend", tag, "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}")
    assert result.returncode == 0, result.stderr
    assert "layer cache made at another SOURCE_DATE_EPOCH" not in result.stderr  # --no-cache: every step made now
    return tag


def test_labels_name_the_commit_and_its_time(clean_checkout):
    result = run_cli("--framework", "frontend", "--engine", "buildah", "--dry-run", cwd=clean_checkout,
                     script=clean_checkout / "build.py")
    assert result.returncode == 0, result.stderr
    commit_time = int(_git("log", "-1", "--format=%ct", cwd=clean_checkout))
    assert f"  org.opencontainers.image.revision={_git('rev-parse', 'HEAD', cwd=clean_checkout)}" in result.stdout
    assert f"  org.opencontainers.image.created={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(commit_time))}" \
        in result.stdout
    assert "  dev.dynamo.cpu.baseline=amd64=x86-64-v3 arm64=armv8.2-a+dotprod+fp16" in result.stdout
    assert f"--timestamp {commit_time} " in result.stdout


def test_source_date_epoch_stamps_every_file_and_the_shadow_date(clean_checkout, frontend_image):
    config = _image_config(frontend_image)
    assert config["created"] == "2001-09-09T01:46:40Z"
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.created"] == "2001-09-09T01:46:40Z"
    assert labels["org.opencontainers.image.revision"] == _git("rev-parse", "HEAD", cwd=clean_checkout)
    assert labels["org.opencontainers.image.base.name"] == STANDIN_AMD64
    container = subprocess.run(["buildah", "from", "--pull-never", frontend_image], capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        root = Path(subprocess.run(["buildah", "mount", container], capture_output=True, text=True,
                                   check=True).stdout.strip())
        shadow = dict(line.split(":", 1) for line in (root / "etc/shadow").read_text().splitlines())
        # The password-change day: the user is made in the runtime-base stage, which the engine's environment
        # (vLLM's 8.9 GB) is installed on, so its SOURCE_DATE_EPOCH is fixed (1980-01-01), not the commit's.
        assert shadow["dynamo"].split(":")[1] == str(315532800 // 86400)
        ours = [path for top in ("opt/dynamo", "home/dynamo") for path in (root / top).rglob("*")]
        assert len(ours) > 100
        assert {path.lstat().st_mtime for path in ours} == {EPOCH}
        pycs = [path for path in ours if path.suffix == ".pyc"]
        # Hash-based .pyc (PEP 552: flags 0b11), never the source's mtime.
        assert pycs and {int.from_bytes(path.read_bytes()[4:8], "little") for path in pycs} == {3}
    finally:
        subprocess.run(["buildah", "umount", container], capture_output=True)
        subprocess.run(["buildah", "rm", container], capture_output=True)


def test_a_warm_build_at_another_epoch_says_it_is_not_the_cold_image():
    """buildah 1.28's layer cache ignores --timestamp: steps cached at one commit's time come back in a build for
    another commit's, and the image differs from the one empty caches give. The build says so."""
    require(buildah_ready())
    tag = f"localhost/dynamo-test:{RUN_ID}-epoch"
    assert build("--engine", "buildah", "--tag", tag, "--build-arg", "SOURCE_DATE_EPOCH=1100000000").returncode == 0
    result = build("--engine", "buildah", "--tag", tag, "--build-arg", "SOURCE_DATE_EPOCH=1200000000")
    assert result.returncode == 0, result.stderr
    # What the image itself records: when each step after the base image's was made.
    made = [entry["created"] for entry in _image_config(tag)["history"][len(_image_config(STANDIN_AMD64)["history"]):]]
    stale = sum(when != time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1200000000)) for when in made)
    assert stale > 0
    assert (f"warning: {stale} step(s) came from a layer cache made at another SOURCE_DATE_EPOCH (buildah's cache"
            " ignores --timestamp), so this image is not the one a build from empty caches gives; build with"
            " --no-cache for the reproducible image") in result.stderr.splitlines()


def test_frontend_image_is_reproduced_bit_for_bit(clean_checkout, frontend_image):
    result = _reproduce(clean_checkout, frontend_image)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"{frontend_image}: reproduced bit for bit: image id sha256:")
    image_id = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", frontend_image],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert result.stdout.splitlines()[-1].endswith(image_id)


def test_tampered_image_names_the_files_that_differ(clean_checkout, frontend_image):
    tampered = f"localhost/dynamo-test:{RUN_ID}-tampered"
    container = subprocess.run(["buildah", "from", "--pull-never", frontend_image], capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        subprocess.run(["buildah", "run", "--isolation", "chroot", "--user", "0:0", container, "--", "sh", "-c",
                        "echo planted > /opt/dynamo/planted"], check=True, capture_output=True)
        subprocess.run(["buildah", "commit", "--quiet", "--format", "oci", container, tampered], check=True,
                       capture_output=True)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)
    result = _reproduce(clean_checkout, tampered)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{tampered}: NOT reproduced: image id sha256:")
    assert any(line.endswith(": /opt/dynamo/planted: only in the image") for line in lines), result.stdout


def test_llama_cpp_cpu_image_is_portable_and_reproduced_bit_for_bit(clean_checkout):
    require(buildah_ready())
    tag = f"localhost/dynamo-test:{RUN_ID}-llama-cpu"
    result = _build_in(clean_checkout, "llama_cpp", tag)
    assert result.returncode == 0, result.stderr
    # Compiled for the stated baseline (x86-64-v3: AVX2, no AVX-512), not for the build machine's CPU.
    info = buildah_run(tag, ["python3", "-c", "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"])
    assert "AVX2 = 1" in info and "AVX512 = 1" not in info, info
    result = _reproduce(clean_checkout, tag)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"{tag}: reproduced bit for bit: image id sha256:")


def buildah_run(tag: str, command: list[str]) -> str:
    container = subprocess.run(["buildah", "from", "--pull-never", tag], capture_output=True, text=True,
                               check=True).stdout.strip()
    try:
        result = subprocess.run(["buildah", "run", "--isolation", "chroot", container, "--", *command],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)


# Run by the image's Python as its user: what its environment holds, and that what is left still works.
ENVIRONMENT_PROBE = r"""
import asyncio, base64, hashlib, importlib.metadata, importlib.util, json, pathlib, struct, sysconfig, tempfile
import uvloop
from tokenizers import Tokenizer, models, pre_tokenizers
from dynamo.frontend.preprocess import Preprocessor
from dynamo.mocker import tiny_model

def section_names(path):
    data = path.read_bytes()  # ELF64, little-endian: every platform we build for
    shoff, = struct.unpack_from("<Q", data, 0x28)
    entsize, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * entsize) for i in range(count)]
    names_at = headers[names_index][4]
    return {data[names_at + h[0]:data.index(b"\0", names_at + h[0])].decode() for h in headers}

site = pathlib.Path(sysconfig.get_paths()["purelib"])
unstripped = sorted(str(p.relative_to(site)) for p in site.rglob("*.so")
                    if section_names(p) & {".symtab", ".debug_info", ".debug_line"})
path = pathlib.Path(tempfile.mkdtemp()) / "tokenizer.json"
made = Tokenizer(models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]"))
made.pre_tokenizer = pre_tokenizers.Whitespace()
made.save(str(path))
model = tiny_model.write(pathlib.Path(tempfile.mkdtemp()) / "tiny")  # byte-level BPE, as Llama 3's and Qwen's
preprocessor = Preprocessor(model)
chat = preprocessor.chat_text([{"role": "system", "content": "be brief " * 500}, {"role": "user", "content": "hi"}])
def sha256(path):
    return base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()

# what the distributions' RECORD files say of their files, read by the standard library as SBOM tools read them
recorded = [file for dist in importlib.metadata.distributions() for file in dist.files or () if file.hash]
print(json.dumps({
    "recorded": len(recorded),
    "misrecorded": sorted(str(file) for file in recorded
                          if sha256(file.locate()) != file.hash.value or file.locate().stat().st_size != file.size),
    "fast": preprocessor.fast is not None,
    "same": preprocessor.tokens(chat) == Tokenizer.from_file(str(model / "tokenizer.json")).encode(chat, add_special_tokens=False).ids,
    "modules": [m for m in ("pip", "setuptools", "pkg_resources", "huggingface_hub", "hf_xet") if importlib.util.find_spec(m)],
    "libraries": len(list(site.rglob("*.so"))), "unstripped": unstripped,
    "ids": Tokenizer.from_file(str(path)).encode("hello there").ids,
    "uvloop": uvloop.new_event_loop().run_until_complete(asyncio.sleep(0, "ran")),
}))
"""


def test_the_frontend_environment_holds_what_it_runs_and_no_more(frontend_image):
    """No pip or setuptools in the runtime environment (its install steps ran a pip from /tmp), nothing the matrix
    says is never imported (huggingface-hub, setuptools), shared libraries stripped (the matrix's strip) and every
    RECORD row true to its file; the tokenizer still loads a tokenizer.json, the frontend encodes chats with
    fastokens into tokenizers' ids, uvloop runs, and pip check finds only what the lock left out."""
    found = json.loads(buildah_run(frontend_image, ["python3", "-c", ENVIRONMENT_PROBE]))
    assert found["fast"] and found["same"]
    assert found["recorded"] > 500
    assert found["misrecorded"] == []  # stripped, then given their new hashes
    assert found["modules"] == []
    assert found["libraries"] > 10 and found["unstripped"] == []
    assert found["ids"] == [0, 1] and found["uvloop"] == "ran"
    pip_check = ('python3 -m ensurepip --root /tmp/ensurepip >/dev/null && mkdir /tmp/pip && mv /tmp/ensurepip/opt/dynamo/venv/'
                 'lib/python*/site-packages/pip /tmp/pip/ && export PYTHONPATH=/tmp/pip && { python3 -m pip check || true; } &&'
                 ' python3 -m dynamo.pipcheck /opt/dynamo/lock.txt && echo pipcheck passed')
    lines = buildah_run(frontend_image, ["sh", "-c", pip_check]).splitlines()
    assert sorted(re.sub(r" [^ ]+ requires", " requires", line) for line in lines[:-1]) == [
        "pbr requires setuptools, which is not installed.",
        "tokenizers requires huggingface-hub, which is not installed."]
    assert lines[-1] == "pipcheck passed"


def test_the_recorded_source_is_what_the_build_context_holds():
    """`verify --reproduce` rebuilds from these paths of the recorded commit: every path .dockerignore lets in."""
    from dynamo.imagebuild.source import CONTEXT_PATHS

    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert sorted(CONTEXT_PATHS) == sorted(allowed)


def test_the_stale_cache_count_starts_where_the_built_stage_does():
    """The runtime stage of a CUDA cell starts from the CUDA runtime image, not from the devel image the
    other stages build on: its own history comes after the runtime image's."""
    from dynamo.imagebuild.plan import make_plan
    from dynamo.matrix import load

    matrix = load()
    runtime = make_plan(matrix, framework="vllm", cuda="12.9", release="0.8.1", platforms=["linux/amd64"])
    dev = make_plan(matrix, framework="vllm", cuda="12.9", release="0.8.1", platforms=["linux/amd64"], stage="dev")
    assert runtime.stage_base == runtime.target.runtime_image != runtime.base_image
    assert dev.stage_base == dev.base_image
