"""`matrix import` and `matrix bump` against a local package index: tiny ai-dynamo wheels whose
METADATA carries the Requires-Dist lines of the released 1.6.1 wheel (PyPI, read 2026-11), served
by `python -m http.server` as a simple index, or by pip's --find-links. Never the network."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import MATRIX_FILE, run_cli
from packaging.version import Version
from processes import free_port

from dynamo.matrix import load

# ai-dynamo 1.6.1's extras, as its METADATA on PyPI lists them (engine and NIXL lines).
RELEASED_1_6_1 = """\
Requires-Dist: ai-dynamo-runtime=={version}
Requires-Dist: aiohttp<4.0,>=3.14.3
Provides-Extra: sglang
Requires-Dist: nixl[cu13]==1.5.0; extra == 'sglang'
Requires-Dist: sglang[diffusion]=={sglang}; extra == 'sglang'
Requires-Dist: tomli; (python_version < '3.11') and extra == 'sglang'
Provides-Extra: trtllm
Requires-Dist: tensorrt-llm==1.3.0rc29; extra == 'trtllm'
Provides-Extra: vllm
Requires-Dist: {nixl_vllm}; extra == 'vllm'
Requires-Dist: vllm[flashinfer,otel,runai]=={vllm}; extra == 'vllm'
"""


def tiny_wheel(folder: Path, version: str, *, vllm: str = "0.32.0", sglang: str = "0.5.22",
               nixl_vllm: str = "nixl[cu13]==1.4.2") -> Path:
    """A wheel of ai-dynamo that holds nothing but its metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ai_dynamo-{version}-py3-none-any.whl"
    info = f"ai_dynamo-{version}.dist-info"
    metadata = (f"Metadata-Version: 2.1\nName: ai-dynamo\nVersion: {version}\nRequires-Python: >=3.10\n"
                + RELEASED_1_6_1.format(version=version, vllm=vllm, sglang=sglang, nixl_vllm=nixl_vllm))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture()
def matrix_copy(tmp_path) -> Path:
    path = tmp_path / "support_matrix.toml"
    path.write_text(MATRIX_FILE.read_text())
    return path


@pytest.fixture(scope="module")
def simple_index(tmp_path_factory):
    """`python -m http.server` over a folder laid out as a simple index: /ai-dynamo/<wheels>."""
    root = tmp_path_factory.mktemp("index")
    tiny_wheel(root / "ai-dynamo", "1.7.0")
    tiny_wheel(root / "ai-dynamo", "1.8.0.post1", vllm="0.33.0")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "ai-dynamo/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait()


def test_import_from_a_simple_index(simple_index, matrix_copy):
    before = matrix_copy.read_text()
    result = run_cli("matrix", "import", "1.7.0", "--index-url", simple_index, "--published", "2026-11-20",
                     "--matrix", str(matrix_copy))
    assert result.returncode == 0, result.stderr
    assert "added release 1.7.0 (vllm 0.32.0, sglang 0.5.22, trtllm 1.3.0rc29)" in result.stdout
    after = matrix_copy.read_text()
    # every line of the old file is still there, in order (comments and layout kept); latest moved
    old_lines = before.replace('latest = "1.6.1"', 'latest = "1.7.0"').splitlines()
    it = iter(after.splitlines())
    assert all(line in it for line in old_lines)
    assert len(after.splitlines()) == len(old_lines) + 9  # the new release's two tables, nothing else
    matrix = load(matrix_copy)
    assert matrix.latest == "1.7.0"
    release = matrix.release["1.7.0"]
    assert release.published == "2026-11-20" and release.wheel is None
    vllm, sglang, trtllm = (release.engines[fw] for fw in ("vllm", "sglang", "trtllm"))
    assert (vllm.version, vllm.extras, vllm.nixl, vllm.cuda) == \
        ("0.32.0", ("flashinfer", "otel", "runai"), "1.4.2", {"13.0": "supported"})  # nixl[cu13]: 1.6.1's 13.0
    assert (sglang.version, sglang.extras, sglang.nixl) == ("0.5.22", ("diffusion",), "1.5.0")
    assert (trtllm.version, trtllm.nixl, trtllm.cuda) == ("1.3.0rc29", None, {"13.1": "supported"})  # NIXL unknown
    assert trtllm.base_image == "nvcr.io/nvidia/pytorch:25.12-py3" and "frontend" in release.engines


def test_import_a_post_release_wheel_under_its_image_tag(simple_index, matrix_copy):
    result = run_cli("matrix", "import", "1.8.0.post1", "--release", "1.8.0", "--index-url", simple_index,
                     "--matrix", str(matrix_copy))
    assert result.returncode == 0, result.stderr
    release = load(matrix_copy).release["1.8.0"]
    assert release.wheel == "1.8.0.post1" and release.engines["vllm"].version == "0.33.0"


