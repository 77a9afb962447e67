"""The container-engine interface: what build.py, `verify` and the doctor ask of an engine, the typed
values it answers with, and its one error. Engines live one per module beside it; reading an image's
labels needs nothing of the build machinery (`dynamo.imagebuild`), which a build plan comes from.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from dynamo.imagebuild.plan import BuildPlan

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
class BuildResult:
    """What a build made: an image, or for several platforms a manifest list, under a temporary name."""

    image_id: str
    ref: str


class ContainerEngine(ABC):
    """What build.py, verify and the doctor ask of docker, buildx, buildah and podman."""

    name: ClassVar[str]
    multi_platform: ClassVar[bool] = False
    install_hint: ClassVar[str]
    store: ClassVar[str]  # where a built image is, in words
    store_path: ClassVar[str]  # the folder the store keeps its layers in (root's default), for the free-space check

    @classmethod
    @abstractmethod
    def unavailable(cls) -> str | None:
        """None when usable here, else why not."""

    @abstractmethod
    def describe_build(self, plan: BuildPlan, temp_ref: str) -> str:
        """The exact command or API call `build` makes, for --dry-run."""

    @abstractmethod
    def build(self, plan: BuildPlan, temp_ref: str, on_line: Lines) -> BuildResult:
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
    def inspect(self, ref: str) -> ImageInfo:
        """A local image's id, size, labels and architecture."""

    @abstractmethod
    def run(self, ref: str, command: list[str]) -> subprocess.CompletedProcess:
        """Run a command in a throwaway container of the image."""

    def ensure_base_image(self, ref: str) -> None:
        """The base image is here, or can be pulled; else a one-line error with the fix."""
        if self.has_image(ref):
            return
        try:
            self.pull(ref)
        except ContainerEngineError as exc:
            raise ContainerEngineError(f"base image {ref} is not here and could not be pulled ({exc}); pull it,"
                              f" or pass --base-image with an image you have") from None
