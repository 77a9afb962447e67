"""The cheap parts of benchmarks/gpu_check.py: the CUDA architecture it builds for, the CMake options,
and which files of llama-cpp-python's sdist travel to the GPU machine (its build is checked by running
the script, not here)."""

from __future__ import annotations

import importlib.util
import re

import pytest
from conftest import REPO

from dynamo.images import cmake_cuda_architecture

spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


@pytest.mark.parametrize(("compute_cap", "arch"), [("9.0", "90"), ("8.6", "86"), ("10.0", "100"), ("12.0", "120"),
                                                   ("10.3\n", "103")])
def test_compute_capability_as_cmake_architecture(compute_cap, arch):
    assert cmake_cuda_architecture(compute_cap) == arch


@pytest.mark.parametrize("bad", ["", "9", "nine", "9.x", "[N/A]"])
def test_a_compute_capability_that_is_not_major_minor_is_named(bad):
    with pytest.raises(ValueError, match=re.escape(f"compute capability {bad!r} is not MAJOR.MINOR")):
        cmake_cuda_architecture(bad)


def test_cmake_options_build_one_cuda_architecture_without_what_the_slim_sdist_lacks():
    cuda = gpu_check.cmake_args("90").split()
    assert [option for option in cuda if "CUDA" in option] == ["-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=90"]
    # The slim sdist has no vendor/llama.cpp/tools/, which llama-cpp-python's CMakeLists adds for LLAVA_BUILD.
    assert "-DLLAVA_BUILD=OFF" in cuda and "-DGGML_NATIVE=OFF" in cuda
    assert not any("CUDA" in option for option in gpu_check.cmake_args(None).split())


@pytest.mark.parametrize("path", ["CMakeLists.txt", "pyproject.toml", "README.md", "llama_cpp/llama.py",
                                  "vendor/llama.cpp/CMakeLists.txt", "vendor/llama.cpp/ggml/src/ggml-cuda/mmq.cu",
                                  "vendor/llama.cpp/ggml/src/ggml-cuda/template-instances/mmq-instance-q4_0.cu",
                                  "vendor/llama.cpp/src/llama.cpp", "vendor/llama.cpp/common/arg.cpp",
                                  "vendor/llama.cpp/vendor/nlohmann/json.hpp", "vendor/llama.cpp/cmake/build-info.cmake"])
def test_the_sources_the_build_reads_travel(path):
    assert gpu_check.sdist_member_kept(path)


@pytest.mark.parametrize("path", [".git/HEAD", "vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf",
                                  "vendor/llama.cpp/docs/build.md", "vendor/llama.cpp/tools/mtmd/clip.cpp",
                                  "vendor/llama.cpp/examples/simple/simple.cpp", "vendor/llama.cpp/tests/",
                                  "vendor/llama.cpp/vendor/miniaudio/miniaudio.h", "docs/index.md"])
def test_models_docs_tests_and_tools_stay_behind(path):
    assert not gpu_check.sdist_member_kept(path)


# llama.cpp's lines as its load prints them (llama-cpp-python 0.3.16, verbose=True).
ON_THE_CPU = ["load_tensors: layer   0 assigned to device CPU, is_swa = 0",
              "load_tensors: layer   1 assigned to device CPU, is_swa = 0",
              "load_tensors: layer   2 assigned to device CPU, is_swa = 0"]
ON_THE_GPU = ["load_tensors: layer   0 assigned to device CUDA0, is_swa = 0",
              "load_tensors: layer   1 assigned to device CUDA0, is_swa = 0",
              "load_tensors: layer   2 assigned to device CUDA0, is_swa = 0",
              "load_tensors: offloading 2 repeating layers to GPU", "load_tensors: offloaded 3/3 layers to GPU"]


@pytest.mark.parametrize(("lines", "offloaded"), [
    (ON_THE_GPU, True), (ON_THE_GPU[:3], True), (ON_THE_CPU, False), ([], False),
    (["load_tensors: offloaded 2/3 layers to GPU"], False), (["load_tensors: offloaded 0/0 layers to GPU"], False),
    (ON_THE_GPU[:2] + ON_THE_CPU[2:], False)])
def test_the_gpu_counts_as_used_only_when_llama_cpp_put_every_layer_on_it(lines, offloaded):
    assert gpu_check.all_layers_offloaded(lines) is offloaded
