"""Locks (`python build.py lock`): every distribution pinned and hashed per cell, platform and Python;
stale and missing locks named; unreachable indexes and wrong hashes refused in one line."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
from pathlib import Path

import pytest
from conftest import MATRIX_FILE, REPO, run_cli
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dynamo import lock, pipcheck
from dynamo.matrix import load

TRACEBACK = "Traceback (most recent call last)"


def reached(index: str) -> str:
    """What a reason adds about an index: nothing where it can be reached (this machine reaches PyPI only)."""
    why = lock.unreachable(index)
    return f", which cannot be reached ({why})" if why else ""


def committed_locks() -> list[Path]:
    return sorted((REPO / "locks").rglob("*.txt"))


def matrix_with(tmp_path: Path, old: str, new: str) -> Path:
    text = MATRIX_FILE.read_text()
    assert old in text
    changed = tmp_path / "support_matrix.toml"
    changed.write_text(text.replace(old, new, 1))
    return changed


@pytest.mark.parametrize("release, cells", [
    # the latest release: PyPI's vLLM 0.31.0 is a CUDA 13.0 build (torch 2.13), so its cells lock from PyPI
    ("1.6.1", [("frontend", "cpu", "amd64 arm64"), ("vllm", "cuda13.0", "amd64 arm64")]),
    # PyPI's torch 2.9 for aarch64 is a CPU build: 0.8.1's arm64 vLLM and SGLang cells need PyTorch's index
    ("0.8.1", [("frontend", "cpu", "amd64 arm64"), ("vllm", "cuda12.9", "amd64"), ("sglang", "cuda12.9", "amd64"),
               ("llama_cpp", "cpu", "amd64 arm64"), ("llama_cpp", "cuda12.9", "amd64 arm64")]),
])
def test_committed_locks_cover_the_lockable_cells(matrix, release, cells):
    paths = {lock.spec(matrix, target).relative_path for target in lock.lock_targets(matrix, release=release)}
    for framework, device, arches in cells:
        for python in ("3.10", "3.11", "3.12"):
            for arch in arches.split():
                name = f"locks/{release}/{framework}-{device}-py{python}-{arch}.txt"
                assert name in paths and (REPO / name).is_file(), name


@pytest.mark.parametrize("release", ["0.8.1", "1.2.1", "1.6.1"])
def test_a_cell_that_cannot_be_locked_here_says_why(matrix, release):
    """Every cell of a release with locks is locked, or recorded by `lock` with the reason it could not be."""
    why = lock.unlockable(REPO, release)
    assert why, f"locks/{release}/{lock.UNLOCKABLE} lists nothing"
    locked = {path.name for path in (REPO / "locks" / release).glob("*.txt")}
    attempted = {name.split("-")[0] for name in [*why, *locked]}  # the frameworks `lock` was run for
    for target in lock.lock_targets(matrix, release=release):
        spec = lock.spec(matrix, target)
        if target.framework in attempted:
            assert (REPO / spec.relative_path).is_file() != (Path(spec.relative_path).name in why), spec.relative_path
    # 1.2.1's vLLM for CUDA 12.9 (what `build.py --framework vllm --cuda 12.9` picks): PyPI's vLLM 0.20.1 and
    # torch 2.11 are CUDA 13.0 builds, and the matrix's index of 12.9 builds cannot be reached from here
    if release == "1.2.1":
        reason = why["vllm-cuda12.9-py3.11-amd64.txt"]
        assert reason.startswith("PyPI's builds do not fit CUDA 12.9 (") and "torch==2.11.0" in reason, reason
        assert "https://wheels.vllm.ai/0.20.1/cu129" in reason and "cannot be reached" in reason, reason
        plan = run_cli("--framework", "vllm", "--cuda", "12.9", "--dry-run")
        assert plan.returncode == 2
        assert plan.stderr.splitlines()[-1].startswith("error: 1.2.1-vllm-cuda12.9 (") and \
            "cannot be locked here, so it has no lock: PyPI's builds do not fit CUDA 12.9" in plan.stderr.splitlines()[-1], plan.stderr
    # 1.6.1's SGLang (what `build.py --framework sglang` picks): SGLang 0.5.21 pins cuda-tile 1.6.0rc5, which PyPI has
    # only as NVIDIA's wheel-stub; TensorRT-LLM's wheels are on pypi.nvidia.com too. Neither is reachable from here.
    if release == "1.6.1":
        reason = why["sglang-cuda13.0-py3.12-amd64.txt"]
        assert reason.startswith("Because cuda-tile==1.6.0rc5 has no usable wheels and sglang==0.5.21 depends on"
                                 " cuda-tile==1.6.0rc5, we can conclude that sglang==0.5.21 cannot be used; PyPI has"
                                 " only a wheel-stub of cuda-tile 1.6.0rc5, whose build downloads the wheel from"
                                 " https://pypi.nvidia.com/, which cannot be reached ("), reason
        assert why["trtllm-cuda13.1-py3.12-amd64.txt"].endswith(
            "; PyPI has only a wheel-stub of tensorrt-llm 1.3.0rc29, whose build downloads the wheel from"
            " https://pypi.nvidia.com/")
        plan = run_cli("--framework", "sglang", "--dry-run")
        assert plan.returncode == 2, plan.stdout
        error = plan.stderr.splitlines()[-1]
        assert re.fullmatch(r"error: 1\.6\.1-sglang-cuda13\.0 \(linux/(amd|arm)64, Python 3\.12\): cannot be locked here,"
                            r" so it has no lock: Because cuda-tile==1\.6\.0rc5 .*; or build with --unlocked"
                            r" \(the image's labels record it\)", error), plan.stderr


def test_every_committed_lock_belongs_to_a_cell(matrix):
    paths = {lock.spec(matrix, target).relative_path for release in matrix.release
             for target in lock.lock_targets(matrix, release=release)}
    assert {p.relative_to(REPO).as_posix() for p in committed_locks()} <= paths


@pytest.mark.parametrize("path", committed_locks(), ids=lambda p: p.name)
def test_every_locked_distribution_is_pinned_and_hashed(path):
    hashes = lock.read_hashes(path)
    assert hashes, path
    for name, (version, found) in hashes.items():
        assert re.fullmatch(r"[0-9A-Za-z.+!]+", version), (name, version)
        assert found and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in found), name


def test_top_level_pins_equal_the_matrix(matrix):
    for target in lock.lock_targets(matrix):
        spec = lock.spec(matrix, target)
        path = REPO / spec.relative_path
        if not path.is_file():
            continue
        versions = lock.pinned(path.read_text())
        for text in (target.engine_requirement, target.nixl_requirement):
            if text:
                requirement = Requirement(text)
                assert f"=={versions[canonicalize_name(requirement.name)]}" == str(requirement.specifier), text


def test_lock_check_passes_on_the_committed_locks():
    for framework in ("frontend", "llama_cpp"):
        result = run_cli("lock", "--check", "--release", "0.8.1", "--framework", framework)
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"ok: \d+ locks match the matrix\n", result.stdout)


def test_lock_check_names_each_missing_cell():
    result = run_cli("lock", "--check", "--release", "1.6.0", "--framework", "sglang")  # a release never locked
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == ("1.6.0-sglang-cuda13.0 (linux/amd64, Python 3.10): no lock"
                        " (locks/1.6.0/sglang-cuda13.0-py3.10-amd64.txt);"
                        " run `python build.py lock --release 1.6.0 --framework sglang`")
    assert lines[-1] == "6 problem(s) in the locks of 1 cell(s)"
    recorded = run_cli("lock", "--check", "--release", "0.8.1", "--framework", "trtllm")  # `lock` said why
    assert recorded.stderr.splitlines()[0] == (
        "0.8.1-trtllm-cuda13.0 (linux/amd64, Python 3.10): cannot be locked here, so it has no lock: index"
        " https://pypi.nvidia.com cannot be reached ([Errno -2] Name or service not known); PyPI has only a wheel-stub"
        " of tensorrt-llm 1.2.0rc6.post1, whose build downloads the wheel from https://pypi.nvidia.com/")


def test_a_changed_pin_makes_its_locks_stale_in_lock_check_and_render_check(tmp_path):
    changed = matrix_with(tmp_path, 'llama_cpp = { version = "0.3.16"', 'llama_cpp = { version = "0.3.15"')
    result = run_cli("lock", "--check", "--release", "0.8.1", "--framework", "llama_cpp", "--matrix", str(changed))
    assert result.returncode == 1 and TRACEBACK not in result.stderr
    assert ("locks/0.8.1/llama_cpp-cpu-py3.12-amd64.txt: stale: the matrix asks for llama-cpp-python==0.3.15 instead of"
            " llama-cpp-python==0.3.16; run `python build.py lock --release 0.8.1 --framework llama_cpp`"
            in result.stderr.splitlines())
    assert ("locks/0.8.1/llama_cpp-cpu-py3.12-amd64.txt: llama-cpp-python is locked at 0.3.16, the matrix asks for"
            " llama-cpp-python==0.3.15; run `python build.py lock --release 0.8.1 --framework llama_cpp`"
            in result.stderr.splitlines())
    assert "24 problem(s) in the locks of 2 cell(s)" in result.stderr  # 12 locks (2 devices x 3 Pythons x 2 arches), 2 lines each
    render = run_cli("render", "--check", "--matrix", str(changed))
    assert render.returncode == 1
    assert "locks/0.8.1/llama_cpp-cuda12.9-py3.10-arm64.txt: stale: " in render.stderr
    assert render.stderr.splitlines()[-1] == "24 problem(s) in committed locks; run `python build.py lock`"


def test_an_unreachable_index_fails_the_cell_in_one_line_and_writes_nothing(tmp_path):
    # Port 9 (discard) refuses connections here: a real index that cannot be reached.
    changed = matrix_with(tmp_path, 'extra_index_url = "https://pypi.nvidia.com"',
                          'extra_index_url = "http://127.0.0.1:9/simple"')
    before = sorted(p.name for p in committed_locks())
    record = REPO / "locks/0.8.1" / lock.UNLOCKABLE
    recorded = record.read_text()
    try:
        result = run_cli("lock", "--release", "0.8.1", "--framework", "trtllm", "--matrix", str(changed))
        written = lock.unlockable(REPO, "0.8.1")
    finally:
        record.write_text(recorded)  # `lock` records why, in the checkout: put the committed record back
    assert written["trtllm-cuda13.0-py3.10-amd64.txt"].startswith("index http://127.0.0.1:9/simple cannot be reached (")
    assert "--unlocked" not in written["trtllm-cuda13.0-py3.10-amd64.txt"]  # the cause alone: build adds the fix
    assert written["vllm-cuda12.9-py3.10-arm64.txt"] == lock.unlockable(REPO, "0.8.1")["vllm-cuda12.9-py3.10-arm64.txt"]
    assert result.returncode == 1 and TRACEBACK not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    assert errors[0].startswith("error: 0.8.1-trtllm-cuda13.0 (linux/amd64, Python 3.10): index"
                                " http://127.0.0.1:9/simple cannot be reached (")
    assert errors[0].endswith("; lock it where it can be reached, or build this cell with --unlocked")
    assert result.stdout.splitlines()[-1] == "0 of 4 locks written; 4 failed"
    assert sorted(p.name for p in committed_locks()) == before


def test_uv_resolves_for_the_target_python_and_platform_not_this_machine(tmp_path, matrix):
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for python, arch in (("3.10", "arm64"), ("3.12", "x86_64")):
        target = next(t for t in lock.lock_targets(matrix, release="0.8.1", framework="frontend")
                      if t.python == python and t.arch == arch)
        done = lock.generate(lock.spec(matrix, target, tmp_path), tmp_path)
        text = done.path.read_text()
        assert text.splitlines()[0] == (f"# Generated by `python build.py lock` for 0.8.1-frontend-cpu on {target.platform}"
                                        f" ({lock.UV_PLATFORMS[target.platform]}), Python {python}; do not edit by hand.")
        assert ("tomli" in lock.pinned(text)) is (python == "3.10")  # tomli only below Python 3.11
        assert "uvloop" in lock.pinned(text) and done.packages == len(lock.pinned(text))
        assert lock.problems(lock.spec(matrix, target, tmp_path), tmp_path) == []
        assert lock.generate(lock.spec(matrix, target, tmp_path), tmp_path).path.read_text() == text  # the same bytes


def test_a_hash_the_index_does_not_serve_is_named_with_the_fix(tmp_path):
    source = REPO / "locks/0.8.1/frontend-cpu-py3.12-amd64.txt"
    version, hashes = lock.read_hashes(source)["packaging"]
    good = tmp_path / "good.txt"
    good.write_text(f"packaging=={version} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in sorted(hashes)) + "\n")
    assert lock.hash_problems(good, "good.txt") == []
    bad = tmp_path / "bad.txt"
    bad.write_text(f"packaging=={version} \\\n    --hash=sha256:{'0' * 64}\n")
    assert lock.hash_problems(bad, "bad.txt") == [
        f"bad.txt: packaging=={version}: hash sha256:{'0' * 64} is not served by https://pypi.org/simple;"
        " regenerate the lock with `python build.py lock`"]


def test_a_build_needs_the_cells_lock_unless_unlocked():
    missing = run_cli("--framework", "trtllm", "--release", "0.8.1", "--dry-run")
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[-1].startswith("error: 0.8.1-trtllm-cuda13.0 (")
    assert missing.stderr.splitlines()[-1].endswith("; or build with --unlocked (the image's labels record it)")
    unlocked = run_cli("--framework", "trtllm", "--release", "0.8.1", "--dry-run", "--unlocked")
    assert unlocked.returncode == 0, unlocked.stderr
    assert "  dev.dynamo.lock=none" in unlocked.stdout.splitlines()
    assert "without a lock (--unlocked)" in unlocked.stderr
    locked = run_cli("--framework", "frontend", "--release", "0.8.1", "--dry-run", "--platform", "linux/amd64,linux/arm64")
    assert locked.returncode == 0, locked.stderr
    assert "  dev.dynamo.lock=0.8.1/frontend-cpu-py3.12" in locked.stdout.splitlines()


def test_lock_targets_of_an_unknown_framework_is_one_line():
    result = run_cli("lock", "--check", "--framework", "tensorrt")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown framework 'tensorrt'")
    assert len(result.stderr.splitlines()) == 1



def test_the_release_pipeline_checks_pins_and_locks_then_publishes_attestations():
    release = (REPO / ".github/workflows/release.yml").read_text()
    for step in ("python build.py matrix pin --check", 'python build.py lock --check --hashes --release "$RELEASE"',
                 "python build.py attest", "--check", "attestations/**/*.json", "needs: [inputs]"):
        assert step in release, step
    assert "--unlocked" not in release


def test_a_changed_index_makes_the_locks_stale(tmp_path):
    # an index every resolution uses (the framework's extra_index_url): every lock of the framework is stale
    changed = matrix_with(tmp_path, 'module = "llama_cpp"\n', 'module = "llama_cpp"\nextra_index_url = "https://example.invalid/simple"\n')
    result = run_cli("lock", "--check", "--release", "0.8.1", "--framework", "llama_cpp", "--matrix", str(changed))
    assert result.returncode == 1
    assert ("locks/0.8.1/llama_cpp-cuda12.9-py3.12-amd64.txt: stale: resolved from https://pypi.org/simple, the matrix"
            " names https://pypi.org/simple https://example.invalid/simple;"
            " run `python build.py lock --release 0.8.1 --framework llama_cpp`") in result.stderr.splitlines()
    # an index of builds for one CUDA is used only where PyPI's builds do not fit: a lock from PyPI stands
    indexed = matrix_with(tmp_path, 'module = "llama_cpp"\n', 'module = "llama_cpp"\ncuda_indexes = { "12.9" = ["https://example.invalid/simple"] }\n')
    result = run_cli("lock", "--check", "--release", "0.8.1", "--framework", "llama_cpp", "--matrix", str(indexed))
    assert result.returncode == 0, result.stderr


def test_what_the_framework_never_imports_is_left_out_and_a_lock_with_it_is_stale(tmp_path, matrix):
    """The frontend's tokenizers asks for huggingface-hub (for Tokenizer.from_pretrained alone), pbr for setuptools
    (for its setup.py hooks): the matrix says we never import them, so the lock leaves them out with what only
    they pull in (hf-xet, fsspec), and says so in its header, which the image's pip check reads."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = next(t for t in lock.lock_targets(matrix, release="1.6.1", framework="frontend")
                  if t.python == "3.11" and t.arch == "x86_64")
    spec = lock.spec(matrix, target, tmp_path)
    assert spec.never_imported == ("huggingface-hub", "setuptools")
    text = lock.generate(spec, tmp_path).path.read_text()
    pins = lock.pinned(text)
    assert {"tokenizers", "etcd3gw", "pbr", "uvloop"} <= pins.keys()
    assert not {"huggingface-hub", "hf-xet", "fsspec", "setuptools"} & pins.keys()
    assert pipcheck.dropped(text) == {"huggingface-hub", "setuptools"}
    assert lock.problems(spec, tmp_path) == []
    # A lock made as before (nothing left out) holds them, and lock --check calls it stale.
    kept_all = lock.generate(dataclasses.replace(spec, never_imported=()), tmp_path).path.read_text()
    assert {"huggingface-hub", "hf-xet", "setuptools"} <= lock.pinned(kept_all).keys()
    assert lock.problems(spec, tmp_path) == [
        "locks/1.6.1/frontend-cpu-py3.11-amd64.txt: stale: the matrix leaves out huggingface-hub, setuptools (never"
        " imported), the lock does not; run `python build.py lock --release 1.6.1 --framework frontend`"]