def test_import_asks_for_the_cuda_it_cannot_infer(tmp_path, matrix_copy):
    links = tmp_path / "wheels"
    tiny_wheel(links, "1.7.0", nixl_vllm="nixl[cu12]==1.4.2")  # CUDA 12, but 1.6.1's vLLM is 13.0
    before = matrix_copy.read_text()
    result = run_cli("matrix", "import", "1.7.0", "--find-links", str(links), "--matrix", str(matrix_copy))
    assert result.returncode == 2
    assert result.stderr == ("error: cannot tell which toolkit vllm in 1.7.0 ships (CUDA 12); pass"
                             " --cuda vllm=X.Y[,X.Y]\n")
    assert matrix_copy.read_text() == before
    result = run_cli("matrix", "import", "1.7.0", "--find-links", str(links), "--cuda", "vllm=12.9",
                     "--matrix", str(matrix_copy))
    assert result.returncode == 0, result.stderr
    assert load(matrix_copy).release["1.7.0"].engines["vllm"].cuda == {"12.9": "supported"}


def test_import_refuses_a_result_that_does_not_validate(tmp_path, matrix_copy):
    links = tmp_path / "wheels"
    tiny_wheel(links, "1.7.0")
    before = matrix_copy.read_text()
    result = run_cli("matrix", "import", "1.7.0", "--find-links", str(links), "--published", "2026-13",
                     "--matrix", str(matrix_copy))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{matrix_copy}: release.\"1.7.0\".published: expected a date YYYY-MM-DD such as \"2026-02-11\", or a"
        " month YYYY-MM, got '2026-13'",
        f"nothing written: {matrix_copy} would not validate with added release 1.7.0 (vllm 0.32.0, sglang 0.5.22,"
        " trtllm 1.3.0rc29)"]
    assert matrix_copy.read_text() == before


def test_import_refuses_an_existing_release_and_a_missing_wheel(tmp_path, matrix_copy):
    links = tmp_path / "wheels"
    tiny_wheel(links, "1.6.1")
    result = run_cli("matrix", "import", "1.6.1", "--find-links", str(links), "--matrix", str(matrix_copy))
    assert result.stderr == "error: release '1.6.1' is already in the matrix; use `matrix bump` to change it\n"
    missing = run_cli("matrix", "import", "9.9.9", "--find-links", str(links), "--matrix", str(matrix_copy))
    assert missing.returncode == 2 and missing.stderr.startswith("error: cannot download ai-dynamo==9.9.9 (")
    assert "Traceback" not in missing.stderr


def test_bump_changes_one_value_in_place(matrix_copy):
    before = matrix_copy.read_text()
    result = run_cli("matrix", "bump", "--release", "1.6.1", "--engine", "vllm=0.31.1", "--matrix", str(matrix_copy))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("bumped release 1.6.1 (vllm=0.31.1)\n")
    changed = [(old, new) for old, new in zip(before.splitlines(), matrix_copy.read_text().splitlines()) if old != new]
    assert len(changed) == 1 and len(before.splitlines()) == len(matrix_copy.read_text().splitlines())
    old, new = changed[0]
    assert new == old.replace('version = "0.31.0"', 'version = "0.31.1"') and new.startswith("vllm = ")
    assert load(matrix_copy).release["1.6.1"].engines["vllm"].version == "0.31.1"


def test_bump_writes_new_keys_and_tables_in_the_files_style(matrix_copy):
    """A new key goes where the file's other engines have it, a new table is spaced as the file's
    (tomlkit alone appends `nixl = "1.4.1"}` and writes `{"13.0" = "supported","12.9" = "supported"}`)."""
    before = matrix_copy.read_text().splitlines()
    result = run_cli("matrix", "bump", "--release", "1.6.1", "--nixl", "trtllm=1.4.1", "--cuda", "vllm=13.0,12.9",
                     "--matrix", str(matrix_copy))
    assert result.returncode == 0, result.stderr
    after = matrix_copy.read_text().splitlines()
    changed = [(old, new) for old, new in zip(before, after) if old != new]
    assert len(before) == len(after) and [new for _, new in changed] == [
        'vllm = { version = "0.31.0", extras = ["flashinfer", "otel", "runai"], nixl = "1.4.1", cuda_archs = ["7.5",'
        ' "8.0", "8.6", "9.0", "10.0", "10.3", "12.0", "12.1"], cuda = { "13.0" = "supported", "12.9" = "supported" } }',
        'trtllm = { version = "1.3.0rc29", nixl = "1.4.1", cuda = { "13.1" = "supported" },'
        ' base_image = "nvcr.io/nvidia/pytorch:25.12-py3" }']


