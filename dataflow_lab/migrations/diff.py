"""The difference between a table as it is and as its model wants it.

``diff(live, target)`` lists ``Change``s: columns added, removed, retyped or
changing nullability, and indexes or unique constraints added or removed.
A change is *destructive* when it can lose or refuse existing data: dropping
a column, a narrowing retype (``TEXT`` to ``BIGINT``), or ``NOT NULL`` on a
nullable column. Everything else (new columns, widening retypes, new or
dropped indexes, a column's server DEFAULT set, changed or dropped) is additive.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from decimal import Decimal
from typing import NamedTuple

from .live import ColumnShape, IndexShape, TableShape

__all__ = ["Change", "default_key", "diff", "widens"]


class Change(NamedTuple):
    kind: str  # add_column | drop_column | retype | drop_not_null | set_not_null | set_default | drop_default
    #            | add_index | drop_index
    name: str  # the column's or the index's name
    destructive: bool
    old: ColumnShape | IndexShape | None = None
    new: ColumnShape | IndexShape | None = None

    def describe(self) -> str:
        old, new = self.old, self.new
        if self.kind == "retype":
            widening = "widening" if not self.destructive else "narrowing"
            return f"retype column '{self.name}' {old.type} -> {new.type} ({widening})"  # type: ignore[union-attr]
        if self.kind in ("add_index", "drop_index"):
            shape = new or old
            what = "unique" if shape.unique else "index"  # type: ignore[union-attr]
            verb = "add" if self.kind == "add_index" else "drop"
            return f"{verb} {what} {self.name} on ({', '.join(shape.columns)})"  # type: ignore[union-attr]
        if self.kind == "set_default":
            return f"set default of '{self.name}' to {new.default}"  # type: ignore[union-attr]
        return f"{self.kind.replace('_', ' ')} '{self.name}'"


_INTEGERS = {"SMALLINT": 1, "INT2": 1, "INTEGER": 2, "INT": 2, "INT4": 2, "BIGINT": 3, "INT8": 3}
_FLOATS = {"REAL": 1, "FLOAT4": 1, "FLOAT": 2, "DOUBLE": 2, "DECIMAL": 3}


def widens(old: str, new: str) -> bool:
    """True when every value of type ``old`` survives a cast to ``new`` (normalized type names)."""
    if old == new:
        return True
    old_base, _, old_args = old.partition("(")
    new_base, _, new_args = new.partition("(")
    if new_base == "VARCHAR":
        if old_base == "VARCHAR":
            return not new_args or (old_args != "" and _length(old_args) <= _length(new_args))
        return old_base != "BLOB"
    if old_base in _INTEGERS and new_base in _INTEGERS:
        return _INTEGERS[new_base] >= _INTEGERS[old_base]
    if old_base in _INTEGERS and new_base in _FLOATS:
        return True
    if old_base == new_base == "DECIMAL":
        return _decimal_widens(old_args, new_args)
    if old_base in _FLOATS and new_base in _FLOATS:
        return _FLOATS[new_base] >= _FLOATS[old_base]
    return old_base == "TIMESTAMP" and new_base == "TIMESTAMPWITHTIMEZONE"


def _decimal_widens(old_args: str, new_args: str) -> bool:
    """DECIMAL(p, s) holds every DECIMAL(p2, s2) with as many digits before and after the point."""
    if not new_args:
        return True  # unbounded NUMERIC holds every value
    if not old_args:
        return False
    (p1, s1), (p2, s2) = (_digits(old_args), _digits(new_args))
    return s2 >= s1 and p2 - s2 >= p1 - s1


def _digits(args: str) -> tuple[int, int]:
    parts = [int(p) for p in args.rstrip(")").split(",") if p.strip().isdigit()]
    return (parts[0], parts[1] if len(parts) > 1 else 0) if parts else (1000, 0)


def _length(args: str) -> int:
    digits = "".join(ch for ch in args if ch.isdigit())
    return int(digits) if digits else 0


def default_key(column: ColumnShape) -> object:
    """A column's server DEFAULT in a form that compares across spellings: what we wrote, and what
    the database shows back (PostgreSQL: ``'-3'::integer``, ``'2024-01-01 00:00:00+00'::timestamp
    with time zone``, JSONB with its keys re-ordered; SQLite without the outer parentheses; DuckDB
    ``CAST(... AS TEXT)``). Values are compared as the column's type reads them."""
    if column.default is None:
        return None
    text, quoted = _bare(column.default)
    base = column.type.partition("(")[0]
    if base in ("JSON", "JSONB"):
        with contextlib.suppress(ValueError):
            return ("json", json.dumps(json.loads(text), sort_keys=True))
    elif base.startswith(("TIMESTAMP", "DATE")) and quoted:
        with contextlib.suppress(ValueError):
            return ("moment", dt.datetime.fromisoformat(text))
    elif base not in ("VARCHAR", "BLOB"):
        with contextlib.suppress(ArithmeticError, ValueError):
            return ("number", Decimal(text))
    keyword = not quoted and text.replace("_", "").removesuffix("()").isalpha()  # true, CURRENT_TIMESTAMP
    return ("text", text.lower() if keyword else text)


