"""`python build.py matrix ...` as a user runs it: output, exit codes, and no tracebacks."""

from __future__ import annotations

import json
import re

from conftest import MATRIX_FILE, run_cli


def test_check_passes_on_the_shipped_matrix():
    result = run_cli("matrix", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("matrix/support_matrix.toml: ok (9 releases, 5 frameworks,")


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
    assert result.returncode == 0 and result.stdout.startswith("Dynamo v0.8.1 (latest) -- released")


def test_unknown_values_list_the_valid_ones():
    result = run_cli("matrix", "show", "--release", "0.8.1", "--framework", "tensorrt")
    assert result.returncode == 2
    assert result.stderr == "error: unknown framework 'tensorrt'; valid frameworks: frontend, vllm, sglang, trtllm or llama_cpp\n"
    result = run_cli("matrix", "lst")
    assert result.returncode == 2 and "invalid choice: 'lst' (choose from 'list', 'show', 'check', 'pin')" in result.stderr


def test_broken_matrix_lists_every_problem_without_traceback(tmp_path):
    text = MATRIX_FILE.read_text()
    text = text.replace('latest = "0.8.1"', 'latest = "0.8.2"')
    text = text.replace('vllm = { version = "0.11.0", cuda = { "12.9" = "supported" } }',
                        'vllm = { version = "0.11.x", cuda = { "12.9" = "supported" } }')
    text = text.replace('sglang = { version = "0.5.3.post4", cuda = { "12.8" = "supported" } }',
                        'sglang = { version = "0.5.3.post4", cuda = { "12.7" = "supported" } }')
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
