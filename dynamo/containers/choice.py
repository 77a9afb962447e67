"""Which engine: the one asked for (--engine), the first available here, or the one whose store has an image."""

from __future__ import annotations

from dynamo.containers.buildah import Buildah
from dynamo.containers.docker_buildx import DockerBuildx, DockerCli
from dynamo.containers.docker_classic import DockerClassic
from dynamo.containers.engine import ContainerEngine, ContainerEngineError
from dynamo.containers.names import CHOICES
from dynamo.containers.podman import Podman

# Detection order of the issue: buildx, then buildah or podman, then the classic builder.
ENGINES: dict[str, type[ContainerEngine]] = {
    "docker-buildx": DockerBuildx, "buildah": Buildah, "podman": Podman, "docker": DockerClassic}
# What runs containers (container/run.sh): the docker command, or podman, which runs what buildah built.
RUNNERS: dict[str, type[ContainerEngine]] = {"docker": DockerCli, "podman": Podman}


def engine_class(choice: str) -> type[ContainerEngine]:
    """The engine a --engine choice builds with where it has a choice of one (docker: buildx's class, whose
    capabilities are the most the docker choice can have)."""
    if choice not in CHOICES:
        raise ContainerEngineError(f"unknown engine {choice!r}; choose {', '.join(CHOICES)}")
    return DockerBuildx if choice == "docker" else ENGINES[choice]


def get_engine(choice: str | None = None) -> ContainerEngine:
    """The engine asked for (docker means buildx when present, else the classic builder), or the
    first one available here."""
    if choice is not None:
        engine_class(choice)  # raises for an unknown choice
    candidates: list[type[ContainerEngine]] = list(ENGINES.values()) if choice is None else (
        [DockerBuildx, DockerClassic] if choice == "docker" else [ENGINES[choice]])
    reasons = []
    for engine in candidates:
        reason = engine.unavailable()
        if reason is None:
            return engine()
        reasons.append(reason)
    raise ContainerEngineError("no container engine can build here: " + "; ".join(dict.fromkeys(reasons))
                               + ". Install Docker (apt-get install docker.io, then start dockerd) or buildah")


def engine_with_image(ref: str, choice: str | None = None) -> ContainerEngine:
    """The engine (the one asked for, or any available here) whose image store holds `ref`."""
    candidates = [get_engine(choice)] if choice else [
        engine() for engine in ENGINES.values() if engine.unavailable() is None]
    for engine in candidates:
        if engine.has_image(ref):
            return engine
    if not candidates:
        get_engine(None)  # raises: no engine at all, with the fix
    names = ", ".join(engine.name for engine in candidates)
    raise ContainerEngineError(f"image {ref} is not in the image store of {names}; build it (python build.py ...)"
                               " or pull it")