_CAST_SUFFIX = re.compile(r"::[A-Za-z][A-Za-z0-9_ ]*(?:\(\d+(?:,\s*\d+)?\))?$")
_CAST_CALL = re.compile(r"^CAST\((.*) AS [A-Za-z][A-Za-z0-9_ ]*(?:\(\d+(?:,\s*\d+)?\))?\)$", re.I | re.S)


def _bare(sql: str) -> tuple[str, bool]:
    """SQL of a DEFAULT without enclosing parentheses and casts: (its text, whether it was quoted)."""
    text = sql.strip()
    while True:
        before = text
        if text.startswith("(") and text.endswith(")") and _encloses(text):
            text = text[1:-1].strip()
        text = _CAST_SUFFIX.sub("", text).strip()
        if match := _CAST_CALL.match(text):
            text = match.group(1).strip()
        if text == before:
            break
    if len(text) >= 2 and text[0] == text[-1] == "'" and "'" not in text[1:-1].replace("''", ""):
        return text[1:-1].replace("''", "'"), True
    return text, False


def _encloses(text: str) -> bool:
    """Whether the parenthesis that opens ``text`` is the one that closes it (quotes skipped)."""
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "()":
            depth += 1 if ch == "(" else -1
            if depth == 0:
                return i == len(text) - 1
    return False


def diff(live: TableShape, target: TableShape) -> list[Change]:
    """Changes that turn ``live`` into ``target``, index drops first and index adds last."""
    changes = _index_changes(live, target, drops=True)
    for name, new in target.columns.items():
        old = live.columns.get(name)
        if old is None:
            changes.append(Change("add_column", name, False, None, new))
            continue
        if old.type != new.type:
            changes.append(Change("retype", name, not widens(old.type, new.type), old, new))
        if old.nullable and not new.nullable:
            changes.append(Change("set_not_null", name, True, old, new))
        elif new.nullable and not old.nullable:
            changes.append(Change("drop_not_null", name, False, old, new))
        if name not in target.primary_key and default_key(old) != default_key(new):
            changes.append(Change("set_default" if new.default else "drop_default", name, False, old, new))
    for name, old in live.columns.items():
        if name not in target.columns:
            changes.append(Change("drop_column", name, True, old, None))
    return changes + _index_changes(live, target, drops=False)


def _index_changes(live: TableShape, target: TableShape, *, drops: bool) -> list[Change]:
    def key(index: IndexShape) -> tuple:
        return index.columns, index.unique

    live_keys = {key(i) for i in live.indexes}
    target_keys = {key(i) for i in target.indexes}
    if drops:
        gone = [i for i in live.indexes if key(i) not in target_keys]
        return [Change("drop_index", i.name, False, i, None) for i in gone]
    new = [i for i in target.indexes if key(i) not in live_keys]
    return [Change("add_index", i.name, False, None, i) for i in new]
