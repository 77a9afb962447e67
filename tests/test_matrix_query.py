"""Resolving build targets, listing them, and explaining refusals in one sentence."""

from __future__ import annotations

import pytest

from dynamo.matrix import InvalidCombination, resolve, targets
from dynamo.matrix.query import evaluate, release_artifacts


def refusal(matrix, **kwargs) -> str:
    with pytest.raises(InvalidCombination) as caught:
        resolve(matrix, **kwargs)
    return str(caught.value)


def test_resolve_fills_defaults_and_pins_everything(matrix):
    target = resolve(matrix, "vllm", arch="amd64")
    assert (target.release, target.cuda, target.arch, target.python) == ("1.6.1", "13.0", "x86_64", "3.12")
    assert target.engine_requirement == "vllm[flashinfer,otel,runai]==0.31.0"
    assert target.nixl_requirement == "nixl[cu13]==1.4.1"  # vLLM's own NIXL in 1.6.1 (SGLang's is 1.5.0), CUDA 13 build
    assert target.base_image == "nvcr.io/nvidia/cuda-dl-base:25.10-cuda13.0-devel-ubuntu24.04"
    assert (target.driver_linux, target.published_linux, target.published_windows) == ("580.65.06", "580.xx+", "581.xx+")
    assert target.platform == "linux/amd64" and target.status == "supported" and target.notes == ()
    old = resolve(matrix, "vllm", release="0.8.1", arch="amd64")
    assert (old.cuda, old.engine_requirement, old.nixl_requirement) == ("12.9", "vllm==0.12.0", "nixl[cu12]==0.8.0")
    assert old.base_image == "nvcr.io/nvidia/cuda-dl-base:25.06-cuda12.9-devel-ubuntu24.04"


def test_without_a_release_a_cuda_the_latest_lacks_takes_the_newest_release_that_has_it(matrix):
    target = resolve(matrix, "vllm", cuda="12.9", arch="x86_64")
    assert (target.release, target.cuda) == ("1.2.1", "12.9")  # 1.3.0 discontinued CUDA 12 images
    assert target.notes[0] == ("the latest release 1.6.1 has no vLLM on CUDA 12.9; using 1.2.1, the newest"
                               " release that has it (pass --release to choose another)")
    llama = resolve(matrix, "llama_cpp", cuda="cpu", arch="x86_64")
    assert llama.release == "0.8.1" and "has no llama.cpp on the CPU; using 0.8.1" in llama.notes[0]
    assert resolve(matrix, "trtllm", arch="x86_64").cuda == "13.1"


def test_an_explicit_release_lacking_the_cell_is_refused_with_the_releases_that_have_it(matrix):
    assert refusal(matrix, framework="vllm", release="1.6.1", cuda="12.9") == (
        "vLLM in 1.6.1 ships CUDA 13.0 only; you asked for 12.9; releases with vLLM on CUDA 12.9:"
        " 1.2.1, 1.2.0, 1.1.1, 1.1.0, 1.0.2, 1.0.1, 1.0.0, 0.9.1, 0.9.0, 0.8.1.post3, 0.8.1.post2, 0.8.1.post1,"
        " 0.8.1, 0.8.0 and 0.7.1")


def test_the_issue_example_sentence(matrix):
    assert refusal(matrix, framework="trtllm", release="0.8.1", cuda="12.9") == \
        "TensorRT-LLM in 0.8.1 ships CUDA 13.0 only; you asked for 12.9"


def test_refusal_names_releases_that_have_it(matrix):
    assert refusal(matrix, framework="vllm", release="0.8.1", cuda="12.8") == (
        "vLLM in 0.8.1 ships CUDA 12.9 and 13.0 (experimental); you asked for 12.8;"
        " releases with vLLM on CUDA 12.8: 0.7.0.post1, 0.7.0, 0.6.1 and 0.1.0")


def test_experimental_resolves_with_a_warning(matrix):
    target = resolve(matrix, "sglang", release="0.8.1", cuda="13.0", arch="arm64")
    assert target.status == "experimental"
    assert target.notes == ("CUDA 13.0 for SGLang in 0.8.1 is experimental",)
    arm = resolve(matrix, "vllm", release="0.1.0", arch="x86_64")
    assert arm.status == "supported"
    planned = resolve(matrix, "trtllm", release="0.1.0", arch="x86_64")
    assert planned.status == "experimental" and "subject to change" in planned.notes[0]


def test_image_python_is_the_os_python_unless_the_base_is_replaced(matrix):
    assert refusal(matrix, framework="vllm", release="0.8.1", python="3.11", arch="x86_64") == (
        "0.8.1 images are built on Ubuntu 24.04, whose Python is 3.12; you asked for 3.11"
        " (give a base image with Python 3.11 to build it anyway)")
    target = resolve(matrix, "llama_cpp", cuda="cpu", python="3.11", arch="x86_64", base_image="stand-in:bookworm")
    assert (target.python, target.base_image, target.runtime_image) == ("3.11", "stand-in:bookworm", "stand-in:bookworm")


def test_caveats_refuse_with_alternatives(matrix):
    assert refusal(matrix, framework="trtllm", release="0.8.1", python="3.11", arch="x86_64", base_image="custom:1") == (
        "TensorRT-LLM does not support Python 3.11, so installation of the ai-dynamo[trtllm] Python wheel will"
        " fail; you asked for Python 3.11 in 0.8.1; use Python 3.10 or 3.12")
    assert refusal(matrix, framework="vllm", release="0.1.0", python="3.10", arch="x86_64",
                   base_image="custom:1").startswith(
        "NIXL support is available only for Python 3.12; you asked for Python 3.10 in 0.1.0; use Python 3.12")


