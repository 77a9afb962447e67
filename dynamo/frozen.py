"""`Record` and `Frozen`: dataclasses that compile nothing. A subclass declares its fields as a
dataclass does (`class Cuda(Frozen, kw_only=True): driver: str = field(...)`) and is a dataclass
(`dataclasses.fields`, `asdict` and `replace` work): one __init__, written below, sets each field;
equality and repr go by field. A `Frozen` is what @dataclass(frozen=True) gives: nothing sets a field
again, and it hashes by field.

Why not @dataclass: CPython before 3.13 compiles every method a dataclass generates on its own
(python/cpython#109870), and declaring the matrix's tables and the doctor's records that way was
most of what the start-up preflight cost a worker.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, FrozenInstanceError, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: object) -> Any:
        return lambda cls: cls


class _Fields:
    """What Record and Frozen share (one is not the other, for type checkers: mypy refuses a frozen
    dataclass deriving from a mutable one)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # set by dataclass() on each subclass
    _init_fields: ClassVar[tuple[Field[Any], ...]]
    _positional: ClassVar[int]  # how many fields __init__ takes by position

    def __init_subclass__(cls, *, kw_only: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__ is None:  # else dataclass() writes one from inspect.signature, slowly
            cls.__doc__ = cls.__name__
        dataclass(init=False, eq=False, repr=False, kw_only=kw_only)(cls)
        cls._init_fields = fields(cls)
        cls._positional = sum(not f.kw_only for f in cls._init_fields)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        name = type(self).__name__
        if len(args) > self._positional:
            raise TypeError(f"{name}() takes {self._positional} positional arguments but {len(args)} were given")
        values = self.__dict__
        for index, f in enumerate(self._init_fields):
            if index < len(args):
                if f.name in kwargs:
                    raise TypeError(f"{name}() got multiple values for argument {f.name!r}")
                values[f.name] = args[index]
            elif f.name in kwargs:
                values[f.name] = kwargs[f.name]
            elif f.default is not MISSING:
                values[f.name] = f.default
            elif f.default_factory is not MISSING:
                values[f.name] = f.default_factory()
            else:
                raise TypeError(f"{name}() missing required argument {f.name!r}")
        unexpected = kwargs.keys() - values.keys()
        if unexpected:
            raise TypeError(f"{name}() got an unexpected keyword argument {min(unexpected)!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[f.name] for f in self._init_fields)

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if other.__class__ is self.__class__ else NotImplemented

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={value!r}" for f, value in zip(self._init_fields, self._values()))
        return f"{type(self).__name__}({shown})"


@dataclass_transform(field_specifiers=(field,))
class Record(_Fields):
    """A dataclass whose fields may be set again."""


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Frozen(_Fields):
    """A dataclass whose fields are set once, by __init__; it hashes by field."""

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(self._values())
