"""Our wheel: built with `python -m build`, metadata equal to the matrix, working from a plain install."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from email.parser import Parser

import pytest
from conftest import MATRIX_FILE, REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from dynamo import wheel
from dynamo.matrix import load


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # From the checkout's root, as a user types it: build.py hands `-m build` over to PyPA's build.
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), "."], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (found,) = out.glob("dynamo-*.whl")
    return found


def metadata(path):
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def test_wheel_metadata_equals_the_matrix(built_wheel, matrix):
    meta = metadata(built_wheel)
    assert meta["Version"] == matrix.latest
    assert SpecifierSet(meta["Requires-Python"]) == SpecifierSet(wheel.requires_python(matrix, matrix.latest)) \
        == SpecifierSet(">=3.10,<3.13")
    assert meta.get_all("Classifier") == wheel.classifiers(matrix, matrix.latest)
    per_extra: dict[str, set[str]] = {}
    for text in meta.get_all("Requires-Dist"):
        requirement, _, marker = text.partition(";")
        if "extra ==" not in marker:
            continue
        rest, _, extra = marker.rpartition("extra ==")
        rest = rest.strip().removesuffix("and").strip().strip("()")
        per_extra.setdefault(canonicalize_name(extra.strip().strip("'\"")), set()).add(
            str(Requirement(f"{requirement.strip()}; {rest}" if rest else requirement.strip())))
    # PEP 685: extras are normalised in metadata (llama_cpp is llama-cpp); pip normalises what users type.
    expected = {canonicalize_name(name): {str(Requirement(pin)) for pin in pins}
                for name, pins in wheel.extras(matrix, matrix.latest).items()}
    assert {name: per_extra[name] for name in expected} == expected
    # 1.6.1's TensorRT-LLM NIXL is unknown (its wheel does not pin one): no NIXL pin rather than a guess
    assert expected["trtllm"] == {'tensorrt-llm==1.3.0rc29; python_version != "3.11"'}
    # vLLM's own NIXL, its CUDA 13 build as upstream's 1.6.1 wheel pins it
    assert expected["vllm"] == {"vllm[flashinfer,otel,runai]==0.31.0", "nixl[cu13]==1.4.1"}
    assert expected["sglang"] == {"sglang[diffusion]==0.5.21", "nixl[cu13]==1.5.0"}
    assert expected["llama-cpp"] == {"llama-cpp-python==0.3.16"}  # not in 1.6.1: from 0.8.1, the newest with it
    with zipfile.ZipFile(built_wheel) as archive:
        assert "dynamo/matrix/data/support_matrix.toml" in archive.namelist()


RECORDED = sorted((REPO / "tests" / "data" / "pypi").glob("*.METADATA"))  # upstream's ai-dynamo METADATA (README.md)


def test_the_recorded_upstream_wheels_are_there():  # an empty parameter list below would only skip
    assert len(RECORDED) >= 8


@pytest.mark.parametrize("path", RECORDED, ids=lambda path: path.stem)
def test_each_extras_nixl_carries_the_cuda_extra_upstreams_wheel_pins(matrix, path):
    """Upstream pins nixl[cu12] (0.8.1 to 1.0.x, CUDA 12 first) and nixl[cu13] (1.3.0 on, CUDA 13 only):
    our extras of that release ask for the same build of NIXL."""
    meta = Parser().parsestr(path.read_text())
    release = next(name for name, rel in matrix.release.items() if meta["Version"] in (name, rel.wheel))
    upstream = {}
    for text in meta.get_all("Requires-Dist"):
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == "nixl":
            extra = next(e for e in ("vllm", "sglang", "trtllm") if requirement.marker.evaluate({"extra": e}))
            upstream[extra] = requirement
    assert upstream, path.name
    ours = wheel.extras(matrix, release)
    for framework, nixl in upstream.items():
        (pin,) = [Requirement(p) for p in ours[framework] if Requirement(p).name == "nixl"]
        assert (framework, pin.extras) == (framework, nixl.extras), release


def test_doctor_works_from_a_plain_install(built_wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(built_wheel)], capture_output=True,
                             text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    doctor = subprocess.run([str(venv / "bin" / "dynamo"), "doctor", "--json"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, doctor.stderr
    report = json.loads(doctor.stdout)
    latest = load(MATRIX_FILE).latest  # the installed dynamo is the matrix's latest release
    assert report["subject"]["release"] == latest and report["facts"]["packages"]["dynamo"] == latest
    check = subprocess.run([str(venv / "bin" / "dynamo"), "matrix", "check"], capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0 and "site-packages/dynamo/matrix/data/support_matrix.toml: ok" in check.stdout