@pytest.mark.parametrize("release, cuda, python, requirement, reason", [
    # PyPI's torch 2.11 is a CUDA 13.0 build: PyPI cannot fit CUDA 12.9, so `lock` turns to the matrix's index
    # (uv's first sentence, wrapped at $COLUMNS, without the "And because you require ..." after it)
    ("0.8.1", "12.9", "3.12", "torch==2.11.0", "PyPI's builds do not fit CUDA 12.9 (Because torch==2.11.0 depends on"
                                               " cuda-toolkit[cublas]==13.0.2 and cuda-toolkit{sys_platform == 'linux'}"
                                               ">=12,<12.10, we can conclude that torch==2.11.0 cannot be used.); the"
                                               " matrix names index http://127.0.0.1:9/simple for it, which cannot be"
                                               " reached ("),
    # SGLang 0.5.22 needs Python 3.11 whatever the CUDA: uv's cause, with no index of CUDA builds to blame
    ("1.6.1", "13.0", "3.10", "sglang==0.5.22", "Because sglang==0.5.22 has no wheels with a matching Python implementation"
                                                " tag (e.g., `cp310`) and you require sglang==0.5.22, we can conclude"
                                                " that your requirements are unsatisfiable."),
])
def test_only_a_cuda_misfit_sends_lock_to_the_index_of_cuda_builds(tmp_path, matrix, release, cuda, python,
                                                                   requirement, reason, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")  # uv wraps its explanation at $COLUMNS: the reason is still one whole line
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = next(t for t in lock.lock_targets(matrix, release=release)
                  if t.cuda == cuda and t.python == python and t.arch == "x86_64")
    unreachable = "http://127.0.0.1:9/simple"  # port 9 (discard) refuses connections here
    spec = dataclasses.replace(lock.spec(matrix, target, tmp_path), requirements=(requirement,), cuda_indexes=(unreachable,))
    with pytest.raises(lock.LockError) as failed:
        lock.generate(spec, tmp_path)
    assert failed.value.reason.startswith(reason), failed.value.reason
    assert (unreachable in failed.value.reason) is reason.startswith("PyPI's builds do not fit"), failed.value.reason
    assert not list(tmp_path.glob("locks/**/*.txt"))


def test_a_lock_pins_wheels_only_except_the_framework_the_image_compiles(tmp_path, matrix):
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    frontend, llama_cpp = (next(t for t in lock.lock_targets(matrix, release="0.8.1", framework=framework)
                                if t.device == "cpu" and t.python == "3.12" and t.arch == "x86_64")
                           for framework in ("frontend", "llama_cpp"))
    # cuda-tile 1.6.0rc5 (SGLang 0.5.21 pins it) is on PyPI only as NVIDIA's wheel-stub sdist, whose build
    # downloads the real wheel from pypi.nvidia.com, unhashed
    stub = dataclasses.replace(lock.spec(matrix, frontend, tmp_path), requirements=("cuda-tile==1.6.0rc5",))
    with pytest.raises(lock.LockError) as failed:
        lock.generate(stub, tmp_path)
    assert failed.value.reason == ("Because cuda-tile==1.6.0rc5 has no usable wheels and you require cuda-tile==1.6.0rc5,"
                                   " we can conclude that your requirements are unsatisfiable; PyPI has only a"
                                   " wheel-stub of cuda-tile 1.6.0rc5, whose build downloads the wheel from"
                                   " https://pypi.nvidia.com/" + reached("https://pypi.nvidia.com/"))
    assert lock.wheel_stub_index("cuda-tile", "1.7.0") is None  # wheels on PyPI
    # llama-cpp-python has no wheels on PyPI: the image compiles it from the sdist the lock pins
    done = lock.generate(lock.spec(matrix, llama_cpp, tmp_path), tmp_path)
    version, hashes = lock.read_hashes(done.path)["llama-cpp-python"]
    assert lock.served_hashes("llama-cpp-python", version) == hashes


def test_a_cell_that_fails_loses_its_old_lock_and_is_recorded(tmp_path, matrix):
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    old = tmp_path / "locks/1.6.1/trtllm-cuda13.1-py3.12-amd64.txt"  # as if locked where pypi.nvidia.com answered
    old.parent.mkdir(parents=True)
    old.write_text("tensorrt-llm==1.3.0rc25 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    unreachable = "http://127.0.0.1:9/simple"  # port 9 (discard) refuses connections here
    changed = matrix_with(tmp_path, 'extra_index_url = "https://pypi.nvidia.com"', f'extra_index_url = "{unreachable}"')
    args = argparse.Namespace(release="1.6.1", framework="trtllm", check=False, hashes=False)
    assert lock.run(load(changed), args, tmp_path) == 1
    assert not old.exists()
    why = lock.unlockable(tmp_path, "1.6.1")[old.name]
    assert why.startswith(f"index {unreachable} cannot be reached ("), why
    # PyPI's tensorrt-llm is NVIDIA's wheel-stub: the reason says where its wheel really is
    assert why.endswith("); PyPI has only a wheel-stub of tensorrt-llm 1.3.0rc29, whose build downloads the wheel"
                        " from https://pypi.nvidia.com/"), why
