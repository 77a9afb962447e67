"""`Frozen`: what @dataclass(frozen=True) gives, written once. __init__ sets each field once and
nothing sets it again; equality, hash and repr go by field. A class is a plain
`@dataclass(eq=False, repr=False)` over it.

Why not frozen=True: CPython before 3.13 compiles every method a dataclass generates on its own
(python/cpython#109870), and creating the matrix's tables and the doctor's records frozen was most
of what the start-up preflight cost an entry point.
"""

from __future__ import annotations

from dataclasses import Field, FrozenInstanceError
from typing import Any, ClassVar


class Frozen:
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # set by @dataclass on each subclass

    def __setattr__(self, name: str, value: object) -> None:
        if name in self.__dict__ or name not in self.__dataclass_fields__:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[name] for name in self.__dataclass_fields__)

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if other.__class__ is self.__class__ else NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self.__dataclass_fields__, self._values()))
        return f"{type(self).__name__}({fields})"
