"""Whatever a GPU tool prints, the doctor parses it or ignores it: it never crashes."""

from __future__ import annotations

import json

from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo.doctor.facts import (
    MAX_NAME,
    RecordingInvalid,
    from_recording,
    parse_cuda_version_json,
    parse_os_release,
    parse_proc_version,
    parse_smi_csv,
    parse_smi_query,
    parse_smi_table,
    parse_smi_xml,
)
from dynamo.doctor.judge import Subject, judge

SAMPLES = [p.read_text(errors="replace") for p in (REPO / "tests" / "data" / "hosts").glob("*/nvidia-smi.*")]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def mangled(draw):
    """A real recording with random cuts and insertions, or random text."""
    if draw(st.booleans()):
        return draw(st.text(max_size=400))
    text = draw(st.sampled_from(SAMPLES))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=20)) + text[at + draw(st.integers(0, 30)):]
    return text


@SETTINGS
@given(text=mangled())
def test_parsers_never_raise(text):
    parse_smi_csv(text)
    parse_smi_table(text)
    parse_smi_xml(text)
    parse_smi_query(text)
    parse_proc_version(text)
    parse_os_release(text)
    assert parse_cuda_version_json(text) is None or parse_cuda_version_json(text).count(".") == 1


@SETTINGS
@given(table=mangled(), csv=mangled(), proc=mangled(), numbers=st.lists(st.integers(-2, 2**40), min_size=3, max_size=3))
def test_judging_any_recording_never_raises(tmp_path, matrix, table, csv, proc, numbers):
    """Judged, or refused with each problem naming its file; refused whenever a limit no host has is
    recorded (a negative /dev/shm size, a limit below -1, which means unlimited)."""
    (tmp_path / "nvidia-smi.txt").write_text(table)
    (tmp_path / "nvidia-smi.csv").write_text(csv)
    (tmp_path / "proc-driver-nvidia-version").write_text(proc)
    (tmp_path / "host.json").write_text(json.dumps({"arch": "x86_64", "python": "3.12.3", "shm_bytes": numbers[0],
                                                    "memlock": [numbers[1], numbers[1]], "nofile": [numbers[2], -1]}))
    try:
        facts = from_recording(tmp_path)
    except RecordingInvalid as exc:
        assert exc.problems and all(p.startswith(f"{tmp_path}/") for p in exc.problems), exc.problems
        return
    assert numbers[0] >= 0 and min(numbers[1:]) >= -1
    for subject in (Subject("0.8.1", "vllm", "12.9"), Subject("0.8.1", "trtllm", None), Subject("0.8.1", None, None)):
        for finding in judge(matrix, facts, subject):
            assert finding.status in ("ok", "warn", "fail") and finding.message


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)
GPU = st.fixed_dictionaries({"name": st.text(max_size=120)},
                            optional={"memory_mib": JSON | st.integers(), "compute_capability": JSON | st.from_regex(
                                r"\A\d{1,3}\.\d{1,2}\Z"), "mig": JSON, "brand": JSON})
NVML = st.fixed_dictionaries({}, optional={"driver": JSON | st.from_regex(r"\A\d{1,25}(\.\d{1,4}){0,3}\Z"),
                                           "cuda_driver_version": JSON | st.integers(), "gpus": st.lists(GPU, max_size=3),
                                           "error": JSON})


@SETTINGS
@given(nvml=NVML | JSON)
def test_any_nvml_json_is_judged_or_refused_naming_it(tmp_path, matrix, nvml):
    (tmp_path / "host.json").write_text(json.dumps({"arch": "x86_64", "python": "3.12.3"}))
    (tmp_path / "nvml.json").write_text(json.dumps(nvml))
    try:
        facts = from_recording(tmp_path)
    except RecordingInvalid as exc:
        assert all(p.startswith(f"{tmp_path}/nvml.json: ") for p in exc.problems), exc.problems
        return
    for gpu in facts.gpus:  # what was taken is what a real GPU could report
        assert len(gpu.name) <= MAX_NAME and (gpu.memory_mib is None or gpu.memory_mib >= 0)
    for finding in judge(matrix, facts, Subject("0.8.1", "vllm", "12.9")):
        assert finding.status in ("ok", "warn", "fail") and finding.message


@SETTINGS
@given(text=st.one_of(st.text(alphabet="cudrivebranh<>=!,. 0123456789", max_size=60), st.text(max_size=60)),
       cuda=st.sampled_from([None, "12.8", "13.0"]), brand=st.sampled_from([None, "tesla", "geforce"]))
def test_requirement_evaluation_answers_or_says_invalid(text, cuda, brand):
    from dynamo.nvidia_require import Device, InvalidRequirement, satisfied

    try:
        assert satisfied(text, Device(cuda, "570.86.15", True, "9.0", brand)) in (True, False)
    except InvalidRequirement as exc:
        assert "invalid expression" in str(exc)
