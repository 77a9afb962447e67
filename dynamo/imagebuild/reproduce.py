"""`build.py verify --reproduce IMAGE`: rebuild an image from the inputs its labels record, from empty
caches, and compare: the same image id, or which files differ and how.

The rebuild takes the recorded commit's files (git archive), not the working tree's, and builds with
buildah, which stamps every file with the commit's time. Images are compared by exporting both to OCI
layouts (the engine's `export_oci`) and reading the config and every layer's tar.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dynamo import images
from dynamo.containers import Buildah, ContainerEngine, ContainerEngineError
from dynamo.imagebuild.image import Progress, build_image
from dynamo.imagebuild.plan import CHECKOUT, BuildPlan, PlanError, make_plan
from dynamo.imagebuild.source import Source, export
from dynamo.matrix import Matrix

OCI = "org.opencontainers.image."
SHOWN = 200  # differences listed; the rest are counted


@dataclass(frozen=True)
class Difference:
    where: str  # "config" or "layer N"
    what: str  # a config key or a file path
    how: str


@dataclass(frozen=True)
class Reproduction:
    image_id: str
    rebuilt_id: str
    differences: tuple[Difference, ...]

    @property
    def identical(self) -> bool:
        return self.image_id == self.rebuilt_id

    def text(self, image: str) -> str:
        if self.identical:
            return f"{image}: reproduced bit for bit: image id {self.image_id}"
        lines = [f"{image}: NOT reproduced: image id {self.image_id}, rebuilt {self.rebuilt_id};"
                 f" {len(self.differences)} differences:"]
        lines += [f"  {d.where}: {d.what}: {d.how}" for d in self.differences[:SHOWN]]
        if len(self.differences) > SHOWN:
            lines.append(f"  ... and {len(self.differences) - SHOWN} more")
        return "\n".join(lines)


def recorded_plan(matrix: Matrix, labels: dict[str, str], architecture: str, context: Path, *,
                  ca_cert: str | None, tag: str) -> BuildPlan:
    """The plan that built an image, from its labels; context holds the recorded commit's files."""

    def label(key: str) -> str:
        return labels.get(images.LABEL_PREFIX + key, "")

    created = labels.get(OCI + "created", "")
    try:
        epoch = int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise PlanError(f"the image's label {OCI}created={created!r} is not a time; it was not built reproducibly"
                        " (build it again with this version of build.py)") from None
    source = Source(revision=labels[OCI + "revision"], epoch=epoch, url=labels.get(OCI + "source", ""))
    stage = "dev" if labels.get(OCI + "title", "").endswith("-dev") else "runtime"
    return make_plan(matrix, framework=label("framework"), cuda=label("device").removeprefix("cuda") or None,
                     release=label("release"), platforms=[f"linux/{architecture}"], python=label("python.version"),
                     stage=stage, tags=[tag], base_image=labels.get(OCI + "base.name") or None, ca_cert=ca_cert,
                     no_cache=True, checkout=context, source=source)


def reproduce(matrix: Matrix, image: str, *, ca_cert: str | None = None, checkout: Path = CHECKOUT,
              progress: Progress | None = None) -> Reproduction:
    """Rebuild `image` (in buildah's store) from its recorded inputs with empty caches; compare."""
    engine = Buildah()
    if not engine.has_image(image):
        raise ContainerEngineError(f"image {image} is not in buildah's image store; build it with --engine buildah, or pull it")
    info = engine.inspect(image)
    labels = info.labels
    revision = labels.get(OCI + "revision", "")
    if not revision:
        raise ContainerEngineError(f"{image} records no commit ({OCI}revision): it was built outside a git checkout or by an"
                          " older build.py, so it cannot be reproduced")
    commit, dirty = images.split_revision(revision)
    if dirty:
        raise ContainerEngineError(f"{image} was built from uncommitted changes to {commit}: it cannot"
                          " be reproduced; build it from a clean checkout")
    rebuilt = f"localhost/dynamo-reproduce:{info.id.removeprefix('sha256:')[:12]}"
    with tempfile.TemporaryDirectory(prefix="dynamo-reproduce-") as tmp:
        context = Path(tmp) / "context"
        try:
            export(checkout, revision, context)
        except ValueError as exc:
            raise ContainerEngineError(str(exc)) from None
        plan = recorded_plan(matrix, labels, info.architecture, context, ca_cert=ca_cert, tag=rebuilt)
        cache_dir = Path(tmp) / "caches"  # buildah's TMPDIR: its RUN --mount=type=cache caches start empty
        cache_dir.mkdir()
        try:
            summary = build_image(plan, Buildah(cache_dir=cache_dir), progress or Progress())
            differences = () if summary.image_id == info.id else tuple(compare(engine, image, rebuilt, Path(tmp)))
        finally:
            engine.remove(rebuilt)
    return Reproduction(image_id=info.id, rebuilt_id=summary.image_id, differences=differences)


