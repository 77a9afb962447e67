"""A lock or an image holds only builds for its cell's CUDA (dynamo.cuda_builds), with the facts of real
wheels: PyPI's torch 2.11 is a CUDA 13.0 build (it needs nvidia-cuda-runtime 13.0.96), torch 2.9.0 a CUDA
12.8 one (nvidia-cuda-runtime-cu12 12.8.90); nixl 0.8.0 asks for nixl-cu12>=0.8.0 with no upper bound;
nixl 1.4.1 requires both nixl-cu12 and nixl-cu13 and loads the one for the CUDA it finds."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

from dynamo import cuda_builds, lock, pipcheck


def test_builds_of_another_major_or_a_newer_minor_are_named():
    cuda13_torch = {"torch": "2.11.0", "nvidia-cuda-runtime": "13.0.96", "cuda-toolkit": "13.0.2"}
    found = cuda_builds.problems(cuda13_torch, "12.9", "cell")
    assert found == ["cell: cuda-toolkit==13.0.2 carries CUDA 13.0, newer than or outside the cell's CUDA 12.9",
                     "cell: nvidia-cuda-runtime==13.0.96 carries CUDA 13.0, newer than or outside the cell's CUDA 12.9"]
    assert cuda_builds.problems(cuda13_torch, "13.0", "cell") == []
    cuda128 = {"torch": "2.9.0", "nvidia-cuda-runtime-cu12": "12.8.90", "nvidia-cublas-cu12": "12.8.4.1"}
    assert cuda_builds.problems(cuda128, "12.9", "cell") == []  # older minor: minor-version compatibility
    assert cuda_builds.problems(cuda128, "12.6", "cell") == [
        "cell: nvidia-cuda-runtime-cu12==12.8.90 carries CUDA 12.8, newer than or outside the cell's CUDA 12.6"]
    assert cuda_builds.problems(cuda128, "13.0", "cell")[0] == \
        "cell: nvidia-cublas-cu12==12.8.4.1 is a CUDA 12 build in a CUDA 13.0 cell"
    assert cuda_builds.problems({"torch": "2.11.0+cu130"}, "12.9", "cell") == [
        "cell: torch==2.11.0+cu130 carries CUDA 13.0, newer than or outside the cell's CUDA 12.9"]
    assert cuda_builds.problems({"cupy-cuda12x": "13.6.0"}, "13.0", "cell") == [
        "cell: cupy-cuda12x==13.6.0 is a CUDA 12 build in a CUDA 13.0 cell"]


def test_a_cpu_torch_in_a_cuda_cell_and_a_mismatched_nixl_are_named():
    assert cuda_builds.problems({"torch": "2.9.1", "sglang": "0.5.6.post2"}, "13.0", "cell") == [
        "cell: torch==2.9.1 is a CPU build (no CUDA runtime with it) in a CUDA 13.0 cell"]
    assert cuda_builds.problems({"nixl": "0.8.0", "nixl-cu12": "1.5.1"}, "12.9", "cell") == [
        "cell: nixl==0.8.0 with nixl-cu12==1.5.1: NIXL's libraries must be the version its label names"]
    assert cuda_builds.problems({"nixl": "0.8.0", "nixl-cu12": "0.8.0"}, "12.9", "cell") == []
    assert cuda_builds.problems({"torch": "2.9.1"}, None, "cell") == []  # a CPU cell


def test_constraints_keep_a_resolution_inside_the_cell():
    found = cuda_builds.constraints("12.9", "0.8.0")
    assert "nvidia-cuda-runtime-cu12>=12,<12.10" in found and "cuda-toolkit>=12,<12.10" in found
    assert found[-1] == "nixl-cu12==0.8.0"
    assert "nixl-cu13==1.4.1" in cuda_builds.constraints("13.0", "1.4.1")


def test_only_another_majors_build_beside_the_cells_own_is_left_out():
    pins = {"nixl": "1.4.1", "nixl-cu12": "1.4.1", "nixl-cu13": "1.4.1", "nvidia-cutlass-dsl-libs-cu12": "4.7.1",
            "nvidia-cutlass-dsl-libs-cu13": "4.7.1", "nvidia-cublas-cu12": "12.8.4.1"}
    # cuBLAS for CUDA 12 has no CUDA 13 twin here: a real incoherence, not an alternate to leave out
    assert cuda_builds.other_major_alternates(pins, "13.0") == ["nixl-cu12", "nvidia-cutlass-dsl-libs-cu12"]


def test_committed_locks_are_coherent_and_record_what_they_left_out():
    locks = sorted((REPO / "locks").glob("*/*.txt"))
    assert locks, "no committed lock"
    for path in locks:
        cuda = path.name.split("-cuda", 1)[1].split("-")[0] if "-cuda" in path.name else None
        assert cuda_builds.problems(lock.pinned(path.read_text()), cuda, path.name) == []
    vllm = (REPO / "locks/1.6.1/vllm-cuda13.0-py3.11-amd64.txt").read_text()
    assert pipcheck.dropped(vllm) == {"nixl-cu12", "nvidia-cutlass-dsl-libs-cu12"}
    assert {"nixl", "nixl-cu13", "torch", "vllm"} <= set(lock.pinned(vllm))


def test_pip_check_allows_only_what_the_lock_left_out():
    output = ("nixl 1.4.1 requires nixl-cu12, which is not installed.\n"
              "nvidia-cutlass-dsl 4.7.1 requires nvidia-cutlass-dsl-libs-cu12, which is not installed.\n"
              "vllm 0.31.0 requires numba, which is not installed.\n"
              "torch 2.13.0 has requirement triton==3.7.0, but you have triton 3.6.0.\n")
    left_out = {"nixl-cu12", "nvidia-cutlass-dsl-libs-cu12"}
    assert pipcheck.real_problems(output, left_out) == [
        "vllm 0.31.0 requires numba, which is not installed.",
        "torch 2.13.0 has requirement triton==3.7.0, but you have triton 3.6.0."]
    assert pipcheck.real_problems("No broken requirements found.\n", set()) == []


def test_pip_check_runs_for_real_on_this_environment(tmp_path):
    lockfile = tmp_path / "lock.txt"
    lockfile.write_text("# dropped: \n")
    result = subprocess.run([sys.executable, "-m", "dynamo.pipcheck", str(lockfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr  # the test environment has no broken requirement
    usage = subprocess.run([sys.executable, "-m", "dynamo.pipcheck"], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage:")
