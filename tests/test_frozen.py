"""Record and Frozen behave as the dataclasses they stand in for, without compiling a method per class."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import FrozenInstanceError, field

import pytest

from dynamo.frozen import Frozen, Record


class Point(Frozen):
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)


class Options(Record, kw_only=True):
    name: str
    size: int = 1


@dataclasses.dataclass(frozen=True)
class StdPoint:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)


@dataclasses.dataclass(kw_only=True)
class StdOptions:
    name: str
    size: int = 1


def outcome(cls, args, kwargs):
    """The fields a call makes, or TypeError."""
    try:
        return dataclasses.astuple(cls(*args, **kwargs))
    except TypeError:
        return TypeError


@pytest.mark.parametrize(("args", "kwargs"), [((), {}), ((1, 2, [], 4), {}), ((1,), {"x": 2}), ((1,), {"z": 3}),
                                              ((1, 2), {})])
def test_init_accepts_and_refuses_what_a_dataclass_does(args, kwargs):
    assert outcome(Point, args, kwargs) == outcome(StdPoint, args, kwargs)


@pytest.mark.parametrize(("args", "kwargs"), [((), {}), (("a",), {}), ((), {"name": "a", "size": 2}),
                                              ((), {"name": "a", "other": 1})])
def test_kw_only_fields_are_keywords_only(args, kwargs):
    assert outcome(Options, args, kwargs) == outcome(StdOptions, args, kwargs)


def test_a_missing_argument_is_named():
    with pytest.raises(TypeError, match="'x'"):
        Point()


def test_frozen_fields_are_set_once_and_records_may_change():
    point = Point(1)
    with pytest.raises(FrozenInstanceError):
        point.x = 2
    with pytest.raises(FrozenInstanceError):
        del point.y
    options = Options(name="a")
    options.size = 3
    assert options.size == 3


def test_equality_hash_and_repr_go_by_field():
    assert Point(1, 2) == Point(1, 2) != Point(1, 3)
    assert Point(1, 2) != StdPoint(1, 2)
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"
    with pytest.raises(TypeError):  # a Record is mutable: unhashable, as a dataclass with eq
        hash(Options(name="a"))


def test_each_instance_gets_its_own_default_from_a_factory():
    first, second = Point(1), Point(1)
    first.tags.append("a")
    assert second.tags == []


def test_dataclass_functions_and_pickle_work():
    point = Point(1, 2, ["a"])
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "tags"]
    assert dataclasses.asdict(point) == {"x": 1, "y": 2, "tags": ["a"]}
    assert dataclasses.replace(point, y=5) == Point(1, 5, ["a"])
    assert pickle.loads(pickle.dumps(point)) == point
    assert copy.deepcopy(point) == point
