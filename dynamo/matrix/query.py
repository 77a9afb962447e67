"""Questions asked of a loaded matrix: resolve one build target, list them all, explain a refusal.

`evaluate` is the one place that decides whether (release, framework, CUDA, architecture,
Python) is a valid build target; `resolve` fills in defaults and `targets` enumerates.
"""

from __future__ import annotations

import dataclasses
import functools
import platform as _platform
from collections.abc import Iterable, Iterator
from typing import Any

from packaging.version import Version

from dynamo.frozen import Frozen
from dynamo.matrix.model import Caveat, EngineEntry, Framework, Matrix, Release

CPU = "cpu"
FEATURES = ("nixl", "kvbm")
GENERIC_OS = "linux"  # a platform row for "linux" covers every distribution


class InvalidCombination(ValueError):
    """A combination the matrix does not offer; str() is one sentence naming the alternatives."""


class Target(Frozen):
    """One fully pinned build: everything a Dockerfile, a label or a check needs."""

    release: str
    framework: str
    cuda: str | None  # None: the CPU variant
    arch: str
    python: str
    status: str  # "supported" or "experimental"
    engine_version: str | None  # None: no engine (the frontend image)
    engine_pin: str | None  # the version pip installs, e.g. "0.7.2+dynamo" for engine version 0.7.2
    engine_requirement: str | None  # pip requirement, e.g. "vllm[flashinfer]==0.10.2"
    extra_requirements: tuple[str, ...]
    nixl: str | None
    platform: str  # OCI platform, e.g. "linux/amd64"
    os: str
    base_image: str
    runtime_image: str
    driver_linux: str | None
    published_linux: str | None
    published_windows: str | None
    cuda_archs: tuple[str, ...]
    notes: tuple[str, ...]  # why it is experimental, and warnings that apply
    # NVIDIA_REQUIRE_CUDA: the floor ORed with the matrix's forward-compatibility clauses; "" for a CPU image
    require_cuda: str = ""
    nixl_extras: tuple[str, ...] = ()  # e.g. ("cu13",): the NIXL build for the image's CUDA

    @property
    def device(self) -> str:
        return f"cuda{self.cuda}" if self.cuda else CPU

    @property
    def name(self) -> str:
        return f"{self.release}-{self.framework}-{self.device}-{self.arch}-py{self.python}"

    @property
    def nixl_requirement(self) -> str | None:
        return nixl_requirement(self.nixl, self.nixl_extras) if self.nixl else None


# -- small helpers ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def version(text: str) -> Version:
    """A parsed version, cached: every target compares the same few release and CUDA versions."""
    return Version(text)


def pinned(matrix: Matrix, ref: str) -> str:
    """`ref@digest` when the matrix's [image_digests] records a digest for ref (`matrix pin`), else ref."""
    digest = matrix.image_digests.get(ref, "")
    return f"{ref}@{digest}" if digest and "@" not in ref else ref


def human_list(items: Iterable[str], conjunction: str = "and") -> str:
    items = list(items)
    if not items:
        return "none"
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def release_label(matrix: Matrix, name: str) -> str:
    """How a release is titled in tables: "main (ToT)", "v0.8.1 (latest)", "v0.8.0"."""
    release = matrix.release[name]
    if release.label:
        return release.label
    return f"v{name} (latest)" if name == matrix.latest else f"v{name}"


def arch_name(arch: str) -> str:
    return "ARM64" if arch == "arm64" else arch


def normalize_arch(matrix: Matrix, value: str) -> str:
    """Accept "x86_64", "amd64", "linux/arm64", "aarch64"...; return the matrix's name."""
    wanted = value.lower().removeprefix("linux/")
    for name, arch in matrix.cpu_arch.items():
        if wanted == name or wanted in arch.aliases or value == arch.platform:
            return name
    raise InvalidCombination(
        f"unknown CPU architecture {value!r}; valid: {human_list(sorted(matrix.cpu_arch), 'or')}"
        f" (or their platforms {human_list(a.platform for a in matrix.cpu_arch.values())})")


