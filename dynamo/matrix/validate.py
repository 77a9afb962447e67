"""Cross-reference and consistency checks on a converted matrix; each problem names its key path."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Iterator
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from dynamo.matrix import checks
from dynamo.matrix.convert import Path, Problem
from dynamo.matrix.model import EngineEntry, Matrix, Release, ReleaseFields
from dynamo.matrix.query import (
    FEATURES,
    condition_values,
    engine_archs,
    engine_nixl,
    human_list,
    nixl_extras,
    reaches,
    release_artifacts,
)


def validate(matrix: Matrix) -> list[Problem]:
    return [Problem(path, message) for path, message in _all(matrix)]


def _all(m: Matrix) -> Iterator[tuple[Path, str]]:
    yield from _check_latest(m)
    yield from _check_cuda(m)
    yield from _check_cuda_majors(m)
    yield from _check_driver_order(m)
    yield from _check_hardware(m)
    yield from _check_gpus(m)
    yield from _check_first_cuda(m)
    yield from _check_defaults(m)
    yield from _check_release_names(m)
    for name, release in m.release.items():
        yield from _check_release(m, name, release)
    yield from _check_caveats(m)
    yield from _check_artifacts(m)
    yield from _check_forward_compat(m)
    yield from _check_gpu_table(m)
    yield from _check_urls(m)
    yield from _check_history(m)


def _undefined(path: Path, what: str, value: str, defined: Iterable[str]) -> tuple[Path, str]:
    choices = ", ".join(sorted(defined)) or "none"
    return path, f"{what} {value!r} is not defined; expected one of: {choices}"


def _effective(m: Matrix, release: Release, field: str) -> Any:
    value = getattr(release, field)
    return getattr(m.defaults, field) if value is None else value


def _check_latest(m: Matrix) -> Iterator[tuple[Path, str]]:
    if m.latest not in m.release:
        yield _undefined(("latest",), "release", m.latest, m.release)
    elif m.latest == "main":
        yield ("latest",), "the latest release must be a published version, not the development branch 'main'"
    elif newer := [name for name, release in m.release.items() if name != "main"
                   and _effective(m, release, "status") == "released" and Version(name) > Version(m.latest)]:
        yield ("latest",), (f"{m.latest!r} is not the newest release ({len(newer)} released after it); latest ="
                            f" {max(newer, key=Version)!r}")
    elif not m.release[m.latest].engines:
        yield ("latest",), f"release {m.latest!r} ships no engine; the latest release is one users can run"


def _check_cuda(m: Matrix) -> Iterator[tuple[Path, str]]:
    for version, cuda in m.cuda.items():
        path = ("cuda", version)
        major = version.split(".")[0]
        if major not in m.cuda_major:
            yield path, f"CUDA major {major} has no [cuda_major.\"{major}\"] table with its minor_compat_driver"
        for update, driver in cuda.driver_updates.items():
            if not update.startswith(version + "."):
                yield path + ("driver_updates", update), f"expected an update of CUDA {version} such as \"{version}.1\""
            elif Version(driver) < Version(cuda.driver_linux):
                yield path + ("driver_updates", update), f"driver {driver} is below the GA floor {cuda.driver_linux}"
        if cuda.published_linux:
            # the published floor is the toolkit's own branch, or its major's first toolkit's (by
            # minor-version compatibility, as upstream publishes 13.1 at "580.xx+")
            first = min((v for v in m.cuda if v.split(".")[0] == major), key=Version)
            branches = {cuda.driver_linux.split(".")[0], m.cuda[first].driver_linux.split(".")[0]}
            if cuda.published_linux.split(".")[0] not in branches:
                yield (path + ("published_linux",),
                       f"{cuda.published_linux!r} disagrees with driver_linux {cuda.driver_linux!r}: "
                       f"expected \"{cuda.driver_linux.split('.')[0]}.xx+\"")


def _check_cuda_majors(m: Matrix) -> Iterator[tuple[Path, str]]:
    """CUDA's majors follow one another (12, 13): a toolkit whose major skips ahead is a typo."""
    majors = sorted({int(version.split(".")[0]) for version in m.cuda})
    for before, after in zip(majors, majors[1:]):
        if after != before + 1:
            for version in (v for v in m.cuda if int(v.split(".")[0]) == after):
                yield ("cuda", version), (f"CUDA {version} follows CUDA {before}.x with no major between them; CUDA's"
                                          f" majors come one after another (a typo?)")


