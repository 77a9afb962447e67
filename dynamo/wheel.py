"""Our wheel's metadata from the matrix: version, Python requirement, classifiers, engine extras."""

from __future__ import annotations

from packaging.version import Version

from dynamo.matrix import Matrix
from dynamo.matrix.query import (
    engine_nixl,
    engine_requirements,
    matching_caveats,
    nixl_extras,
    nixl_requirement,
    releases_offering,
)


def requires_python(matrix: Matrix, release: str) -> str:
    """The release's own specifier, else from its oldest to just past its newest Python."""
    rel = matrix.release[release]
    if rel.requires_python:
        return rel.requires_python
    versions = sorted(rel.python, key=Version)
    newest = Version(versions[-1])
    return f">={versions[0]},<{newest.major}.{newest.minor + 1}"


def classifiers(matrix: Matrix, release: str) -> list[str]:
    rel = matrix.release[release]
    found = ["Operating System :: POSIX :: Linux", "Programming Language :: Python :: 3"]
    found += [f"Programming Language :: Python :: {p}" for p in sorted(rel.python, key=Version)]
    return found


def _marker(matrix: Matrix, release: str, framework: str) -> str:
    """Pythons a caveat rules out for this framework become an environment marker."""
    excluded = [python for python in matrix.release[release].python
                if any(c.effect == "unsupported" and "python" in c.when and set(c.when) <= {"framework", "python"}
                       for c in matching_caveats(matrix, release, {"framework": framework, "python": python}))]
    return " and ".join(f"python_version != '{python}'" for python in excluded)


def extras(matrix: Matrix, release: str) -> dict[str, list[str]]:
    """One extra per engine: the engine and its NIXL at the release's pins. For the latest release,
    an engine it does not ship comes from the newest release that does (llama.cpp: our own pin)."""
    rel = matrix.release[release]
    shipped = [(framework, release) for framework in rel.engines]
    if release == matrix.latest:
        shipped += [(framework, offering[0]) for framework in matrix.framework if framework not in rel.engines
                    and (offering := [r for r in releases_offering(matrix, framework) if r != "main"])]
    found: dict[str, list[str]] = {}
    for framework, source in shipped:
        fw, engine = matrix.framework[framework], matrix.release[source].engines[framework]
        pins = engine_requirements(fw, engine)
        if not pins:
            continue  # no engine: no extra
        nixl = engine_nixl(matrix.release[source], engine)
        if fw.nixl and nixl:  # one extra per engine: NIXL for its oldest CUDA, as upstream's wheels pin it
            oldest = min(engine.cuda, key=Version, default=None)
            pins.append(nixl_requirement(nixl, nixl_extras(matrix, nixl, oldest)))
        marker = _marker(matrix, source, framework)
        found[framework] = [f"{pin}; {marker}" if marker else pin for pin in pins]
    return found