def host_arch(matrix: Matrix) -> str:
    return normalize_arch(matrix, _platform.machine())


def engine_devices(matrix: Matrix, framework: str, engine: EngineEntry) -> list[str]:
    """The CUDA versions an engine ships, newest first, then "cpu" where it runs on the CPU."""
    devices = sorted(engine.cuda, key=Version, reverse=True)
    return devices + ([CPU] if matrix.framework[framework].cpu else [])


def cuda_offer(matrix: Matrix, framework: str, engine: EngineEntry) -> str:
    """E.g. "CUDA 12.9 and 13.0 (experimental)", "CUDA 13.0 only" or "only a CPU build"."""
    parts = [f"{cuda} (experimental)" if engine.cuda[cuda] == "experimental" else cuda
             for cuda in sorted(engine.cuda, key=Version)]
    cpu = matrix.framework[framework].cpu
    if not parts:
        return "only a CPU build" if cpu else "no build (no CUDA toolkit in the matrix)"
    text = f"CUDA {human_list(parts)}" + (" only" if len(parts) == 1 and not cpu else "")
    return text + (" and a CPU build" if cpu else "")


def buildable(matrix: Matrix, cc: str, cuda: str) -> bool:
    """Whether a toolkit can target a compute capability (first_cuda <= cuda < dropped_in)."""
    info = matrix.compute_capability[cc]
    return ((info.first_cuda is None or version(info.first_cuda) <= version(cuda))
            and (info.dropped_in is None or version(cuda) < version(info.dropped_in)))


def engine_archs(matrix: Matrix, framework: str, engine: EngineEntry) -> tuple[str, ...]:
    """The compute capabilities an engine's kernels are built for: its own list, else its framework's."""
    return engine.cuda_archs if engine.cuda_archs is not None else matrix.framework[framework].cuda_archs


def engine_nixl(release: Release, engine: EngineEntry) -> str | None:
    """The NIXL an engine's images carry: its own pin, else the release's; None where unknown."""
    return engine.nixl or release.nixl


def nixl_extra(major: str) -> str:
    """NIXL's pip extra that installs its build for a CUDA major: nixl[cu13] pulls nixl-cu13."""
    return f"cu{major}"


def nixl_extras(matrix: Matrix, nixl: str | None, cuda: str | None) -> tuple[str, ...]:
    """NIXL's extra for a CUDA toolkit's major version (cu13 for 13.0), where the matrix says from
    which NIXL on it exists and this NIXL has it; none for the CPU or an unknown NIXL."""
    major = cuda.split(".")[0] if cuda else None
    since = matrix.cuda_major[major].nixl_extra_since if nixl and major in matrix.cuda_major else None
    if major is None or nixl is None or since is None:
        return ()
    return (nixl_extra(major),) if version(nixl) >= version(since) else ()


def nixl_requirement(nixl: str, extras: tuple[str, ...]) -> str:
    """E.g. "nixl[cu13]==1.4.1", as upstream's ai-dynamo wheels pin it."""
    return f"nixl{'[' + ','.join(extras) + ']' if extras else ''}=={nixl}"


def releases_offering(matrix: Matrix, framework: str, device: str | None = None) -> list[str]:
    return [name for name, release in matrix.release.items()
            if framework in release.engines
            and (device is None or device in engine_devices(matrix, framework, release.engines[framework]))]


def matching_caveats(matrix: Matrix, release: str, context: dict[str, object]) -> list[Caveat]:
    """The caveats that apply to a context of dimension -> value (features: a set of names)."""
    return [caveat for caveat in matrix.caveat if caveat_applies(caveat, release, context)]


