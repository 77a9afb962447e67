"""The validated-matrix cache: a start-up reads a matrix it validated before without validating it
again, and nothing but those very bytes (with the same validating code) ever comes from it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import MATRIX_FILE

import dynamo.matrix.validate
from dynamo import cache_files
from dynamo.matrix import MatrixInvalid, cache, load


@pytest.fixture
def matrix_file(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_files.CACHE_ENV, str(tmp_path / "user-cache"))
    path = tmp_path / "repo" / "support_matrix.toml"
    path.parent.mkdir()
    path.write_bytes(MATRIX_FILE.read_bytes())
    return path


def _entries(directory):
    return sorted(p.name for p in directory.glob("support_matrix.*.pickle")) if directory.is_dir() else []


def _no_validation(monkeypatch):
    def fail(matrix):
        raise AssertionError("validated again")
    monkeypatch.setattr(dynamo.matrix.validate, "validate", fail)


def test_a_validated_matrix_is_read_back_without_validating(matrix_file, monkeypatch):
    first = load(matrix_file)
    assert len(_entries(matrix_file.parent / "__pycache__")) == 1
    _no_validation(monkeypatch)
    assert load(matrix_file) == first


def test_a_changed_byte_is_validated_in_full(matrix_file, monkeypatch):
    load(matrix_file)
    before = _entries(matrix_file.parent / "__pycache__")
    matrix_file.write_text(re.sub(r'(?m)^latest = ".*"$', 'latest = "9.9.9"', matrix_file.read_text()))
    with pytest.raises(MatrixInvalid) as caught:
        load(matrix_file)
    assert any("latest" in line and "9.9.9" in line for line in caught.value.lines()), caught.value.lines()
    assert _entries(matrix_file.parent / "__pycache__") == before  # a broken matrix is never kept


def test_a_corrupt_entry_costs_a_validation_and_is_replaced(matrix_file, monkeypatch):
    expected = load(matrix_file)
    [entry] = (matrix_file.parent / "__pycache__").glob("*.pickle")
    corrupt = b"\x80\x04 not a pickle"
    entry.write_bytes(corrupt)
    validate, validated = dynamo.matrix.validate.validate, []
    monkeypatch.setattr(dynamo.matrix.validate, "validate", lambda matrix: validated.append(1) or validate(matrix))
    assert load(matrix_file) == expected
    assert validated == [1] and entry.read_bytes() != corrupt
    _no_validation(monkeypatch)
    assert load(matrix_file) == expected  # from the entry written anew


def test_where_the_matrix_is_read_only_the_users_cache_keeps_it(matrix_file, monkeypatch):
    (matrix_file.parent / "__pycache__").write_text("a file where the cache folder would be")
    expected = load(matrix_file)
    assert len(_entries(matrix_file.parent.parent / "user-cache")) == 1
    _no_validation(monkeypatch)
    assert load(matrix_file) == expected


def test_other_validating_code_is_another_key_and_replaces_the_entry(matrix_file, monkeypatch):
    load(matrix_file)
    before = _entries(matrix_file.parent / "__pycache__")
    monkeypatch.setattr(cache, "_code", lambda: b"another version of the schema")
    validated = []
    monkeypatch.setattr(dynamo.matrix.validate, "validate", lambda matrix: validated.append(1) or [])
    load(matrix_file)
    after = _entries(matrix_file.parent / "__pycache__")
    assert validated == [1] and len(after) == 1 and after != before


def test_the_tables_are_immutable_and_compare_by_field(matrix_file):
    import dataclasses
    import pickle

    matrix = load(matrix_file)
    release = matrix.release[matrix.latest]
    for change in (lambda: setattr(release, "note", "x"), lambda: delattr(release, "note"),
                   lambda: setattr(release, "not_a_field", 1)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            change()
    again = pickle.loads(pickle.dumps(release))
    assert again == release and again is not release
    major = matrix.cuda_major["12"]  # no dict inside: hashable, as a frozen dataclass is
    assert hash(pickle.loads(pickle.dumps(major))) == hash(major)
    changed = dataclasses.replace(release, note="another note")
    assert changed != release and changed.engines == release.engines
    assert repr(matrix.cuda_major["12"]).startswith("CudaMajor(minor_compat_driver='")


def test_the_key_covers_every_module_that_validating_runs():
    """A change to any code validation runs (query's features, the toolkit's brands...) must miss the cache."""
    code = ("import sys\nfrom dynamo.matrix import loads\nloads(open(sys.argv[1]).read())\n"
            "print(*sorted(m.__file__.split('/dynamo/', 1)[1] for n, m in list(sys.modules.items())"
            " if n.split('.')[0] == 'dynamo' and getattr(m, '__file__', None)))")
    result = subprocess.run([sys.executable, "-c", code, str(MATRIX_FILE)], capture_output=True, text=True, check=True)
    assert set(result.stdout.split()) <= set(cache._CODE)
