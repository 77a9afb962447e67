"""Container engines (docker, docker buildx, buildah, podman) behind one interface
(`dynamo.containers.engine`), one module each, and how one is chosen (`dynamo.containers.choice`).

Every failure is a `ContainerEngineError` whose message is one line naming what to do. The names below
load their module when first used: every command's parser takes CHOICES without loading an engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dynamo.containers.names import CHOICES

if TYPE_CHECKING:
    from dynamo.containers.buildah import Buildah
    from dynamo.containers.choice import ENGINES, RUNNERS, engine_class, engine_with_image, get_engine
    from dynamo.containers.cli import local_registry
    from dynamo.containers.docker_buildx import DockerBuildx, DockerCli
    from dynamo.containers.docker_classic import DockerClassic
    from dynamo.containers.engine import BuildRequest, BuildResult, ContainerEngine, ContainerEngineError, ImageInfo
    from dynamo.containers.podman import Podman

__all__ = ["BuildRequest", "BuildResult", "Buildah", "CHOICES", "ContainerEngine", "ContainerEngineError",
           "DockerBuildx", "DockerClassic", "DockerCli", "ENGINES", "ImageInfo", "Podman", "RUNNERS", "engine_class",
           "engine_with_image", "get_engine", "local_registry"]


_MODULES = {
    "Buildah": "buildah", "local_registry": "cli", "DockerBuildx": "docker_buildx", "DockerCli": "docker_buildx",
    "DockerClassic": "docker_classic", "Podman": "podman", "BuildRequest": "engine", "BuildResult": "engine",
    "ContainerEngine": "engine", "ContainerEngineError": "engine", "ImageInfo": "engine", "ENGINES": "choice",
    "RUNNERS": "choice", "engine_class": "choice", "engine_with_image": "choice", "get_engine": "choice",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