def _check_driver_order(m: Matrix) -> Iterator[tuple[Path, str]]:
    """A newer toolkit never needs an older driver; a major's minor-version floor is at most the
    floor of each of its toolkits and above every floor of the majors before it. (The floors of
    the majors are judged only once the toolkits' own floors are in order.)"""
    toolkits = sorted(m.cuda, key=Version)
    out_of_order = False
    for older, newer in zip(toolkits, toolkits[1:]):
        if Version(m.cuda[newer].driver_linux) < Version(m.cuda[older].driver_linux):
            out_of_order = True
            yield (("cuda", newer, "driver_linux"),
                   f"{m.cuda[newer].driver_linux!r} is below CUDA {older}'s {m.cuda[older].driver_linux!r}; a newer"
                   f" toolkit never needs an older driver: correct one of them")
    if out_of_order:
        return
    for major, info in m.cuda_major.items():
        floor = Version(info.minor_compat_driver)
        own = [v for v in toolkits if v.split(".")[0] == major]
        below = [v for v in toolkits if int(v.split(".")[0]) < int(major)]
        if own and floor > Version(m.cuda[own[0]].driver_linux):
            yield (("cuda_major", major, "minor_compat_driver"),
                   f"{info.minor_compat_driver!r} is above CUDA {own[0]}'s own floor {m.cuda[own[0]].driver_linux!r};"
                   f" the minor-version floor of {major}.x is at most the floor of every {major}.x toolkit")
        elif below and floor <= Version(m.cuda[below[-1]].driver_linux):
            yield (("cuda_major", major, "minor_compat_driver"),
                   f"{info.minor_compat_driver!r} is not above CUDA {below[-1]}'s floor {m.cuda[below[-1]].driver_linux!r};"
                   f" a {major}.x toolkit needs a newer driver than every older major's")


def _check_gpus(m: Matrix) -> Iterator[tuple[Path, str]]:
    """Each capability within its architecture's range, first_cuda before dropped_in, each GPU once."""
    owner: dict[str, str] = {}
    for cc, info in m.compute_capability.items():
        path: Path = ("compute_capability", cc)
        arch = m.gpu_arch.get(info.arch)
        if arch is not None and len(arch.capabilities) == 2:
            low, high = (Version(c) for c in arch.capabilities)
            if not low <= Version(cc) <= high:
                fitting = [name for name, a in m.gpu_arch.items() if len(a.capabilities) == 2
                           and Version(a.capabilities[0]) <= Version(cc) <= Version(a.capabilities[1])]
                yield (path + ("arch",), f"compute capability {cc} is not {arch.name} ({arch.capabilities[0]} to"
                                         f" {arch.capabilities[1]}); expected arch = {human_list(fitting, 'or')}")
        if info.first_cuda and info.dropped_in and Version(info.dropped_in) <= Version(info.first_cuda):
            yield (path + ("dropped_in",),
                   f"CUDA {info.dropped_in} is not after first_cuda {info.first_cuda}; a toolkit drops what an older one added")
        for i, gpu in enumerate(info.gpus):
            if gpu in owner:
                yield path + ("gpus", i), f"{gpu!r} is already listed under compute capability {owner[gpu]}; keep one"
            owner.setdefault(gpu, cc)
    for name, arch in m.gpu_arch.items():
        if arch.capabilities and (len(arch.capabilities) != 2 or Version(arch.capabilities[0]) > Version(arch.capabilities[1])):
            yield ("gpu_arch", name, "capabilities"), "expected [lowest, highest], such as [\"8.0\", \"8.7\"]"


