"""Property-based: whatever is done to the matrix, the loader answers with named problems or a
working matrix -- never a traceback."""

from __future__ import annotations

import copy
import datetime

from conftest import MATRIX_FILE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo.matrix import MatrixInvalid, from_dict, loads, targets
from dynamo.matrix.convert import format_path
from dynamo.matrix.report import release_report

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

toml_scalars = st.one_of(
    st.text(max_size=12), st.integers(-10, 10**6), st.floats(allow_nan=False), st.booleans(),
    st.datetimes(max_value=datetime.datetime(2100, 1, 1)),
    st.sampled_from(["0.12.x", "", "main", "v0.8.1", "12.9", "13.0", "12.7", "575.xx+", "vllm", "arm64",
                     "supported", "experimental", "ubuntu-24.04", "3.11", "nvcr.io/x:1", "0.8.1.post1"]),
)
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


def nodes(tree, path=()):
    """Every (path, value) in a parsed TOML tree, the root excluded."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield path + (key,), value
        yield from nodes(value, path + (key,))


def parent_of(tree, path):
    for key in path[:-1]:
        tree = tree[key]
    return tree


def mutate(raw: dict, data) -> None:
    path, _ = data.draw(st.sampled_from(list(nodes(raw))))
    parent, key = parent_of(raw, path), path[-1]
    action = data.draw(st.sampled_from(["delete", "replace", "add", "rename"]))
    if action == "delete":
        del parent[key]
    elif action == "replace":
        parent[key] = data.draw(toml_values)
    elif action == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=10))] = data.draw(toml_values)
    elif action == "rename" and isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=10))] = parent.pop(key)


def assert_named(problem_lines: list[str]) -> None:
    assert problem_lines
    for line in problem_lines:
        assert line.startswith("m.toml: ") and "\n" not in line and len(line) > len("m.toml: ") + 10


@SETTINGS
@given(data=st.data())
def test_mutated_matrix_never_crashes(raw_matrix, data):
    raw = copy.deepcopy(raw_matrix)
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(raw, data)
    try:
        matrix = from_dict(raw, "m.toml")
    except MatrixInvalid as exc:
        assert_named(exc.lines())
    else:  # still valid: every query must still work
        for target in targets(matrix):
            assert target.base_image
            assert (target.engine_requirement is None) == (matrix.framework[target.framework].package is None)
        for release in matrix.release:
            assert release_report(matrix, release)


string_leaves = [path for path, value in nodes(__import__("tomllib").loads(MATRIX_FILE.read_text()))
                 if isinstance(value, str)]


@SETTINGS
@given(path=st.sampled_from(string_leaves), number=st.integers(-5, 10**6))
def test_a_string_turned_number_is_named_by_its_path(raw_matrix, path, number):
    raw = copy.deepcopy(raw_matrix)
    parent_of(raw, path)[path[-1]] = number
    try:
        from_dict(raw, "m.toml")
    except MatrixInvalid as exc:
        assert any(line.startswith(f"m.toml: {format_path(path)}: expected ") for line in exc.lines()), exc.lines()
    else:
        raise AssertionError(f"{format_path(path)} = {number} was accepted")


@SETTINGS
@given(data=st.data())
def test_mangled_text_never_crashes(data):
    text = MATRIX_FILE.read_text()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:at] + text[at + data.draw(st.integers(1, 20)):]
        else:
            text = text[:at] + data.draw(st.text(min_size=1, max_size=5)) + text[at:]
    try:
        loads(text, "m.toml")
    except MatrixInvalid as exc:
        assert_named(exc.lines())