# ---------------------------------------------------------------------------------------------
# Comparing two images: config and layers, file by file.
# ---------------------------------------------------------------------------------------------

def compare(engine: ContainerEngine, a: str, b: str, workdir: Path) -> list[Difference]:
    """What differs between images a and b (in the engine's store): config keys, then files per layer."""
    layouts = [engine.export_oci(ref, workdir / f"oci-{name}") for name, ref in (("a", a), ("b", b))]
    (config_a, layers_a), (config_b, layers_b) = (_read_layout(layout) for layout in layouts)
    found = _config_differences(config_a, config_b)
    diff_ids_a, diff_ids_b = config_a["rootfs"]["diff_ids"], config_b["rootfs"]["diff_ids"]
    for index in range(max(len(layers_a), len(layers_b))):
        if index >= len(layers_a) or index >= len(layers_b) or diff_ids_a[index] != diff_ids_b[index]:
            found += layer_differences(f"layer {index + 1}", layers_a[index] if index < len(layers_a) else None,
                                       layers_b[index] if index < len(layers_b) else None)
    return found


def _read_layout(layout: Path) -> tuple[dict[str, Any], list[Path]]:
    """An OCI layout's single image: its config and its layer blobs, in order."""

    def blob(digest: str) -> Path:
        return layout / "blobs" / digest.replace(":", "/")

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    return config, [blob(layer["digest"]) for layer in manifest["layers"]]


def _config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    found = []
    flat_a, flat_b = dict(_flatten(a)), dict(_flatten(b))
    for key in sorted(set(flat_a) | set(flat_b)):
        if key.startswith("rootfs.diff_ids"):
            continue  # the layers, compared file by file below
        if flat_a.get(key) != flat_b.get(key):
            found.append(Difference("config", key, f"{flat_a.get(key, '(missing)')!r} vs {flat_b.get(key, '(missing)')!r}"))
    return found


def _flatten(value: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{prefix}[{index}]")
    else:
        yield prefix, value


@dataclass(frozen=True)
class _Entry:
    kind: str
    mode: int
    owner: str
    mtime: int
    size: int
    content: str  # sha256 of a file, the target of a link


def _entries(blob: Path | None) -> dict[str, _Entry]:
    """Every path in a layer (none for a layer the image does not have)."""
    entries: dict[str, _Entry] = {}
    if blob is None:
        return entries
    with tarfile.open(blob, mode="r:*") as tar:
        for member in tar:
            content = member.linkname
            if member.isfile():
                handle = tar.extractfile(member)
                content = "sha256:" + hashlib.sha256(handle.read() if handle else b"").hexdigest()[:16]
            kind = "file" if member.isfile() else "dir" if member.isdir() else "symlink" if member.issym() else \
                "hardlink" if member.islnk() else "other"
            entries["/" + member.name.removeprefix("./").lstrip("/")] = _Entry(
                kind, member.mode, f"{member.uid}:{member.gid}", int(member.mtime), member.size, content)
    return entries


def layer_differences(where: str, blob_a: Path | None, blob_b: Path | None) -> list[Difference]:
    """Every path only in one layer, and every attribute that differs between the two."""
    a, b = _entries(blob_a), _entries(blob_b)
    found = []
    for path in sorted(set(a) | set(b)):
        if path not in b:
            found.append(Difference(where, path, "only in the image"))
        elif path not in a:
            found.append(Difference(where, path, "only in the rebuild"))
        elif a[path] != b[path]:
            changes = [f"{field} {getattr(a[path], field)} vs {getattr(b[path], field)}"
                       for field in ("kind", "mode", "owner", "mtime", "size", "content")
                       if getattr(a[path], field) != getattr(b[path], field)]
            found.append(Difference(where, path, "; ".join(changes)))
    return found
