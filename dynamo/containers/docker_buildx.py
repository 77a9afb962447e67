"""Docker through its command line: the daemon's image store, and buildx (BuildKit) builds, multi-platform
builds pushed straight to a registry."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from dynamo.containers.cli import CliEngine, build_flags
from dynamo.containers.engine import BuildRequest, ContainerEngineError, ImageInfo, env_dict, skopeo_export


class DockerCli(CliEngine):
    """The Docker daemon's image store through the docker command: what run.sh needs, no builder."""

    name = cli = "docker"
    store = "the Docker daemon's image store"
    store_path = "/var/lib/docker"
    install_hint = "apt-get install docker.io, then start dockerd"

    def build_command(self, request: BuildRequest, temp_ref: str, iidfile: str = "IIDFILE") -> list[str]:
        raise ContainerEngineError("the docker command builds with buildx only; install the docker-buildx plugin")

    def has_image(self, ref: str) -> bool:
        return self._run("image", "inspect", ref, check=False).returncode == 0

    def pull(self, ref: str) -> None:
        self._run("pull", ref)

    def tag(self, source: str, tags: Iterable[str]) -> None:
        for tag in tags:
            self._run("tag", source, tag)

    def push(self, ref: str) -> None:
        self._run("push", ref)

    def remove(self, ref: str) -> None:
        self._run("rmi", ref, check=False)

    def tags(self, repository: str) -> list[str]:
        listed = self._run("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
        return [ref for ref in listed if not ref.endswith(":<none>")]

    def inspect(self, ref: str) -> ImageInfo:
        data = json.loads(self._run("image", "inspect", ref).stdout)[0]
        return ImageInfo(id=data["Id"], size=data.get("Size", 0), labels=data["Config"].get("Labels") or {},
                         architecture=data.get("Architecture", ""), env=env_dict((data.get("Config") or {}).get("Env")))

    def export_oci(self, ref: str, destination: Path) -> Path:
        return skopeo_export("docker-daemon", ref, destination)


class DockerBuildx(DockerCli):
    name = "docker-buildx"
    multi_platform = True
    pushes_multi_platform = True
    install_hint = "install the docker-buildx plugin"

    @classmethod
    def unavailable(cls) -> str | None:
        if not shutil.which("docker"):
            return "docker is not installed"
        if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
            return "docker has no buildx plugin (install docker-buildx)"
        if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            return "the Docker daemon is not running (start dockerd)"
        return None

    def build_command(self, request: BuildRequest, temp_ref: str, iidfile: str = "IIDFILE") -> list[str]:
        command = ["docker", "buildx", "build", "--progress", "plain", "--iidfile", iidfile, *build_flags(request)]
        if len(request.platforms) > 1:
            if not request.push:
                raise ContainerEngineError("docker buildx cannot load a multi-platform image into the classic image"
                                           " store; add --push, or build with --engine buildah")
            # Multi-platform images go straight to the registry under the final tags, after success only.
            return command + [arg for tag in request.tags for arg in ("-t", tag)] + [
                "--output", "type=image,push=true,rewrite-timestamp=true", str(request.context)]
        # BuildKit takes the SOURCE_DATE_EPOCH build arg for the image's times; rewrite-timestamp
        # clamps the files in the layers to it too.
        return command + ["--output", "type=docker,rewrite-timestamp=true", "-t", temp_ref, str(request.context)]
