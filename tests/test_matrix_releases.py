"""Every release row of the notes on upstream's releases after 0.8.1 (tests/data/notes, a copy of
shared/notes/releases-after-0.8.1.md) appears in the matrix and in the rendered docs exactly."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, run_cli

from dynamo.matrix.query import engine_nixl

NOTES = REPO / "tests" / "data" / "notes" / "releases-after-0.8.1.md"
DOCS = REPO / "docs" / "support_matrix.md"
ENGINES = ("sglang", "trtllm", "vllm")  # the notes' column order
UNKNOWN = "–"


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def note_rows() -> dict[str, dict]:
    """release -> {"published", "wheel", "pins": {engine: version}, "nixl": {engine: version or None}}."""
    text = NOTES.read_text().split("## Backend pins")[1].split("\n## ")[0]
    rows: dict[str, dict] = {}
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| release") or set(line) <= set("|-: "):
            continue
        release_cell, date_cell, sglang, trtllm, vllm, nixl = cells(line)
        wheel = re.search(r"\(wheel ([^)]+)\)", release_cell)
        names = [name.strip() for name in re.sub(r"\(.*\)", "", release_cell).split(",")]
        dates = [d.strip() for d in re.sub(r"\(PyPI,? ?|\)", "", date_cell).split(",")]
        dates = [None if d in (UNKNOWN, "") else d for d in dates]
        if len(dates) > 1:  # "2026-08-21, 08-28": the later dates leave out the year
            dates = [dates[0]] + [dates[0][:5] + d for d in dates[1:]]
        for i, name in enumerate(names):
            if sglang.startswith("same as "):
                base = rows[sglang.removeprefix("same as ")]
                pins, nixls = base["pins"], base["nixl"]
            else:
                pins = dict(zip(ENGINES, (sglang, trtllm, vllm)))
                nixls = {fw: None if v == UNKNOWN else v for fw, v in zip(ENGINES, (v.strip() for v in nixl.split("/")))}
            rows[name] = {"published": dates[min(i, len(dates) - 1)], "wheel": wheel.group(1) if wheel else None,
                          "pins": pins, "nixl": nixls}
    return rows


ROWS = note_rows()


def test_the_notes_table_was_read_whole():
    assert list(ROWS) == ["0.8.1.post2", "0.8.1.post3", "0.9.0", "0.9.1", "1.0.0", "1.0.1", "1.0.2", "1.1.0",
                          "1.1.1", "1.2.0", "1.2.1", "1.3.0", "1.3.1", "1.4.0", "1.4.1", "1.4.2", "1.5.1",
                          "1.6.0", "1.6.1"]
    assert ROWS["1.4.2"]["published"] == "2026-08-28" and ROWS["1.6.0"]["published"] == "2026-10"
    assert ROWS["1.2.1"]["pins"]["trtllm"] == "1.3.0rc14" and ROWS["1.2.0"]["wheel"] == "1.2.0.post1"
    assert ROWS["1.5.1"]["nixl"] == {"sglang": "1.4.0", "trtllm": None, "vllm": "1.3.2"}


@pytest.mark.parametrize("name", list(ROWS))
def test_release_row_is_in_the_matrix(matrix, name):
    expected, release = ROWS[name], matrix.release[name]
    assert release.published == expected["published"]
    assert release.wheel == expected["wheel"]
    for fw in ENGINES:
        engine = release.engines[fw]
        assert engine.version == expected["pins"][fw], fw
        assert engine_nixl(release, engine) == expected["nixl"][fw], fw


def docs_rows() -> dict[str, dict[str, str]]:
    """The Backend Dependencies table of the rendered docs: release -> {header: cell}."""
    lines = [line for line in DOCS.read_text().splitlines() if line.startswith("| ")]
    header_index = next(i for i, line in enumerate(lines) if line.startswith("| **Release**"))
    headers = [h.strip("*") for h in cells(lines[header_index])]
    found = {}
    for line in lines[header_index + 2:]:
        row = [cell.replace("**", "").replace("`", "") for cell in cells(line)]
        if len(row) != len(headers):
            break
        found[row[0].split(" ")[0].removeprefix("v")] = dict(zip(headers, row))
    return found


@pytest.mark.parametrize("name", list(ROWS))
def test_release_row_is_in_the_rendered_docs(name):
    expected, row = ROWS[name], docs_rows()[name]
    label = f"v{name}" + (f" (wheel {expected['wheel']})" if expected["wheel"] else "")
    assert row["Release"].removesuffix(" (latest)") == label
    assert row["Published"] == (expected["published"] or "—")
    for fw, title in (("sglang", "SGLang"), ("trtllm", "TensorRT-LLM"), ("vllm", "vLLM")):
        assert row[title] == expected["pins"][fw]
        assert row[f"NIXL ({title})"] == (expected["nixl"][fw] or "unknown")


# The notes' "CUDA per backend" rules, written out per release range.
CUDA_12 = ({"vllm": {"12.9"}, "sglang": {"12.9"}, "trtllm": {"13.0"}}, ["0.9.0", "0.9.1"])
CUDA_BOTH = ({"vllm": {"12.9", "13.0"}, "sglang": {"12.9", "13.0"}, "trtllm": {"13.1"}},
             ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "1.1.1", "1.2.0", "1.2.1"])
CUDA_13 = ({"vllm": {"13.0"}, "sglang": {"13.0"}, "trtllm": {"13.1"}},
           ["1.3.0", "1.3.1", "1.4.0", "1.4.1", "1.4.2", "1.5.0", "1.5.1", "1.6.0", "1.6.1"])


@pytest.mark.parametrize("expected, releases", [CUDA_12, CUDA_BOTH, CUDA_13])
def test_cuda_per_backend(matrix, expected, releases):
    for name in releases:
        for fw, cuda in expected.items():
            engine = matrix.release[name].engines[fw]
            assert set(engine.cuda) == cuda and set(engine.cuda.values()) == {"supported"}, (name, fw)
    for patch in ("0.8.1.post2", "0.8.1.post3"):  # patch releases keep their base's CUDA
        assert matrix.release[patch].engines["vllm"].cuda == matrix.release["0.8.1"].engines["vllm"].cuda


def test_1_5_0_from_its_wheel(matrix):
    """Read from PyPI's ai-dynamo 1.5.0 METADATA: the same pins as 1.5.1."""
    release = matrix.release["1.5.0"]
    assert {fw: e.version for fw, e in release.engines.items() if e.version} == \
        {"vllm": "0.28.0", "sglang": "0.5.18", "trtllm": "1.3.0rc25"}
    assert release.engines["vllm"].extras == ("flashinfer", "otel", "runai")


