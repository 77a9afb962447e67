"""`build.py verify IMAGE`: what is installed inside an image equals its labels and the matrix, and the
image matches the SBOM and provenance written beside it (`build.py attest`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from dynamo import attest, images
from dynamo.containers import ContainerEngine, EngineError, ImageInfo
from dynamo.doctor.facts import PACKAGES, cuda_suffix_mismatches
from dynamo.matrix import InvalidCombination, Matrix
from dynamo.matrix.query import evaluate

# Runs inside the image with its own python3 (not the image's dynamo, which is what it checks): versions
# without importing anything heavy, of the packages the doctor reads too.
PROBE = r"""
import json, os, platform, sys
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
cuda = os.environ.get("CUDA_VERSION")
try:
    with open("/usr/local/cuda/version.json") as handle:
        cuda = cuda or json.load(handle)["cuda"]["version"]
except (OSError, ValueError, KeyError):
    pass
names = NAMES
print(json.dumps({"python": platform.python_version(), "cuda": cuda, "machine": platform.machine(),
                  "packages": {name: version(name) for name in names}}))
""".replace("NAMES", repr(list(PACKAGES)))


@dataclass(frozen=True)
class Check:
    what: str
    expected: str
    found: str
    ok: bool


def _same_version(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return a == b or (not a and not b)
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def probe(engine: ContainerEngine, image: str) -> dict:
    result = engine.run(image, ["python3", "-c", PROBE])
    if result.returncode != 0:
        raise EngineError(f"cannot run python3 in {image}: {(result.stderr or result.stdout).strip()[-200:]}")
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EngineError(f"unexpected output from {image}: {result.stdout.strip()[-200:]!r}") from None


def verify(matrix: Matrix, engine: ContainerEngine, image: str, attestations: Path) -> list[Check]:
    """Every check, passing or not: the image's labels against the matrix, the image's contents
    against its labels, and the image against its SBOM and provenance under `attestations`."""
    info = engine.inspect(image)
    labels = info.labels
    label = lambda key: labels.get(images.LABEL_PREFIX + key, "")  # noqa: E731
    if not label("release") or not label("framework"):
        raise EngineError(f"{image} has no {images.LABEL_PREFIX}release/framework labels: it was not built by build.py")
    found = probe(engine, image)
    packages = found["packages"]
    checks: list[Check] = []

    try:
        # The image records its base in a label; a replaced base may bring another Python.
        target = evaluate(matrix, label("release"), label("framework"), label("device").removeprefix("cuda"),
                          info.architecture or found["machine"], label("python.version"),
                          base_image=labels.get("org.opencontainers.image.base.name") or None)
    except InvalidCombination as exc:
        checks.append(Check("matrix cell", f"{label('release')} {label('framework')} {label('device')}", str(exc), False))
        target = None
    if target is not None:
        expected_labels = images.labels(target)
        for key, expected in expected_labels.items():
            if key.endswith(".python.version"):
                continue  # an image may be built on any base image's Python; checked against the contents below
            checks.append(Check(f"label {key}", expected, labels.get(key, "(missing)"), labels.get(key) == expected))

    checks.append(Check("dynamo package", label("release"), packages.get("dynamo") or "(not installed)",
                        label("release") == "main" or _same_version(packages.get("dynamo"), label("release"))))
    python = ".".join(found["python"].split(".")[:2])
    checks.append(Check("python", label("python.version"), found["python"], python == label("python.version")))
    fw = matrix.framework.get(label("framework"))
    if fw is not None and fw.package:
        expected = target.engine_pin if target else label("engine.version")
        checks.append(Check(fw.package, expected, packages.get(fw.package) or "(not installed)",
                            _same_version(packages.get(fw.package), expected)))
    if label("nixl.version") or packages.get("nixl"):
        checks.append(Check("nixl", label("nixl.version") or "(none)", packages.get("nixl") or "(not installed)",
                            _same_version(packages.get("nixl"), label("nixl.version"))))
    if label("cuda.version") or found.get("cuda"):
        cuda = ".".join(str(found.get("cuda") or "").split(".")[:2])
        checks.append(Check("CUDA toolkit", label("cuda.version") or "(none)", found.get("cuda") or "(none)",
                            cuda == label("cuda.version")))
    for name in cuda_suffix_mismatches(packages, label("cuda.version")):
        checks.append(Check(name, f"a CUDA {label('cuda.version').split('.')[0]} build", packages[name], False))
    if packages.get("torch"):
        checks.append(Check("torch", "(not pinned by the matrix)", packages["torch"], True))
    return checks + attestation_checks(image, info, engine.name, attestations)


def attestation_checks(image: str, info: ImageInfo, engine_name: str, attestations: Path) -> list[Check]:
    """One passing check when the image matches its SBOM and provenance, else one failing check per finding
    (missing documents included)."""
    facts = attest.facts_of(image, info, engine_name)
    documents = f"{facts.stem}.{{intoto,spdx}}.json"
    try:
        findings = attest.check(facts, attestations)
    except attest.AttestError as exc:
        findings = [str(exc)]
    if not findings:
        return [Check("SBOM and provenance", documents, "match the image", True)]
    return [Check("SBOM and provenance", documents, finding, False) for finding in findings]


def report(image: str, checks: list[Check]) -> str:
    from dynamo.matrix.report import table

    rows = [("✓" if c.ok else "✗", c.what, c.expected, c.found) for c in checks]
    failed = sum(not c.ok for c in checks)
    verdict = f"{image}: all {len(checks)} checks pass" if not failed else f"{image}: {failed} of {len(checks)} checks fail"
    return table(("", "CHECK", "EXPECTED", "FOUND"), rows) + "\n" + verdict
