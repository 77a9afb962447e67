"""What an image of a build target is called and built with: tags, build args, labels.

One function each, so the rendered Dockerfiles, the bake file and `build.py` cannot disagree.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone

from packaging.requirements import Requirement

from dynamo.matrix import Matrix, Target
from dynamo.matrix.query import CPU, default_device

REPOSITORY = "dynamo"
LABEL_PREFIX = "dev.dynamo."

# The oldest CPU that code compiled in our images (llama.cpp) runs on, per architecture (GCC -march
# names), and llama.cpp's CMake options that compile for exactly it instead of -march=native, so that
# an image never dies with "Illegal instruction" on a CPU older than the build machine's. Run-time
# dispatch (GGML_CPU_ALL_VARIANTS with GGML_BACKEND_DL) is not usable yet: llama-cpp-python does not
# load dynamic backends (abetlen/llama-cpp-python#2069).
CPU_BASELINES = {
    "amd64": ("x86-64-v3", "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_F16C=ON -DGGML_AVX2=ON"
                           " -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_AVX512=OFF"),
    "arm64": ("armv8.2-a+dotprod+fp16", "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"),
}


parse_requirement = functools.lru_cache(maxsize=1024)(Requirement)  # the same few pins, for every target and lock


def install_names(target: Target) -> list[str]:
    """What pip is asked for; the versions come from the constraints file."""
    names = []
    if target.engine_requirement:
        requirement = parse_requirement(target.engine_requirement)
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        names.append(requirement.name + extras)
    if target.nixl:
        names.append(f"nixl[{','.join(target.nixl_extras)}]" if target.nixl_extras else "nixl")
    return names


def constraints(target: Target) -> list[str]:
    """Exact pins for the engine, its extra pins and NIXL (pip constraints take no extras)."""
    pins = []
    if target.engine_requirement:
        requirement = parse_requirement(target.engine_requirement)
        pins.append(f"{requirement.name}{requirement.specifier}")
    pins += list(target.extra_requirements)
    if target.nixl:
        pins.append(f"nixl=={target.nixl}")
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
        # Not CUDA_VERSION: a build arg is in the environment of every RUN after it, where NVIDIA's base
        # images set CUDA_VERSION themselves, and a base without CUDA (a stand-in) would seem to have one.
        "DYNAMO_CUDA": target.cuda or "",
        "CUDA_ARCHS": " ".join(target.cuda_archs),
        "CMAKE_CUDA_ARCHITECTURES": ";".join(cmake_cuda_architecture(cc) for cc in target.cuda_archs),
        "MIN_DRIVER": target.driver_linux or "",
        "NVIDIA_REQUIRE_CUDA": nvidia_require_cuda(target),
        "PYTHON_VERSION": target.python,
        "ENGINE_VERSION": target.engine_version or "",
        "NIXL_VERSION": target.nixl or "",
        "INSTALL": " ".join(install_names(target)),
        "LOCK": lock_name(target),
        "BASE_DIGEST": target.runtime_image.partition("@")[2],
        "UNPINNED": " ".join(unpinned(target)),
        "CPU_BASELINE": cpu_baseline(),
        **{f"GGML_CPU_{arch.upper()}": options for arch, (_, options) in CPU_BASELINES.items()},
    }


def cmake_cuda_architecture(compute_capability: str) -> str:
    """A compute capability as CMake's CUDA architecture: 9.0 -> 90, 12.0 -> 120."""
    major, dot, minor = compute_capability.strip().partition(".")
    if not (major.isdigit() and dot and minor.isdigit()):
        raise ValueError(f"compute capability {compute_capability!r} is not MAJOR.MINOR (for example 9.0)")
    return f"{int(major)}{minor}"


def unpinned(target: Target) -> list[str]:
    """The target's base and runtime images that are not pinned to a digest (`matrix pin`)."""
    return list(dict.fromkeys(ref for ref in (target.base_image, target.runtime_image) if "@" not in ref))


def cpu_baseline() -> str:
    """The label's statement of the CPU baseline of every architecture, e.g. `amd64=x86-64-v3 arm64=...`."""
    return " ".join(f"{arch}={name}" for arch, (name, _) in CPU_BASELINES.items())


def timestamp(epoch: int) -> str:
    """A time as images record it (created, each step's history): RFC 3339 in UTC, "2001-09-09T01:46:40Z"."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


DIRTY = "-dirty"  # a revision's suffix when the build context had uncommitted changes


def split_revision(revision: str) -> tuple[str, bool]:
    """A recorded revision as (the commit, whether the build context had uncommitted changes)."""
    return revision.removesuffix(DIRTY), revision.endswith(DIRTY)


def source_args(revision: str, source_date_epoch: int, source_url: str) -> dict[str, str]:
    """The build args that tie an image to its source: the commit, its time (every timestamp in the
    image is this one) and where the source lives."""
    return {"SOURCE_DATE_EPOCH": str(source_date_epoch), "CREATED": timestamp(source_date_epoch),
            "REVISION": revision, "SOURCE_URL": source_url}


# The OCI labels set from the source args (images.source_args), each from the build arg of the same meaning.
SOURCE_LABELS = {
    "org.opencontainers.image.created": "CREATED",
    "org.opencontainers.image.revision": "REVISION",
    "org.opencontainers.image.source": "SOURCE_URL",
}


# Our labels, each set from the build arg of the same meaning (plus the framework, fixed per Dockerfile).
LABEL_ARGS = {
    "release": "DYNAMO_RELEASE",
    "device": "DEVICE",
    "cuda.version": "DYNAMO_CUDA",
    "cuda.min-driver": "MIN_DRIVER",
    "cuda.require": "NVIDIA_REQUIRE_CUDA",  # also the image's ENV, which the NVIDIA container toolkit reads
    "cuda.archs": "CUDA_ARCHS",
    "python.version": "PYTHON_VERSION",
    "engine.version": "ENGINE_VERSION",
    "nixl.version": "NIXL_VERSION",
    "lock": "LOCK",
    "unpinned": "UNPINNED",
    "cpu.baseline": "CPU_BASELINE",
}


def labels(target: Target) -> dict[str, str]:
    """Our labels as an image of this target carries them."""
    return labels_from_args(target.framework, build_args(target))


def labels_from_args(framework: str, args: dict[str, str]) -> dict[str, str]:
    """The labels the Dockerfile sets from these build args (the source labels where the args have them)."""
    return ({f"{LABEL_PREFIX}framework": framework} | {LABEL_PREFIX + key: args[arg] for key, arg in LABEL_ARGS.items()}
            | {label: args[arg] for label, arg in SOURCE_LABELS.items() if arg in args})


def tags(matrix: Matrix, target: Target, repository: str = REPOSITORY) -> list[str]:
    """`dynamo:<release>-<framework>-<device>`, plus `dynamo:latest-<framework>` for the latest
    release's default device."""
    found = [f"{repository}:{target.release}-{target.framework}-{target.device}"]
    if target.release == matrix.latest and (target.cuda or CPU) == default_device(matrix, target.release, target.framework):
        found.append(f"{repository}:latest-{target.framework}")
    return found

