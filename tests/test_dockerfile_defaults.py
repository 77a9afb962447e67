"""A generated Dockerfile builds with its own defaults: `buildah build -f container/Dockerfile.frontend .`
with no --build-arg for the base images. (A template comment once ate the newline after
`ARG RUNTIME_IMAGE=...`, and every build without that build arg failed with "invalid reference format".)

The default base images live in registries this machine cannot reach, so the stand-in image is given
their names for the build (and only where no image of that name is here already)."""

from __future__ import annotations

import json
import subprocess
import uuid

from conftest import CA, REPO, STANDIN_AMD64, buildah_ready, require
from test_render import _default_args

STANDIN_PYTHON = "3.11"  # Debian bookworm's, which the stand-in carries instead of the default's


def _has_image(ref: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True).returncode == 0


def test_frontend_dockerfile_builds_with_its_default_base_images():
    require(buildah_ready())
    dockerfile = REPO / "container" / "Dockerfile.frontend"
    defaults = dict((name, value) for name, value, _ in _default_args(dockerfile.read_text()))
    aliases = [ref for ref in {defaults["BASE_IMAGE"], defaults["RUNTIME_IMAGE"]} if not _has_image(ref)]
    tag = f"localhost/dynamo-test:defaults-{uuid.uuid4().hex[:8]}"
    for ref in aliases:
        subprocess.run(["buildah", "tag", STANDIN_AMD64, ref], check=True, capture_output=True)
    try:
        result = subprocess.run(
            ["buildah", "build", "--isolation", "chroot", "--pull-never", "-f", str(dockerfile),
             "--secret", f"id=ca_cert,src={CA}", "--build-arg", f"PYTHON_VERSION={STANDIN_PYTHON}", "-t", tag, "."],
            cwd=REPO, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        labels = json.loads(subprocess.run(["podman", "image", "inspect", tag], capture_output=True, text=True,
                                           check=True).stdout)[0]["Labels"]
        assert labels["org.opencontainers.image.base.name"] == defaults["RUNTIME_IMAGE"]
    finally:
        subprocess.run(["buildah", "rmi", tag, *aliases], capture_output=True)  # untags; the stand-in stays
