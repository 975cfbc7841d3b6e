"""Generated row shaping: one Python function per model shape, compiled once and cached.

A bulk node's rows are checked and shaped by a function written for the fields row 0 gave
(``RowShaper`` fixes them): it reads each field by name, checks each value's exact type inline
(``type(v) is str``), checks an int fits 64 bits and a float is not NaN, converts the values that
need it, and builds the driver tuple with the managed values (timestamps, stamps, defaults) in
place, all in one loop with no per-field Python call. A row the function does not accept (a
missing or extra field, another type, a value its check refuses) is handed to ``slow``, the
shaper's field-by-field path, which coerces a lossless value or names the row and field.

``column_function`` does the same a column at a time, and is tried first: one list per column,
checked in a few passes made in C (the set of its types, min and max of an int column, the sum
of a float column, which is NaN when any value is), or None when any check fails, and the shaper
shapes that chunk row by row instead. A columnar database (DuckDB) takes the columns as they
are, each made into its own column type in the same pass where the dialect can (``FieldCode.build``:
an Arrow array, whose build also refuses an int outside 64 bits); for the others ``zip`` makes
the tuples.

The functions are compiled from source made of names only: values (types, converters, bounds)
are passed in the function's globals, never written into its text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from .dialects.arrow_columns import Same
from .types import INT64

__all__ = ["FieldCode", "Same", "column_function", "row_function"]


class FieldCode(NamedTuple):
    """What the generated code does with one given field's value."""

    name: str
    types: tuple[type, ...]  # the exact types that pass unchanged (empty: every row takes ``slow``)
    nullable: bool
    convert: Callable[[Any], Any] | None  # applied to a non-None value (the dialect's writer, a check)
    is_int: bool  # checked to fit 64 bits
    is_real: bool  # a float NaN is refused (a float column's sum is NaN when any value is)
    # a columnar database's maker of the whole column from the checked values (DuckDB: an Arrow
    # array, arrow_columns.column_builder); it refuses an int outside 64 bits and, given a text
    # column holding no None, a value that is not a str (so that column's types go unchecked)
    build: Callable[[list[Any], bool], Any] | None = None


RowFunction = Callable[[Sequence[Any], Callable[[Any, int, list], None]], list[tuple[Any, ...]]]
ColumnFunction = Callable[[Sequence[Any]], list[Any] | None]


def row_function(
    fields: tuple[FieldCode, ...], tail: tuple[Any, ...], fresh: Callable[[], tuple[Any, ...]] | None
) -> RowFunction:
    """``shape(records, slow)`` -> driver tuples: each record's fields in order, then ``fresh()``
    (values made per row), then ``tail``. ``slow(record, offset, rows)`` appends (or skips) a row
    the generated checks did not accept."""
    make = _compiled_rows(tuple(map(_code_key, fields)), len(tail), fresh is not None)
    return make(tail, fresh, *_values(fields))


def column_function(
    fields: tuple[FieldCode, ...], tail: tuple[Any, ...], fresh: Callable[[int], list[list[Any]]] | None
) -> ColumnFunction:
    """``shape(records)`` -> one list per given field, then ``fresh(len(records))``'s columns (the
    values made per row, a list each), then a ``Same`` per value of ``tail``; None when any record
    or value misses the checks."""
    make = _compiled_columns(tuple(map(_code_key, fields)), len(tail), fresh is not None)
    return make(tail, fresh, *_values(fields))


class _Key(NamedTuple):
    """What the text of the generated code depends on, for one field (the cache's key)."""

    name: str
    checked: bool  # has types that pass (else every row is slow)
    several: bool  # more than one type passes
    nullable: bool
    convert: bool
    is_int: bool
    nan: bool
    build: bool
    typed_build: bool  # the build refuses what the type check would (a text column, no None)


def _code_key(f: FieldCode) -> _Key:
    built = f.build is not None
    return _Key(f.name, bool(f.types), len(f.types) > 1, f.nullable, f.convert is not None, f.is_int,
                f.is_real and float in f.types, built, built and not f.nullable and f.types == (str,))  # fmt: skip


def _values(fields: tuple[FieldCode, ...]) -> list[Any]:
    """T<i> (the type, or a frozenset of them), S<i> (the types, None too if nullable), C<i>, B<i>."""
    out: list[Any] = []
    for f in fields:
        out.append(f.types[0] if len(f.types) == 1 else frozenset(f.types))
        out.append(frozenset((*f.types, type(None)) if f.nullable else f.types))
        out.append(f.convert)
        out.append(f.build)
    return out


def _parameters(keys: tuple[_Key, ...]) -> str:
    return "".join(f", T{i}, S{i}, C{i}, B{i}" for i in range(len(keys)))


def _type_test(i: int, k: _Key) -> str:
    if not k.checked:
        return "False"
    checks = [f"type(v{i}) in T{i}" if k.several else f"type(v{i}) is T{i}"]
    if k.is_int:
        checks.append(f"LO <= v{i} <= HI")
    if k.nan:
        checks.append(f"v{i} == v{i}")  # NaN is the one float unequal to itself
    test = " and ".join(checks)
    return f"(v{i} is None or ({test}))" if k.nullable else f"({test})"


