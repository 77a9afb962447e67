"""The support matrix as typed, immutable data.

These dataclasses are also the schema: `dynamo.matrix.convert` turns the parsed TOML into them,
reporting unknown keys, missing keys and wrong types by key path. Field metadata adds the value
checks (``check``) and the checks on the keys of a table (``keys``). Cross-references between
tables are checked afterwards, in `dynamo.matrix.validate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import TYPE_CHECKING, Any, Literal, Union

from dynamo.frozen import Frozen
from dynamo.matrix import checks

Support = Literal["supported", "experimental"]
ReleaseStatus = Literal["development", "released", "patch"]
CaveatEffect = Literal["unsupported", "experimental", "warning"]
ArtifactKind = Literal["wheel", "image", "helm_chart", "crate"]
Condition = Union[str, tuple[str, ...]]


def _meta(check: checks.Check | None = None, keys: checks.Check | None = None) -> dict[str, checks.Check | None]:
    return {"check": check, "keys": keys}


def checked(check: checks.Check | None = None, *, keys: checks.Check | None = None, default: Any = None,
            factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field carrying a value check and/or a check on the keys of a table."""
    if factory is not None:
        return field(default_factory=factory, metadata=_meta(check, keys))
    return field(default=default, metadata=_meta(check, keys))


def required(check: checks.Check | None = None, *, keys: checks.Check | None = None) -> Any:
    return field(metadata=_meta(check, keys))


class Cuda(Frozen, kw_only=True):
    driver_linux: str = required(checks.driver)
    driver_updates: dict[str, str] = checked(checks.driver, keys=checks.version, factory=dict)
    published_linux: str | None = checked(checks.published_driver)
    published_windows: str | None = checked(checks.published_driver)
    base_image: str | None = checked(checks.image_ref)
    runtime_image: str | None = checked(checks.image_ref)
    note: str | None = None


class CudaMajor(Frozen, kw_only=True):
    minor_compat_driver: str = required(checks.driver)
    # the first NIXL whose extra cu<major> installs its build for the major (nixl[cu13] pulls
    # nixl-cu13); absent: NIXL is installed without an extra
    nixl_extra_since: str | None = checked(checks.version)


class CpuArch(Frozen, kw_only=True):
    platform: str = required(checks.platform)
    aliases: tuple[str, ...] = ()


class GpuArch(Frozen, kw_only=True):
    name: str
    # the lowest and highest compute capability of the architecture (NVIDIA's numbering)
    capabilities: tuple[str, ...] = checked(checks.compute_capability, default=())


class ComputeCapability(Frozen, kw_only=True):
    arch: str
    gpus: tuple[str, ...] = ()
    first_cuda: str | None = checked(checks.cuda_version)
    dropped_in: str | None = checked(checks.cuda_version)


class OperatingSystem(Frozen, kw_only=True):
    name: str
    version: str
    id: str | None = None
    version_id: str | None = None
    python: str | None = checked(checks.python_version)
    cloud: str | None = None


class Framework(Frozen, kw_only=True):
    name: str
    package: str | None = checked(checks.distribution)  # None: no engine (the frontend image)
    module: str = required(checks.module)
    extra_index_url: str | None = None
    # Per CUDA toolkit, the indexes of the engine's builds for it, used where PyPI's builds of a version
    # target another toolkit; "{version}" stands for the engine's version.
    cuda_indexes: dict[str, tuple[str, ...]] = checked(keys=checks.cuda_version, factory=dict)
    cuda_archs: tuple[str, ...] = checked(checks.compute_capability, default=())
    cpu: bool = False
    nixl: bool = True
    memlock_unlimited: bool = False
    # builds native code in the image: its environment is made on the devel image and copied into the
    # runtime image (otherwise it is installed on the runtime image, which the runtime image then is)
    compiles: bool = False
    build_disk_gib: int | None = checked(checks.positive)  # free space a build needs at its peak, where measured
    strip: bool = False  # its environment's shared libraries are stripped (strip --strip-unneeded) as installed
    # distributions that a dependency declares but nothing in the image imports: its locks leave them (and
    # what only they pull in) out, and the image's pip check allows exactly those missing
    never_imported: tuple[str, ...] = checked(checks.distribution, default=())
    # Debian/Ubuntu packages of the system libraries its wheels' native code loads, which the runtime base lacks
    system_packages: tuple[str, ...] = checked(checks.debian_package, default=())


class Platform(Frozen, kw_only=True):
    os: str
    arch: str
    status: Support


class MinHost(Frozen, kw_only=True):
    ram_gib: int = required(checks.positive)
    cpu_cores: int = required(checks.positive)


class EngineEntry(Frozen, kw_only=True):
    """One framework as a release ships it."""

    version: str | None = checked(checks.version)  # required when the framework has a package
    pin: str | None = checked(checks.version)
    extras: tuple[str, ...] = checked(checks.identifier, default=())
    pins: dict[str, str] = checked(checks.version, keys=checks.distribution, factory=dict)
    cuda: dict[str, Support] = checked(keys=checks.cuda_version, factory=dict)
    base_image: str | dict[str, str] | None = checked(checks.image_ref)
    nixl: str | None = checked(checks.version)  # this engine's NIXL; absent: the release's nixl
    cuda_archs: tuple[str, ...] | None = checked(checks.compute_capability)  # absent: the framework's
    planned: bool = False
    note: str | None = None
    upstream_version: str | None = checked(checks.version)  # upstream's differing value; ours is kept


