"""Typed outputs: what a node returns, and whether a connection can carry it into an input.

A node declares its output as a type (``Node.output_type``): a model row, ``Records``
of rows, ``int``, a TypedDict of named outputs, or ``Any`` when it cannot say (a Python
node without a return annotation). An input declares what it takes
(``Node.input_type``, an ``Expects``), or None when its check is its own.

``build()`` walks a connection's path ('records.0.id') through the source's type
(``walk``) and asks ``Expects.admits`` whether the input takes what arrives. The rule is
the runtime's: a connection is refused only when *no* value of the source's type could
pass the input's check (an int into a str field). The lossless coercions the runtime
makes stay open (an int into a float, '42' into an int, an ISO string into a datetime),
and so do Optional (None may never arrive) and Any.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

__all__ = ["ID", "ROW", "Expects", "label", "resolve", "row_type", "walk"]


class ROW:
    """In a generated node's ``outputs``: a row of the node's model."""


class ID:
    """In a generated node's ``outputs``: the type of the model's id."""


class _Missing:
    """``walk`` found no such key in a type whose keys are known."""

    def __init__(self, owner: Any, part: str):
        self.owner, self.part = owner, part


# What a model field's check takes besides its own type (types.py: lossless coercions only).
_COERCES: dict[type, tuple[type, ...]] = {
    int: (int, float, str),
    float: (int, float, Decimal, str),
    bool: (bool, int),
    str: (str,),
    dt.datetime: (dt.datetime, str),
    dt.date: (dt.date, str),
    Decimal: (Decimal, int, float, str),
    bytes: (bytes, bytearray, memoryview),
    uuid.UUID: (uuid.UUID, str),
    dict: (dict,),
    list: (list, tuple),
}
_NEVER: dict[type, tuple[type, ...]] = {  # subclasses a check refuses all the same
    int: (bool,),
    float: (bool,),
    Decimal: (bool,),
    dt.date: (dt.datetime,),
}


class Expects(NamedTuple):
    """What an input takes: ``types``, checked like a model field (``coerces``) or by isinstance."""

    types: tuple[type, ...]
    coerces: bool = False

    @classmethod
    def field(cls, python: type, nullable: bool = False, *also: type) -> Expects:
        """A model field's input (its check coerces losslessly); ``also``: further types it takes."""
        return cls((python, *also, *((type(None),) if nullable else ())), coerces=True)

    def admits(self, source: Any) -> bool:
        """Could a value of type ``source`` pass this input's check? Unknown types: yes."""
        arms = _arms(source)
        if arms is None:
            return True
        return not arms or any(self._admits_class(arm) for arm in arms)

    def _admits_class(self, source: type) -> bool:
        return any(_takes(target, source, self.coerces) for target in self.types)

    def __str__(self) -> str:
        return " | ".join(label(t) for t in self.types)


def _takes(target: type, source: type, coerces: bool) -> bool:
    if target is Any or target is object or source is object:
        return True
    if not isinstance(target, type):
        return True
    try:
        if issubclass(target, source) and source is not type(None):
            return True  # a value declared as the wider type may well be the narrower one
        if issubclass(source, _NEVER.get(target, ())):
            return False
        if coerces:
            return issubclass(source, _coerced(target))
        if target is int and issubclass(source, str):
            return True  # Node._check_one takes '42' for an int parameter
        return issubclass(source, target) and not (target is int and source is bool)
    except TypeError:  # a class that refuses subclass checks
        return True


def _coerced(target: type) -> tuple[type, ...]:
    if issubclass(target, enum.Enum):
        return (target, str, *{type(m.value) for m in target})
    return _COERCES.get(target, (target,))


def _arms(source: Any) -> list[type] | None:
    """The classes a value of ``source`` may be, None left out; None when unknown (then anything goes)."""
    if source is Any or isinstance(source, typing.TypeVar | str | typing.ForwardRef):
        return None
    origin = typing.get_origin(source)
    if origin is typing.Union or origin is types.UnionType:
        arms: list[type] = []
        for arg in typing.get_args(source):
            inner = _arms(arg)
            if inner is None:
                return None
            arms += inner
        return arms
    if origin is typing.Annotated:
        return _arms(typing.get_args(source)[0])
    if origin is typing.Literal:
        return [type(v) for v in typing.get_args(source)]
    if origin is not None:
        source = origin
    if hasattr(source, "__supertype__"):  # a NewType
        return _arms(source.__supertype__)
    if source is None or source is type(None):
        return []
    if typing.is_typeddict(source):
        return [dict]
    return [source] if isinstance(source, type) else None


