"""Pinned base images: every base and runtime image of the matrix as tag plus digest.

The matrix's `[image_digests]` table maps each image reference to the digest its tag had when
`python build.py matrix pin` asked the registry (skopeo: the sha256 of the raw manifest or index,
which is what `ref@digest` pulls). Builds then use `tag@digest`. A digest that could not be
resolved stays "" and such a build says it is not reproducible; nothing is copied from elsewhere.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dynamo.containers import local_registry

if TYPE_CHECKING:
    from tomlkit.items import Table

    from dynamo.matrix.model import Matrix

TABLE = "image_digests"
TABLE_COMMENT = ("# Each base and runtime image above -> the digest of its tag when `python build.py matrix pin` asked"
                 " its registry;\n# \"\" until resolved there (never copied from elsewhere). Builds use tag@digest.")


class PinError(Exception):
    """The registry could not answer for an image; str() is one line naming the image and why."""


def image_refs(matrix: Matrix) -> list[str]:
    """Every base and runtime image the matrix names, sorted."""
    refs = {matrix.cpu_base_image}
    for cuda in matrix.cuda.values():
        refs.update(ref for ref in (cuda.base_image, cuda.runtime_image) if ref)
    for release in matrix.release.values():
        for engine in release.engines.values():
            if isinstance(engine.base_image, str):
                refs.add(engine.base_image)
            elif isinstance(engine.base_image, dict):
                refs.update(engine.base_image.values())
    return sorted(ref for ref in refs if "@" not in ref)


def registry_of(ref: str) -> str:
    first = ref.split("/", 1)[0]
    return first if "/" in ref and ("." in first or ":" in first or first == "localhost") else "docker.io"


def resolve_digest(ref: str, timeout: str = "60s") -> str:
    """The digest the registry serves for ref now: sha256 of its raw manifest (an index for multi-arch)."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise PinError(f"{ref}: skopeo is not installed (apt-get install skopeo); digest left as it was")
    # Like Docker, talk plain HTTP to a registry on this machine only.
    insecure = ["--tls-verify=false"] if local_registry(ref) else []
    result = subprocess.run([skopeo, "inspect", "--raw", "--command-timeout", timeout, *insecure, f"docker://{ref}"],
                            capture_output=True)
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
        reason = (lines or ["no output"])[-1]
        reason = reason.split('msg="', 1)[-1].removesuffix('"').replace('\\"', '"')  # skopeo's logrus line
        reason = re.sub(r'^Error parsing image name "[^"]*": ', "", reason)
        raise PinError(f"{ref}: {registry_of(ref)} did not answer: {reason}")
    return "sha256:" + hashlib.sha256(result.stdout).hexdigest()


def check(matrix: Matrix) -> list[str]:
    """One line per image whose recorded digest is missing, unknown to its registry, or no longer its tag's."""
    found = []
    fix = "run `python build.py matrix pin`"
    for ref in image_refs(matrix):
        recorded = matrix.image_digests.get(ref, "")
        if not recorded:
            found.append(f"{ref}: not pinned (no digest in [{TABLE}]); {fix} where its registry is reachable")
            continue
        try:
            current = resolve_digest(ref)
        except PinError as exc:
            found.append(str(exc))
            continue
        if current == recorded:
            continue
        repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
        try:
            resolve_digest(f"{repository}@{recorded}")
        except PinError:
            found.append(f"{ref}: the registry does not know the recorded digest {recorded} (the tag is now at"
                         f" {current}); {fix}")
            continue
        found.append(f"{ref}: the tag moved from {recorded} to {current}; {fix} after checking the new image")
    return found


def pin(path: Path, matrix: Matrix) -> tuple[dict[str, str], list[str]]:
    """Resolve every image's digest and rewrite only [image_digests] of the matrix file (tomlkit keeps the
    rest byte for byte). Returns ({ref: digest} changed, one line per image that could not be resolved)."""
    import tomlkit

    document = tomlkit.parse(path.read_text())
    if TABLE not in document:
        document.add(tomlkit.nl())
        for line in TABLE_COMMENT.splitlines():
            document.add(tomlkit.comment(line.removeprefix("# ")))
        document.add(TABLE, tomlkit.table())
    table = document[TABLE]
    changed, failed = {}, []
    for ref in image_refs(matrix):
        try:
            digest = resolve_digest(ref)
        except PinError as exc:
            failed.append(f"{exc}; its digest is left {'empty' if not table.get(ref) else 'as it was'}")
            if ref not in table:
                set_in_order(table, ref, "")
            continue
        if table.get(ref) != digest:
            changed[ref] = digest
            set_in_order(table, ref, digest)
    path.write_text(tomlkit.dumps(document))
    return changed, failed


def set_in_order(table: Table, key: str, value: str) -> None:
    """table[key] = value, where a new key goes before the least key that sorts after it (at the end
    when none does) instead of always at the end. tomlkit has no public insert, so this uses its
    Container's _insert_at, the private insert that issue already names in 2018 and 0.15.3 still has
    (0.15.3 dropped _insert_after; https://github.com/python-poetry/tomlkit/issues/7)."""
    after = [k for k in table if k > key]
    if key in table or not after:
        table[key] = value
        return
    first_after = min(after)
    index = next(i for i, (k, _) in enumerate(table.value.body) if k is not None and k.key == first_after)
    table.value._insert_at(index, key, value)


def run(matrix: Matrix, path: Path, args: argparse.Namespace) -> int:
    """`matrix pin [--check]`: exit 0 when every image is pinned (and, with --check, its tag has not moved)."""
    if args.check:
        found = check(matrix)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print(f"{len(found)} image(s) not pinned or moved", file=sys.stderr)
            return 1
        print(f"ok: {len(image_refs(matrix))} images pinned and their tags unmoved")
        return 0
    changed, failed = pin(path, matrix)
    for ref, digest in changed.items():
        print(f"pinned {ref}@{digest}")
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    print(f"{len(changed)} digest(s) changed; {len(failed)} image(s) could not be resolved")
    return 1 if failed else 0