def test_bump_nixl_and_refusals(matrix_copy):
    result = run_cli("matrix", "bump", "--release", "1.6.1", "--nixl", "trtllm=1.4.1", "--matrix", str(matrix_copy))
    assert result.returncode == 0, result.stderr
    assert load(matrix_copy).release["1.6.1"].engines["trtllm"].nixl == "1.4.1"
    before = matrix_copy.read_text()
    for args, error in [
        (["--release", "1.6.1", "--engine", "llama_cpp=0.3.17"],
         "error: release 1.6.1 does not ship 'llama_cpp'; it ships frontend, vllm, sglang, trtllm\n"),
        (["--release", "2.0.0", "--engine", "vllm=1.0"],
         "error: release '2.0.0' is not in the matrix; `matrix import 2.0.0` adds it\n"),
        (["--release", "1.6.1", "--engine", "vllm"], "error: --engine expects ENGINE=VALUE such as vllm=0.31.0, got 'vllm'\n"),
    ]:
        refused = run_cli("matrix", "bump", *args, "--matrix", str(matrix_copy))
        assert (refused.returncode, refused.stderr) == (2, error)
    invalid = run_cli("matrix", "bump", "--release", "1.6.1", "--engine", "vllm=0.31.x", "--matrix", str(matrix_copy))
    assert invalid.returncode == 2 and invalid.stderr.startswith(
        f"{matrix_copy}: release.\"1.6.1\".engines.vllm.version: expected a PEP 440 version")
    assert "nothing written" in invalid.stderr and matrix_copy.read_text() == before


RECORDED = Path(__file__).parent / "data" / "pypi"


def without_release(text: str, name: str) -> str:
    """The matrix text without release `name`'s tables (as if it had not been added yet)."""
    lines = text.splitlines(keepends=True)
    header = f'[release."{name}"]'
    start = next(i for i, line in enumerate(lines) if line.strip() == header)
    end = next(i for i in range(start + 1, len(lines))
               if lines[i].startswith("[") and not lines[i].startswith(f'[release."{name}".'))
    return "".join(lines[:start] + lines[end:])


@pytest.mark.parametrize("version", ["1.6.1", "1.6.0", "1.5.1", "1.5.0"])
def test_importing_the_published_wheel_gives_the_matrix_row(tmp_path, matrix, version):
    """The recorded METADATA of the real wheel, imported into the matrix without that release,
    gives the release exactly as the matrix has it (pins, extras, NIXL per engine, CUDA, images)."""
    wheel = tmp_path / "wheels" / f"ai_dynamo-{version}-py3-none-any.whl"
    wheel.parent.mkdir()
    info = f"ai_dynamo-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{info}/METADATA", (RECORDED / f"ai_dynamo-{version}.METADATA").read_text())
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    newer = [r for r in matrix.release if r != "main" and Version(r) > Version(version)]
    kept = MATRIX_FILE.read_text()
    for name in newer:
        kept = without_release(kept, name)
    text = without_release(kept, version)
    previous = next(r for r in matrix.release if r != "main" and Version(r) < Version(version))
    path = tmp_path / "support_matrix.toml"
    path.write_text(text.replace(f'latest = "{matrix.latest}"', f'latest = "{previous}"'))
    args = ["--published", matrix.release[version].published] if matrix.release[version].published else []
    result = run_cli("matrix", "import", version, "--find-links", str(wheel.parent), *args, "--matrix", str(path))
    assert result.returncode == 0, result.stderr
    imported = load(path)
    assert imported.latest == version
    assert imported.release[version] == matrix.release[version]
    # written as the file writes its releases, byte for byte: the order of each engine's keys, the
    # spacing of its inline tables (`{ version = "0.31.0", ... }`), the blank lines
    assert path.read_text() == kept.replace(f'latest = "{matrix.latest}"', f'latest = "{version}"')


def test_import_writes_inline_tables_in_the_files_own_style(simple_index, matrix_copy):
    """A file whose newest release writes `{version="0.31.0"}` gets its new release written so too."""
    text = matrix_copy.read_text()
    start = text.index('[release."1.6.1".engines]')
    end = text.index("[release.", start + 1)
    compact = []
    for line in text[start:end].split("\n"):
        key, sep, table = line.partition(" = ")  # `vllm = { version = "0.31.0" }` -> `vllm = {version="0.31.0"}`
        compact.append(key + sep + table.replace(" = ", "=").replace("{ ", "{").replace(" }", "}"))
    compact = "\n".join(compact)
    matrix_copy.write_text(text[:start] + compact + text[end:])
    assert 'vllm = {version="0.31.0", extras=["flashinfer", "otel", "runai"], nixl="1.4.1"' in matrix_copy.read_text()
    result = run_cli("matrix", "import", "1.7.0", "--index-url", simple_index, "--matrix", str(matrix_copy))
    assert result.returncode == 0, result.stderr
    lines = matrix_copy.read_text().splitlines()
    new = lines[lines.index('[release."1.7.0".engines]') + 1:lines.index('[release."1.6.1"]') - 1]
    assert new == [
        "frontend = {}",
        'vllm = {version="0.32.0", extras=["flashinfer", "otel", "runai"], nixl="1.4.2",'
        ' cuda_archs=["7.5", "8.0", "8.6", "9.0", "10.0", "10.3", "12.0", "12.1"], cuda={"13.0"="supported"}}',
        'sglang = {version="0.5.22", extras=["diffusion"], nixl="1.5.0",'
        ' cuda_archs=["7.5", "8.0", "8.6", "9.0", "10.0", "12.0"], cuda={"13.0"="supported"}}',
        'trtllm = {version="1.3.0rc29", cuda={"13.1"="supported"}, base_image="nvcr.io/nvidia/pytorch:25.12-py3"}',
    ]
