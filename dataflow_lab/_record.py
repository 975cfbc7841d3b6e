"""``Record``: the base of the package's small internal value objects.

A frozen dataclass compiles six methods (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__``, ``__delattr__``) from source text when its module is imported: 0.4-1 ms
a class, which for the ~30 of the package was a third of a cold start's own import time.
A ``Record`` behaves as one for what the package uses (fields set once, equality and hash
by fields, a repr naming them, pickling and copying), and costs a class statement: its
methods are shared, and a subclass writes only ``__slots__`` (the fields, in order, with their
annotations) and its ``__init__``, which takes them in that order and sets them with ``_fill``
(or ``object.__setattr__``).

Public result and info objects stay frozen dataclasses (``dataclasses.fields``,
``replace`` and ``asdict`` work on them); a ``Record`` is for internals.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from operator import attrgetter
from typing import Any, ClassVar

__all__ = ["Record"]


class Record:
    """An immutable value: equal to another of its own class whose fields are equal, hashable."""

    __slots__: tuple[str, ...] = ()
    _values: ClassVar[Any]  # the fields as a tuple: set for each subclass (its own __slots__ only)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = cls.__slots__
        get = attrgetter(*names) if names else (lambda self: ())
        cls._values = staticmethod(get if len(names) != 1 else lambda self: (get(self),))

    def _fill(self, *values: Any) -> None:
        """Set the fields, in ``__slots__`` order (for ``__init__``)."""
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(self._values(self) == self._values(other))

    def __hash__(self) -> int:
        return hash(self._values(self))

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={value!r}" for name, value in zip(self.__slots__, self._values(self), strict=True)
        )
        return f"{type(self).__qualname__}({shown})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # pickle and copy rebuild it through __init__
        return type(self), self._values(self)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