def _check_first_cuda(m: Matrix) -> Iterator[tuple[Path, str]]:
    """An engine's own cuda_archs names what its kernels are built for: a first_cuda after every CUDA of
    such an engine would leave the capability out of all its targets silently. (The framework's
    list looks ahead: an older engine leaves out what its toolkit cannot build yet.)"""
    for cc, info in m.compute_capability.items():
        if info.first_cuda is None:
            continue
        left_out = [f"release {name}'s {framework} (CUDA {human_list(sorted(engine.cuda, key=Version))})"
                    for name, release in m.release.items() for framework, engine in release.engines.items()
                    if engine.cuda and cc in (engine.cuda_archs or ())
                    and all(Version(cuda) < Version(info.first_cuda) for cuda in engine.cuda)]
        if left_out:
            more = f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
            yield ("compute_capability", cc, "first_cuda"), (
                f"CUDA {info.first_cuda} is after every CUDA of {left_out[0]}{more}, whose cuda_archs list {cc}: it"
                f" would be left out of their images; correct first_cuda, or those cuda_archs")


def _check_hardware(m: Matrix) -> Iterator[tuple[Path, str]]:
    for cc, info in m.compute_capability.items():
        if info.arch not in m.gpu_arch:
            yield _undefined(("compute_capability", cc, "arch"), "GPU architecture", info.arch, m.gpu_arch)
        for key in ("first_cuda", "dropped_in"):
            value = getattr(info, key)
            if value is not None and value not in m.cuda and Version(value) >= Version("12.0"):
                yield _undefined(("compute_capability", cc, key), "CUDA", value, m.cuda)
    for name, fw in m.framework.items():
        if fw.package is None and not fw.cpu:
            yield ("framework", name, "cpu"), "a framework without a package has no engine to use a GPU; set cpu = true"
        for i, cc in enumerate(fw.cuda_archs):
            if cc not in m.compute_capability:
                yield _undefined(("framework", name, "cuda_archs", i), "compute capability", cc, m.compute_capability)
    aliases: dict[str, str] = {}
    for name, arch in m.cpu_arch.items():
        for alias in (name, *arch.aliases):
            if alias in aliases and aliases[alias] != name:
                yield ("cpu_arch", name, "aliases"), f"{alias!r} already names CPU architecture {aliases[alias]!r}"
            aliases[alias] = name


def _check_defaults(m: Matrix) -> Iterator[tuple[Path, str]]:
    for field in ("status", "python", "python_default", "image_os", "image_arch", "wheel_arch",
                  "cpu_arch", "gpu_arch", "platforms"):
        if getattr(m.defaults, field) is None:
            yield ("defaults", field), "missing required key; every release falls back to it"
    if m.defaults.gpu_arch is not None and not m.defaults.gpu_arch:
        yield ("defaults", "gpu_arch"), "lists no GPU architecture, so no release runs on a GPU; name at least one"
    python, default = m.defaults.python, m.defaults.python_default
    if python is not None and default is not None and default not in python:
        yield ("defaults", "python_default"), f"{default!r} is not among python = {list(python)}"
    yield from _check_fields(m, ("defaults",), m.defaults)


def _check_fields(m: Matrix, path: Path, fields: ReleaseFields) -> Iterator[tuple[Path, str]]:
    """References in the inheritable fields, checked where they are written ([defaults] or a release)."""
    if fields.image_os is not None and fields.image_os not in m.os:
        yield _undefined(path + ("image_os",), "operating system", fields.image_os, m.os)
    for field in ("image_arch", "wheel_arch"):
        for i, arch in enumerate(getattr(fields, field) or ()):
            if arch not in m.cpu_arch:
                yield _undefined(path + (field, i), "CPU architecture", arch, m.cpu_arch)
    for arch in fields.cpu_arch or {}:
        if arch not in m.cpu_arch:
            yield _undefined(path + ("cpu_arch", arch), "CPU architecture", arch, m.cpu_arch)
    for arch in fields.gpu_arch or {}:
        if arch not in m.gpu_arch:
            yield _undefined(path + ("gpu_arch", arch), "GPU architecture", arch, m.gpu_arch)
    for i, platform in enumerate(fields.platforms or ()):
        if platform.os not in m.os:
            yield _undefined(path + ("platforms", i, "os"), "operating system", platform.os, m.os)
        if platform.arch not in m.cpu_arch:
            yield _undefined(path + ("platforms", i, "arch"), "CPU architecture", platform.arch, m.cpu_arch)


