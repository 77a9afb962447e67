"""podman: builds with buildah's code and shares its image storage."""

from __future__ import annotations

import json
import subprocess

from dynamo.containers.buildah import Buildah
from dynamo.containers.cli import CliEngine
from dynamo.containers.engine import ImageInfo, env_dict


class Podman(Buildah):
    """Podman builds with buildah's code and shares its image storage."""

    name = cli = "podman"
    cdi_gpus = True
    shm_size_beside_host_ipc = False  # podman refuses it
    # Rootful podman gives containers nproc 4194304 (containers/podman pkg/specgen/generate/oci.go, addRlimits),
    # which fails where it cannot raise its limit ("error setting rlimit type 6"): run.sh lowers it silently to
    # what podman can grant.
    implicit_ulimits = {"nproc": "4194304:4194304"}
    install_hint = "apt-get install podman"

    def has_image(self, ref: str) -> bool:
        return self._run("image", "exists", ref, check=False).returncode == 0 or \
            self._run("manifest", "exists", ref, check=False).returncode == 0

    def tags(self, repository: str) -> list[str]:
        return self._tags(repository, "{{.Repository}}:{{.Tag}}")  # podman's template has no .Name

    def inspect(self, ref: str) -> ImageInfo:
        data = json.loads(self._run("image", "inspect", ref).stdout)[0]
        return ImageInfo(id=f"sha256:{data['Id']}", size=data.get("Size", 0), labels=data.get("Labels") or {},
                         architecture=data.get("Architecture", ""), env=env_dict((data.get("Config") or {}).get("Env")),
                         history=tuple(entry.get("created", "") for entry in data.get("History") or ()))

    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess[str]:
        return CliEngine.run(self, ref, command)
