"""`build.py verify IMAGE`: what is installed inside an image equals its labels and the matrix, and the
image matches the SBOM and provenance written beside it (`build.py attest`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from dynamo import attest, cuda_builds, images
from dynamo.containers import ContainerEngine, ContainerEngineError, ImageInfo
from dynamo.matrix import InvalidCombination, Matrix, Target
from dynamo.matrix.query import evaluate

# Runs inside the image with its own python3 (not the image's dynamo, which is what it checks), importing
# nothing heavy: every installed distribution's version, the lock the image was installed from, the CUDA
# torch was built for (torch/version.py), and the libcudart sonames the engine's, NIXL's and torch's native
# libraries need (read from the files, as the dynamic loader would find them). argv[1]: the engine's module.
PROBE = r"""
import glob, json, os, platform, re, sys, sysconfig
from importlib import metadata
site = sysconfig.get_paths()["platlib"]
def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()
installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
cuda = os.environ.get("CUDA_VERSION")
try:
    with open("/usr/local/cuda/version.json") as handle:
        cuda = cuda or json.load(handle)["cuda"]["version"]
except (OSError, ValueError, KeyError):
    pass
try:
    with open("/opt/dynamo/lock.txt") as handle:
        locked = {canonical(n): v for n, v in re.findall(r"(?m)^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", handle.read())}
except OSError:
    locked = None
try:
    with open(os.path.join(site, "torch", "version.py")) as handle:
        torch_cuda = (re.findall(r"(?m)^cuda(?:: .*?)? = '([^']*)'", handle.read()) or [None])[0]
except OSError:
    torch_cuda = None
sonames = {}
roots = [os.path.join(site, sys.argv[1])] if len(sys.argv) > 1 and sys.argv[1] else []
roots += glob.glob(os.path.join(site, "nixl_cu*")) + [os.path.join(site, "torch", "lib")]
for root in roots:
    for path in glob.glob(os.path.join(root, "**", "*.so*"), recursive=True):
        with open(path, "rb") as handle:
            found = set(re.findall(rb"libcudart\.so\.[0-9]+", handle.read()))
        for name in found:
            sonames.setdefault(name.decode(), []).append(os.path.relpath(path, site))
print(json.dumps({"python": platform.python_version(), "cuda": cuda, "machine": platform.machine(),
                  "packages": installed, "locked": locked, "torch_cuda": torch_cuda,
                  "sonames": {k: sorted(v) for k, v in sonames.items()}}))