@pytest.mark.parametrize("kwargs, expected", [
    (dict(framework="vllm", release="0.1.0", arch="arm64"), "0.1.0 builds container images for x86_64 only; you asked for ARM64"),
    (dict(framework="sglang", release="0.1.0"), "SGLang is not part of release 0.1.0, which ships vLLM and TensorRT-LLM;"),
    (dict(framework="mlc"), "unknown framework 'mlc'; valid frameworks: frontend, vllm, sglang, trtllm or llama_cpp"),
    (dict(framework="vllm", release="0.9"), "release '0.9' is not in the matrix; known releases: main, 1.6.1, 1.6.0,"),
    (dict(framework="vllm", arch="riscv64"), "unknown CPU architecture 'riscv64'; valid: arm64 or x86_64"),
    (dict(framework="vllm", python="3.13", arch="x86_64"), "1.6.1 supports Python 3.10, 3.11 and 3.12; you asked for 3.13"),
    (dict(framework="vllm", release="main"), "vLLM in main has no CUDA toolkit in the matrix, so nothing can be built;"),
    (dict(framework="vllm", cuda="cpu", arch="x86_64"), "vLLM in 1.6.1 ships CUDA 13.0 only; you asked for the CPU"),
    (dict(framework="frontend", release="0.8.1", cuda="12.9", arch="x86_64"),
     "Dynamo Frontend in 0.8.1 ships only a CPU build; you asked for 12.9"),
])
def test_one_sentence_refusals(matrix, kwargs, expected):
    message = refusal(matrix, **kwargs)
    assert message.startswith(expected)
    assert "\n" not in message


def test_arch_aliases_and_release_spelling(matrix):
    for spelling in ("arm64", "aarch64", "linux/arm64"):
        assert resolve(matrix, "vllm", release="v0.8.0", arch=spelling).arch == "arm64"


def test_patch_release_has_base_cuda_and_own_pins(matrix):
    target = resolve(matrix, "trtllm", release="0.8.1.post1", arch="x86_64")
    assert (target.cuda, target.engine_version) == ("13.0", "1.2.0rc6.post2")
    assert resolve(matrix, "sglang", release="0.7.0.post1", arch="x86_64").cuda == "12.9"


def test_seed_004_pins(matrix):
    target = resolve(matrix, "vllm", release="0.6.1", arch="x86_64")
    assert target.engine_requirement == "vllm[flashinfer]==0.10.2"
    assert target.extra_requirements == ("flashinfer==0.1.8",)
    assert (target.cuda, target.nixl) == ("12.8", "0.6.0")
    assert resolve(matrix, "trtllm", release="0.6.1", arch="x86_64").base_image == "nvcr.io/nvidia/pytorch:25.06-py3"
    assert resolve(matrix, "vllm", release="0.1.0", arch="x86_64").engine_requirement == "vllm==0.7.2+dynamo"


def test_llama_cpp_runs_on_the_cpu(matrix):
    target = resolve(matrix, "llama_cpp", cuda="cpu", arch="x86_64")
    assert target.cuda is None and target.device == "cpu" and target.driver_linux is None
    assert target.base_image == "docker.io/library/ubuntu:24.04" and target.cuda_archs == ()


def test_frontend_image_has_no_engine(matrix):
    target = resolve(matrix, "frontend", arch="x86_64")
    assert (target.device, target.engine_requirement, target.nixl) == ("cpu", None, None)
    assert refusal(matrix, framework="frontend", release="0.7.1").startswith("Dynamo Frontend is not part of release 0.7.1")


def test_every_listed_target_is_valid_and_unique(matrix):
    found = targets(matrix)
    names = [t.name for t in found]
    assert len(names) == len(set(names))
    for target in found:
        assert evaluate(matrix, target.release, target.framework, target.cuda or "cpu", target.arch,
                        target.python) == target


def test_list_is_exactly_the_valid_cells(matrix):
    trtllm = {(t.cuda, t.arch, t.python) for t in targets(matrix, release="0.8.1", framework="trtllm")}
    assert trtllm == {("13.0", "x86_64", "3.12"), ("13.0", "arm64", "3.12")}
    assert {t.arch for t in targets(matrix, release="0.1.0")} == {"x86_64"}
    assert {t.python for t in targets(matrix, release="0.1.0")} == {"3.12"}
    assert [t.framework for t in targets(matrix, release="main")] == ["frontend", "frontend"]  # no CUDA for engines


def test_artifacts_per_release(matrix):
    assert release_artifacts(matrix, "0.8.1.post1") == ["ai-dynamo", "ai-dynamo-runtime", "kvbm", "tensorrtllm-runtime"]
    seven = release_artifacts(matrix, "0.7.1")
    assert "dynamo-frontend" not in seven and "dynamo-config" not in seven  # new in 0.8.0
    assert "vllm-runtime" in seven and "vllm-runtime-cu13" not in seven  # 0.7.1 ships no CUDA 13 vLLM
    eight = release_artifacts(matrix, "0.8.0")
    assert {"dynamo-frontend", "vllm-runtime-cu13", "sglang-runtime-cu13", "dynamo-memory"} <= set(eight)
