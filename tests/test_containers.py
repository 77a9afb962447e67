"""The container-engine interface (dynamo.containers): typed answers from real engines, and reading an
image's labels without the build machinery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import DOCKER_STANDIN, REPO, STANDIN_AMD64, buildah_ready, docker_ready, require


def test_reading_labels_needs_no_build_machinery():
    # What the doctor's --image and verify import to read labels: no build plan, matrix resolver or template.
    code = ("import sys, dynamo.containers; "
            "print(sorted(m for m in sys.modules if m.startswith(('dynamo.imagebuild', 'dynamo.render', 'jinja2'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_buildah_and_podman_describe_an_image_alike():
    require(buildah_ready())
    from dynamo.containers import Buildah, ImageInfo, Podman

    info = Buildah().inspect(STANDIN_AMD64)
    assert isinstance(info, ImageInfo)
    assert info.architecture == "amd64" and info.size > 10**6 and len(info.id.removeprefix("sha256:")) == 64
    assert Podman().inspect(STANDIN_AMD64).id.removeprefix("sha256:") == info.id.removeprefix("sha256:")


def test_docker_describes_an_image():
    require(docker_ready())
    from dynamo.containers import DockerClassic, ImageInfo

    info = DockerClassic().inspect(DOCKER_STANDIN)
    assert isinstance(info, ImageInfo) and info.architecture == "amd64" and info.id.startswith("sha256:")


def test_missing_image_is_one_line():
    require(buildah_ready())
    from dynamo.containers import ContainerEngineError, engine_with_image

    try:
        engine_with_image("localhost/no-such-image:1", "buildah")
    except ContainerEngineError as exc:
        assert str(exc) == ("image localhost/no-such-image:1 is not in the image store of buildah;"
                            " build it (python build.py ...) or pull it")
    else:
        raise AssertionError("no error for a missing image")


def _layout_config(layout: Path) -> tuple[str, dict]:
    """The config of an OCI layout's one image: its digest and its content."""
    blob = lambda digest: layout / "blobs" / digest.replace(":", "/")  # noqa: E731
    manifest = json.loads(blob(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]).read_text())
    return manifest["config"]["digest"], json.loads(blob(manifest["config"]["digest"]).read_text())


def test_buildah_exports_a_short_name_as_buildah_resolves_it(tmp_path):
    """`attest dynamo:TAG` named an image buildah stores as localhost/dynamo:TAG; skopeo's containers-storage:
    transport did not resolve it ("does not resolve to an image ID")."""
    require(buildah_ready())
    from dynamo.containers import Buildah

    short = STANDIN_AMD64.removeprefix("localhost/")
    engine = Buildah()
    assert _layout_config(engine.export_oci(short, tmp_path / "oci"))[0] == engine.inspect(STANDIN_AMD64).id


def test_every_docker_engine_exports_from_the_daemons_store(tmp_path):
    """buildx's images are in the daemon's store like the classic builder's: attest and verify read them
    (they failed with "cannot export images of docker-buildx")."""
    require(docker_ready())
    from dynamo.containers import DockerBuildx, DockerClassic

    # the daemon's config is rewritten on the way out (its digest changes), its layers are not
    layers = json.loads(subprocess.run(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}",
                                        DOCKER_STANDIN], capture_output=True, text=True, check=True).stdout)
    for engine in (DockerBuildx(), DockerClassic()):
        _, config = _layout_config(engine.export_oci(DOCKER_STANDIN, tmp_path / engine.name))
        assert config["rootfs"]["diff_ids"] == layers and config["architecture"] == "amd64", engine.name
