"""Pinned base images (`python build.py matrix pin`) against a real local registry: digests resolved
with skopeo, only [image_digests] rewritten, a moved tag and an unknown digest caught, builds use
tag@digest and label it."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
import uuid

import pytest
from conftest import CA, MATRIX_FILE, STANDIN_AMD64, buildah_ready, require, run_cli

from dynamo import pin
from dynamo.matrix import load

SHIPPED_RUNTIME = "nvcr.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04"
MANIFEST_TYPES = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.list.v2+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])


def push_standin(ref: str, label: str) -> None:
    """A tiny image (no layers, one label) pushed to ref with buildah."""
    require(None if shutil.which("buildah") and shutil.which("skopeo") else "buildah and skopeo are needed")
    container = subprocess.run(["buildah", "from", "scratch"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        subprocess.run(["buildah", "config", "--label", f"standin={label}", container], check=True)
        image = f"localhost/pin-standin:{uuid.uuid4().hex[:8]}"
        subprocess.run(["buildah", "commit", "-q", container, image], check=True, capture_output=True)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)
    subprocess.run(["buildah", "push", "-q", "--tls-verify=false", image, f"docker://{ref}"], check=True)
    subprocess.run(["buildah", "rmi", image], capture_output=True)


def registry_digest(ref: str) -> str:
    """What the registry itself says the tag's digest is (its Docker-Content-Digest header)."""
    host, _, rest = ref.partition("/")
    repository, _, tag = rest.rpartition(":")
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


def test_the_shipped_matrix_lists_every_image_and_copies_no_digest():
    matrix = load(MATRIX_FILE)
    assert sorted(matrix.image_digests) == pin.image_refs(matrix)
    assert SHIPPED_RUNTIME in matrix.image_digests
    # Nothing here reaches nvcr.io or Docker Hub: every digest stays empty until a pipeline that does pins it.
    assert set(matrix.image_digests.values()) == {""}
    result = run_cli("matrix", "pin", "--check")
    assert result.returncode == 1
    assert (f"{SHIPPED_RUNTIME}: not pinned (no digest in [image_digests]); run `python build.py matrix pin` where"
            " its registry is reachable") in result.stderr.splitlines()
    assert result.stderr.splitlines()[-1] == f"{len(matrix.image_digests)} image(s) not pinned or moved"


def test_pin_check_and_build_against_a_local_registry(registry, tmp_path):
    ref = f"{registry}/nvidia/cuda:12.9.1-runtime-ubuntu24.04"
    push_standin(ref, "first")
    matrix_file = tmp_path / "support_matrix.toml"
    original = MATRIX_FILE.read_text().replace(SHIPPED_RUNTIME, ref)
    matrix_file.write_text(original)

    pinned = run_cli("matrix", "pin", "--matrix", str(matrix_file))
    assert pinned.returncode == 1  # nvcr.io and Docker Hub cannot be reached from here
    first = registry_digest(ref)
    assert pinned.stdout.splitlines()[0] == f"pinned {ref}@{first}"
    assert "error: nvcr.io/nvidia/cuda-dl-base:25.06-cuda12.9-devel-ubuntu24.04: nvcr.io did not answer: " in pinned.stderr
    assert "Traceback" not in pinned.stderr
    text = matrix_file.read_text()
    # Only the digest changed: every other byte, comments and layout included, is as it was.
    assert f'"{ref}" = ""' in original.splitlines()
    assert text == original.replace(f'"{ref}" = ""', f'"{ref}" = "{first}"')
    assert load(matrix_file).image_digests[ref] == first

    assert run_cli("matrix", "pin", "--matrix", str(matrix_file)).returncode == 1
    assert matrix_file.read_text() == text  # idempotent

    check = run_cli("matrix", "pin", "--check", "--matrix", str(matrix_file))
    assert check.returncode == 1  # the nvcr.io images stay unpinned
    assert not any(line.startswith(ref) for line in check.stderr.splitlines())

    # --unlocked: 1.2.1's CUDA 12.9 cells have no lock here (PyPI's vLLM 0.20.1 is a CUDA 13.0 build)
    dry_run = run_cli("--framework", "vllm", "--cuda", "12.9", "--dry-run", "--platform", "linux/amd64",
                      "--unlocked", "--matrix", str(matrix_file))
    assert dry_run.returncode == 0, dry_run.stderr
    assert any(line.split() == ["runtime", "image", f"{ref}@{first}"] for line in dry_run.stdout.splitlines())
    unpinned_base = "nvcr.io/nvidia/cuda-dl-base:25.06-cuda12.9-devel-ubuntu24.04"
    assert f"  dev.dynamo.unpinned={unpinned_base}" in dry_run.stdout.splitlines()
    warnings = [line for line in dry_run.stderr.splitlines() if "not pinned to a digest" in line]
    assert warnings == [f"warning: {unpinned_base}: not pinned to a digest, so the build is not reproducible (run"
                        " `python build.py matrix pin` where the registry is reachable); its label dev.dynamo.unpinned"
                        " records it"]

    push_standin(ref, "second")  # the tag moves
    second = registry_digest(ref)
    assert second != first
    moved = run_cli("matrix", "pin", "--check", "--matrix", str(matrix_file))
    assert moved.returncode == 1
    assert (f"{ref}: the tag moved from {first} to {second}; run `python build.py matrix pin` after checking the"
            " new image") in moved.stderr.splitlines()

    unknown = "sha256:" + "0" * 64
    matrix_file.write_text(text.replace(first, unknown))
    bad = run_cli("matrix", "pin", "--check", "--matrix", str(matrix_file))
    assert (f"{ref}: the registry does not know the recorded digest {unknown} (the tag is now at {second});"
            " run `python build.py matrix pin`") in bad.stderr.splitlines()


