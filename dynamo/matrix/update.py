"""Keep the matrix current: `matrix import` writes a new release from a released ai-dynamo wheel's
metadata; `matrix bump` edits the pins of an existing release. Both edit the file with tomlkit,
keeping every comment and the layout, and refuse a result that does not validate.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path
from typing import Any

import tomlkit
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from tomlkit.items import InlineTable, Item

from dynamo.matrix.model import EngineEntry, Matrix
from dynamo.matrix.query import nixl_extra

DISTRIBUTION = "ai-dynamo"


class UpdateError(Exception):
    """The matrix cannot be updated as asked; str() is one line naming the fix."""


# -- reading a released wheel ------------------------------------------------------------------------

def fetch_metadata(version: str, index_url: str | None = None, find_links: str | None = None) -> Message:
    """METADATA of ai-dynamo==version, downloaded by pip from the index (or a folder of wheels)."""
    source = ["--index-url", index_url] if index_url else []
    if find_links:
        source += ["--find-links", find_links] + ([] if index_url else ["--no-index"])
    with tempfile.TemporaryDirectory() as folder:
        # a source given on the command line is the only one pip reads (--isolated: no pip.conf, no PIP_*)
        isolated = ["--isolated"] if source else []
        command = [sys.executable, "-m", "pip", *isolated, "download", "--quiet", "--no-deps",
                   "--only-binary=:all:", "--dest", folder, *source, f"{DISTRIBUTION}=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(folder).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            reason = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise UpdateError(f"cannot download {DISTRIBUTION}=={version} ({reason.removeprefix('ERROR: ')});"
                              f" check the version, or pass --index-url / --find-links")
        with zipfile.ZipFile(wheels[0]) as archive:
            name = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
            if name is None:
                raise UpdateError(f"{wheels[0].name} has no .dist-info/METADATA; it is not a wheel")
            return Parser().parsestr(archive.read(name).decode("utf-8", errors="replace"))


def extra_pins(metadata: Message) -> dict[str, list[Requirement]]:
    """Requires-Dist grouped by the extra that asks for them."""
    found: dict[str, list[Requirement]] = {}
    for line in metadata.get_all("Requires-Dist") or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None:
            continue
        for extra in metadata.get_all("Provides-Extra") or []:
            if requirement.marker.evaluate({"extra": extra}) and not requirement.marker.evaluate({"extra": ""}):
                found.setdefault(canonicalize_name(extra), []).append(requirement)
    return found


def _exact(requirement: Requirement) -> str | None:
    specs = list(requirement.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


# -- a new release -------------------------------------------------------------------------------------

def release_from_metadata(matrix: Matrix, metadata: Message, *, name: str | None = None,
                          cuda: dict[str, list[str]] | None = None, nixl: dict[str, str] | None = None,
                          published: str | None = None) -> dict[str, Any]:
    """The new release's table: each engine's pin and extras and its NIXL from the wheel's extras;
    its CUDA from --cuda, else the newest release's for that engine when the NIXL pin's cuNN
    extra agrees with it (nixl[cu13] means CUDA 13); the rest carried over from that release."""
    version = metadata["Version"]
    name = name or version
    cuda, nixl = cuda or {}, nixl or {}
    pins = extra_pins(metadata)
    newest = next(r for r in matrix.release if r != "main")
    previous = matrix.release[newest]
    release: dict[str, Any] = {}
    if published:
        release["published"] = published
    if version != name:
        release["wheel"] = version
    engines: dict[str, dict[str, Any]] = {}
    for framework, fw in matrix.framework.items():
        before = previous.engines.get(framework)
        if fw.package is None:
            if before is not None:
                engines[framework] = {}
            continue
        entry = _engine_entry(matrix, framework, fw.package, pins.get(canonicalize_name(framework), []), before,
                              name, cuda.get(framework), nixl.get(framework))
        if entry is not None:
            engines[framework] = entry
    release["engines"] = engines
    return release


def _engine_entry(matrix: Matrix, framework: str, package: str, requirements: list[Requirement],
                  before: EngineEntry | None, name: str, cuda: list[str] | None,
                  nixl: str | None) -> dict[str, Any] | None:
    """An engine's table in the new release from the wheel's pins for its extra (None: the wheel does not
    pin the engine, so the release does not ship it); cuda and nixl as --cuda and --nixl give them."""
    engine_pin = next((r for r in requirements if canonicalize_name(r.name) == canonicalize_name(package)), None)
    if engine_pin is None or _exact(engine_pin) is None:
        return None
    engine: dict[str, Any] = {"version": _exact(engine_pin)}
    if engine_pin.extras:
        engine["extras"] = sorted(engine_pin.extras)
    nixl_pin = next((r for r in requirements if canonicalize_name(r.name) == "nixl"), None)
    nixl_version = nixl or (_exact(nixl_pin) if nixl_pin else None)
    if nixl_version:
        engine["nixl"] = nixl_version
    engine["cuda"] = {v: "supported" for v in cuda or _inferred_cuda(matrix, framework, nixl_pin, before, name)}
    if before is not None:
        engine.update({key: getattr(before, key) for key in ("cuda_archs", "base_image")
                       if getattr(before, key) and cuda is None})
    return engine


def _inferred_cuda(matrix: Matrix, framework: str, nixl_pin: Requirement | None, before: EngineEntry | None,
                   name: str) -> list[str]:
    """The newest release's CUDA for the engine, when NIXL's extra (nixl[cu13] is CUDA 13, where the
    matrix's [cuda_major] has a nixl_extra_since) names no other major."""
    extras = set(nixl_pin.extras) if nixl_pin else set()
    majors = {major for major, info in matrix.cuda_major.items() if info.nixl_extra_since and nixl_extra(major) in extras}
    known = sorted(before.cuda) if before is not None else []
    if known and (not majors or {v.split(".")[0] for v in known} <= majors):
        return known
    hint = f"CUDA {'/'.join(sorted(majors))}" if majors else "its CUDA"
    raise UpdateError(f"cannot tell which toolkit {framework} in {name} ships ({hint}); pass"
                      f" --cuda {framework}=X.Y[,X.Y]")


def import_release(text: str, release: dict[str, Any], name: str) -> str:
    """The matrix text with the new release's tables inserted above the newest release (and the
    comments right above it) and `latest` moved to it when it is newer; everything else untouched.
    Each engine's inline table is written as the file writes them: its keys in the file's order and
    spaced as the newest release spaces them (`{ version = "1.0" }` or `{version="1.0"}`)."""
    document = tomlkit.parse(text)
    if name in document["release"]:
        raise UpdateError(f"release {name!r} is already in the matrix; use `matrix bump` to change it")
    written = _written_engines(document)
    style = _inline_style(written[0] if written else {})
    order = _key_order(engine for engines in written for engine in engines.values())  # the file's key order
    new = tomlkit.document()
    releases = tomlkit.table(is_super_table=True)
    table = tomlkit.table(is_super_table=False)  # its own header even with no keys, as the file writes every release
    for key, value in release.items():
        if key != "engines":
            table.add(key, value)
    engines = tomlkit.table()
    for framework, engine in release["engines"].items():
        engines.add(framework, tomlkit.value(_inline(_ordered(engine, order), style)))
    table.add(tomlkit.nl())  # a blank line above [release."X".engines], as in the file
    table.add("engines", engines)
    releases.add(name, table)
    new.add("release", releases)
    snippet = tomlkit.dumps(new).strip() + "\n\n"
    lines = text.splitlines(keepends=True)
    newest = next((i for i, line in enumerate(lines) if line.startswith("[release.") and not
                   line.startswith("[release.main")), len(lines))
    start = newest
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    document = tomlkit.parse("".join(lines[:start]) + snippet + "".join(lines[start:]))
    if Version(name) > Version(str(document["latest"])):
        document["latest"] = name  # the newest release is the latest
    return tomlkit.dumps(document)


def _written_engines(document: tomlkit.TOMLDocument) -> list[Mapping[str, Any]]:
    """Each release's [engines] table as the file has them, newest first (main left out)."""
    return [table.get("engines", {}) for key, table in document["release"].items() if key != "main"]


@dataclass(frozen=True)
class InlineStyle:
    """How a file spaces its inline tables: inside the braces, and around each key's `=`."""

    pad: str = ""
    equals: str = " = "  # tomlkit's own style, for a file without an inline table to copy


_INLINE_START = re.compile(r"\{(?P<pad>\s*)(?:\"[^\"]*\"|[^\s=]+)(?P<equals>\s*=\s*)")


def _inline_style(engines: Mapping[str, Any]) -> InlineStyle:
    """The style of the first non-empty inline table among a release's engines."""
    for value in engines.values():
        if isinstance(value, InlineTable) and (found := _INLINE_START.match(value.as_string())):
            return InlineStyle(pad=found["pad"], equals=found["equals"])
    return InlineStyle()


def _key_order(tables: Iterable[Mapping[str, Any]]) -> list[str]:
    """The order the file gives the keys of these tables: each table's keys in its order, a key no
    earlier table has placed going right after the key before it."""
    order: list[str] = []
    for table in tables:
        position = -1
        for key in table:
            if key not in order:
                order.insert(position + 1, key)
            position = order.index(key)
    return order


def _ordered(values: Mapping[str, Any], order: list[str]) -> dict[str, Any]:
    """values with their keys in order; keys order lacks go last."""
    return {key: values[key] for key in sorted(values, key=lambda key: order.index(key) if key in order else len(order))}


def _inline(values: Mapping[str, Any], style: InlineStyle) -> str:
    """values as a TOML inline table in style: a tomlkit item as the file writes it, a new dict as a
    nested table in style, any other value as tomlkit writes it."""
    if not values:
        return "{}"
    items = [tomlkit.key(key).as_string() + style.equals + _value(value, style) for key, value in values.items()]
    return "{" + style.pad + ", ".join(items) + style.pad + "}"


def _value(value: object, style: InlineStyle) -> str:
    if isinstance(value, Item):
        return value.as_string()
    return _inline(value, style) if isinstance(value, dict) else tomlkit.item(value).as_string()


# -- changing a release ------------------------------------------------------------------------------

def bump(text: str, release: str, engines: dict[str, str], nixl: dict[str, str] | None = None,
         cuda: dict[str, list[str]] | None = None) -> str:
    """Set engine versions (and NIXL or CUDA) of an existing release, in place."""
    document = tomlkit.parse(text)
    if release not in document["release"]:
        raise UpdateError(f"release {release!r} is not in the matrix; `matrix import {release}` adds it")
    table = document["release"][release].get("engines", {})
    style = _inline_style(table)
    written = [other for engines_of in _written_engines(document) for other in engines_of.values()]
    for framework, changes in _per_engine(engines, nixl or {}, cuda or {}).items():
        if framework not in table:
            raise UpdateError(f"release {release} does not ship {framework!r}; it ships {', '.join(table)}")
        engine = table[framework]
        if not isinstance(engine, InlineTable):  # an [engines.X] table of its own: tomlkit edits it in place
            for key, value in changes.items():
                engine[key] = value
            continue
        # The line written again in the file's style: unchanged values as the file has them, a new key
        # where the file's order puts it (tomlkit would append it, dropping the space before "}").
        order = _key_order([engine, *written])
        values = {key: engine.item(key) for key in engine} | changes
        table[framework] = tomlkit.value(_inline(_ordered(values, order), style))
    return tomlkit.dumps(document)


def _per_engine(engines: dict[str, str], nixl: dict[str, str],
                cuda: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    changes: dict[str, dict[str, Any]] = {}
    for framework, version in engines.items():
        changes.setdefault(framework, {})["version"] = version
    for framework, version in nixl.items():
        changes.setdefault(framework, {})["nixl"] = version
    for framework, versions in cuda.items():
        changes.setdefault(framework, {})["cuda"] = {v: "supported" for v in versions}
    return changes


def pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """["vllm=0.31.0", ...] -> {"vllm": "0.31.0"}; UpdateError on a malformed one."""
    found = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise UpdateError(f"{flag} expects ENGINE=VALUE such as vllm=0.31.0, got {value!r}")
        found[key.strip()] = rest.strip()
    return found