def _check_release_names(m: Matrix) -> Iterator[tuple[Path, str]]:
    seen: dict[Version, str] = {}
    for name in m.release:
        if name == "main":
            continue
        version = Version(name)
        if version in seen:
            yield ("release", name), f"duplicate release: {name!r} is the same version as {seen[version]!r}; keep one"
        seen[version] = name


def _check_release(m: Matrix, name: str, release: Release) -> Iterator[tuple[Path, str]]:
    path: Path = ("release", name)
    status = _effective(m, release, "status")
    if name == "main" and status != "development":
        yield path + ("status",), "the release 'main' must have status \"development\""
    if (release.patch_of is None) != (status != "patch"):
        yield path + ("patch_of",), "a release has patch_of exactly when its status is \"patch\""
    if release.patch_of is not None:
        base = m.release.get(release.patch_of)
        if base is None:
            yield _undefined(path + ("patch_of",), "release", release.patch_of, m.release)
        elif base.patch_of is not None:
            yield path + ("patch_of",), f"{release.patch_of!r} is itself a patch release; name its base release"

    pythons = _effective(m, release, "python") or ()
    python_default = _effective(m, release, "python_default")
    if (release.python or release.python_default) and python_default not in pythons:
        yield path + ("python_default",), f"{python_default!r} is not among python = {list(pythons)}"
    if release.requires_python:
        spec = SpecifierSet(release.requires_python)
        for i, python in enumerate(pythons):
            if Version(python) not in spec:
                yield path + ("python", i), f"Python {python} is outside requires_python {release.requires_python!r}"
    yield from _check_fields(m, path, release)
    for i, artifact in enumerate(release.artifacts or ()):
        if artifact not in m.artifact:
            yield _undefined(path + ("artifacts", i), "artifact", artifact, m.artifact)
    for framework, engine in release.engines.items():
        yield from _check_engine(m, path + ("engines", framework), release, framework, engine)


def _check_engine(m: Matrix, path: Path, release: Release, framework: str,
                  engine: EngineEntry) -> Iterator[tuple[Path, str]]:
    if framework not in m.framework:
        yield _undefined(path, "framework", framework, m.framework)
        return
    if m.framework[framework].package is None:
        set_here = [key for key in ("version", "pin", "extras", "pins", "cuda", "base_image") if getattr(engine, key)]
        if set_here:
            yield path, f"{framework} installs no engine, so it takes none of: {', '.join(set_here)}"
        return
    if engine.version is None:
        yield path + ("version",), "missing required key; expected the engine's PEP 440 version"
        return
    if engine.pin is not None and Version(engine.pin).public != Version(engine.version).public:
        yield path + ("pin",), f"pin {engine.pin!r} is not a build of version {engine.version!r}"
    if isinstance(engine.base_image, dict):
        for arch in engine.base_image:
            if arch not in m.cpu_arch:
                yield _undefined(path + ("base_image", arch), "CPU architecture", arch, m.cpu_arch)
        missing = [a for a in _effective(m, release, "image_arch") or () if a not in engine.base_image]
        if missing:
            yield path + ("base_image",), f"no base image for {', '.join(missing)}; add it to this table"
    if release.patch_of is None:
        yield from _check_engine_cuda(m, path, engine.cuda, engine.base_image)
        yield from _check_engine_archs(m, path, release, framework, engine)
        yield from _check_engine_nixl(m, path, release, framework, engine)
    else:
        yield from _check_patch_engine(m, path, release.patch_of, framework, engine)


def _check_engine_cuda(m: Matrix, path: Path, cuda_versions: Iterable[str],
                       base_image: str | dict[str, str] | None) -> Iterator[tuple[Path, str]]:
    for cuda in cuda_versions:
        if cuda not in m.cuda:
            yield _undefined(path + ("cuda", cuda), "CUDA toolkit", cuda, m.cuda)
        elif base_image is None and m.cuda[cuda].base_image is None:
            yield (path + ("cuda", cuda),
                   f"no base image for CUDA {cuda}: set base_image in [cuda.\"{cuda}\"] or in this engine")
        elif m.cuda[cuda].runtime_image is None and m.cuda[cuda].base_image is None:
            yield (path + ("cuda", cuda), f"no runtime image for CUDA {cuda}: set runtime_image in [cuda.\"{cuda}\"]")


