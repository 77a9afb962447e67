"""Docker's classic builder, through the Docker SDK: one platform, no BuildKit (no `RUN --mount`:
it gets the Dockerfile transformed by `dynamo.containers.classic`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from dynamo.containers.classic import context_files, context_tar
from dynamo.containers.engine import (
    BuildRequest,
    BuildResult,
    ContainerEngine,
    ContainerEngineError,
    ImageInfo,
    Lines,
    env_dict,
    skopeo_export,
)


class DockerClassic(ContainerEngine):
    """Docker's classic builder through the Docker SDK (no BuildKit: one platform, no --mount)."""

    name = "docker"
    store = "the Docker daemon's image store"
    store_path = "/var/lib/docker"
    install_hint = "apt-get install docker.io, then start dockerd"

    def __init__(self) -> None:
        import docker  # the SDK is needed only for this engine

        self._docker = docker
        try:
            self.client = docker.from_env()
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise ContainerEngineError(f"cannot reach the Docker daemon ({_first_line(exc)}); start dockerd") from None

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import docker
        except ImportError:
            return "the Docker SDK for Python is not installed (pip install docker)"
        try:
            docker.from_env().ping()
        except docker.errors.DockerException:
            return "the Docker daemon is not running (start dockerd)"
        return None

    def describe_build(self, request: BuildRequest, temp_ref: str) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in request.build_args.items())
        return (f"docker.APIClient.build(fileobj=<tar of {len(context_files(request))} files, Dockerfile without"
                f" RUN --mount>, custom_context=True, tag={temp_ref!r}, target={request.stage!r},"
                f" platform={request.platforms[0]!r}, nocache={request.no_cache}, cache_from={list(request.cache_from)},"
                f" buildargs={{{args}}})")

    def build(self, request: BuildRequest, temp_ref: str, on_line: Lines) -> BuildResult:
        if len(request.platforms) > 1:
            raise ContainerEngineError("Docker's classic builder builds one platform at a time; use --engine buildah"
                              " (apt-get install buildah) or install docker buildx for multi-arch images")
        if request.cache_to:
            raise ContainerEngineError("Docker's classic builder cannot export a cache (--cache-to); use buildah or buildx")
        image_id, errors = "", []
        try:
            with context_tar(request) as tar:
                for chunk in self.client.api.build(
                        fileobj=tar, custom_context=True, tag=temp_ref, target=request.stage,
                        platform=request.platforms[0], buildargs=dict(request.build_args), nocache=request.no_cache,
                        cache_from=list(request.cache_from), rm=True, forcerm=True, decode=True):
                    for line in chunk.get("stream", "").splitlines():
                        on_line(line)
                    if "error" in chunk:
                        errors.append(chunk["error"].strip())
                    image_id = chunk.get("aux", {}).get("ID", image_id)
        except self._docker.errors.APIError as exc:
            raise ContainerEngineError(f"docker build failed: {_first_line(exc)}") from None
        if errors or not image_id:
            raise ContainerEngineError(f"docker build failed: {errors[-1] if errors else 'no image was produced'}")
        return BuildResult(image_id=image_id, ref=temp_ref)

    def has_image(self, ref: str) -> bool:
        try:
            self.client.images.get(ref)
            return True
        except self._docker.errors.ImageNotFound:
            return False

    def pull(self, ref: str) -> None:
        try:
            self.client.images.pull(ref)
        except self._docker.errors.DockerException as exc:
            raise ContainerEngineError(_first_line(exc)) from None

    def tag(self, source: str, tags: Iterable[str]) -> None:
        image = self.client.images.get(source)
        for tag in tags:
            repository, _, name = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
            image.tag(repository, name)

    def push(self, ref: str) -> None:
        for status in self.client.images.push(ref, stream=True, decode=True):
            if "error" in status:
                raise ContainerEngineError(f"docker push {ref} failed: {status['error']}")

    def remove(self, ref: str) -> None:
        try:
            self.client.images.remove(ref, noprune=False)
        except self._docker.errors.DockerException:
            pass

    def tags(self, repository: str) -> list[str]:
        return [tag for image in self.client.images.list(name=repository) for tag in image.tags]

    def inspect(self, ref: str) -> ImageInfo:
        data = self.client.images.get(ref).attrs  # what the API's image inspect answers
        return ImageInfo(id=data["Id"], size=data.get("Size", 0), labels=data["Config"].get("Labels") or {},
                         architecture=data.get("Architecture", ""), env=env_dict((data.get("Config") or {}).get("Env")))

    def export_oci(self, ref: str, destination: Path) -> Path:
        return skopeo_export("docker-daemon", ref, destination)

    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess[str]:
        container = self.client.containers.create(ref, command)
        try:
            container.start()
            code = container.wait().get("StatusCode", 1)
            out = container.logs(stdout=True, stderr=False).decode(errors="replace")
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        finally:
            container.remove(force=True)
        return subprocess.CompletedProcess(command, code, out, err)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
