"""`dynamo doctor` on a corpus of host facts recorded on real machines (tests/data/hosts/*/source.txt
says where each came from): every host gives its expected verdicts and never crashes."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_cli

from dynamo.doctor.facts import from_recording, parse_proc_version, parse_smi_csv, parse_smi_table, parse_smi_xml
from dynamo.doctor.judge import Subject, covered, judge

HOSTS = sorted(p for p in (REPO / "tests" / "data" / "hosts").iterdir() if p.is_dir())
CASES = [(host, i, subject) for host in HOSTS
         for i, subject in enumerate(json.loads((host / "expected.json").read_text())["subjects"])]


@pytest.mark.parametrize("host, index, case", CASES, ids=[f"{h.name}-{i}" for h, i, _ in CASES])
def test_recorded_host_gives_its_verdicts(matrix, host, index, case):
    findings = judge(matrix, from_recording(host), Subject(case["release"], case["framework"], case["device"]),
                     case.get("scope", "all"))
    for status, check, text in case["expect"]:
        assert any(f.status == status and f.check == check and (text in f.message or text in (f.fix or ""))
                   for f in findings), (status, check, text, findings)
    for status, check, text in case.get("absent", []):
        assert not any(f.status == status and f.check == check and (text in f.message or text in (f.fix or ""))
                       for f in findings), (status, check, text, findings)
    assert any(f.status == "fail" for f in findings) == (case["exit"] == 1)
    for finding in findings:  # each host verdict that fails names its fix
        assert finding.status != "fail" or finding.check not in ("toolkit", "driver", "gpu") or finding.fix, finding


@pytest.mark.parametrize("host", HOSTS, ids=[h.name for h in HOSTS])
def test_doctor_cli_on_recorded_host(host):
    case = json.loads((host / "expected.json").read_text())["subjects"][0]
    args = ["doctor", "--facts", str(host), "--release", case["release"], "--json"]
    args += ["--framework", case["framework"]] if case["framework"] else []
    args += ["--cuda", case["device"]] if case["device"] else []
    args += ["--scope", case["scope"]] if "scope" in case else []
    result = run_cli(*args)
    assert "Traceback" not in result.stderr
    assert result.returncode == case["exit"], result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == sum(f["status"] == "fail" for f in report["findings"])
    text = run_cli(*[a for a in args if a != "--json"])
    assert text.returncode == case["exit"]
    assert text.stdout.splitlines()[-1] in ("no check failed", f"{report['failed']} check(s) failed")
    for finding in report["findings"]:
        if finding["fix"] and finding["status"] != "ok":
            assert f"fix: {finding['fix']}" in text.stdout


def test_parsers_read_each_format():
    assert parse_smi_csv("NVIDIA H100 80GB HBM3, 580.82.07, 81559 MiB, 9.0\n")[1][0].compute_capability == "9.0"
    driver, cuda, gpus = parse_smi_table((REPO / "tests/data/hosts/b200x2-r610/nvidia-smi.txt").read_text())
    assert (driver, cuda, [g.name for g in gpus], gpus[0].memory_mib, gpus[0].mig) == (
        "610.43.02", "13.3", ["NVIDIA B200", "NVIDIA B200"], 183359, False)
    assert parse_proc_version("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build") == "580.95.05"
    xml = ("<nvidia_smi_log><driver_version>580.95.05</driver_version><cuda_version>13.0</cuda_version>"
           "<gpu><product_name>NVIDIA H200</product_name><fb_memory_usage><total>143771 MiB</total></fb_memory_usage>"
           "<mig_mode><current_mig>Enabled</current_mig></mig_mode></gpu></nvidia_smi_log>")
    driver, cuda, gpus = parse_smi_xml(xml)
    assert (driver, cuda, gpus[0].name, gpus[0].memory_mib, gpus[0].mig) == ("580.95.05", "13.0", "NVIDIA H200", 143771, True)
    assert parse_smi_xml("<nvidia_smi_log><gpu>") == (None, None, [])


def test_compute_capability_coverage_rule():
    assert covered("8.9", ("8.0", "8.6", "9.0"))  # 8.6 cubins run on 8.9
    assert not covered("8.0", ("8.6", "9.0"))  # never a lower minor
    assert not covered("12.0", ("9.0", "10.0"))  # never across majors


def test_bad_usage_exits_2(tmp_path):
    result = run_cli("doctor", "--facts", str(tmp_path / "missing"))
    assert result.returncode == 2 and result.stderr.startswith("error: --facts")
    result = run_cli("doctor", "--release", "9.9")
    assert result.returncode == 2 and result.stderr.startswith("error: release '9.9' is not in the matrix")


def test_doctor_on_this_machine_does_not_crash():
    result = run_cli("doctor", "--json")
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["facts"]["python"]


def test_corpus_sources_are_recorded():
    assert HOSTS, "tests/data/hosts holds no recorded host"
    for host in HOSTS:
        assert (host / "source.txt").read_text().strip(), host


def test_host_scope_reports_caveats_about_run_flags(matrix):
    from dynamo.doctor.facts import Gpu, HostFacts
    al2023 = HostFacts(arch="x86_64", os_id="amzn", os_version="2023", os_name="Amazon Linux 2023", python="3.9.16",
                       driver="580.82.07", gpus=[Gpu("NVIDIA H100 80GB HBM3", 81559, "9.0")], gpu_source="nvml")
    findings = judge(matrix, al2023, Subject("0.8.1", "trtllm", "13.0"), scope="host")
    (caveat,) = [f for f in findings if f.check == "caveat"]
    assert caveat.status == "warn" and "(avoid --network host)" in caveat.message
    assert caveat.fix.startswith("replace --network host with port mappings") and "-p 4222:4222" in caveat.fix
    assert not [f for f in judge(matrix, al2023, Subject("0.8.1", "vllm", "12.9"), scope="host") if f.check == "caveat"]
    assert [f.check for f in findings if f.status != "ok"] == ["caveat"]  # python and limits are not the host's


def test_through_cdi_the_toolkit_checks_no_requirement():
    """A GeForce RTX 4070 on R550 (CUDA 12.4) and a CUDA 12.9 image. Through `docker run --gpus` the
    toolkit refuses it: a GeForce card has no forward-compatibility clause, and cuda>=12.9 is not met.
    Through CDI (podman, which run.sh uses with --device nvidia.com/gpu=...) the toolkit checks no
    NVIDIA_REQUIRE_* (NVIDIA/nvidia-container-toolkit#1470): the image starts and runs through CUDA 12.x
    minor-version compatibility (R550 is above 12.x's floor, 525.60.13), with its limits."""
    host = str(REPO / "tests" / "data" / "hosts" / "rtx4070-r550-frogging")
    cell = ("doctor", "--release", "0.8.1", "--framework", "vllm", "--cuda", "12.9", "--facts", host, "--scope", "host",
            "--json")
    findings = lambda result: {f["check"]: f["status"] for f in json.loads(result.stdout)["findings"]}  # noqa: E731
    hook, cdi = run_cli(*cell), run_cli(*cell, "--cdi")
    assert (hook.returncode, cdi.returncode) == (1, 0), (hook.stdout, cdi.stdout)
    assert findings(hook)["toolkit"] == "fail" and findings(cdi)["toolkit"] == "ok"
    assert findings(hook)["driver"] == findings(cdi)["driver"] == "warn"  # minor-version compatibility either way