def test_a_malformed_digest_is_a_matrix_error(tmp_path):
    matrix_file = tmp_path / "support_matrix.toml"
    matrix_file.write_text(MATRIX_FILE.read_text().replace(f'"{SHIPPED_RUNTIME}" = ""', f'"{SHIPPED_RUNTIME}" = "sha256:abc"'))
    result = run_cli("matrix", "check", "--matrix", str(matrix_file))
    assert result.returncode == 2
    assert json.dumps(SHIPPED_RUNTIME) in result.stderr and "sha256:<64 hex digits>" in result.stderr


@pytest.mark.parametrize("ref, registry_host", [("nvcr.io/nvidia/cuda:12.9", "nvcr.io"),
                                                ("ubuntu:24.04", "docker.io"), ("localhost:5000/a:1", "localhost:5000")])
def test_registry_of(ref, registry_host):
    assert pin.registry_of(ref) == registry_host


def unreachable(monkeypatch):
    """Every registry out of reach, wherever the tests run (a registry that answers would pin digests)."""
    def refuse(ref: str, timeout: str = "60s") -> str:
        raise pin.PinError(f"{ref}: {pin.registry_of(ref)} did not answer")
    monkeypatch.setattr(pin, "resolve_digest", refuse)


def test_pin_adds_the_table_to_a_matrix_without_one_and_keeps_the_rest(tmp_path, monkeypatch):
    text = MATRIX_FILE.read_text()
    without = text[:text.index("\n# Each base and runtime image above")]
    matrix_file = tmp_path / "support_matrix.toml"
    matrix_file.write_text(without)
    unreachable(monkeypatch)
    changed, failed = pin.pin(matrix_file, load(matrix_file))
    assert changed == {} and len(failed) == len(pin.image_refs(load(MATRIX_FILE)))
    assert matrix_file.read_text() == text  # the same table, comment and layout as the shipped matrix


def test_a_build_from_a_pinned_base_pulls_tag_at_digest_and_labels_it(registry, tmp_path):
    """The frontend image built with buildah on the stand-in base, served by the local registry and pinned."""
    require(buildah_ready() or (None if shutil.which("skopeo") else "skopeo is not installed"))
    ref = f"{registry}/standin:bookworm"
    subprocess.run(["buildah", "push", "-q", "--tls-verify=false", STANDIN_AMD64, f"docker://{ref}"], check=True)
    # The stand-in is Debian bookworm, whose Python is 3.11: this copy of the matrix says so.
    text = (MATRIX_FILE.read_text().replace('cpu_base_image = "docker.io/library/ubuntu:24.04"', f'cpu_base_image = "{ref}"')
            .replace('"docker.io/library/ubuntu:24.04" = ""', f'"{ref}" = ""')
            .replace('version_id = "24.04"\npython = "3.12"', 'version_id = "24.04"\npython = "3.11"'))
    matrix_file = tmp_path / "support_matrix.toml"
    matrix_file.write_text(text)
    run_cli("matrix", "pin", "--matrix", str(matrix_file))
    digest = registry_digest(ref)
    assert load(matrix_file).image_digests[ref] == digest

    tag = f"localhost/dynamo-test:{uuid.uuid4().hex[:8]}-pinned"
    built = run_cli("--framework", "frontend", "--python", "3.11", "--platform", "linux/amd64", "--engine", "buildah",
                    "--ca-cert", CA, "--tag", tag, "--matrix", str(matrix_file))
    try:
        assert built.returncode == 0, built.stderr[-2000:]
        assert "not pinned to a digest" not in built.stderr
        labels = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", tag], capture_output=True,
                                           text=True, check=True).stdout)["OCIv1"]["config"]["Labels"]
        assert labels["org.opencontainers.image.base.name"] == f"{ref}@{digest}"
        assert labels["org.opencontainers.image.base.digest"] == digest
        assert labels["dev.dynamo.unpinned"] == ""
        assert labels["dev.dynamo.lock"] == f"{load(MATRIX_FILE).latest}/frontend-cpu-py3.11"
    finally:
        subprocess.run(["buildah", "rmi", tag], capture_output=True)


# the first key, one inside, the last
@pytest.mark.parametrize("missing", ["docker.io/library/ubuntu:24.04", SHIPPED_RUNTIME, "nvcr.io/nvidia/pytorch:25.12-py3"])
def test_pin_adds_a_new_image_where_it_sorts_in_the_table(tmp_path, monkeypatch, missing):
    text = MATRIX_FILE.read_text()
    line = f'"{missing}" = ""\n'
    assert line in text
    matrix_file = tmp_path / "support_matrix.toml"
    matrix_file.write_text(text.replace(line, ""))
    unreachable(monkeypatch)
    changed, failed = pin.pin(matrix_file, load(matrix_file))
    assert changed == {} and any(entry.startswith(f"{missing}: ") for entry in failed)
    assert matrix_file.read_text() == text  # back in its sorted place, every other byte as it was
