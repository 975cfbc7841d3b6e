"""Columns for a columnar bulk path (DuckDB's): typed Arrow arrays, and one-value columns bound once.

A chunk reaches the dialect as one list per column, or a ``Same`` where every row holds one value
(the timestamps every row of a bulk write shares, a stamp, a default). A ``Same`` of a plain value
is one statement parameter, not an Arrow column of 100,000 copies; the other columns become
Arrow arrays of the table's types where the values allow it: text,
64-bit ints, floats and bools, with or without NULLs (text through pyarrow's StringBuilder,
the others from their buffers). Those builders never touch pandas, which
``pyarrow.array`` imports on its first call (0.3-1 s in a fresh process); other values (per-row
datetimes, decimals, JSON text) go through ``pyarrow.array`` as before.

pyarrow is imported when a chunk is first built, never with this module.
"""

from __future__ import annotations

import datetime as dt
import uuid
from array import array
from collections.abc import Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any

from .._record import Record
from ..encryption import Packed

__all__ = ["Same", "arrow_source", "by_column_of"]

_BOUND = (str, int, float, bool, type(None), dt.datetime, dt.date, Decimal, uuid.UUID)  # as a parameter


class Same(Record):
    """A column holding one value on every row of a chunk (a timestamp, a stamp, a default)."""

    __slots__ = ("value",)
    value: Any

    def __init__(self, value: Any):
        object.__setattr__(self, "value", value)


def by_column_of(rows: Sequence[Sequence[Any]], keep: Sequence[int] = ()) -> list[Any]:
    """Rows -> one list per column, a ``Same`` for a column whose rows all hold the same object
    (identity, so 1 and True or two equal Decimals are never merged); ``keep``: positions that
    stay lists (the keys an upsert joins on)."""
    width = len(rows[0]) if rows else 0
    columns: list[Any] = [list(map(itemgetter(i), rows)) for i in range(width)]  # no tuple per row
    for i, values in enumerate(columns):
        first = values[0]
        if i in keep or len(values) < 2 or values[-1] is not first or values[len(values) // 2] is not first:
            continue
        if len(set(map(id, values))) == 1:
            columns[i] = Same(first)
    return columns


def arrow_source(
    types: Sequence[Any], columns: Sequence[str], by_column: Sequence[Any]
) -> tuple[Any, list[str], list[Any]]:
    """(an Arrow table of the list columns, the SELECT list in ``columns`` order, its parameters).

    ``types``: each column's SQLAlchemy type. A ``Same`` of a plain value is a ``?`` in the
    SELECT list; every other column a quoted name read from the Arrow table (at least one is,
    so the table has the chunk's rows)."""
    import pyarrow as pa

    n = max((len(c) for c in by_column if not isinstance(c, Same)), default=1)
    arrays, names, select, params = [], [], [], []
    for name, kind, values in zip(columns, types, by_column, strict=True):
        if isinstance(values, Same) and isinstance(values.value, _BOUND):
            value = values.value
            params.append(str(value) if isinstance(value, uuid.UUID) else value)
            select.append("?")
            continue
        if isinstance(values, Same):
            values = [values.value] * n
        arrays.append(_array(pa, kind, values))
        names.append(name)
        select.append(f'"{name}"')
    if not arrays:  # every column one value: the rows come from a column of them
        arrays, names = [pa.nulls(n)], ["_dataflow_row"]
    return pa.Table.from_arrays(arrays, names=names), select, params


def _array(pa: Any, kind: Any, values: list[Any]) -> Any:
    import sqlalchemy as sa

    if isinstance(values, Packed):
        return _packed(pa, values)
    if isinstance(kind, sa.Uuid):
        values = [None if v is None else str(v) for v in values]
    kinds = set(map(type, values))
    nulls = type(None) in kinds
    kinds.discard(type(None))
    if len(kinds) == 1 and (build := _BUILDERS.get(kinds.pop())) is not None:
        return build(pa, values, nulls)
    return pa.array(values)  # inferred, as pyarrow sees fit (its first call imports pandas)


def _validity(pa: Any, values: list[Any]) -> tuple[Any, int]:
    """The validity bitmap of ``values`` (1 where not None) and the count of Nones."""
    import numpy as np

    present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    return pa.py_buffer(np.packbits(present, bitorder="little").tobytes()), len(values) - int(present.sum())


def _text(pa: Any, values: list[Any], nulls: bool) -> Any:
    from pyarrow.lib import StringBuilder  # copies into Arrow's memory: no second copy on the heap

    builder = StringBuilder()
    builder.append_values(values)
    return builder.finish()


def _packed(pa: Any, values: Packed) -> Any:
    """An Arrow string column of newline-ended ciphertexts (encryption.Packed): the offsets from
    where the newlines are, the data with them taken out. No str per value is made."""
    import numpy as np

    ends = np.flatnonzero(np.frombuffer(values.data, np.uint8) == 10)  # the newline ending each value
    offsets = np.zeros(len(ends) + 1, np.int64)
    offsets[1:] = ends - np.arange(len(ends))  # each value ends where its newline was, less the ones before
    data = values.data.replace(b"\n", b"")
    return pa.Array.from_buffers(
        pa.large_string(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _fixed(code: str, arrow_type: str, zero: Any) -> Any:
    def build(pa: Any, values: list[Any], nulls: bool) -> Any:
        validity, missing = _validity(pa, values) if nulls else (None, 0)
        if nulls:
            values = [zero if v is None else v for v in values]
        data = pa.py_buffer(array(code, values))
        return pa.Array.from_buffers(
            getattr(pa, arrow_type)(), len(values), [validity, data], null_count=missing
        )

    return build


def _bools(pa: Any, values: list[Any], nulls: bool) -> Any:
    import numpy as np

    validity, missing = _validity(pa, values) if nulls else (None, 0)
    bits = np.fromiter((v is True for v in values), dtype=bool, count=len(values))
    data = pa.py_buffer(np.packbits(bits, bitorder="little").tobytes())
    return pa.Array.from_buffers(pa.bool_(), len(values), [validity, data], null_count=missing)


_BUILDERS: dict[type, Any] = {
    str: _text,
    int: _fixed("q", "int64", 0),
    float: _fixed("d", "float64", 0.0),
    bool: _bools,
}
