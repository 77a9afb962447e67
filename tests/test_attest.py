"""SBOM and SLSA provenance of a real image: the frontend built with buildah from its lock on the
stand-in base, attested with syft and cyclonedx-py, then checked, then checked again after tampering."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest
from conftest import CA, MATRIX_FILE, REPO, STANDIN_AMD64, buildah_ready, require, rows, run_cli

from dynamo import attest, lock
from dynamo.matrix import load

# A short name, as a user writes it: buildah stores it as localhost/dynamo-test:..., and attest and verify
# find it as buildah does (skopeo's containers-storage: transport did not: "does not resolve to an image ID").
TAG = f"dynamo-test:{uuid.uuid4().hex[:8]}-attest"
RELEASE = load(MATRIX_FILE).latest  # what build.py builds by default
LOCK = REPO / f"locks/{RELEASE}/frontend-cpu-py3.11-amd64.txt"
DOCUMENTS = f"attestations/{RELEASE}/frontend-cpu-py3.11-amd64.{{intoto,spdx}}.json"  # what verify's check names


@pytest.fixture(scope="module")
def image():
    require(buildah_ready() or (None if shutil.which("skopeo") else "skopeo is not installed"))
    built = run_cli("--framework", "frontend", "--base-image", STANDIN_AMD64, "--python", "3.11", "--ca-cert", CA,
                    "--engine", "buildah", "--tag", TAG)
    assert built.returncode == 0, built.stderr[-2000:]
    yield TAG
    subprocess.run(["buildah", "rmi", TAG], capture_output=True)


def test_attest_writes_sboms_and_provenance_that_match_the_image(image, tmp_path):
    written = run_cli("attest", image, "--engine", "buildah", "--out", str(tmp_path))
    assert written.returncode == 0, written.stderr
    stem = tmp_path / f"attestations/{RELEASE}/frontend-cpu-py3.11-amd64"
    spdx = json.loads(stem.with_name(stem.name + ".spdx.json").read_text())
    cdx = json.loads(stem.with_name(stem.name + ".python.cdx.json").read_text())
    statement = json.loads(stem.with_name(stem.name + ".intoto.json").read_text())
    locked = lock.read_hashes(LOCK)

    # SPDX from syft: the OS packages from dpkg and the Python packages installed from the lock, at its versions.
    assert spdx["spdxVersion"] == "SPDX-2.3"
    purls = {ref["referenceLocator"] for package in spdx["packages"] for ref in package.get("externalRefs", [])
             if ref["referenceType"] == "purl"}
    assert any(purl.startswith("pkg:deb/debian/dpkg@") for purl in purls)
    for name, (version, _) in locked.items():
        assert any(purl.startswith(f"pkg:pypi/{name}@{version}") for purl in purls), (name, version)

    # CycloneDX from cyclonedx-py: every locked package with its hashes.
    assert cdx["specVersion"] == "1.6"
    components = {c["name"].lower().replace("_", "-"): c for c in cdx["components"]}
    assert set(components) == set(locked)
    for name, (version, hashes) in locked.items():
        served = {h["content"] for ref in components[name]["externalReferences"] for h in ref.get("hashes", [])}
        assert components[name]["version"] == version and served == hashes, name

    # in-toto + SLSA v1: this image, its cell, build args, commit, lock digest and base.
    image_id = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", image],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [{"name": image, "digest": {"sha256": image_id}}]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["cell"] == {"release": RELEASE, "framework": "frontend", "device": "cpu",
                                                        "python": "3.11", "platform": "linux/amd64"}
    assert definition["externalParameters"]["buildArgs"]["LOCK"] == f"{RELEASE}/frontend-cpu-py3.11"
    assert definition["externalParameters"]["buildArgs"]["UNPINNED"] == STANDIN_AMD64
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dependencies = {d.get("name") or d["uri"]: d.get("digest") for d in definition["resolvedDependencies"]}
    assert dependencies[f"git+file://{REPO}"] == {"gitCommit": head}
    assert dependencies[f"locks/{RELEASE}/frontend-cpu-py3.11-amd64.txt"] == {"sha256": attest.sha256_file(LOCK)}
    assert dependencies["runtime base image"] is None  # the stand-in is not pinned: no digest is claimed

    checked = run_cli("attest", image, "--engine", "buildah", "--out", str(tmp_path), "--check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"ok: {image} matches its SBOM and provenance")
    verified = run_cli("verify", image, "--engine", "buildah", "--attestations", str(tmp_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert ["✓", "SBOM and provenance", DOCUMENTS, "match the image"] in rows(verified.stdout)
    assert verified.stdout.splitlines()[-1] == f"{image}: all 16 checks pass"

    # Tampering: a package dropped from the SBOM, and the provenance claiming another image.
    spdx_path = stem.with_name(stem.name + ".spdx.json")
    spdx["packages"] = [p for p in spdx["packages"] if p["name"] != "aiohttp"]
    spdx_path.write_text(json.dumps(spdx))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    stem.with_name(stem.name + ".intoto.json").write_text(json.dumps(statement))
    tampered = run_cli("attest", image, "--engine", "buildah", "--out", str(tmp_path), "--check")
    assert tampered.returncode == 1 and "Traceback" not in tampered.stderr
    lines = tampered.stderr.splitlines()
    fix = f"run `python build.py attest {image}` for this image"
    assert f"{image}: frontend-cpu-py3.11-amd64.intoto.json is for image sha256:{'0' * 64}, this image is sha256:{image_id}; {fix}" in lines
    assert f"frontend-cpu-py3.11-amd64.spdx.json: not the document frontend-cpu-py3.11-amd64.intoto.json records (edited or replaced); {fix}" in lines
    assert any(line.startswith(f"{image}: frontend-cpu-py3.11-amd64.spdx.json lists 0 package(s) the image lacks (-) and misses 1 (aiohttp==")
               for line in lines)

    # verify reports the same findings, one failing check each, beside its other checks.
    verified = run_cli("verify", image, "--engine", "buildah", "--attestations", str(tmp_path))
    assert verified.returncode == 1 and "Traceback" not in verified.stderr
    failing = [row for row in rows(verified.stdout) if row[0] == "✗"]
    assert sorted(failing) == sorted(["✗", "SBOM and provenance", DOCUMENTS, finding] for finding in lines), verified.stdout
    assert verified.stdout.splitlines()[-1] == f"{image}: 3 of 18 checks fail"


def test_an_image_without_attestations_is_one_line(image, tmp_path):
    result = run_cli("attest", image, "--engine", "buildah", "--out", str(tmp_path), "--check")
    assert result.returncode == 1
    assert result.stderr == (f"{image}: no frontend-cpu-py3.11-amd64.intoto.json or frontend-cpu-py3.11-amd64.spdx.json"
                             f" in {tmp_path}/attestations/{RELEASE}; run `python build.py attest {image}` for this image\n")

    # verify: the other checks pass; the missing documents are one failing check naming them and the fix.
    verified = run_cli("verify", image, "--engine", "buildah", "--attestations", str(tmp_path))
    assert verified.returncode == 1
    failing = [row for row in rows(verified.stdout) if row[0] == "✗"]
    assert failing == [["✗", "SBOM and provenance", DOCUMENTS, result.stderr.strip()]], verified.stdout
    assert verified.stdout.splitlines()[-1] == f"{image}: 1 of 16 checks fail"