def _check_engine_archs(m: Matrix, path: Path, release: Release, framework: str,
                        engine: EngineEntry) -> Iterator[tuple[Path, str]]:
    """A released engine ships some CUDA (or runs on the CPU), and no capability it is built for was
    dropped by all of its toolkits (a target leaves out what its own toolkit cannot build)."""
    if not engine.cuda:
        if _effective(m, release, "status") == "released" and not m.framework[framework].cpu:
            yield path + ("cuda",), (f"{framework} ships no CUDA toolkit, so nothing of it can be built; add one,"
                                     f" such as cuda = {{ \"13.0\" = \"supported\" }}")
        return
    source = "its cuda_archs" if engine.cuda_archs is not None else f"framework.{framework}.cuda_archs"
    for cc in engine_archs(m, framework, engine):
        info = m.compute_capability.get(cc)
        dropped_in = info.dropped_in if info else None
        if info and info.first_cuda and dropped_in and Version(dropped_in) <= Version(info.first_cuda):
            continue  # reported at compute_capability
        if dropped_in and all(Version(cuda) >= Version(dropped_in) for cuda in engine.cuda):
            yield path + ("cuda_archs",), (
                f"compute capability {cc} (in {source}) cannot be built with CUDA"
                f" {human_list(sorted(engine.cuda, key=Version))}; set cuda_archs for this engine without {cc}")


# NIXL without an extra is its CUDA 12 build: 0.6.x and 0.7.x are one CUDA 12 wheel, and from 0.8.0
# `nixl` is a meta-package whose plain install pulls nixl-cu12 (PyPI's METADATA; see [cuda_major]).
PLAIN_NIXL_CUDA_MAJOR = "12"


def _check_engine_nixl(m: Matrix, path: Path, release: Release, framework: str,
                       engine: EngineEntry) -> Iterator[tuple[Path, str]]:
    """Each CUDA major of the engine gets NIXL's build for it: through the extra cu<major>, or the plain
    wheel for CUDA 12. An older NIXL on CUDA 13 would install its CUDA 12 wheel."""
    nixl = engine_nixl(release, engine) if m.framework[framework].nixl else None
    if nixl is None:
        return
    for cuda in sorted(engine.cuda, key=Version):
        major = cuda.split(".")[0]
        if major != PLAIN_NIXL_CUDA_MAJOR and not nixl_extras(m, nixl, cuda):
            since = m.cuda_major[major].nixl_extra_since if major in m.cuda_major else None
            where = path + ("nixl",) if engine.nixl else path[:2] + ("nixl",)
            yield where, (f"NIXL {nixl} has no build for CUDA {major} ({framework} ships CUDA {cuda}): the image would"
                          f" get its CUDA {PLAIN_NIXL_CUDA_MAJOR} wheel; "
                          + (f"use NIXL {since} or newer (nixl[cu{major}])" if since else
                             f"set nixl_extra_since in [cuda_major.\"{major}\"]"))
            return


def _check_patch_engine(m: Matrix, path: Path, base_name: str, framework: str,
                        engine: EngineEntry) -> Iterator[tuple[Path, str]]:
    """A patch release takes its base's CUDA support; the base reports its own CUDA problems."""
    if engine.cuda:
        yield path + ("cuda",), f"a patch release has the CUDA support of {base_name}; remove cuda here"
    base = m.release.get(base_name)
    if base is None:
        return  # reported at patch_of
    base_engine = base.engines.get(framework)
    if base_engine is None:
        yield path, f"{framework} is not in {base_name}, so this patch release has no CUDA for it"
    elif engine.base_image is None and base_engine.base_image is not None:
        yield from _check_engine_cuda(m, path, base_engine.cuda, None)


