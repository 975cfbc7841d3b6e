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
from collections.abc import Callable, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any

from .._record import Record
from ..encryption import PREFIX, Packed

__all__ = ["Same", "arrow_source", "by_column_of", "column_builder"]

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


def column_builder(kind: str) -> Callable[[list[Any], bool], Any] | None:
    """How a chunk's column of logical type ``kind`` becomes its Arrow array as it is checked
    (``row_code.column_function``), or None for a kind built later, by ``arrow_source``.

    The builder takes values already of the column's Python type (``nulls``: some are None) and
    raises OverflowError on an int outside 64 bits, so that check and the build are one pass."""
    build = _BUILDERS.get(_KINDS.get(kind, type(None)))
    if build is None:
        return None

    def column(values: list[Any], nulls: bool) -> Any:
        import pyarrow as pa

        return build(pa, values, nulls)

    return column


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
        if isinstance(values, Packed):  # ciphertexts before base64: DuckDB writes their stored form
            arrays.append(_packed(pa, values))
            names.append(f"_dataflow_sealed_{name}")
            params.append(PREFIX)
            select.append(f'? || to_base64("{names[-1]}")')
            continue
        if isinstance(values, Same):
            values = [values.value] * n
        arrays.append(values if isinstance(values, pa.Array) else _array(pa, kind, values))
        names.append(name)
        select.append(f'"{name}"')
    if not arrays:  # every column one value: the rows come from a column of them
        arrays, names = [pa.nulls(n)], ["_dataflow_row"]
    return pa.Table.from_arrays(arrays, names=names), select, params


def _array(pa: Any, kind: Any, values: list[Any]) -> Any:
    import sqlalchemy as sa

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

    if not nulls and (joined := "".join(values)).isascii():
        return _ascii(pa, values, joined)

    builder = StringBuilder()
    builder.append_values(values)
    return builder.finish()


def _ascii(pa: Any, values: list[str], joined: str) -> Any:
    """A string array of ASCII ``values`` (``joined``, their text end to end): one byte a
    character, so the offsets are the running sum of the lengths (3 times as fast as a builder)."""
    import numpy as np

    wide = len(joined) >= 2**31  # past 32-bit offsets: a large_string
    offsets = np.zeros(len(values) + 1, np.int64 if wide else np.int32)
    np.cumsum(np.fromiter(map(len, values), offsets.dtype, len(values)), out=offsets[1:])
    kind = pa.large_string() if wide else pa.string()
    return pa.Array.from_buffers(
        kind, len(values), [None, pa.py_buffer(offsets), pa.py_buffer(joined.encode())]
    )


def _packed(pa: Any, values: Packed) -> Any:
    """An Arrow binary column of the sealed values of an ``encryption.Packed``, made from its
    buffers: no object per value."""
    import numpy as np

    offsets = np.zeros(len(values) + 1, np.int64)
    offsets[1:] = values.ends
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(values.data)]
    return pa.Array.from_buffers(pa.large_binary(), len(values), buffers)


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


_KINDS = {"text": str, "integer": int, "float": float, "boolean": bool}  # logical type -> Python type

_BUILDERS: dict[type, Any] = {
    str: _text,
    int: _fixed("q", "int64", 0),
    float: _fixed("d", "float64", 0.0),
    bool: _bools,
}