"""
# What an image may hold beyond its lock: the installer the venv was made with, and our own package.
NOT_LOCKED = ("pip", "setuptools", "wheel", "dynamo")


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


def probe(engine: ContainerEngine, image: str, module: str = "") -> dict:
    result = engine.run(image, ["python3", "-c", PROBE, module])
    if result.returncode != 0:
        raise ContainerEngineError(f"cannot run python3 in {image}: {(result.stderr or result.stdout).strip()[-200:]}")
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ContainerEngineError(f"unexpected output from {image}: {result.stdout.strip()[-200:]!r}") from None


def verify(matrix: Matrix, engine: ContainerEngine, image: str, attestations: Path) -> list[Check]:
    """Every check, passing or not: the image's labels against the matrix, the image's contents
    against its labels, and the image against its SBOM and provenance under `attestations`."""
    info = engine.inspect(image)
    labels = info.labels
    label = lambda key: labels.get(images.LABEL_PREFIX + key, "")  # noqa: E731
    if not label("release") or not label("framework"):
        raise ContainerEngineError(f"{image} has no {images.LABEL_PREFIX}release/framework labels: it was not built by build.py")
    fw = matrix.framework.get(label("framework"))
    found = probe(engine, image, fw.module if fw is not None and fw.package else "")
    packages = found["packages"]
    target, checks = _label_checks(matrix, labels, info.architecture or found["machine"])
    checks.append(Check("dynamo package", label("release"), packages.get("dynamo") or "(not installed)",
                        label("release") == "main" or _same_version(packages.get("dynamo"), label("release"))))
    python = ".".join(found["python"].split(".")[:2])
    checks.append(Check("python", label("python.version"), found["python"], python == label("python.version")))
    if fw is not None and fw.package:
        expected = target.engine_pin if target else label("engine.version")
        checks.append(Check(fw.package, expected, packages.get(fw.package) or "(not installed)",
                            _same_version(packages.get(fw.package), expected)))
    if label("nixl.version") or packages.get("nixl"):
        checks.append(Check("nixl", label("nixl.version") or "(none)", packages.get("nixl") or "(not installed)",
                            _same_version(packages.get("nixl"), label("nixl.version"))))
    checks += cuda_checks(label("cuda.version"), found)
    checks += lock_checks(label("lock"), packages, found.get("locked"))
    return checks + attestation_checks(image, info, engine, attestations)


def _label_checks(matrix: Matrix, labels: dict[str, str], architecture: str) -> tuple[Target | None, list[Check]]:
    """The image's matrix cell (None when the matrix refuses it) and its labels against the cell's."""
    label = lambda key: labels.get(images.LABEL_PREFIX + key, "")  # noqa: E731
    try:
        # The image records its base in a label; a replaced base may bring another Python.
        target = evaluate(matrix, label("release"), label("framework"), label("device").removeprefix("cuda"),
                          architecture, label("python.version"),
                          base_image=labels.get("org.opencontainers.image.base.name") or None)
    except InvalidCombination as exc:
        return None, [Check("matrix cell", f"{label('release')} {label('framework')} {label('device')}", str(exc), False)]
    checks = []
    for key, expected in images.labels(target).items():
        if key.endswith(".python.version"):
            continue  # an image may be built on any base image's Python; checked against the contents below
        checks.append(Check(f"label {key}", expected, labels.get(key, "(missing)"), labels.get(key) == expected))
    return target, checks


def cuda_checks(cuda: str, found: dict) -> list[Check]:
    """The CUDA really inside against the image's label: the toolkit the base image carries, the CUDA torch
    was built for, the libcudart the native libraries need, and every distribution's build (cuda_builds)."""
    if not cuda and not found.get("cuda") and not found.get("sonames"):
        return []
    toolkit = ".".join(str(found.get("cuda") or "").split(".")[:2])
    checks = [Check("CUDA toolkit", cuda or "(none)",
                    found.get("cuda") or "none in the image (no /usr/local/cuda: a stand-in base image?)",
                    toolkit == cuda)]
    if not cuda:
        return checks
    major = cuda.split(".")[0]
    if found.get("torch_cuda") is not None or "torch" in found["packages"]:
        torch_cuda = found.get("torch_cuda") or "none (a CPU build)"
        fits = bool(found.get("torch_cuda")) and cuda_builds.within(torch_cuda, cuda)
        checks.append(Check("torch's CUDA", f"CUDA {major}.x, at most {cuda}", torch_cuda, fits))
    if found.get("sonames"):
        shown = "; ".join(f"{name} ({len(paths)} libraries, e.g. {paths[0]})" for name, paths in sorted(found["sonames"].items()))
        checks.append(Check("libcudart of native libraries", f"libcudart.so.{major}", shown,
                            set(found["sonames"]) == {f"libcudart.so.{major}"}))
    for line in cuda_builds.problems(found["packages"], cuda, "installed"):
        checks.append(Check("CUDA build", f"CUDA {cuda} builds only", line.removeprefix("installed: "), False))
    return checks


def lock_checks(lock: str, installed: dict[str, str], locked: dict[str, str] | None) -> list[Check]:
    """Every installed distribution at its locked version, and nothing the lock does not list."""
    if lock in ("", "none"):
        return []
    if locked is None:
        return [Check("installed = lock", f"the lock {lock}", "no /opt/dynamo/lock.txt in the image", False)]
    differ = [f"{name} {installed.get(name, 'missing')} (locked {version})" for name, version in sorted(locked.items())
              if not _same_version(installed.get(name), version)]
    differ += [f"{name} {version} (not locked)" for name, version in sorted(installed.items())
               if name not in locked and name not in NOT_LOCKED]
    shown = f"{len(differ)} differ: " + ", ".join(differ[:5]) + (" ..." if len(differ) > 5 else "") if differ else \
        f"all {len(locked)} at their locked versions"
    return [Check("installed = lock", f"the {len(locked)} distributions of {lock}", shown, not differ)]


def attestation_checks(image: str, info: ImageInfo, engine: ContainerEngine, attestations: Path) -> list[Check]:
    """One passing check when the image matches its SBOM and provenance, else one failing check per finding
    (missing documents included)."""
    facts = attest.facts_of(image, info, engine)
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

    # a passing row's long value (NVIDIA_REQUIRE_CUDA is 2,000 characters) is shortened; a failing row says it all
    rows = [("✓", c.what, _cell(c.expected), _cell(c.found)) if c.ok else ("✗", c.what, c.expected, c.found)
            for c in checks]
    failed = sum(not c.ok for c in checks)
    verdict = f"{image}: all {len(checks)} checks pass" if not failed else f"{image}: {failed} of {len(checks)} checks fail"
    return table(("", "CHECK", "EXPECTED", "FOUND"), rows) + "\n" + verdict


def _cell(text: str, width: int = 72) -> str:
    """A table cell of at most `width` characters: the start, and the length."""
    return text if len(text) <= width else f"{text[:width - 20]}… ({len(text)} characters)"