def _check_caveats(m: Matrix) -> Iterator[tuple[Path, str]]:
    known: dict[str, Iterable[str]] = {
        "framework": m.framework, "os": m.os, "arch": m.cpu_arch, "cuda": m.cuda, "feature": FEATURES,
    }
    ids: set[str] = set()
    for i, caveat in enumerate(m.caveat):
        path: Path = ("caveat", i)
        if caveat.id in ids:
            yield path + ("id",), f"duplicate caveat id {caveat.id!r}"
        ids.add(caveat.id)
        for j, release in enumerate(caveat.releases):
            if release not in m.release:
                yield _undefined(path + ("releases", j), "release", release, m.release)
        for part in ("when", "unless"):
            for dimension, value in getattr(caveat, part).items():
                for item in condition_values(value):
                    where = path + (part, dimension)
                    if dimension == "python":
                        if (expected := checks.python_version(item)) is not None:
                            yield where, f"expected {expected}, got {item!r}"
                    elif item not in known[dimension]:
                        yield _undefined(where, dimension, item, known[dimension])
        if not caveat.when:
            yield path + ("when",), "a caveat needs at least one condition in `when`"


def _check_artifacts(m: Matrix) -> Iterator[tuple[Path, str]]:
    for name, artifact in m.artifact.items():
        path: Path = ("artifact", name)
        if artifact.framework is not None and artifact.framework not in m.framework:
            yield _undefined(path + ("framework",), "framework", artifact.framework, m.framework)
        if artifact.cuda_major is not None and str(artifact.cuda_major) not in m.cuda_major:
            yield _undefined(path + ("cuda_major",), "CUDA major", str(artifact.cuda_major), m.cuda_major)
        if artifact.kind == "image" and artifact.image is None:
            yield path + ("image",), "an image artifact needs its image repository, such as \"nvcr.io/nvidia/ai-dynamo/vllm-runtime\""
        if artifact.kind != "image" and (artifact.framework or artifact.cuda_major or artifact.image):
            yield path, "framework, cuda_major and image belong to image artifacts only"


def _check_forward_compat(m: Matrix) -> Iterator[tuple[Path, str]]:
    from dynamo.nvidia_require import NVML_BRANDS

    if m.forward_compat is None:
        return
    for i, brand in enumerate(m.forward_compat.brands):
        if brand not in NVML_BRANDS:
            yield _undefined(("forward_compat", "brands", i), "brand", brand, NVML_BRANDS)
    for cuda, branches in m.forward_compat.branches.items():
        if cuda not in m.cuda:
            yield _undefined(("forward_compat", "branches", cuda), "CUDA", cuda, m.cuda)
            continue
        floor = Version(m.cuda[cuda].driver_linux).major
        for i, branch in enumerate(branches):
            if not 100 <= branch < floor:
                yield (("forward_compat", "branches", cuda, i),
                       f"branch {branch} is not a driver branch below CUDA {cuda}'s floor R{floor}")


def _check_gpu_table(m: Matrix) -> Iterator[tuple[Path, str]]:
    """[gpu]: NVML's brands only, each name once."""
    from dynamo.nvidia_require import NVML_BRANDS

    seen: dict[str, str] = {}
    for cc, brands in m.gpu.items():
        for brand, names in brands.items():
            if brand not in NVML_BRANDS:
                yield _undefined(("gpu", cc, brand), "brand", brand, NVML_BRANDS)
            for i, name in enumerate(names):
                if name.casefold() in seen:
                    yield ("gpu", cc, brand, i), f"{name!r} is listed twice (also under {seen[name.casefold()]})"
                seen[name.casefold()] = cc


