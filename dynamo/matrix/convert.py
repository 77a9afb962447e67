"""Turn parsed TOML into the typed model, collecting every problem with its key path.

The dataclasses of `dynamo.matrix.model` are the schema. A field's type says what the value must
be; its metadata may add a ``check`` (applied to every string inside the value) and a ``keys``
check (applied to the keys of a table). Nothing here raises on bad data: each problem is
appended to ``problems`` and the offending subtree converts to ``INVALID``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, Literal, NamedTuple, Union

from dynamo.matrix.checks import Check

Path = tuple[typing.Union[str, int], ...]
INVALID: Any = object()
INT64 = (-(2**63), 2**63 - 1)


class Problem(NamedTuple):
    path: Path
    message: str


def format_path(path: Path) -> str:
    """Render a key path the way TOML spells it: release."0.8.1".engines.vllm.version."""
    parts: list[str] = []
    for key in path:
        if isinstance(key, int):
            parts.append(f"[{key}]")
            continue
        bare = key and all(ch.isalnum() or ch in "-_" for ch in key) and key.isascii()
        text = key if bare else json.dumps(key, ensure_ascii=False)  # TOML basic-string escapes
        parts.append(("." if parts else "") + text)
    return "".join(parts) or "(top level)"


def describe(value: Any) -> str:
    """What a TOML value is, for error messages."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    kind = names.get(type(value), "a date/time")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        return f"{kind} {shown}"
    return kind


def expectation(tp: Any) -> str:
    """What a type expects, in words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is str:
        return "a string"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return "an array"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    if _is_union(origin):
        return " or ".join(expectation(a) for a in args if a is not type(None))
    return str(tp)




def convert(tp: Any, raw: Any, path: Path, problems: list[Problem], check: Check | None = None,
            keys: Check | None = None) -> Any:
    """`raw` (parsed TOML) as the model's type `tp`, or INVALID with each problem appended, by the type's kind."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, raw, path, problems)
    if _is_union(origin):
        return _convert_union([a for a in args if a is not type(None)], raw, path, problems, check, keys)
    if origin is Literal:
        if isinstance(raw, (str, int)) and not isinstance(raw, bool) and raw in args:
            return raw
        return _problem(problems, path, f"expected {expectation(tp)}, got {describe(raw)}")
    if origin is tuple:
        return _convert_array(tp, raw, path, problems, check)
    if origin is dict:
        return _convert_table(tp, raw, path, problems, check, keys)
    if tp in (str, int, bool):
        return _convert_scalar(tp, raw, path, problems, check)
    raise TypeError(f"the matrix model uses an unsupported type: {tp!r}")  # a bug in model.py


def _convert_array(tp: Any, raw: Any, path: Path, problems: list[Problem], check: Check | None) -> Any:
    if not isinstance(raw, list):
        return _problem(problems, path, f"expected {expectation(tp)}, got {describe(raw)}")
    items = [convert(typing.get_args(tp)[0], item, path + (i,), problems, check) for i, item in enumerate(raw)]
    return INVALID if any(item is INVALID for item in items) else tuple(items)


def _convert_table(tp: Any, raw: Any, path: Path, problems: list[Problem], check: Check | None,
                   keys: Check | None) -> Any:
    if not isinstance(raw, dict):
        return _problem(problems, path, f"expected {expectation(tp)}, got {describe(raw)}")
    result, ok = {}, True
    for key, value in raw.items():
        if (bad := _control_character(key)) is not None:
            _problem(problems, path + (key,), f"the key contains the control character {bad}; remove it")
            ok = False
            continue
        if keys is not None and (expected := keys(key)) is not None:
            _problem(problems, path + (key,), f"invalid key {key!r}: expected {expected}")
            ok = False
            continue
        result[key] = convert(typing.get_args(tp)[1], value, path + (key,), problems, check)
        ok = ok and result[key] is not INVALID
    return result if ok else INVALID


def _convert_scalar(tp: Any, raw: Any, path: Path, problems: list[Problem], check: Check | None) -> Any:
    if type(raw) is not tp:
        return _problem(problems, path, f"expected {expectation(tp)}, got {describe(raw)}")
    if tp is str and (bad := _control_character(raw)) is not None:
        return _problem(problems, path, f"the text contains the control character {bad}; remove it")
    if tp is int and not INT64[0] <= raw <= INT64[1]:
        return _problem(problems, path, f"{describe(raw)} is outside TOML's 64-bit integers; use a real value")
    if check is not None and tp is not bool and (expected := check(raw)) is not None:
        return _problem(problems, path, f"expected {expected}, got {raw!r}")
    return raw


def _control_character(text: str) -> str | None:
    """The first control character in text (written on into Dockerfiles and docs), as U+XXXX."""
    found = next((ch for ch in text if ord(ch) < 0x20 or ord(ch) == 0x7F), None)
    return None if found is None else f"U+{ord(found):04X}"


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def _problem(problems: list[Problem], path: Path, message: str) -> Any:
    problems.append(Problem(path, message))
    return INVALID


def _convert_union(options: list[Any], raw: Any, path: Path, problems: list[Problem],
                   check: Check | None, keys: Check | None) -> Any:
    """Convert with the one option whose shape (string, array, table...) fits the value."""
    fitting = [option for option in options if _shape_fits(option, raw)]
    if len(fitting) == 1 or len(options) == 1:
        return convert((fitting or options)[0], raw, path, problems, check, keys)
    expected = " or ".join(expectation(option) for option in options)
    return _problem(problems, path, f"expected {expected}, got {describe(raw)}")


def _shape_fits(tp: Any, raw: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return isinstance(raw, list)
    if origin is dict or dataclasses.is_dataclass(tp):
        return isinstance(raw, dict)
    if origin is Literal:
        return isinstance(raw, (str, int)) and not isinstance(raw, bool)
    return type(raw) is tp


@functools.cache
def _fields(cls: type) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls))


def _convert_dataclass(cls: type, raw: Any, path: Path, problems: list[Problem]) -> Any:
    if not isinstance(raw, dict):
        return _problem(problems, path, f"expected a table, got {describe(raw)}")
    known = _fields(cls)
    names = {f.name for f, _ in known}
    ok = True
    for key in raw:
        if key not in names:
            ok = False
            _problem(problems, path + (key,),
                     f"unknown key {key!r}; expected one of: {', '.join(sorted(names))}")
    values = {}
    for f, tp in known:
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                ok = False
                _problem(problems, path + (f.name,), f"missing required key; expected {expectation(tp)}")
            continue
        value = convert(tp, raw[f.name], path + (f.name,), problems, f.metadata.get("check"), f.metadata.get("keys"))
        ok = ok and value is not INVALID
        values[f.name] = value
    return cls(**values) if ok else INVALID
