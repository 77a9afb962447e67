"""What an image of a build target is called and built with: tags, build args, labels.

One function each, so the rendered Dockerfiles, the bake file and `build.py` cannot disagree.
"""

from __future__ import annotations

import functools
import re

from packaging.requirements import Requirement

from dynamo.matrix import Matrix, Target
from dynamo.matrix.query import CPU, default_device

REPOSITORY = "dynamo"
LABEL_PREFIX = "dev.dynamo."


_requirement = functools.lru_cache(maxsize=1024)(Requirement)  # the same few pins, for every target


def install_names(target: Target) -> list[str]:
    """What pip is asked for; the versions come from the constraints file."""
    names = []
    if target.engine_requirement:
        requirement = _requirement(target.engine_requirement)
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        names.append(requirement.name + extras)
    if target.nixl:
        names.append("nixl")
    return names


def constraints(target: Target) -> list[str]:
    """Exact pins for the engine, its extra pins and NIXL (pip constraints take no extras)."""
    pins = []
    if target.engine_requirement:
        requirement = _requirement(target.engine_requirement)
        pins.append(f"{requirement.name}{requirement.specifier}")
    pins += list(target.extra_requirements)
    if target.nixl_requirement:
        pins.append(target.nixl_requirement)
    return pins


def constraints_path(target: Target) -> str:
    return f"container/constraints/{target.release}/{target.framework}.txt"


def lock_name(target: Target) -> str:
    """The LOCK build arg: the cell's lock file without its architecture, which the image adds itself
    (Debian's name for it, as `dpkg --print-architecture` prints it)."""
    return f"{target.release}/{target.framework}-{target.device}-py{target.python}"


def lock_file(target: Target) -> str:
    """locks/0.8.1/vllm-cuda12.9-py3.12-amd64.txt"""
    return f"locks/{lock_name(target)}-{target.platform.split('/')[1]}.txt"


def nvidia_require_cuda(target: Target) -> str:
    """The image's NVIDIA_REQUIRE_CUDA: the NVIDIA container toolkit starts it on a driver that supports
    its CUDA, or on a forward-compatibility branch with a data-center or professional GPU (the matrix's
    [forward_compat], as NVIDIA's base images do), and refuses it elsewhere."""
    return target.require_cuda


def build_args(target: Target) -> dict[str, str]:
    """The Dockerfile's build args for this target, in the Dockerfile's order."""
    return {
        "BASE_IMAGE": target.base_image,
        "RUNTIME_IMAGE": target.runtime_image,
        "DYNAMO_RELEASE": target.release,
        "DEVICE": target.device,
        "CUDA_VERSION": target.cuda or "",
        "CUDA_ARCHS": " ".join(target.cuda_archs),
        "CMAKE_CUDA_ARCHITECTURES": ";".join(cc.replace(".", "") for cc in target.cuda_archs),
        "MIN_DRIVER": target.driver_linux or "",
        "NVIDIA_REQUIRE_CUDA": nvidia_require_cuda(target),
        "PYTHON_VERSION": target.python,
        "ENGINE_VERSION": target.engine_version or "",
        "NIXL_VERSION": target.nixl or "",
        "INSTALL": " ".join(install_names(target)),
        "LOCK": lock_name(target),
        "BASE_DIGEST": target.runtime_image.partition("@")[2],
        "UNPINNED": " ".join(unpinned(target)),
    }


def unpinned(target: Target) -> list[str]:
    """The target's base and runtime images that are not pinned to a digest (`matrix pin`)."""
    return list(dict.fromkeys(ref for ref in (target.base_image, target.runtime_image) if "@" not in ref))


# Our labels, each set from the build arg of the same meaning (plus the framework, fixed per Dockerfile).
LABEL_ARGS = {
    "release": "DYNAMO_RELEASE",
    "device": "DEVICE",
    "cuda.version": "CUDA_VERSION",
    "cuda.min-driver": "MIN_DRIVER",
    "cuda.archs": "CUDA_ARCHS",
    "python.version": "PYTHON_VERSION",
    "engine.version": "ENGINE_VERSION",
    "nixl.version": "NIXL_VERSION",
    "lock": "LOCK",
    "unpinned": "UNPINNED",
}


def labels(target: Target) -> dict[str, str]:
    """Our labels as an image of this target carries them."""
    return labels_from_args(target.framework, build_args(target))


def labels_from_args(framework: str, args: dict[str, str]) -> dict[str, str]:
    """The labels the Dockerfile sets from these build args."""
    return {f"{LABEL_PREFIX}framework": framework} | {LABEL_PREFIX + key: args[arg] for key, arg in LABEL_ARGS.items()}


def tags(matrix: Matrix, target: Target, repository: str = REPOSITORY) -> list[str]:
    """`dynamo:<release>-<framework>-<device>`, plus `dynamo:latest-<framework>` for the latest
    release's default device."""
    found = [f"{repository}:{target.release}-{target.framework}-{target.device}"]
    if target.release == matrix.latest and (target.cuda or CPU) == default_device(matrix, target.release, target.framework):
        found.append(f"{repository}:latest-{target.framework}")
    return found


# Docker's reference grammar (github.com/distribution/reference): [HOST[:PORT]/]PATH[:TAG][@DIGEST]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                        r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")


def is_reference(text: str) -> bool:
    """Whether an engine would accept this as an image reference (lowercase path, optional tag and digest)."""
    return bool(_REFERENCE.fullmatch(text)) and len(text) <= 255