def _fields(value: object, path: Path, field: str = "") -> Iterator[tuple[Path, str, object]]:
    """Every value of the matrix with its key path and the name of the field that holds it."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _fields(getattr(value, f.name), path + (f.name,), f.name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _fields(item, path + (key,), field)
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _fields(item, path + (i,), field)
    else:
        yield path, field, value


def _check_urls(m: Matrix) -> Iterator[tuple[Path, str]]:
    """Every URL of the matrix (a field named *url, *indexes or link) is one: https; a package index may
    also be a mirror (http on a local network, file:). Nothing a shell would read: templates write them
    into RUN lines. An index's "{version}" stands for the engine's version."""
    for path, field, value in _fields(m, ()):
        if isinstance(value, str) and field.endswith(("url", "indexes", "link")):
            index = field.endswith(("index_url", "indexes"))
            schemes = ("https", "http", "file") if index else ("https",)
            if (expected := checks.url(value.replace("{version}", "0.0") if index else value, schemes)) is not None:
                yield path, f"expected {expected}, got {value!r}"


# Dynamo's first release, 0.1.0, was published in March 2025 (GTC 2025); no release is older.
FIRST_PUBLISHED = "2025-03"


def _check_history(m: Matrix) -> Iterator[tuple[Path, str]]:
    yield from _check_published(m)
    yield from _check_engine_history(m)
    yield from _check_caveat_cells(m)
    published = {a for name in m.release for a in release_artifacts(m, name)}
    for name in m.artifact:
        if name not in published:
            yield ("artifact", name), (f"no release publishes {name!r}: list it in a release's artifacts, or check its"
                                       f" since, dropped_in, framework and cuda_major")


def _check_published(m: Matrix) -> Iterator[tuple[Path, str]]:
    """A published date between Dynamo's first release and today."""
    today = datetime.date.today().isoformat()
    for name, release in m.release.items():
        date = release.published
        if date is not None and not FIRST_PUBLISHED <= date <= today:
            yield ("release", name, "published"), (f"{date!r} is not between Dynamo's first release ({FIRST_PUBLISHED})"
                                                   f" and today ({today}); a release not yet out has no published date")


def _check_engine_history(m: Matrix) -> Iterator[tuple[Path, str]]:
    """A framework's engine never goes back to an older version in a newer release (patch releases
    follow their base)."""
    released = sorted((name for name, release in m.release.items() if name != "main" and release.patch_of is None
                       and _effective(m, release, "status") == "released"), key=Version)
    last: dict[str, tuple[str, Version]] = {}
    for name in released:
        for framework, engine in m.release[name].engines.items():
            if engine.version is None:
                continue
            before = last.get(framework)
            if before is not None and Version(engine.version) < before[1]:
                yield ("release", name, "engines", framework, "version"), (
                    f"{framework} {engine.version} is older than {before[1]} in release {before[0]}; a newer release"
                    f" never goes back to an older engine")
            last[framework] = (name, Version(engine.version))


def _check_caveat_cells(m: Matrix) -> Iterator[tuple[Path, str]]:
    """A caveat limited to releases names cells they ship: a framework in each, with a CUDA it ships."""
    for i, caveat in enumerate(m.caveat):
        frameworks = condition_values(caveat.when.get("framework", ()))
        cudas = condition_values(caveat.when.get("cuda", ()))
        for j, name in enumerate(caveat.releases):
            release = m.release.get(name)
            if release is None:
                continue  # reported at the caveat's releases
            if not reaches(name, caveat.since):
                yield ("caveat", i, "releases", j), f"release {name} is before the caveat's since ({caveat.since})"
                continue
            cells: set[tuple[str, str | None]] = {
                (fw, cuda) for fw, engine in _shipped_engines(m, release).items() for cuda in engine.cuda}
            cells |= {(fw, None) for fw in _shipped_engines(m, release)}
            if not any((not frameworks or fw in frameworks) and (not cudas or cuda in cudas) for fw, cuda in cells):
                wanted = " on ".join(filter(None, [human_list(list(frameworks), "or") if frameworks else "",
                                                   f"CUDA {human_list(list(cudas), 'or')}" if cudas else ""]))
                yield ("caveat", i, "releases", j), f"release {name} ships no {wanted}; the caveat cannot apply to it"


def _shipped_engines(m: Matrix, release: Release) -> dict[str, EngineEntry]:
    """A release's engines, with a patch release's CUDA support taken from its base."""
    base = m.release.get(release.patch_of) if release.patch_of else None
    if base is None:
        return release.engines
    return {fw: base.engines.get(fw, engine) for fw, engine in release.engines.items()}
