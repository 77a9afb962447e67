"""Recordings no host printed are refused with exit 2, one line naming the file and field (issue 20):
unreadable files, values outside what any NVIDIA driver or GPU reports, inputs built to make the
parsers slow. And names that nvidia-smi's table cut short resolve when their prefix is unambiguous."""

from __future__ import annotations

import json
import os

import pytest
from conftest import REPO, run_cli

from dynamo.doctor.facts import from_recording
from dynamo.doctor.judge import Subject, judge, known_gpu, model_name

HOST = json.dumps({"arch": "x86_64", "python": "3.12.3"})
H100_TABLE = (REPO / "tests/data/hosts/h100x2-r535/nvidia-smi.txt").read_text()


def nvml(driver: str = "580.95.05", **gpu: object) -> str:
    return json.dumps({"driver": driver, "cuda_driver_version": 13000,
                       "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "compute_capability": "9.0"} | gpu]})


def refused(directory, *args: str) -> list[str]:
    """The doctor's stderr lines on this recording, after checking it exits 2 without a traceback."""
    result = run_cli("doctor", "--facts", str(directory), "--release", "0.8.1", "--framework", "trtllm", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout + result.stderr
    return result.stderr.splitlines()


CORRUPT = {
    "a driver of 20 digits": ({"nvml.json": nvml("99999999999999999999.0")}, "nvml.json: driver: "),
    "a driver of 20 digits in the table": ({"nvidia-smi.txt": H100_TABLE.replace("535.129.03", "99999999999999999999.0")},
                                           "nvidia-smi.txt: driver: "),
    "negative memory": ({"nvml.json": nvml(memory_mib=-81559)}, "nvml.json: gpus[0].memory_mib: -81559 MiB"),
    "a negative /dev/shm": ({"host.json": json.dumps({"arch": "x86_64", "shm_bytes": -1})}, "host.json: shm_bytes: "),
    "a memlock below unlimited (-1)": ({"host.json": json.dumps({"memlock": [-5, -5]})}, "host.json: memlock: "),
    "an H100 at compute capability 12.0": ({"nvml.json": nvml(compute_capability="12.0")},
                                           "nvml.json: gpus[0].compute_capability: 12.0, but every NVIDIA H100 80GB HBM3"
                                           " is 9.0"),
    "a translated table": ({"nvidia-smi.txt": H100_TABLE.replace("Driver Version", "Version du pilote")
                            .replace("CUDA Version", "Version CUDA")}, "nvidia-smi.txt: a table with no \"Driver Version\""),
    "10,000 GPUs": ({"nvml.json": json.dumps({"driver": "580.95.05", "cuda_driver_version": 13000,
                                              "gpus": [{"name": "NVIDIA H100 80GB HBM3"}] * 10_000})},
                    "nvml.json: gpus: expected a list of at most 64 GPUs"),
    "a GPU name of 4,000 characters": ({"nvml.json": nvml(name="NVIDIA H100" + " -" * 2000 + "x")},
                                       "nvml.json: gpus[0].name: 4012 characters"),
    "host.json nested 1,000 deep": ({"host.json": '{"packages": ' + "[" * 1000 + "]" * 1000 + "}"},
                                    "host.json: JSON nested too deep"),
    "NUL bytes": ({"nvidia-smi.txt": H100_TABLE.replace("Driver", "Dri\x00ver")}, "nvidia-smi.txt: a NUL byte at byte"),
}


@pytest.mark.parametrize("files, line", CORRUPT.values(), ids=CORRUPT)
def test_absurd_recordings_are_refused_naming_the_file_and_field(tmp_path, files, line):
    (tmp_path / "host.json").write_text(HOST)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (error,) = refused(tmp_path)
    assert error.startswith(f"error: {tmp_path}/{line}"), error


def test_unreadable_files_are_refused(tmp_path):
    (tmp_path / "host.json").mkdir()
    os.symlink("nvml.json", tmp_path / "nvml.json")  # a link to itself
    (tmp_path / "nvidia-smi.csv").write_bytes(b"NVIDIA H100, 580.95.05, 81559 MiB, 9.0\n\x00")
    assert refused(tmp_path) == [
        f"error: {tmp_path}/host.json: not a file; record the tool's output into a file of that name",
        f"error: {tmp_path}/nvml.json: cannot be read (Too many levels of symbolic links)",
        f"error: {tmp_path}/nvidia-smi.csv: a NUL byte at byte 39: not text a tool printed; record the tool's output"
        " as text"]


def test_an_empty_folder_is_no_recording(tmp_path):
    (error,) = refused(tmp_path)
    assert error.startswith(f"error: {tmp_path}: no recorded file (expected host.json, ")


def test_the_recording_once_judged_as_a_host_without_driver_is_refused():
    folder = REPO / "tests/data/refused/nul-bytes-truncated-table"
    (error,) = refused(folder)
    assert error.startswith(f"error: {folder}/nvidia-smi.txt: a NUL byte at byte 52")


def test_empty_facts_is_not_this_host():
    result = run_cli("doctor", "--facts", "")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--facts" in result.stderr


def test_a_line_longer_than_any_tool_prints_is_refused(tmp_path):
    (tmp_path / "host.json").write_text(HOST)
    (tmp_path / "nvidia-smi.txt").write_text(H100_TABLE.replace("|   1  NVIDIA H100 ", "|   1  NVIDIA H100" + " " * 60_000))
    (error,) = refused(tmp_path)
    assert error == f"error: {tmp_path}/nvidia-smi.txt: line 12 has 60,088 characters; no tool prints a line over 512"


def test_truncated_names_resolve_when_every_gpu_of_that_prefix_agrees(matrix, tmp_path):
    """Every V100 is 7.0 (NVIDIA's legacy list): TensorRT-LLM, built for 8.0 and up, has no kernel for it."""
    assert known_gpu(matrix, "Tesla V100-SXM2...").compute_capability == "7.0"
    assert known_gpu(matrix, "Tesla V100-SXM2-16...").compute_capability == "7.0"
    assert known_gpu(matrix, "NVIDIA RTX 6000 Ada Gene...").compute_capability == "8.9"
    assert known_gpu(matrix, "NVIDIA GeForce ...").compute_capability is None  # GeForce cards of every generation
    assert known_gpu(matrix, "Tesla V100-SXM2").compute_capability == "7.0"  # a suffix, not a cut
    assert known_gpu(matrix, "Tesla V1").compute_capability is None  # no "...": matched exactly only
    (tmp_path / "host.json").write_text(HOST)
    (tmp_path / "nvidia-smi.txt").write_text(H100_TABLE.replace("NVIDIA H100 80GB HBM3 ", "Tesla V100-SXM2...     "))
    findings = judge(matrix, from_recording(tmp_path), Subject("0.8.1", "trtllm", None), "host")
    gpus = [f for f in findings if f.check == "gpu"]
    assert len(gpus) == 2 and all(f.status == "fail" and "(compute capability 7.0)" in f.message for f in gpus), gpus


@pytest.mark.parametrize("name, model", [
    ("NVIDIA H100 80GB HBM3", "h100"), ("Tesla V100-SXM2-16GB", "tesla v100"), ("NVIDIA A100-SXM4-40GB", "a100"),
    ("NVIDIA GeForce RTX 3060 Laptop GPU", "geforce rtx 3060"), ("NVIDIA H100 NVL", "h100"),
    ("NVIDIA A100 80GB PCIe", "a100"), ("Tesla P100-PCIE-16 GB", "tesla p100"), ("NVIDIA 80GB", "80gb"),
    ("NVIDIA H100" + " -" * 2000 + "x", "h100" + " -" * 2000 + "x"), ("", ""),
])
def test_model_names(name, model):
    assert model_name(name) == model
