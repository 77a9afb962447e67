"""buildah: daemonless builds (chroot isolation), multi-platform manifest lists, reproducible images."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path

from dynamo.containers.cli import CliEngine, build_flags, local_registry
from dynamo.containers.engine import BuildRequest, ImageInfo, env_dict


class Buildah(CliEngine):
    name = cli = "buildah"
    store = "containers-storage, which buildah and podman share (container/run.sh runs it with podman)"
    store_path = "/var/lib/containers/storage"
    multi_platform = True
    stamps_files = True  # --timestamp
    daemonless = True
    install_hint = "apt-get install buildah"

    def build_command(self, request: BuildRequest, temp_ref: str, iidfile: str = "IIDFILE") -> list[str]:
        # Reproducible: --timestamp gives the image's created time and every file in its layers the
        # commit's time. The OCI format, because buildah 1.28 writes a random container id and hostname
        # into a Docker-format config (fixed values under --timestamp since June 2025:
        # https://github.com/containers/buildah/pull/6211); it has no HEALTHCHECK and runs RUN with
        # /bin/sh, whatever SHELL says.
        command = [self.cli, "build", "--isolation", "chroot", "--layers", "--format", "oci",
                   "--timestamp", str(request.source_date_epoch), *build_flags(request)]
        if len(request.platforms) > 1:
            command += ["--manifest", temp_ref]
        else:
            command += ["--iidfile", iidfile, "-t", temp_ref]
        return command + [str(request.context)]

    def has_image(self, ref: str) -> bool:
        return self._run("inspect", "--type", "image", ref, check=False).returncode == 0 or \
            self._run("manifest", "inspect", ref, check=False).returncode == 0

    def pull(self, ref: str) -> None:
        self._run("pull", *self._tls(ref), ref)

    def tag(self, source: str, tags: Iterable[str]) -> None:
        self._run("tag", source, *tags)

    def push(self, ref: str) -> None:
        if self._run("manifest", "inspect", ref, check=False).returncode == 0:
            self._run("manifest", "push", "--all", *self._tls(ref), ref, f"docker://{ref}")
        else:
            self._run("push", *self._tls(ref), ref, f"docker://{ref}")

    def remove(self, ref: str) -> None:
        if self._run("manifest", "rm", ref, check=False).returncode != 0:
            self._run("rmi", ref, check=False)

    def tags(self, repository: str) -> list[str]:
        return self._tags(repository, "{{.Name}}:{{.Tag}}")

    def _tags(self, repository: str, template: str) -> list[str]:
        listed = self._run("images", "--format", template, "--filter", f"reference={repository}").stdout.split()
        return [ref for ref in listed if not ref.endswith(":<none>")]

    def inspect(self, ref: str) -> ImageInfo:
        data = json.loads(self._run("inspect", "--type", "image", ref).stdout)
        config = data.get("OCIv1", {})
        images = json.loads(self._run("images", "--json", data["FromImageID"]).stdout or "[]")
        return ImageInfo(id=f"sha256:{data['FromImageID']}", size=_bytes(images[0].get("size", "0")) if images else 0,
                         labels=config.get("config", {}).get("Labels") or {},
                         architecture=config.get("architecture", ""), env=env_dict(config.get("config", {}).get("Env")),
                         history=tuple(entry.get("created", "") for entry in config.get("history") or ()))

    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess[str]:
        container = self._run("from", "--pull-never", ref).stdout.strip()
        try:
            return self._run("run", "--isolation", "chroot", container, "--", *command, check=False)
        finally:
            self._run("rm", container, check=False)

    def export_oci(self, ref: str, destination: Path) -> Path:
        # The engine's own push resolves a short name (dynamo:TAG is localhost/dynamo:TAG here) as its
        # build named it; skopeo's containers-storage: transport does not ("does not resolve to an image ID").
        self._run("push", "--quiet", ref, f"oci:{destination}")
        return destination

    @staticmethod
    def _tls(ref: str) -> list[str]:
        return ["--tls-verify=false"] if local_registry(ref) else []


def _bytes(human: str) -> int:
    """buildah's "297 MB" (decimal units) as bytes."""
    number, _, unit = str(human).partition(" ")
    scale = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}.get(unit.strip() or "B", 1)
    try:
        return int(float(number) * scale)
    except ValueError:
        return 0
