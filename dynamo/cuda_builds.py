"""Which CUDA toolkit a Python distribution is built for, and whether a set of them fits one cell.

An image is what its labels say: a CUDA 12.9 image may carry no CUDA 13 build (its code would need
libcudart.so.13 and an R580 driver the labels do not ask for), and none newer than 12.9 (it would need a
newer driver than the label's floor). A lock is checked with these rules when it is written and by
`lock --check`; `verify` checks the installed image with them too.

Names and versions are canonical (`packaging.utils.canonicalize_name`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packaging.version import Version

# The CUDA runtime that an image's code loads, numbered like CUDA itself (nvidia-cuda-runtime 13.0.96 is
# CUDA 13.0's libcudart): CUDA 12's wheels spell them with a -cu12 suffix, CUDA 13's without. NVRTC and
# nvJitLink compile code for the driver at run time, so they may be no newer than the cell's CUDA either.
# Other nvidia-* libraries (cuBLAS 13.1 ships with CUDA 13.0.2) have numbers of their own, and tools
# (nvcc, nvdisasm) run at build or JIT time under minor-version compatibility: only their major counts.
RUNTIME = ("cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-nvjitlink")
# A build for one CUDA major: nixl-cu13, nvidia-cudnn-cu12, cupy-cuda12x.
_MAJOR_SUFFIX = re.compile(r"-cu(?:da)?(\d+)x?$")
# PyTorch's local versions: 2.9.0+cu128 is CUDA 12.8, 2.11.0+cu130 CUDA 13.0.
_TORCH_LOCAL = re.compile(r"cu(\d+)(\d)")


def built_for_major(name: str) -> str | None:
    """The CUDA major a distribution's name says it is built for: "nixl-cu12" -> "12"."""
    found = _MAJOR_SUFFIX.search(name)
    return found[1] if found else None


def _base(name: str) -> str:
    return _MAJOR_SUFFIX.sub("", name)


def _version(text: str) -> Version | None:
    # Imported here: the doctor's facts need only built_for_major, and packaging's import costs a
    # worker's start 2 ms.
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


def runtime_cuda(name: str, version: str) -> tuple[int, int] | None:
    """The CUDA (major, minor) a distribution carries when its version says it: the runtime components,
    and torch's +cuXYZ local version; None for everything else."""
    parsed = _version(version)
    if parsed is None:
        return None
    if name == "torch":
        found = _TORCH_LOCAL.fullmatch(parsed.local or "")
        return (int(found[1]), int(found[2])) if found else None
    if _base(name) in RUNTIME and len(parsed.release) >= 2:
        return parsed.release[0], parsed.release[1]
    return None


def _cell(cuda: str) -> tuple[int, int]:
    major, minor = cuda.split(".")[:2]
    return int(major), int(minor)


def within(carried: str, cuda: str) -> bool:
    """Whether code built for CUDA `carried` ("12.8") runs in a cell of CUDA `cuda`: the same major, no
    newer minor (minor-version compatibility covers the older ones)."""
    built, cell = _cell(carried), _cell(cuda)
    return built[0] == cell[0] and built <= cell


def constraints(cuda: str, nixl: str | None) -> list[str]:
    """uv constraints that keep a resolution inside the cell: the runtime components of the cell's major
    and no newer minor (both spellings), and NIXL's build for the major at NIXL's own version (nixl 0.8.0
    asks for nixl-cu12>=0.8.0 and would get 1.5.1's libraries under a 0.8.0 label)."""
    major, minor = _cell(cuda)
    upper = f"{major}.{minor + 1}"
    found = [f"{name}>={major},<{upper}" for name in RUNTIME]
    found += [f"{name}-cu{major}>={major},<{upper}" for name in RUNTIME if name != "cuda-toolkit"]
    if nixl:
        found.append(f"nixl-cu{major}=={nixl}")
    return found


def other_major_alternates(pins: Mapping[str, str], cuda: str) -> list[str]:
    """Builds for another CUDA major that a meta-package pulls beside the cell's own (nixl 1.4.1 requires
    both nixl-cu12 and nixl-cu13 and loads the one for the CUDA it finds; nvidia-cutlass-dsl 4.7.1 pulls
    both libs-cu12 and libs-cu13): the lock leaves them out."""
    major = str(_cell(cuda)[0])
    own = {_base(name) for name in pins if built_for_major(name) == major}
    return sorted(name for name in pins
                  if (other := built_for_major(name)) is not None and other != major and _base(name) in own)


def problems(pins: Mapping[str, str], cuda: str | None, where: str) -> list[str]:
    """Why a set of installed or locked distributions does not fit a cell of CUDA `cuda` (None: a CPU
    cell, where nothing is checked); one line each, starting with `where`."""
    found = []
    if cuda:
        major = _cell(cuda)[0]
        for name, version in sorted(pins.items()):
            if (suffix := built_for_major(name)) is not None and suffix != str(major):
                found.append(f"{where}: {name}=={version} is a CUDA {suffix} build in a CUDA {cuda} cell")
            elif (carried := runtime_cuda(name, version)) is not None and not within(f"{carried[0]}.{carried[1]}", cuda):
                found.append(f"{where}: {name}=={version} carries CUDA {carried[0]}.{carried[1]}, newer than or"
                             f" outside the cell's CUDA {cuda}")
        carriers = [name for name, version in pins.items() if runtime_cuda(name, version)]
        if "torch" in pins and not carriers:  # PyPI's torch 2.9.1 for aarch64 is a CPU build: no nvidia-* with it
            found.append(f"{where}: torch=={pins['torch']} is a CPU build (no CUDA runtime with it) in a CUDA {cuda} cell")
    nixl = _version(pins.get("nixl", ""))
    for name, version in sorted(pins.items()):
        if nixl is not None and _base(name) == "nixl" and name != "nixl" and (own := _version(version)) is not None \
                and own.public != nixl.public:
            found.append(f"{where}: nixl=={pins['nixl']} with {name}=={version}: NIXL's libraries must be the"
                         f" version its label names")
    return found