def _convert_line(i: int, k: _Key) -> str:
    pad = " " * 24
    if not k.convert:
        return ""
    if k.nullable:
        return f"{pad}if v{i} is not None:\n{pad}    v{i} = C{i}(v{i})\n"
    return f"{pad}v{i} = C{i}(v{i})\n"


@lru_cache(maxsize=256)
def _compiled_rows(keys: tuple[_Key, ...], n_tail: int, fresh: bool) -> Callable[..., RowFunction]:
    n = len(keys)
    reads = "; ".join(f"v{i} = r[{k.name!r}]" for i, k in enumerate(keys)) or "pass"
    tests = " and ".join(_type_test(i, k) for i, k in enumerate(keys)) or "True"
    converts = "".join(_convert_line(i, k) for i, k in enumerate(keys))
    values = "".join(f"v{i}, " for i in range(n))
    tail = "".join(f"t{j}, " for j in range(n_tail))
    row = f"({values}*fresh(), {tail})" if fresh else f"({values}{tail})"
    unpack = f"    {tail} = tail\n" if n_tail else ""
    source = (
        f"def make(tail, fresh{_parameters(keys)}):\n"
        f"{unpack}"
        "    def shape(records, slow):\n"
        "        rows = []\n"
        "        append = rows.append\n"
        "        for offset, r in enumerate(records):\n"
        "            try:\n"
        f"                if len(r) == {n}:\n"
        f"                    {reads}\n"
        f"                    if {tests}:\n"
        f"{converts}"
        f"                        append({row})\n"
        "                        continue\n"
        "            except (KeyError, TypeError, ValueError, OverflowError):\n"
        "                pass\n"
        "            slow(r, offset, rows)\n"
        "        return rows\n"
        "    return shape\n"
    )
    return _exec(source)


@lru_cache(maxsize=256)
def _compiled_columns(keys: tuple[_Key, ...], n_tail: int, fresh: bool) -> Callable[..., ColumnFunction]:
    if not all(k.checked for k in keys):
        return _exec(f"def make(tail, fresh{_parameters(keys)}):\n    return lambda records: None\n")
    lines = [f"def make(tail, fresh{_parameters(keys)}):", "    tail = [Same(v) for v in tail]"]
    lines += ["    def shape(records):", "        try:"]  # a row without len() (not a dict): TypeError
    # every row holds each field (or KeyError): the lengths add up to n * fields when none has more
    lines += [
        f"            if sum(map(len, records)) != {len(keys)} * len(records):",
        "                return None",
    ]
    lines += [f"            c{i} = [r[{k.name!r}] for r in records]" for i, k in enumerate(keys)]
    lines += ["        except (KeyError, TypeError):", "            return None"]
    for i, k in enumerate(keys):
        if k.typed_build:
            lines += ["        try:", f"            c{i} = B{i}(c{i}, False)"]
            lines += ["        except (TypeError, ValueError, OverflowError):", "            return None"]
            continue
        lines += [
            f"        kinds = {{*map(type, c{i})}}",
            f"        if not kinds <= S{i}:",
            "            return None",
        ]
        ranged = k.is_int and not k.build  # a built column refuses an int outside 64 bits itself
        if k.nullable and (ranged or k.nan):
            lines.append(
                f"        present = [v for v in c{i} if v is not None] if type(None) in kinds else c{i}"
            )
        values = "present" if k.nullable else f"c{i}"
        if ranged:
            lines.append(f"        if min({values}, default=0) < LO or max({values}, default=0) > HI:")
            lines.append("            return None")
        if k.nan:
            lines += [f"        if float in kinds and (s := sum({values})) != s:", "            return None"]
        if k.convert:
            made = (
                f"[None if v is None else C{i}(v) for v in c{i}]" if k.nullable else f"list(map(C{i}, c{i}))"
            )
            lines += ["        try:", f"            c{i} = {made}"]
            lines += ["        except (TypeError, ValueError, OverflowError):", "            return None"]
        if k.build:
            lines += ["        try:", f"            c{i} = B{i}(c{i}, type(None) in kinds)"]
            lines += ["        except (TypeError, ValueError, OverflowError):", "            return None"]
    columns = "".join(f"c{i}, " for i in range(len(keys)))
    made = "*fresh(len(records)), " if fresh else ""
    lines += [f"        return [{columns}{made}*tail]", "    return shape"]
    return _exec("\n".join(lines) + "\n")


def _exec(source: str) -> Callable[..., Any]:
    names: dict[str, Any] = {"LO": INT64[0], "HI": INT64[1], "Same": Same}
    exec(compile(source, "<dataflow_lab.row_code>", "exec"), names)  # noqa: S102 - names and positions only
    make: Callable[..., Any] = names["make"]
    return make
