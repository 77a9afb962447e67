"""The container-engine interface: what build.py, `verify`, `attest`, the doctor and run.sh ask of an
engine, the typed values it answers with, and its one error. Engines live one per module beside it.

This package is the bottom floor: it imports nothing of ours but `dynamo.tools`. A build reaches an
engine as a `BuildRequest` (what the engine reads, nothing of the matrix); what an engine can do is
declared on its class (`multi_platform`, `pushes_multi_platform`, `stamps_files`), never read off its name.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from dynamo.tools import find_tool

Lines = Callable[[str], None]


class ContainerEngineError(Exception):
    """An engine is missing or failed; str() is one line saying what to do."""


@dataclass(frozen=True)
class ImageInfo:
    """A local image as its engine describes it."""

    id: str  # "sha256:<hex>", whatever the engine prints
    size: int  # bytes; 0 when the engine does not say
    labels: dict[str, str] = field(default_factory=dict)
    architecture: str = ""
    env: dict[str, str] = field(default_factory=dict)  # the config's Env, which the NVIDIA toolkit reads
    history: tuple[str, ...] = ()  # when each step was made (RFC 3339), base image first; () when the engine does not say


def env_dict(entries: list[str] | None) -> dict[str, str]:
    """An image config's Env list ("KEY=VALUE") as a dict."""
    return dict(entry.split("=", 1) for entry in entries or () if "=" in entry)


@dataclass(frozen=True)
class BuildRequest:
    """What an engine reads to build one image (or a manifest list of several platforms)."""

    dockerfile: Path
    context: Path
    stage: str  # the Dockerfile's target stage
    platforms: tuple[str, ...]  # os/arch, e.g. ("linux/amd64",)
    build_args: Mapping[str, str]
    tags: tuple[str, ...]  # the final tags: a multi-platform push goes straight to them
    source_date_epoch: int  # every timestamp in the image
    ca_cert: Path | None = None  # a CA bundle passed as the build secret `ca_cert`, never kept in a layer
    push: bool = False
    no_cache: bool = False
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildResult:
    """What a build made: an image, or for several platforms a manifest list, under a temporary name."""

    image_id: str
    ref: str


class ContainerEngine(ABC):
    """What build.py, verify, attest, the doctor and run.sh ask of docker, buildx, buildah and podman."""

    name: ClassVar[str]
    install_hint: ClassVar[str]
    store: ClassVar[str]  # where a built image is, in words
    store_path: ClassVar[str]  # the folder the store keeps its layers in (root's default), for the free-space check
    multi_platform: ClassVar[bool] = False  # builds several platforms into one manifest list
    # A multi-platform build with push goes straight to the registry under the final tags (nothing to tag or push after)
    pushes_multi_platform: ClassVar[bool] = False
    # Every file in the layers gets SOURCE_DATE_EPOCH as its time, so that a rebuild from empty caches is the same image
    stamps_files: ClassVar[bool] = False
    # Its containers get GPUs through CDI (--device nvidia.com/gpu=...), where the NVIDIA toolkit checks no
    # NVIDIA_REQUIRE_* (https://github.com/NVIDIA/nvidia-container-toolkit/issues/1470), not through --gpus
    cdi_gpus: ClassVar[bool] = False
    # It starts containers as the caller's user, not through a daemon: the caller's limits are the ones it can grant
    daemonless: ClassVar[bool] = False
    # It takes --shm-size beside --ipc host (which shares the host's /dev/shm)
    shm_size_beside_host_ipc: ClassVar[bool] = True
    # The ulimits it sets on a container when not told, which it may not be able to grant
    implicit_ulimits: ClassVar[Mapping[str, str]] = {}

    @classmethod
    @abstractmethod
    def unavailable(cls) -> str | None:
        """None when usable here, else why not."""

    @abstractmethod
    def describe_build(self, request: BuildRequest, temp_ref: str) -> str:
        """The exact command or API call `build` makes, for --dry-run."""

    @abstractmethod
    def build(self, request: BuildRequest, temp_ref: str, on_line: Lines) -> BuildResult:
        """Build into temp_ref (never a final tag)."""

    @abstractmethod
    def has_image(self, ref: str) -> bool: ...

    @abstractmethod
    def pull(self, ref: str) -> None: ...

    @abstractmethod
    def tag(self, source: str, tags: Iterable[str]) -> None: ...

    @abstractmethod
    def push(self, ref: str) -> None: ...

    @abstractmethod
    def remove(self, ref: str) -> None: ...

    @abstractmethod
    def tags(self, repository: str) -> list[str]:
        """`NAME:TAG` of each local image of that repository, its name spelled as this engine spells it."""

    @abstractmethod
    def inspect(self, ref: str) -> ImageInfo:
        """A local image's id, size, labels and architecture."""

    @abstractmethod
    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a command in a throwaway container of the image."""

    @abstractmethod
    def export_oci(self, ref: str, destination: Path) -> Path:
        """The image (its name resolved as this engine resolves it) copied out of the store into an OCI
        layout at `destination` (a new folder in an existing one); returns `destination`."""

    def ensure_base_image(self, ref: str) -> None:
        """The base image is here, or can be pulled; else a one-line error with the fix."""
        if self.has_image(ref):
            return
        try:
            self.pull(ref)
        except ContainerEngineError as exc:
            raise ContainerEngineError(f"base image {ref} is not here and could not be pulled ({exc}); pull it,"
                              f" or pass --base-image with an image you have") from None


def skopeo_export(transport: str, ref: str, destination: Path) -> Path:
    """`ref` in a store skopeo reads through `transport` (docker-daemon, ...) as an OCI layout."""
    skopeo = find_tool("skopeo")
    if skopeo is None:
        raise ContainerEngineError("skopeo is not installed: install skopeo (apt-get install skopeo)")
    result = subprocess.run([skopeo, "copy", "--quiet", f"{transport}:{ref}", f"oci:{destination}:image"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise ContainerEngineError(f"skopeo copy of {ref} failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    return destination
