"""Plain-text views of the matrix for people: the target table and one release in full."""

from __future__ import annotations

from collections.abc import Sequence

from packaging.version import Version

from dynamo.matrix.model import EngineEntry, Matrix, Release
from dynamo.matrix.query import (
    CPU,
    Target,
    arch_name,
    engine_devices,
    engine_nixl,
    engine_requirements,
    release_artifacts,
    release_caveats,
    release_label,
)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = []
    for row in (headers, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def targets_table(targets: Sequence[Target]) -> str:
    rows = [(t.release, t.framework, t.engine_version or "-", t.device, t.arch, t.python, t.nixl or "-",
             t.driver_linux or "-", t.status) for t in targets]
    headers = ("RELEASE", "FRAMEWORK", "ENGINE", "DEVICE", "ARCH", "PYTHON", "NIXL", "MIN DRIVER", "STATUS")
    return table(headers, rows)


def _status(value: str) -> str:
    return value.capitalize()


def cuda_cell(matrix: Matrix, framework: str, engine: EngineEntry) -> str:
    """E.g. "CUDA 12.9, CUDA 13.0 (Experimental)", as the support matrix prints it."""
    parts = []
    for device in sorted(engine_devices(matrix, framework, engine),
                         key=lambda d: Version("999") if d == CPU else Version(d)):
        if device == CPU:
            parts.append("CPU")
        else:
            parts.append(f"CUDA {device}" + (" (Experimental)" if engine.cuda[device] == "experimental" else ""))
    return ", ".join(parts) or "-"


def upstream_notes(matrix: Matrix, name: str, engines: dict[str, EngineEntry]) -> list[str]:
    """Where upstream's published value differs from ours (the seeds win for their own rows)."""
    return [f"{matrix.framework[fw].name} {engine.version} here (the seeds' value);"
            f" upstream's release data says {engine.upstream_version}"
            for fw, engine in engines.items() if engine.upstream_version]


def nixl_rows(matrix: Matrix, name: str, engines: dict[str, EngineEntry]) -> list[tuple[str, str, str, str]]:
    """One NIXL row when every engine carries the same NIXL, else one per engine ("unknown" where
    the matrix does not know it)."""
    release = matrix.release[name]
    pins = {fw: engine_nixl(release, engine) for fw, engine in engines.items() if matrix.framework[fw].nixl}
    if not pins:
        return []
    if len(set(pins.values())) == 1 and (only := next(iter(pins.values()))) is not None:
        return [("NIXL", only, "", f"nixl=={only}")]
    return [(f"NIXL ({matrix.framework[fw].name})", version or "unknown", "", f"nixl=={version}" if version else "")
            for fw, version in pins.items()]


def release_report(matrix: Matrix, name: str, framework: str | None = None) -> str:
    """`matrix show`: everything the matrix says about a release, one section after another."""
    release = matrix.release[name]
    engines = {fw: e for fw, e in release.engines.items() if framework in (None, fw)}
    sections = (_header(matrix, name, engines), _dependencies(matrix, name, engines), _cuda_section(matrix, name, engines),
                _python_and_hardware(matrix, release), _platforms(matrix, release),
                _caveats(matrix, name, framework), _artifacts(matrix, name))
    return "\n".join(line for section in sections for line in section) + "\n"


def _header(matrix: Matrix, name: str, engines: dict[str, EngineEntry]) -> list[str]:
    release = matrix.release[name]
    out = [f"Dynamo {release_label(matrix, name)} -- {release.status}"
           + ("" if release.github_release else " (no GitHub release)")]
    if release.published or release.wheel:
        out.append("; ".join(filter(None, [release.published and f"Published {release.published}",
                                           release.wheel and f"wheel ai-dynamo=={release.wheel}"])) + ".")
    if release.note:
        out.append(release.note)
    out += [f"Upstream disagrees: {line}" for line in upstream_notes(matrix, name, engines)]
    if release.patch_of:
        out.append(f"Patch of {release.patch_of}: same CUDA support as its base version.")
    return out


def _dependencies(matrix: Matrix, name: str, engines: dict[str, EngineEntry]) -> list[str]:
    release = matrix.release[name]
    rows = []
    for fw, engine in engines.items():
        framework_info = matrix.framework[fw]
        if framework_info.package is None:
            rows.append((framework_info.name, "-", cuda_cell(matrix, fw, engine), "(no engine)"))
            continue
        version = f"{engine.version}{' (planned)' if engine.planned else ''}"
        install = " ".join(engine_requirements(framework_info, engine))
        rows.append((framework_info.name, version, cuda_cell(matrix, fw, engine), install))
    rows += nixl_rows(matrix, name, engines)
    if release.base_container:
        rows.append(("Base Container", release.base_container, "", ""))
    return ["", "Backend dependencies", table(("Dependency", "Version", "CUDA", "Install"), rows, "  "),
            *(f"  * {engine.note}" for engine in engines.values() if engine.planned and engine.note)]


def _cuda_section(matrix: Matrix, name: str, engines: dict[str, EngineEntry]) -> list[str]:
    rows = []
    for fw, engine in engines.items():
        for cuda in sorted(engine.cuda, key=Version):
            info = matrix.cuda[cuda]
            rows.append((matrix.framework[fw].name, cuda, info.published_linux or "-",
                         info.published_windows or "-", info.driver_linux,
                         "Experimental" if engine.cuda[cuda] == "experimental" else ""))
    if not rows:
        return ["", "CUDA and driver requirements", f"  No CUDA toolkit is listed for {release_label(matrix, name)}."]
    return ["", "CUDA and driver requirements",
            table(("Backend", "CUDA Toolkit", "Min Driver (Linux)", "Min Driver (Windows)", "Precise Linux floor", "Notes"),
                  rows, "  ")]


def _python_and_hardware(matrix: Matrix, release: Release) -> list[str]:
    """Python, the CPU architectures (and the host minimum) and the GPU architectures."""
    out = ["", f"Python: {', '.join(release.python)} (default {release.python_default})"
           + (f"; requires-python {release.requires_python}" if release.requires_python else "")]
    out += ["", "CPU architecture",
            table(("Architecture", "Status"), [(arch_name(a), _status(s)) for a, s in release.cpu_arch.items()], "  ")]
    out.append(f"  Container images: {', '.join(map(arch_name, release.image_arch))};"
               f" wheels: {', '.join(map(arch_name, release.wheel_arch))}")
    if release.min_host:
        out.append(f"  Minimum host: {release.min_host.ram_gib} GB RAM, {release.min_host.cpu_cores} CPU cores")
    gpu_rows = [(matrix.gpu_arch[arch].name, _status(status),
                 ", ".join(cc for cc, info in matrix.compute_capability.items() if info.arch == arch))
                for arch, status in release.gpu_arch.items()]
    return out + ["", "GPU architecture", table(("GPU Architecture", "Status", "Compute capability"), gpu_rows, "  ")]


def _platforms(matrix: Matrix, release: Release) -> list[str]:
    rows = [(matrix.os[row.os].name, matrix.os[row.os].version, arch_name(row.arch), _status(row.status),
             matrix.os[row.os].cloud or "") for row in release.platforms]
    return ["", "Platforms", table(("Operating System", "Version", "Architecture", "Status", "Cloud"), rows, "  ")]


def _caveats(matrix: Matrix, name: str, framework: str | None) -> list[str]:
    caveats = release_caveats(matrix, name, framework)
    if not caveats:
        return []
    out = ["", "Caveats"]
    for caveat in caveats:
        out.append(f"  ! {caveat.message}.")
        if caveat.fix:
            out.append(f"    Fix: {caveat.fix}")
    return out


def _artifacts(matrix: Matrix, name: str) -> list[str]:
    artifacts = release_artifacts(matrix, name)
    if not artifacts:
        return ["", "Published artifacts", "  none"]
    rows = [(matrix.artifact[a].kind, a, matrix.artifact[a].url) for a in artifacts]
    return ["", "Published artifacts", table(("Kind", "Name", "Where"), rows, "  ")]

