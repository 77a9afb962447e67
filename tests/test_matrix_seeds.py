"""Every cell of the seed documents' support tables appears in `matrix show` for its release."""

from __future__ import annotations

import re

import pytest
from conftest import SEEDS, run_cli

SEED_001_RELEASES = ["main", "0.8.1.post1", "0.8.1", "0.8.0", "0.7.1", "0.7.0.post1", "0.7.0"]
PATCHES = {"0.8.1": ["0.8.1.post1"], "0.7.0": ["0.7.0.post1"]}  # same CUDA support as their base


def clean(cell: str) -> str:
    return cell.replace("**", "").replace("`", "").strip()


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """Each table keyed by its header row's first cell plus the next one, rows as cleaned cells."""
    tables: dict[str, list[list[str]]] = {}
    rows: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [clean(c) for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            tables[" | ".join(rows[0][:2])] = rows
            rows = []
    return tables


def show(release: str) -> str:
    result = run_cli("matrix", "show", "--release", release)
    assert result.returncode == 0, result.stderr
    return result.stdout


def has_line(output: str, cells: list[str]) -> bool:
    """Some line holds all the cells, in this order."""
    for line in output.splitlines():
        position = 0
        for cell in cells:
            found = line.find(cell, position)
            if found < 0:
                break
            position = found + len(cell)
        else:
            return True
    return False


@pytest.fixture(scope="module")
def seed001():
    return markdown_tables((SEEDS / "001_support_matrix_v0.8.md").read_text())


@pytest.fixture(scope="module")
def shown():
    return {release: show(release) for release in SEED_001_RELEASES + ["0.1.0", "0.6.1"]}


def test_backend_versions_per_release(seed001, shown):
    header, *rows = seed001["Dependency | main (ToT)"]
    releases = ["main" if h == "main (ToT)" else h.removeprefix("v").removesuffix(" (latest)")
                for h in header[1:]]
    assert releases == SEED_001_RELEASES
    for dependency, *versions in rows:
        for release, version in zip(releases, versions):
            assert has_line(shown[release], [dependency, version]), (release, dependency, version)
    assert shown["0.8.1"].startswith("Dynamo v0.8.1 -- released")  # the seed's "(latest)" was 0.8.1 then
    assert "main (ToT)" in shown["main"]


def test_cuda_per_backend(seed001, shown):
    header, *rows = seed001["Dynamo Version | SGLang"]
    for version_cell, *cells in rows:
        release = version_cell.removeprefix("Dynamo ")
        for show_release in [release, *PATCHES.get(release, [])]:
            for backend, cell in zip(header[1:], cells):
                assert has_line(shown[show_release], [backend, cell]), (show_release, backend, cell)


def test_cuda_and_driver_floors(seed001, shown):
    header, *rows = seed001["Dynamo Version | Backend"]
    assert header == ["Dynamo Version", "Backend", "CUDA Toolkit", "Min Driver (Linux)",
                      "Min Driver (Windows)", "Notes"]
    release = backend = None
    for version_cell, backend_cell, toolkit, linux, windows, notes in rows:
        release, backend = version_cell or release, backend_cell or backend
        for show_release in [release, *PATCHES.get(release, [])]:
            cells = [backend, toolkit, linux, windows] + ([notes] if notes else [])
            assert has_line(shown[show_release], cells), (show_release, cells)


@pytest.mark.parametrize("table", ["CPU Architecture | Status", "GPU Architecture | Status",
                                   "Operating System | Version", "Host Operating System | Version"])
def test_platform_tables_hold_for_every_release(seed001, shown, table):
    _, *rows = seed001[table]
    for release in SEED_001_RELEASES:
        for row in rows:
            assert has_line(shown[release], row), (release, row)


def test_seed_000_release_0_1_0(shown):
    tables = markdown_tables((SEEDS / "000_support_matrix_v0.1.0.md").read_text())
    output = shown["0.1.0"]
    for dependency, version in tables["Dependency | Version"][1:]:
        assert has_line(output, [dependency, version.rstrip("*")]), (dependency, version)
    for row in tables["CPU Architecture | Status"][1:] + tables["GPU Architecture | Status"][1:]:
        assert has_line(output, row), row
    assert "(planned)" in output and "subject to change" in output
    assert "vllm==0.7.2+dynamo" in output
    assert "Python: 3.10, 3.11, 3.12 (default 3.12)" in output
    assert "NIXL support is available only for Python 3.12" in output
    assert "Container images: x86_64;" in output and "wheels: x86_64" in output


def test_seed_004_release_0_6_1(shown):
    output = shown["0.6.1"]
    for cells in (["vLLM", "0.10.2", "CUDA 12.8", "vllm[flashinfer]==0.10.2", "flashinfer==0.1.8"],
                  ["TensorRT-LLM", "1.1.0rc5", "CUDA 12.8", "tensorrt-llm==1.1.0rc5"],
                  ["NIXL", "0.6.0"], ["Base Container", "25.06"]):
        assert has_line(output, cells), cells
    assert "requires-python >=3.9,<3.13" in output
    assert "(default 3.12)" in output