# -- walking a connection's path through an output type --------------------------------
def walk(output: Any, path: str) -> tuple[Any, str, Any]:
    """The type at ``path`` in ``output``: (type, '', None), or (None, the path walked so far, missing).

    ``missing`` says where the path left the type: a key the type's keys lack, or a name on a list.
    """
    walked: list[str] = []
    for part in path.split("."):
        step = _step(output, part)
        if isinstance(step, _Missing):
            return None, ".".join(walked), step
        output = step
        walked.append(part)
    return output, "", None


def _step(tp: Any, part: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        found = [
            s for s in (_step(a, part) for a in args if a is not type(None)) if not isinstance(s, _Missing)
        ]
        if not found:
            return _Missing(tp, part)
        return Any if Any in found else typing.Union[tuple(found)]  # noqa: UP007 - built from a list
    if origin is typing.Annotated:
        return _step(args[0], part)
    if typing.is_typeddict(tp):
        hints = _hints(tp)
        return hints.get(part, _Missing(tp, part)) if hints is not None else Any
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        return (hints or {}).get(part, Any)
    base = origin if isinstance(origin, type) else tp
    if not isinstance(base, type) or base in (str, bytes):
        return Any
    if issubclass(base, Mapping):
        return args[1] if len(args) == 2 else Any
    if issubclass(base, Sequence):
        if not part.lstrip("-").isdigit():
            return _Missing(tp, part)  # the runtime indexes a list: 'records.0.id', never 'records.id'
        if base is tuple and args and args[-1] is not Ellipsis:
            index = int(part)
            return args[index] if -len(args) <= index < len(args) else _Missing(tp, part)
        return args[0] if args else Any
    return Any


def _hints(cls: type) -> dict[str, Any] | None:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: unknown
        return None


def keys(tp: Any) -> list[str] | None:
    """The keys a type's values are known to have (a row's fields, a node's named outputs), or None."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        found = [keys(a) for a in typing.get_args(tp) if a is not type(None)]
        return (
            None
            if any(k is None for k in found)
            else list(dict.fromkeys(k for ks in found for k in ks or ()))
        )
    if typing.is_typeddict(tp):
        return list(_hints(tp) or {}) or None
    return None


# -- generated nodes' declarations ----------------------------------------------------
def row_type(model: Any) -> type:
    """A TypedDict of a model's row: its fields and their Python types (Optional when nullable)."""
    fields = {f.name: (f.type.python | None if f.nullable else f.type.python) for f in model.fields}
    row = typing.TypedDict(model.name, fields)  # type: ignore[misc]
    row.__dataflow_row__ = model.name  # type: ignore[attr-defined]
    return row


def resolve(declared: Any, row: type, id_type: Any, name: str) -> Any:
    """A generated node's ``outputs`` with ``ROW`` and ``ID`` made its model's; a dict: named outputs."""
    if declared is ROW:
        return row
    if declared is ID:
        return id_type
    if isinstance(declared, dict):
        outputs = {k: resolve(v, row, id_type, name) for k, v in declared.items()}
        return typing.TypedDict(f"{name}Output", outputs)  # type: ignore[operator]
    origin, args = typing.get_origin(declared), typing.get_args(declared)
    if origin is typing.Union or origin is types.UnionType:
        return typing.Union[tuple(resolve(a, row, id_type, name) for a in args)]  # noqa: UP007
    if origin is not None and args:
        return types.GenericAlias(origin, tuple(resolve(a, row, id_type, name) for a in args))
    return declared


# -- how a type reads in a message -----------------------------------------------------
def label(tp: Any) -> str:
    """'int', 'str | None', 'a User row', 'Records[User]', '{records, count}', 'Any'."""
    if tp is Any:
        return "Any"
    if tp is None or tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(label(a) for a in args)
    row = getattr(tp, "__dataflow_row__", None)
    if row is not None:
        return f"a {row} row"
    if typing.is_typeddict(tp):
        return "{" + ", ".join(f"{k}: {label(v)}" for k, v in (_hints(tp) or {}).items()) + "}"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _inner(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _inner(tp: Any) -> str:
    row = getattr(tp, "__dataflow_row__", None)
    return row if row is not None else label(tp)
