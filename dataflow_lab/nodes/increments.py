"""Atomic increments: ``fields={"balance": {"$inc": -10}}`` in Update and BulkUpdate.

The database computes the new value in the UPDATE itself (``SET balance = balance + :v``,
the increment a bound parameter), so concurrent increments of one row never lose each
other's change, at any isolation level. A NULL value stays NULL (SQL arithmetic).

Only numeric fields take ``$inc``: an int field an int, a float field an int or float, a
Decimal field an int or Decimal (on a database that adds Decimals exactly: PostgreSQL).
A dict/list (JSON) field stores ``{"$inc": ...}`` as its value, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from .._record import Record
from ..errors import ValidationError

__all__ = ["Increment", "check_increment", "is_increment", "set_values", "split"]

# field type -> the increment types it takes (bool is an int subclass and is refused apart)
_TAKES: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), Decimal: (int, Decimal)}


class Increment(Record):
    """A checked ``{"$inc": by}``: add ``by`` to the field's stored value."""

    __slots__ = ("by",)
    by: Any

    def __init__(self, by: Any):
        object.__setattr__(self, "by", by)


def is_increment(f: Any, value: Any) -> bool:
    """Whether ``value`` asks for an increment of field ``f`` (a JSON field stores such dicts as data)."""
    return isinstance(value, Mapping) and "$inc" in value and f.type.name != "json"


def check_increment(mt: Any, f: Any, value: Mapping[str, Any], *, what: str, allowed: bool) -> Increment:
    """``{"$inc": by}`` for field ``f`` of ``mt``'s model, checked; a clear error otherwise."""
    model, name = mt.model.name, f.name
    if not allowed:
        raise ValidationError(
            f"{model}: '{what}' of field '{name}' is {{'$inc': ...}}, which only Update and BulkUpdate take.",
            hint=f"pass the new value of '{name}', or increment it with {model}UpdateNode / BulkUpdateNode.",
        )
    if set(value) != {"$inc"}:
        raise ValidationError(
            f"{model}: field '{name}' got {dict(value)!r:.80}; an increment is exactly {{'$inc': number}}.",
            hint="pass either a new value or {'$inc': number}, not both.",
        )
    takes = _TAKES.get(f.type.python)
    if takes is None:
        raise ValidationError(
            f"{model}: field '{name}' is {f.type.python.__name__}, and only numeric fields take '$inc'.",
            hint="increment an int, float or Decimal field; set other fields to their new value.",
        )
    if f.type.python is Decimal and not mt.dialect.adds_decimals_exactly:
        raise ValidationError(
            f"{model}: '$inc' on Decimal field '{name}' is not exact on {mt.dialect.name}, which stores "
            "Decimals as text (the database would add them as floats).",
            hint="use PostgreSQL for atomic Decimal increments, or read, add in Python and update a "
            "model whose rows carry a version (optimistic locking).",
        )
    by = value["$inc"]
    if isinstance(by, bool) or not isinstance(by, takes):
        names = " or ".join(t.__name__ for t in takes)
        raise ValidationError(
            f"{model}: '$inc' of {f.type.python.__name__} field '{name}' must be {names}, "
            f"got {type(by).__name__} {by!r:.60}.",
            hint=f"pass {{'$inc': <{names}>}} (a negative number decrements).",
        )
    return Increment(mt.check(name, by))


def split(fields: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """Checked fields -> (field -> value or increment amount, the names that are increments)."""
    plain = {k: v.by if isinstance(v, Increment) else v for k, v in fields.items()}
    return plain, frozenset(k for k, v in fields.items() if isinstance(v, Increment))


def set_values(
    table: sa.Table, columns: tuple[str, ...], increments: frozenset[str], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The SET clause: ``col = :col``, or ``col = col + :col`` for an increment."""
    out: dict[str, Any] = {}
    for c in columns:
        param: Any = sa.bindparam(c, values.get(c))
        out[c] = table.c[c] + param if c in increments else param  # the column's type types the sum
    return out