class ReleaseFields(Frozen, kw_only=True):
    """The fields a release may set, each falling back to [defaults]."""

    status: ReleaseStatus | None = None
    python: tuple[str, ...] | None = checked(checks.python_version)
    python_default: str | None = checked(checks.python_version)
    requires_python: str | None = checked(checks.specifier)
    image_os: str | None = None
    image_arch: tuple[str, ...] | None = None
    wheel_arch: tuple[str, ...] | None = None
    cpu_arch: dict[str, Support] | None = None
    gpu_arch: dict[str, Support] | None = None
    platforms: tuple[Platform, ...] | None = None
    min_host: MinHost | None = None


class Defaults(ReleaseFields, kw_only=True):
    """[defaults]: what a release that does not set a field has."""

    if TYPE_CHECKING:
        # validate requires [defaults] to set each of these, and a loaded Release has them too (its own or
        # [defaults]'s): only the type checker reads these narrower types.
        status: ReleaseStatus
        python: tuple[str, ...]
        python_default: str
        image_os: str
        image_arch: tuple[str, ...]
        wheel_arch: tuple[str, ...]
        cpu_arch: dict[str, Support]
        gpu_arch: dict[str, Support]
        platforms: tuple[Platform, ...]


class Release(Defaults, kw_only=True):
    """A release: its own fields, and [defaults]'s where it sets none (load._complete fills them in), so that
    a loaded release has every field [defaults] has."""

    label: str | None = None
    patch_of: str | None = None
    github_release: bool = True
    published: str | None = checked(checks.date)  # YYYY-MM-DD, or YYYY-MM where only the month is known
    wheel: str | None = checked(checks.version)  # the ai-dynamo wheel's version where it is not the tag
    nixl: str | None = checked(checks.version)  # every engine's NIXL unless the engine sets its own
    base_container: str | None = None
    note: str | None = None
    artifacts: tuple[str, ...] | None = None
    engines: dict[str, EngineEntry] = checked(factory=dict)


class Caveat(Frozen, kw_only=True):
    id: str
    message: str
    effect: CaveatEffect
    when: dict[str, Condition] = checked(keys=checks.caveat_dimension, factory=dict)
    unless: dict[str, Condition] = checked(keys=checks.caveat_dimension, factory=dict)
    releases: tuple[str, ...] = ()
    since: str | None = checked(checks.version)
    fix: str | None = None
    avoid_flags: tuple[str, ...] = ()
    ports: tuple[int, ...] = checked(checks.port, default=())
    link: str | None = None


class Artifact(Frozen, kw_only=True):
    kind: ArtifactKind
    url: str
    title: str | None = None
    image: str | None = checked(checks.image_repository)
    framework: str | None = None
    cuda_major: int | None = checked(checks.positive)
    since: str | None = checked(checks.version)
    dropped_in: str | None = checked(checks.version)  # the first release that no longer publishes it
    note: str | None = None


class ForwardCompat(Frozen, kw_only=True):
    """The forward-compatibility clauses of our images' NVIDIA_REQUIRE_CUDA (NVIDIA's base images' own)."""

    brands: tuple[str, ...] = checked(checks.identifier, default=())
    branches: dict[str, tuple[int, ...]] = checked(keys=checks.cuda_version, factory=dict)


class Matrix(Frozen, kw_only=True):
    """The whole file. Releases keep the file's order (newest first)."""

    schema: Literal[1]
    latest: str
    cpu_base_image: str = required(checks.image_ref)
    cuda: dict[str, Cuda] = required(keys=checks.cuda_version)
    cuda_major: dict[str, CudaMajor] = required(keys=checks.integer)
    cpu_arch: dict[str, CpuArch] = checked(factory=dict)
    gpu_arch: dict[str, GpuArch] = checked(factory=dict)
    compute_capability: dict[str, ComputeCapability] = required(keys=checks.compute_capability)
    os: dict[str, OperatingSystem] = checked(factory=dict)
    framework: dict[str, Framework] = checked(keys=checks.identifier, factory=dict)
    defaults: Defaults = required()
    release: dict[str, Release] = required(keys=checks.release_name)
    caveat: tuple[Caveat, ...] = ()
    artifact: dict[str, Artifact] = checked(factory=dict)
    forward_compat: ForwardCompat | None = None
    # NVIDIA's published GPUs: compute capability -> NVML brand -> names
    gpu: dict[str, dict[str, tuple[str, ...]]] = checked(keys=checks.compute_capability, factory=dict)
    # Each base and runtime image reference -> the digest its tag had when `matrix pin` resolved it
    # ("" until resolved from a registry).
    image_digests: dict[str, str] = checked(checks.image_digest, keys=checks.image_ref, factory=dict)
