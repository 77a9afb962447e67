"""Whatever a GPU tool prints, the doctor parses it or ignores it: it never crashes."""

from __future__ import annotations

import json

from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo.doctor.facts import (
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
    (tmp_path / "nvidia-smi.txt").write_text(table)
    (tmp_path / "nvidia-smi.csv").write_text(csv)
    (tmp_path / "proc-driver-nvidia-version").write_text(proc)
    (tmp_path / "host.json").write_text(json.dumps({"arch": "x86_64", "python": "3.12.3", "shm_bytes": numbers[0],
                                                    "memlock": [numbers[1], numbers[1]], "nofile": [numbers[2], -1]}))
    facts = from_recording(tmp_path)
    for subject in (Subject("0.8.1", "vllm", "12.9"), Subject("0.8.1", "trtllm", None), Subject("0.8.1", None, None)):
        for finding in judge(matrix, facts, subject):
            assert finding.status in ("ok", "warn", "fail") and finding.message


@SETTINGS
@given(text=st.one_of(st.text(alphabet="cudrivebranh<>=!,. 0123456789", max_size=60), st.text(max_size=60)),
       cuda=st.sampled_from([None, "12.8", "13.0"]), brand=st.sampled_from([None, "tesla", "geforce"]))
def test_requirement_evaluation_answers_or_says_invalid(text, cuda, brand):
    from dynamo.doctor.requirement import Device, InvalidRequirement, satisfied

    try:
        assert satisfied(text, Device(cuda, "570.86.15", True, "9.0", brand)) in (True, False)
    except InvalidRequirement as exc:
        assert "invalid expression" in str(exc)