def test_latest_is_the_newest_release(matrix):
    assert matrix.latest == "1.6.1" == next(name for name in matrix.release if name != "main")


DISAGREEMENTS = [("0.7.0", "SGLang", "0.5.3.post4", "0.5.4.post3"), ("0.7.1", "SGLang", "0.5.3.post4", "0.5.4.post3"),
                 ("0.8.1.post1", "TensorRT-LLM", "1.2.0rc6.post2", "1.2.0rc6.post1"),
                 ("0.6.1", "vLLM", "0.10.2", "0.11.0")]


@pytest.mark.parametrize("release, engine, ours, upstream", DISAGREEMENTS)
def test_upstream_disagreements_are_shown(release, engine, ours, upstream):
    docs = DOCS.read_text()
    assert (f"- Upstream disagrees: v{release}, {engine}: `{ours}` (the seeds' value);"
            f" upstream's release data says `{upstream}`.") in docs
    shown = run_cli("matrix", "show", "--release", release).stdout
    assert f"Upstream disagrees: {engine} {ours} here (the seeds' value); upstream's release data says {upstream}" in shown


def test_published_artifacts_follow_upstream(matrix):
    """1.3.0 discontinued CUDA 12 images; 0.9.0 dropped the dynamo-graph chart; 1.0.0 dropped dynamo-crds;
    1.3.0's wheels were published as 1.3.0.post1 while its images keep :1.3.0."""
    from dynamo.matrix.query import release_artifacts

    assert {"vllm-runtime", "sglang-runtime", "dynamo-graph", "dynamo-crds"} <= set(release_artifacts(matrix, "0.8.0"))
    assert "dynamo-graph" not in release_artifacts(matrix, "0.9.0") and "dynamo-crds" in release_artifacts(matrix, "0.9.0")
    assert "dynamo-crds" not in release_artifacts(matrix, "1.0.0") and "vllm-runtime" in release_artifacts(matrix, "1.2.1")
    assert not {"vllm-runtime", "sglang-runtime"} & set(release_artifacts(matrix, "1.3.0"))
    assert {"vllm-runtime-cu13", "sglang-runtime-cu13", "tensorrtllm-runtime"} <= set(release_artifacts(matrix, "1.3.0"))
    section = (REPO / "docs" / "release-artifacts.md").read_text().split("## v1.3.0\n")[1].split("\n## ")[0]
    assert "`pip install ai-dynamo==1.3.0.post1`" in section
    assert "`nvcr.io/nvidia/ai-dynamo/vllm-runtime-cu13:1.3.0`" in section
