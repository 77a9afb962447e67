"""`python build.py matrix ...` as a user runs it: output, exit codes, and no tracebacks."""

from __future__ import annotations

import json
import re

import pytest
from conftest import MATRIX_FILE, run_cli


def test_check_passes_on_the_shipped_matrix():
    result = run_cli("matrix", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("matrix/support_matrix.toml: ok (29 releases, 5 frameworks,")


def test_list_table_and_json():
    table = run_cli("matrix", "list", "--release", "0.8.1", "--framework", "trtllm")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["RELEASE", "FRAMEWORK", "ENGINE", "DEVICE", "ARCH", "PYTHON", "NIXL", "MIN DRIVER", "STATUS"]
    assert lines[1].split() == ["0.8.1", "trtllm", "1.2.0rc6.post1", "cuda13.0", "x86_64", "3.12", "0.8.0", "580.65.06", "supported"]
    assert lines[-1] == "2 build targets"
    data = json.loads(run_cli("matrix", "list", "--json").stdout)
    assert {"name", "engine_requirement", "base_image", "driver_linux"} <= set(data[0])


def test_show_defaults_to_latest():
    result = run_cli("matrix", "show")
    assert result.returncode == 0 and result.stdout.startswith("Dynamo v1.6.1 (latest) -- released")


def test_unknown_values_list_the_valid_ones():
    result = run_cli("matrix", "show", "--release", "0.8.1", "--framework", "tensorrt")
    assert result.returncode == 2
    assert result.stderr == "error: unknown framework 'tensorrt'; valid frameworks: frontend, vllm, sglang, trtllm or llama_cpp\n"
    result = run_cli("matrix", "lst")
    assert result.returncode == 2 and "invalid choice: 'lst' (choose from 'list', 'show', 'check', 'pin', 'import', 'bump')" in result.stderr


def test_broken_matrix_lists_every_problem_without_traceback(tmp_path):
    text = MATRIX_FILE.read_text()
    text = text.replace('latest = "1.6.1"', 'latest = "0.8.2"')
    text = text.replace('vllm = { version = "0.11.0", cuda = { "12.9" = "supported" } }',
                        'vllm = { version = "0.11.x", cuda = { "12.9" = "supported" } }')
    text = text.replace('sglang = { version = "0.5.3.post4", upstream_version = "0.5.4.post3", cuda = { "12.8" = "supported" } }',
                        'sglang = { version = "0.5.3.post4", upstream_version = "0.5.4.post3", cuda = { "12.7" = "supported" } }')
    broken = tmp_path / "broken.toml"
    broken.write_text(text)
    result = run_cli("matrix", "check", "--matrix", str(broken))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"{broken}: release.\"0.7.1\".engines.vllm.version: expected a PEP 440 version such as \"0.12.0\" or \"1.2.0rc6.post1\", got '0.11.x'"
    assert lines[-1] == "1 problem(s) in the support matrix"
    text = text.replace("0.11.x", "0.11.0")
    broken.write_text(text)
    lines = run_cli("matrix", "list", "--matrix", str(broken)).stderr.splitlines()
    assert lines[0].startswith(f"{broken}: latest: release '0.8.2' is not defined; expected one of:")
    assert lines[1].startswith(f"{broken}: release.\"0.7.1\".engines.sglang.cuda.\"12.7\": CUDA toolkit '12.7' is not defined")


def test_syntax_error_exit_code(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text(MATRIX_FILE.read_text().replace('[cuda."12.9"]', '[cuda."12.9"'))
    result = run_cli("matrix", "check", "--matrix", str(broken))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{broken}: invalid TOML:") and "line" in result.stderr


def test_matrix_from_environment(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO
    env = dict(os.environ, DYNAMO_MATRIX=str(tmp_path / "missing.toml"))
    result = subprocess.run([sys.executable, str(REPO / "build.py"), "matrix", "check"], env=env,
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "cannot read the matrix (No such file or directory); pass --matrix PATH or set DYNAMO_MATRIX" in result.stderr


def test_matrix_option_before_the_command(tmp_path):
    """The README's `python build.py --matrix F matrix check` and `dynamo --matrix F doctor`."""
    copy = tmp_path / "copy.toml"
    copy.write_text(MATRIX_FILE.read_text())
    check = run_cli("--matrix", str(copy), "matrix", "check")
    assert check.returncode == 0 and check.stdout.startswith(f"{copy}: ok ("), check.stderr
    doctor = run_cli(f"--matrix={copy}", "doctor", "--scope", "host", "--framework", "frontend")
    assert doctor.returncode == 0 and doctor.stdout.startswith("dynamo doctor: "), doctor.stderr
    missing = run_cli("--matrix", str(tmp_path / "none.toml"), "matrix", "check")
    assert missing.returncode == 2 and "cannot read the matrix" in missing.stderr
    build = run_cli("--matrix", str(copy), "--framework", "frontend", "--dry-run")
    assert build.returncode == 0 and " frontend cpu (" in build.stdout, build.stderr


def test_usage_names_the_command_the_user_typed():
    assert run_cli("--help").stdout.startswith("usage: python build.py ")
    assert run_cli("--framework").stderr.startswith("usage: python build.py [-h]")
    assert "dynamo build" not in run_cli("--framework").stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--cuda", "", "error: --cuda needs a value: a CUDA version of the matrix such as 12.9, or cpu"),
    ("--platform", "", "error: --platform needs a value: OS/ARCH[,OS/ARCH...]"),
    ("--python", "", "error: --python needs a value: a Python version of the release such as 3.12"),
    ("--release", " ", "error: --release needs a value: a release of the matrix such as 0.8.1"),
    ("--platform", "linux/amd64,", "error: --platform needs OS/ARCH[,OS/ARCH...]"),
    ("--tag", "BAD TAG!", "error: --tag 'BAD TAG!' is not an image reference: [REGISTRY/]NAME[:TAG]"),
    ("--tag", "Dynamo:x", "error: --tag 'Dynamo:x' is not an image reference"),
    ("--base-image", "not a ref!!", "error: --base-image 'not a ref!!' is not an image reference"),
])
def test_empty_or_malformed_flags_are_one_line(flag, value, message):
    result = run_cli("--framework", "frontend", flag, value, "--dry-run")
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("args, message", [
    (("verify", "UPPER:case"), "error: IMAGE 'UPPER:case' is not an image reference: [REGISTRY/]NAME[:TAG]"),
    (("verify", ""), "error: IMAGE '' is not an image reference"),
    (("attest", "x;touch y", "--check"), "error: IMAGE 'x;touch y' is not an image reference"),
    (("doctor", "--image", "x;y"), "error: --image 'x;y' is not an image reference"),
    (("doctor", "--release", ""), "error: --release needs a value"),
    (("doctor", "--facts", ""), "error: --facts needs a value: the folder `doctor --record DIR` wrote"),
    (("doctor", "--framework", ""), "error: --framework needs a value"),
    (("matrix", "show", "--release", ""), "error: --release needs a value"),
    (("lock", "--check", "--framework", ""), "error: --framework needs a value"),
])
def test_bad_values_are_one_line_before_any_engine_runs(args, message):
    """Once a docker SDK traceback (exit 1), or an empty value silently meaning "not given"."""
    result = run_cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_an_empty_requirement_still_means_none():
    host = "tests/data/hosts/b200x2-r610"  # on a host, not inside a container
    result = run_cli("doctor", "--facts", host, "--release", "0.8.1", "--framework", "vllm", "--cuda", "12.9",
                     "--scope", "host", "--require", "", "--json")
    (toolkit,) = [f for f in json.loads(result.stdout)["findings"] if f["check"] == "toolkit"]
    assert toolkit["status"] == "ok" and "requires nothing" in toolkit["message"], result.stderr


@pytest.mark.parametrize("ref", ["dynamo:x", "localhost:5000/dynamo/frontend:0.8.1-cpu", "registry.example.com/a_b/c-d",
                                 "nvcr.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04@sha256:" + "a" * 64])
def test_valid_references_are_accepted(ref):
    from dynamo.matrix import checks
    assert checks.any_image_ref(ref) is None


def test_list_shows_a_dash_for_the_frontend_engine():
    out = run_cli("matrix", "list", "--release", "0.8.1", "--framework", "frontend").stdout
    assert out.splitlines()[1].split()[:4] == ["0.8.1", "frontend", "-", "cpu"]
    assert "None" not in out


def test_doctor_release_main_says_what_is_missing():
    from conftest import REPO

    result = run_cli("doctor", "--facts", str(REPO / "tests" / "data" / "hosts" / "h100x2-r535"),
                     "--release", "main", "--framework", "vllm")
    assert "✗ matrix  vLLM in main has no CUDA toolkit in the matrix, so nothing can be built;" in result.stdout
    assert "is not in release" not in result.stdout


def test_doctor_without_release_takes_the_newest_release_with_the_cuda():
    from conftest import REPO

    result = run_cli("doctor", "--facts", str(REPO / "tests" / "data" / "hosts" / "h100x2-r535"),
                     "--framework", "vllm", "--cuda", "12.9")
    assert result.stdout.startswith("dynamo doctor: release 1.2.1, vllm, CUDA 12.9 on x86_64")


def test_build_without_release_says_which_release_it_took():
    # 1.2.1's CUDA 12.9 cells have no lock here (PyPI's vLLM 0.20.1 is a CUDA 13.0 build): --unlocked
    result = run_cli("--framework", "vllm", "--cuda", "12.9", "--platform", "linux/amd64", "--dry-run", "--unlocked")
    assert result.returncode == 0, result.stderr
    assert ("warning: the latest release 1.6.1 has no vLLM on CUDA 12.9; using 1.2.1, the newest release that"
            " has it (pass --release to choose another)") in result.stderr
    assert "1.2.1 vllm cuda12.9 (supported)" in result.stdout
    refused = run_cli("--framework", "vllm", "--cuda", "12.9", "--release", "1.6.1", "--dry-run")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: vLLM in 1.6.1 ships CUDA 13.0 only; you asked for 12.9;"
                                     " releases with vLLM on CUDA 12.9: 1.2.1, 1.2.0,")


def test_a_build_warns_when_the_stores_disk_is_short_of_the_frameworks_measured_peak(matrix, tmp_path, monkeypatch):
    import shutil
    from types import SimpleNamespace

    from dynamo.cli import low_disk

    store = tmp_path / "storage"  # not made yet: its nearest existing parent is measured
    engine = SimpleNamespace(store_path=str(store), name="buildah")
    vllm = SimpleNamespace(targets=[SimpleNamespace(framework="vllm")] * 2)  # two platforms: twice the peak
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=40 * 2**30))  # no disk to fill here
    assert low_disk(matrix, vllm, engine) == (
        f"40 GiB free in {tmp_path}, and a vllm image needs about 70 GiB at its peak: free some space"
        " (e.g. `buildah image prune`) or the build may fail near its end")
    assert low_disk(matrix, SimpleNamespace(targets=vllm.targets[:1]), engine) is None  # 35 GiB for one
    assert low_disk(matrix, SimpleNamespace(targets=[SimpleNamespace(framework="frontend")]), engine) is None  # unmeasured
