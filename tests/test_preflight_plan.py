"""The preflight's plan (dynamo.doctor.plan) passes only what the doctor's judge passes.

A plan is built from one environment's settled facts (an image's OS, Python, engine) and judged
against any host's changing ones (driver, GPUs, shm, limits): every recorded host's, and generated
ones. Wherever the plan vouches for a start, the judge, given the very same facts, finds no failure.
The plan may send a passing host to the judge (a forward-compatible driver): that costs time only.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo.doctor import image, plan
from dynamo.doctor.facts import Gpu, HostFacts, from_recording
from dynamo.doctor.judge import FAIL, judge, subject_of, target_of
from dynamo.doctor.preflight import preflight

HOSTS = sorted((REPO / "tests" / "data" / "hosts").iterdir())
ENTRIES = ("vllm", "sglang", "trtllm", "llama_cpp", "frontend", "mocker")
# What a host decides at each start; everything else about it is settled in its environment.
CHANGING = ("driver", "driver_cuda", "kernel_module", "gpus", "gpu_source", "gpu_file", "gpu_error", "shm_bytes",
            "memlock", "nofile", "kernel_release", "wsl", "in_container")
# Images of the newest release for each engine's CUDA 13.0 and CPU cells, and no image at all.
CELLS = (None, ("1.6.1", "vllm", "13.0"), ("1.6.1", "sglang", "13.0"), ("1.6.1", "llama_cpp", "cpu"))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def recorded() -> dict[str, HostFacts]:
    return {host.name: from_recording(host) for host in HOSTS}


def bake(monkeypatch, cell):
    for name, value in zip((image.RELEASE, image.FRAMEWORK, image.DEVICE), cell or ("", "", "")):
        monkeypatch.setenv(name, value)


def inside(matrix, facts: HostFacts, entry: str, cell) -> HostFacts:
    """These facts as in an environment that carries the subject's engine and NIXL at their pins (an image)."""
    facts = copy.deepcopy(facts)
    if cell:
        facts.container_cuda = None if cell[2] == "cpu" else cell[2]
    subject = subject_of(matrix, facts, entry)
    if cell or not facts.python:  # the OS and Python of the release's images
        release = matrix.release[subject.release]
        system = matrix.os[release.image_os]
        facts.os_id, facts.os_version = system.id, system.version_id
        facts.python = f"{system.python or release.python_default}.0"
    target = target_of(matrix, facts, subject)[0] if subject.framework else None
    facts.packages = {"dynamo": subject.release}  # an image carries our package, its engine and NIXL only
    if target is not None:
        if package := matrix.framework[target.framework].package:
            facts.packages[package] = target.engine_pin
        if target.nixl:
            facts.packages["nixl"] = target.nixl
    return facts


def host_with(settled: HostFacts, changing: HostFacts) -> HostFacts:
    facts = copy.deepcopy(settled)
    for name in CHANGING:
        setattr(facts, name, copy.deepcopy(getattr(changing, name)))
    return facts


def judged_failures(matrix, facts: HostFacts, entry: str) -> list[str]:
    return [f"{f.check}: {f.message}" for f in judge(matrix, facts, subject_of(matrix, facts, entry)) if f.status == FAIL]


def plans(matrix, recorded, monkeypatch, cell):
    """The plan of each entry point in each distinct settled environment of the recorded hosts."""
    bake(monkeypatch, cell)
    found, seen = [], set()
    for facts in recorded.values():
        for entry in ENTRIES:
            settled = inside(matrix, facts, entry, cell)
            key = (entry, json.dumps(plan.settled_facts(settled), sort_keys=True), settled.wsl, bool(settled.gpus))
            if key in seen:
                continue
            seen.add(key)
            built = plan.build(matrix, settled, entry, subject_of(matrix, settled, entry))
            if built is not None:
                found.append((entry, settled, built))
    return found


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: "-".join(c) if c else "no-image")
def test_a_plan_passes_only_hosts_the_judge_passes(matrix, recorded, monkeypatch, cell):
    vouched, sent_to_judge = 0, 0
    for entry, settled, built in plans(matrix, recorded, monkeypatch, cell):
        for name, changing in recorded.items():
            facts = host_with(settled, changing)
            if plan.passes(built, entry, facts):
                vouched += 1
                assert judged_failures(matrix, facts, entry) == [], (entry, name)
            else:
                sent_to_judge += 1
    print(cell, "vouched", vouched, "sent to the judge", sent_to_judge)
    assert vouched > 50 and sent_to_judge > 50, (vouched, sent_to_judge)