def condition_values(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


def caveat_applies(caveat: Caveat, release: str, context: dict[str, object]) -> bool:
    """`when` all match and `unless` does not. A dimension missing from the context never matches."""
    if not caveat_in_release(caveat, release):
        return False
    return _all_match(caveat.when, context) and not (caveat.unless and _all_match(caveat.unless, context))


def reaches(release: str, since: str | None) -> bool:
    """Whether a release is at or after `since` (main is after everything)."""
    return since is None or release == "main" or version(release) >= version(since)


def caveat_in_release(caveat: Caveat, release: str) -> bool:
    return (not caveat.releases or release in caveat.releases) and reaches(release, caveat.since)


def _all_match(conditions: dict[str, str | tuple[str, ...]], context: dict[str, object]) -> bool:
    for dimension, value in conditions.items():
        actual = context.get(dimension)
        if actual is None:
            return False
        present = set(actual) if isinstance(actual, (set, frozenset, tuple, list)) else {actual}
        if not set(condition_values(value)) & present:
            return False
    return True


# -- the decision ------------------------------------------------------------------------------

def find_release(matrix: Matrix, name: str) -> str:
    """The matrix's name for a release ("v0.8.1" and "0.8.1" are both "0.8.1")."""
    for candidate in (name, name.removeprefix("v")):
        if candidate in matrix.release:
            return candidate
    raise InvalidCombination(
        f"release {name!r} is not in the matrix; known releases: {human_list(matrix.release)}")


def check_framework(matrix: Matrix, framework: str) -> str:
    if framework not in matrix.framework:
        raise InvalidCombination(
            f"unknown framework {framework!r}; valid frameworks: {human_list(matrix.framework, 'or')}")
    return framework


def engine_for(matrix: Matrix, release_name: str, framework: str) -> EngineEntry:
    """The engine a release ships for a framework, or InvalidCombination naming the alternatives."""
    release = matrix.release[release_name]
    check_framework(matrix, framework)
    if framework not in release.engines:
        name = matrix.framework[framework].name
        ships = human_list(matrix.framework[f].name for f in release.engines)
        others = human_list(releases_offering(matrix, framework))
        raise InvalidCombination(
            f"{name} is not part of release {release_name}, which ships {ships}; releases with {name}: {others}")
    return release.engines[framework]


def _check_device(matrix: Matrix, release_name: str, framework: str, engine: EngineEntry, device: str) -> None:
    if device in engine_devices(matrix, framework, engine):
        return
    name = matrix.framework[framework].name
    asked = "the CPU" if device == CPU else device
    others = [r for r in releases_offering(matrix, framework, device) if r != release_name]
    where = (f"; releases with {name} on {'the CPU' if device == CPU else 'CUDA ' + device}: {human_list(others)}"
             if others else "")
    raise InvalidCombination(
        f"{name} in {release_name} ships {cuda_offer(matrix, framework, engine)}; you asked for {asked}{where}")


def evaluate(matrix: Matrix, release_name: str, framework: str, device: str, arch: str,
             python: str, base_image: str | None = None) -> Target:
    """The build target for exactly these values, or InvalidCombination saying why not.

    An image runs its base image's Python, so only the image OS's Python is a target unless
    `base_image` replaces the matrix's base (and runtime) image. Each exclusion is one function below
    that raises; what is built follows from the cell once none does."""
    release_name = find_release(matrix, release_name)
    release = matrix.release[release_name]
    engine = engine_for(matrix, release_name, framework)
    fw = matrix.framework[framework]
    _check_device(matrix, release_name, framework, engine, device)
    arch = normalize_arch(matrix, arch)
    _check_image_arch(release_name, release, arch)
    _check_python(matrix, release_name, release, python, base_image)
    platform_status = _check_platform(matrix, release_name, release, arch)
    nixl = engine_nixl(release, engine) if fw.nixl else None
    context: dict[str, object] = {"framework": framework, "python": python, "os": release.image_os, "arch": arch,
                                  "cuda": None if device == CPU else device, "feature": {"nixl"} if nixl else set()}
    caveats = matching_caveats(matrix, release_name, context)
    _check_unsupported_caveats(matrix, release_name, release, caveats, context)
    experimental = _experimental(matrix, release_name, fw, engine, device, arch, platform_status)
    experimental += [_caveat_note(c) for c in caveats if c.effect == "experimental"]
    warnings = [_caveat_note(c) for c in caveats if c.effect not in ("unsupported", "experimental")]
    requirements = engine_requirements(fw, engine)
    cuda_version = None if device == CPU else device
    base, runtime = _images(matrix, engine, cuda_version, arch)
    return Target(
        release=release_name, framework=framework, cuda=cuda_version, arch=arch,
        python=python, status="experimental" if experimental else "supported",
        engine_version=engine.version, engine_pin=(engine.pin or engine.version) if fw.package else None,
        engine_requirement=requirements[0] if requirements else None, extra_requirements=tuple(requirements[1:]),
        nixl=nixl, platform=matrix.cpu_arch[arch].platform, os=release.image_os,
        base_image=base_image or pinned(matrix, base), runtime_image=base_image or pinned(matrix, runtime),
        notes=tuple(experimental + warnings), nixl_extras=nixl_extras(matrix, nixl, cuda_version),
        **_cuda_fields(matrix, framework, engine, cuda_version))


def _cuda_fields(matrix: Matrix, framework: str, engine: EngineEntry, cuda_version: str | None) -> dict[str, Any]:
    """A target's fields that its CUDA toolkit decides (None or empty for a CPU build)."""
    if cuda_version is None:
        return {"driver_linux": None, "published_linux": None, "published_windows": None, "cuda_archs": (),
                "require_cuda": image_requirement(matrix, None)}
    cuda = matrix.cuda[cuda_version]
    return {"driver_linux": cuda.driver_linux, "published_linux": cuda.published_linux,
            "published_windows": cuda.published_windows,
            "cuda_archs": tuple(cc for cc in engine_archs(matrix, framework, engine)
                                if buildable(matrix, cc, cuda_version)),
            "require_cuda": image_requirement(matrix, cuda_version)}


def _check_image_arch(release_name: str, release: Release, arch: str) -> None:
    if arch not in release.image_arch:
        raise InvalidCombination(
            f"{release_name} builds container images for {human_list(map(arch_name, release.image_arch))} only;"
            f" you asked for {arch_name(arch)}")


def _check_python(matrix: Matrix, release_name: str, release: Release, python: str, base_image: str | None) -> None:
    """A Python of the release, and the image OS's own unless another base image brings it."""
    if python not in release.python:
        raise InvalidCombination(
            f"{release_name} supports Python {human_list(release.python)}; you asked for {python}")
    os_info = matrix.os[release.image_os]
    if base_image is None and os_info.python is not None and python != os_info.python:
        raise InvalidCombination(
            f"{release_name} images are built on {os_info.name} {os_info.version}, whose Python is {os_info.python};"
            f" you asked for {python} (give a base image with Python {python} to build it anyway)")


def _check_platform(matrix: Matrix, release_name: str, release: Release, arch: str) -> str:
    """The image OS on this architecture is a platform of the release; its status."""
    status = _platform_status(matrix, release, release.image_os, arch)
    if status is None:
        os_info = matrix.os[release.image_os]
        raise InvalidCombination(
            f"{os_info.name} {os_info.version} on {arch_name(arch)} is not a supported platform in {release_name}")
    return status


def _check_unsupported_caveats(matrix: Matrix, release_name: str, release: Release, caveats: list[Caveat],
                               context: dict[str, object]) -> None:
    """An `unsupported` caveat refuses the cell, naming the Pythons that work where Python decides it."""
    python = context["python"]
    for caveat in caveats:
        if caveat.effect == "unsupported":
            working = [p for p in release.python if p != python and not any(
                c.effect == "unsupported" for c in matching_caveats(matrix, release_name, {**context, "python": p}))]
            hint = f"; use Python {human_list(working, 'or')}" if working and "python" in (
                *caveat.when, *caveat.unless) else ""
            raise InvalidCombination(f"{caveat.message}; you asked for Python {python} in {release_name}{hint}")


def _experimental(matrix: Matrix, release_name: str, fw: Framework, engine: EngineEntry, device: str, arch: str,
                  platform_status: str) -> list[str]:
    """Why the cell is experimental (its CUDA, CPU, platform or a planned engine); empty when it is not."""
    found = []
    if device != CPU and engine.cuda[device] == "experimental":
        found.append(f"CUDA {device} for {fw.name} in {release_name} is experimental")
    if matrix.release[release_name].cpu_arch.get(arch) == "experimental":
        found.append(f"{arch_name(arch)} is experimental in {release_name}")
    if platform_status == "experimental":
        os_info = matrix.os[matrix.release[release_name].image_os]
        found.append(f"{os_info.name} {os_info.version} on {arch_name(arch)} is experimental in {release_name}")
    if engine.planned:
        found.append(engine.note or f"{fw.name} {engine.version} is planned and subject to change")
    return found


def _caveat_note(caveat: Caveat) -> str:
    return caveat.message + (f"; fix: {caveat.fix}" if caveat.fix else "")


def _images(matrix: Matrix, engine: EngineEntry, cuda_version: str | None, arch: str) -> tuple[str, str]:
    """The base and runtime images (unpinned): the engine's own base for a CUDA build, else the CUDA
    toolkit's images, else the CPU base image."""
    cuda = matrix.cuda[cuda_version] if cuda_version else None
    if cuda is None:
        return matrix.cpu_base_image, matrix.cpu_base_image
    own = engine.base_image[arch] if isinstance(engine.base_image, dict) else engine.base_image
    # validate requires a base image of each CUDA toolkit an engine uses that has none of its own
    base = own or cuda.base_image or ""
    return base, cuda.runtime_image or cuda.base_image or ""


def image_requirement(matrix: Matrix, cuda: str | None) -> str:
    """NVIDIA_REQUIRE_CUDA of our images for this CUDA: its floor, plus the matrix's forward-compatibility
    clauses (as NVIDIA's own base images carry them); empty for a CPU image."""
    from dynamo.nvidia_require import forward_compat_clauses

    if not cuda:
        return ""
    compat = matrix.forward_compat
    return forward_compat_clauses(cuda, compat.brands if compat else (), compat.branches.get(cuda, ()) if compat else ())


def engine_requirements(fw: Framework, engine: EngineEntry) -> list[str]:
    """What pip installs for an engine: the engine with its extras at its pin, then its extra pins
    (e.g. ["vllm[flashinfer]==0.10.2", "flashinfer==0.1.8"]); nothing for a framework without one."""
    if fw.package is None:
        return []
    extras = f"[{','.join(engine.extras)}]" if engine.extras else ""
    return [f"{fw.package}{extras}=={engine.pin or engine.version}",
            *(f"{name}=={version}" for name, version in sorted(engine.pins.items()))]


def _platform_status(matrix: Matrix, release: Release, os_name: str, arch: str) -> str | None:
    for row in release.platforms:
        if row.arch == arch and row.os in (os_name, GENERIC_OS):
            return row.status
    return None


def default_device(matrix: Matrix, release: str, framework: str) -> str:
    """The newest supported CUDA, else the newest experimental one, else the CPU build."""
    release = find_release(matrix, release)
    engine = engine_for(matrix, release, framework)
    devices = engine_devices(matrix, framework, engine)
    supported = [d for d in devices if d != CPU and engine.cuda[d] == "supported"]
    if supported or devices:
        return (supported or devices)[0]
    raise InvalidCombination(
        f"{matrix.framework[framework].name} in {release} has no CUDA toolkit in the matrix, so nothing can be"
        f" built; releases with {matrix.framework[framework].name} builds: "
        f"{human_list(r for r in releases_offering(matrix, framework) if engine_devices(matrix, framework, matrix.release[r].engines[framework]))}")


def resolve(matrix: Matrix, framework: str, release: str | None = None, cuda: str | None = None,
            arch: str | None = None, python: str | None = None, base_image: str | None = None) -> Target:
    """Fill in the defaults (the latest release that ships the framework on the asked device, newest
    supported CUDA, this host's CPU, the release's default Python) and evaluate. When the latest
    release lacks the cell, the target's notes say which release was taken instead."""
    device = _device(cuda)
    chosen, note = (find_release(matrix, release), None) if release else default_release(matrix, framework, device)
    if device is None:
        device = default_device(matrix, chosen, framework)
    target = evaluate(matrix, chosen, framework, device, arch or host_arch(matrix),
                      python or matrix.release[chosen].python_default, base_image)
    return dataclasses.replace(target, notes=(note, *target.notes)) if note else target


def _device(cuda: str | None) -> str | None:
    if not cuda:
        return None
    device = cuda.lower().removeprefix("cuda")
    return CPU if device in ("none", "cpu") else device


def default_release(matrix: Matrix, framework: str, device: str | None = None) -> tuple[str, str | None]:
    """The latest release, else (when it does not ship the framework on the device) the newest
    published release that does, with a sentence saying so; the latest when none does (so that
    `evaluate` explains the refusal)."""
    check_framework(matrix, framework)
    latest = matrix.latest
    if _offers(matrix, latest, framework, device):
        return latest, None
    offering = [name for name in releases_offering(matrix, framework, device) if name != "main"]
    if not offering:
        return latest, None
    name = matrix.framework[framework].name
    asked = name if device is None else f"{name} on {'the CPU' if device == CPU else 'CUDA ' + device}"
    return offering[0], (f"the latest release {latest} has no {asked}; using {offering[0]},"
                         f" the newest release that has it (pass --release to choose another)")


def _offers(matrix: Matrix, release: str, framework: str, device: str | None) -> bool:
    engine = matrix.release[release].engines.get(framework)
    if engine is None:
        return False
    devices = engine_devices(matrix, framework, engine)
    return bool(devices) if device is None else device in devices


def targets(matrix: Matrix, release: str | None = None, framework: str | None = None) -> list[Target]:
    """Every valid build target, newest release first."""
    return list(_iter_targets(matrix, release, framework))


def _iter_targets(matrix: Matrix, only_release: str | None, only_framework: str | None) -> Iterator[Target]:
    if only_release is not None:
        only_release = find_release(matrix, only_release)
    if only_framework is not None:
        check_framework(matrix, only_framework)
    for name, release in matrix.release.items():
        if only_release is not None and name != only_release:
            continue
        for framework, engine in release.engines.items():
            if only_framework is not None and framework != only_framework:
                continue
            for device in engine_devices(matrix, framework, engine):
                for arch in release.image_arch:
                    for python in image_pythons(matrix, release):
                        try:
                            yield evaluate(matrix, name, framework, device, arch, python)
                        except InvalidCombination:
                            continue


def image_pythons(matrix: Matrix, release: Release) -> list[str]:
    """The Pythons a release's images can have on its own base image: the image OS's Python."""
    os_python = matrix.os[release.image_os].python
    return [p for p in release.python if os_python is None or p == os_python]


def release_artifacts(matrix: Matrix, name: str) -> list[str]:
    """What a release publishes: its own list, else every artifact it has reached (`since`) and,
    for images, whose framework it ships with a CUDA of the image's major version."""
    release = matrix.release[name]
    if release.artifacts is not None:
        return list(release.artifacts)
    if name == "main":
        return []
    published = []
    for artifact_name, artifact in matrix.artifact.items():
        if not reaches(name, artifact.since) or (artifact.dropped_in and reaches(name, artifact.dropped_in)):
            continue
        if artifact.framework is not None:
            engine = release.engines.get(artifact.framework)
            if engine is None:
                continue
            if artifact.cuda_major is not None and not any(
                    cuda.split(".")[0] == str(artifact.cuda_major) for cuda in engine.cuda):
                continue
        published.append(artifact_name)
    return published


def release_caveats(matrix: Matrix, name: str, framework: str | None = None) -> list[Caveat]:
    """The caveats that can apply to a release (or to one framework in it): those not limited to
    other releases, and, when they name frameworks, naming one it ships."""
    shipped = set(matrix.release[name].engines) if framework is None else {framework}
    found = []
    for caveat in matrix.caveat:
        frameworks = set(condition_values(caveat.when.get("framework", ())))
        if caveat_in_release(caveat, name) and (not frameworks or frameworks & shipped):
            found.append(caveat)
    return found