@pytest.mark.parametrize("host, entry, cell, vouched", [
    ("h100-csv-r580", "vllm", ("1.6.1", "vllm", "13.0"), True),  # R580 is CUDA 13.0's floor
    # 570.86.15 meets CUDA 12.8's floor (570.26); 7.0 has kernels, 8.9 runs 8.6's (same major, lower minor)
    ("titan-v-rtx5880-r570", "vllm", ("0.7.0", "vllm", "12.8"), True),
    # its nvidia-smi table names no compute capability: only the judge looks the name up in NVIDIA's list
    ("rtxpro6000-blackwell-r580-vllm", "sglang", ("1.6.1", "sglang", "13.0"), False),
    ("h100x8-r550-supermicro", "vllm", ("1.6.1", "vllm", "13.0"), False),  # below the floor: the judge refuses
    ("h800x8-r535-cuda12.5-compat-container", "vllm", ("1.6.1", "vllm", "13.0"), False),
    ("tesla-p100-r580-dcgm", "vllm", ("1.6.1", "vllm", "13.0"), False),  # no kernels for 6.0
    ("mismatch-r580", "mocker", ("1.6.1", "vllm", "13.0"), False),  # the driver and its module differ
    ("no-gpu-debian", "llama_cpp", ("1.6.1", "llama_cpp", "cpu"), True),
    ("no-gpu-debian", "mocker", None, True),
    ("wsl2-rtx4070-r555", "vllm", ("1.6.1", "vllm", "13.0"), False),  # Windows 555 is below CUDA 13.0's 580
])
def test_recorded_hosts(matrix, recorded, monkeypatch, host, entry, cell, vouched):
    """What the plan says of known hosts, from NVIDIA's floors (facts.md) and the engines' kernel lists."""
    bake(monkeypatch, cell)
    facts = inside(matrix, recorded[host], entry, cell)
    facts.shm_bytes, facts.memlock = 10 * 2**30, (-1, -1)  # as run.sh starts a container
    built = plan.build(matrix, facts, entry, subject_of(matrix, facts, entry))
    assert built is not None
    assert plan.passes(built, entry, facts) is vouched
    if vouched:
        assert judged_failures(matrix, facts, entry) == []


DRIVERS = ("535.54.03", "550.54.15", "570.124.06", "575.51.03", "575.51.02", "580.65.06", "580.65.05", "580.95",
           "580", "590.44.01", "610.43.02", "555.99", "576.02", "9999.1")


@st.composite
def changing_facts(draw, ccs):
    gpus = draw(st.lists(st.builds(Gpu, name=st.sampled_from(["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090",
                                                                "Orin (nvgpu)", "Tesla V100-SXM2-16GB", "Mystery"]),
                                   compute_capability=st.sampled_from([None, "5.0", "13.7", *ccs])), max_size=3))
    driver = draw(st.sampled_from([None, *DRIVERS]))
    return HostFacts(driver=driver, gpus=gpus, driver_cuda=draw(st.sampled_from([None, "12.2", "12.9", "13.0", "13.1"])),
                     kernel_module=draw(st.sampled_from([None, driver, "550.54.15"])),
                     gpu_source=draw(st.sampled_from(["nvml", "nvidia-smi", "proc", "none"])),
                     gpu_error=draw(st.sampled_from([None, "Failed to initialize NVML: Driver/library version mismatch",
                                                     "No devices were found"])),
                     shm_bytes=draw(st.sampled_from([None, 64 * 2**20, 2**30, 2**31 - 1, 16 * 2**30])),
                     memlock=draw(st.sampled_from([None, (-1, -1), (8192 * 1024, -1)])),
                     nofile=draw(st.sampled_from([None, (1024, 1024), (65536, 65536)])), wsl=draw(st.booleans()),
                     in_container=draw(st.booleans()))


@pytest.mark.parametrize("cell", CELLS[1:], ids=lambda c: "-".join(c))
def test_any_changing_facts_pass_the_plan_only_if_the_judge_passes(matrix, recorded, monkeypatch, cell):
    built_plans = plans(matrix, {"h100-csv-r580": recorded["h100-csv-r580"]}, monkeypatch, cell)
    ccs = sorted({*matrix.compute_capability, *matrix.gpu})
    vouched_gpus = []

    @SETTINGS
    @given(changing=changing_facts(ccs), which=st.integers(0, len(built_plans) - 1))
    def check(changing, which):
        entry, settled, built = built_plans[which]
        facts = host_with(settled, changing)
        if plan.passes(built, entry, facts):
            assert judged_failures(matrix, facts, entry) == [], entry
            vouched_gpus.append(len(facts.gpus))

    check()
    assert any(vouched_gpus), "no start with a GPU was vouched for: the test shows nothing"


def test_a_plan_is_stale_once_the_matrix_the_code_or_the_image_changes(matrix, recorded, tmp_path, monkeypatch):
    copied = tmp_path / "support_matrix.toml"
    copied.write_bytes((REPO / "matrix" / "support_matrix.toml").read_bytes())
    monkeypatch.setenv("DYNAMO_MATRIX", str(copied))
    cell = ("1.6.1", "vllm", "13.0")
    bake(monkeypatch, cell)
    facts = inside(matrix, recorded["h100-csv-r580"], "vllm", cell)
    facts.shm_bytes, facts.memlock = 10 * 2**30, (-1, -1)
    built = plan.build(matrix, facts, "vllm", subject_of(matrix, facts, "vllm"))
    assert plan.passes(built, "vllm", facts)
    assert not plan.passes(built, "sglang", facts)  # another entry point's plan
    bake(monkeypatch, ("1.6.1", "vllm", "12.9"))
    assert not plan.passes(built, "vllm", facts)
    bake(monkeypatch, cell)
    copied.write_text(copied.read_text() + "\n")
    assert not plan.passes(built, "vllm", facts)
    monkeypatch.delenv("DYNAMO_MATRIX")
    assert not plan.passes(built, "vllm", facts)
    assert not plan.passes({**built, "key": "0" * 16}, "vllm", facts)  # a change to the doctor's code
    assert not plan.passes({"version": 1}, "vllm", facts)  # a plan of another shape
    assert not plan.passes(None, "vllm", facts)


def test_the_preflight_writes_a_plan_and_the_next_start_reads_it(matrix, recorded, tmp_path, monkeypatch):
    monkeypatch.delenv("DYN_SKIP_PREFLIGHT", raising=False)
    where = tmp_path / "preflight-mocker.json"
    monkeypatch.setattr(plan, "entries", lambda entry: [tmp_path / f"preflight-{entry}.json"])
    facts = recorded["no-gpu-debian"]
    assert preflight("mocker", ["--x"], facts=facts) == ["--x"]
    written = json.loads(where.read_text())
    assert written["entry"] == "mocker" and written["facts"]["arch"] == facts.arch
    where.write_text("{ not json")  # a broken plan: the judge decides, and writes a good one
    assert preflight("mocker", [], facts=facts) == []
    assert json.loads(where.read_text()) == written
    # a start the plan sends to the judge, which passes it, leaves the plan that holds as it was
    before = where.stat().st_mtime_ns
    odd = copy.deepcopy(facts)
    odd.gpu_error = "nvidia-smi: not found"
    assert not plan.passes(written, "mocker", odd)
    assert preflight("mocker", [], facts=odd) == []
    assert where.stat().st_mtime_ns == before


def test_a_start_that_the_plan_vouches_for_loads_neither_matrix_nor_judge(tmp_path):
    """Two starts of the mocker's preflight in fresh processes: the first judges and writes its plan, the
    second reads the plan alone."""
    code = ("import sys; from dynamo.doctor.preflight import preflight; preflight('mocker', []);"
            " print(sorted(m for m in ('dynamo.matrix', 'dynamo.doctor.judge', 'packaging') if m in sys.modules))")
    env = {"PATH": "/usr/bin:/bin", "DYNAMO_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    plan.entries("mocker")[0].unlink(missing_ok=True)  # beside our package; the user's cache is tmp_path
    first, second = (subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    cwd=tmp_path) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == "['dynamo.doctor.judge', 'dynamo.matrix', 'packaging']"
    assert second.stdout.strip() == "[]"


def test_a_plan_covers_every_module_that_judging_runs():
    """A change to any code that loading the matrix and judging run must make the plans stale."""
    code = ("import sys\nfrom dynamo.doctor import plan\nfrom dynamo.doctor.facts import gather\n"
            "from dynamo.doctor.judge import subject_of\nfrom dynamo.doctor.preflight import preflight\nfrom dynamo.matrix import loads\n"
            "matrix, facts = loads(open(sys.argv[1]).read()), gather()\n"
            "for entry in ('vllm', 'llama_cpp', 'frontend', 'mocker'):\n"
            "    plan.build(matrix, facts, entry, subject_of(matrix, facts, entry))\n"
            "print(*sorted('dynamo/' + m.__file__.split('/dynamo/', 1)[1] for n, m in list(sys.modules.items())"
            " if n.split('.')[0] == 'dynamo' and getattr(m, '__file__', None)))")
    result = subprocess.run([sys.executable, "-c", code, str(REPO / "matrix" / "support_matrix.toml")],
                            capture_output=True, text=True, check=True, cwd=REPO)
    assert set(result.stdout.split()) <= set(plan.CODE), set(result.stdout.split()) - set(plan.CODE)
