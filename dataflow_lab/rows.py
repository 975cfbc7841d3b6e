"""User data -> checked, driver-ready row chunks, for the bulk nodes.

``data`` may be a list of dicts, a pandas DataFrame, or any iterable of dicts
(a generator is consumed chunk by chunk, so memory stays bounded). A chunk holds as
many rows as a memory budget allows at the width measured on its first rows
(``ChunkSizer``), within the database's own limit.

Checking is fast on the common path: the first row fixes which fields are
given, and functions generated for those fields (``row_code``) check and shape a
chunk a column at a time (zipped into tuples, or kept as columns for a columnar
database), or, when any value misses those checks, row by row in one loop.
Only a row that misses that loop is checked field by field, which either coerces a
lossless value ("42" for an int) or raises an error naming the row index, the field
and the value's type.
"""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from .dialects.arrow_columns import Same
from .encryption import random_id, random_ids
from .errors import ValidationError, did_you_mean
from .frames import frame_records
from .model import MISSING
from .row_code import FieldCode, column_function, row_function

__all__ = ["Chunk", "ChunkSizer", "RowShaper", "iter_records", "is_dataframe"]

# Python types that pass unchanged for each logical type (before the dialect's converter).
_FAST_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "integer": (int,),
    "float": (float,),
    "boolean": (bool,),
    "date": (dt.date,),
    "datetime": (dt.datetime,),
    "decimal": (Decimal,),
    "bytes": (bytes,),
    "uuid": (uuid.UUID,),
}  # fmt: skip  (json has no entry: its values are checked row by row)


class Chunk:
    """Driver-ready rows for ``columns``; ``indexes`` are their positions in the input.

    A chunk shaped for a columnar database (``RowShaper(columnar=True)``) holds ``by_column``
    instead: one list per column, the dialect's own column (an Arrow array: ``FieldCode.build``),
    or a ``Same`` for a column with one value on every row; its ``rows`` are made from them when
    something asks for them.
    """

    def __init__(
        self,
        columns: tuple[str, ...],
        rows: list[tuple[Any, ...]] | None,
        first_index: int,
        skipped: list[dict[str, Any]] | None = None,
        *,
        by_column: list[Any] | None = None,
    ):
        self.columns, self.first_index = columns, first_index
        self.skipped: list[dict[str, Any]] = skipped if skipped is not None else []
        self._rows, self.by_column = rows, by_column
        lists = [c for c in by_column or () if not isinstance(c, Same)]
        self.count = len(rows) if rows is not None else len(lists[0]) if lists else 0

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            n = self.count
            made = (
                itertools.repeat(c.value, n)
                if isinstance(c, Same)
                else c
                if isinstance(c, list)
                else c.to_pylist()
                for c in self.by_column or ()
            )
            self._rows = list(zip(*made, strict=False))
        return self._rows

    @rows.setter
    def rows(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows, self.by_column, self.count = rows, None, len(rows)

    @property
    def span(self) -> range:
        """The input positions this chunk covers: its rows and the rows it skipped."""
        return range(self.first_index, self.first_index + self.count + len(self.skipped))

    @property
    def indexes(self) -> list[int]:
        """The input position of each of ``rows`` (skipped rows leave gaps)."""
        gone = {s["index"] for s in self.skipped}
        return [i for i in self.span if i not in gone]


def is_dataframe(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "iloc") and hasattr(data, "dtypes")


SAMPLE_ROWS = 16  # rows measured per chunk; a stream's first chunk is this many (it is measured first)


def record_bytes(record: Any) -> int:
    """About what one input row holds in memory: the dict and its values (a JSON value's items too)."""
    size = sys.getsizeof(record)
    for value in record.values() if isinstance(record, Mapping) else ():
        size += sys.getsizeof(value)
        if isinstance(value, dict):
            size += sum(map(sys.getsizeof, value.values()))
        elif isinstance(value, list | tuple):
            size += sum(map(sys.getsizeof, value))
    return size


class ChunkSizer:
    """Rows per chunk: as many as ``budget`` bytes hold at the widest row measured so far, at most ``cap``.

    ``copies``: how many times a chunk is held at once per byte of input row (the records of a
    streamed chunk, the driver-ready rows, a driver's own copy such as DuckDB's Arrow table).
    Each chunk is measured (a sample of its rows), so the chunks after wider rows are smaller.
    """

    def __init__(self, cap: int, budget: float | None = None, copies: float = 1.0):
        self.cap, self.budget, self.copies = max(1, cap), budget, copies
        self.width = 0.0

    @property
    def measuring(self) -> bool:
        return self.budget is not None

    def measure(self, records: Sequence[Any]) -> None:
        """Widen to ``records``' mean width, measured on ``SAMPLE_ROWS`` of them spread across them."""
        sample = records[:: max(1, len(records) // SAMPLE_ROWS)][:SAMPLE_ROWS]
        if self.measuring and sample:
            self.width = max(self.width, sum(map(record_bytes, sample)) / len(sample))

    @property
    def rows(self) -> int:
        if not self.width or self.budget is None:
            return self.cap
        return max(1, min(self.cap, int(self.budget // (self.width * self.copies))))


def iter_records(
    data: Any, chunk_rows: int | ChunkSizer, *, fill: Mapping[str, Any] | None = None
) -> Iterator[Sequence[Any]]:
    """Lists of records (dicts), without materializing the input: at most ``chunk_rows`` each, or as
    many as a ``ChunkSizer`` says (measured before each chunk of a list or DataFrame is cut; a
    stream's first chunk is ``SAMPLE_ROWS`` rows, measured, and sizes the next).

    ``fill``: for a DataFrame, the value a missing cell (NaN, NaT, NA, None) of that column
    means (the field's default); other missing cells become None.
    """
    sizer = chunk_rows if isinstance(chunk_rows, ChunkSizer) else ChunkSizer(chunk_rows)
    if is_dataframe(data):
        frame, names, missing = data, [str(c) for c in data.columns], fill or {}
        yield from _cut(
            lambda start, stop: frame_records(frame, names, start, stop, missing), len(data), sizer
        )
        return
    if isinstance(data, list | tuple):
        yield from _cut(lambda start, stop: data[start:stop], len(data), sizer)
        return
    iterator = iter(data)
    size = SAMPLE_ROWS if sizer.measuring else sizer.rows
    while batch := list(itertools.islice(iterator, size)):
        sizer.measure(batch)
        yield batch
        del batch  # not held while the next one is read: one chunk of a stream in memory, not two
        size = sizer.rows


def _cut(read: Callable[[int, int], Sequence[Any]], total: int, sizer: ChunkSizer) -> Iterator[Sequence[Any]]:
    """``read(start, stop)`` for consecutive spans of ``total`` rows, each as long as ``sizer`` says."""
    start = 0
    while start < total:
        if sizer.measuring:
            sizer.measure(read(start, min(total, start + SAMPLE_ROWS)))
        stop = min(total, start + sizer.rows)
        yield read(start, stop)
        start = stop


class RowShaper:
    """Turns records into driver tuples for one model table and one node."""

    def __init__(
        self,
        mt: Any,
        *,
        node: str,
        now: dt.datetime,
        allow_id: bool,
        on_error: str = "raise",
        stamps: Mapping[str, Any] | None = None,
        seal: bool = True,
        columnar: bool = False,
        keep: Sequence[str] = (),
    ):
        self.mt = mt
        self._columnar = columnar  # chunks by column where every row passes (a columnar database)
        self._keep = frozenset(keep)  # columns that stay lists in a columnar chunk (an upsert's keys)
        # False: encrypted fields stay staged, for the node to seal once it knows each row's id
        self._seal = mt.seal_rows if seal else _staged
        self._seal_columns = mt.seal_columns if seal else _staged
        self._stamps = dict(stamps or {})  # managed values every row gets (tenant_id, version, deleted_at)
        self.node = node
        self.on_error = on_error
        self.model = mt.model
        self.writable = [f for f in self.model.fields if not f.generated or (allow_id and f.primary_key)]
        self.writable_names = {f.name for f in self.writable}
        # a DataFrame's missing cell in a non-Optional field with a default means that default
        self._fill = {f.name: f.default for f in self.writable if not f.nullable and f.default is not MISSING}
        # a reflected table may lack these columns
        self._times = tuple(
            n for n in ("created_at", "updated_at") if n in self.model.by_name and n not in self._stamps
        )
        self._now_db = mt.to_db(self._times[0], now) if self._times else None
        self._now = now
        self.columns: tuple[str, ...] | None = None

    @property
    def _laid_out(self) -> tuple[str, ...]:
        """The columns, once the first row fixed them."""
        assert self.columns is not None, "the first row lays out the columns"
        return self.columns

    @property
    def given(self) -> tuple[str, ...]:
        """The fields row 0 gave (the others were filled with defaults)."""
        return self._given

    # -- layout, fixed by the first row ----------------------------------
    def _layout(self, first: Mapping[str, Any]) -> None:
        given = [f for f in self.writable if f.name in first]
        # a field with a server default that row 0 omits is left out: the database fills it
        omitted = [f for f in self.writable if f.name not in first and not f.server_default]
        # a value made fresh for each row (uuid4 for an id: UUID); other omitted ids are not written
        self._made = [(f.name, f.default_factory) for f in omitted if f.default_factory is not None]
        rest = [f for f in omitted if not f.primary_key and f.default_factory is None]
        self._given = tuple(f.name for f in given)
        stamped = tuple(self.mt.stage(name, value) for name, value in self._stamps.items())
        self._tail = tuple(self._default_db(f) for f in rest) + (self._now_db,) * len(self._times) + stamped
        made = tuple(name for name, _ in self._made)
        self.columns = (*self._given, *made, *(f.name for f in rest), *self._times, *self._stamps)
        # When row 0 lacks a required field, every row takes the slow path (which names it).
        self._fast_ok = _REQUIRED not in self._tail
        # a Decimal's check lets NaN and Infinity through (a float's NaN is refused inline)
        self._reals = [i for i, f in enumerate(given) if f.type.name == "decimal"]
        # staged encrypted fields wait for the node to seal them, row by row
        staged = self._seal is _staged and bool(self.model.encrypted)
        self._columnar = self._columnar and not self._reals and not staged
        codes = tuple(self._code(f) for f in given)
        fresh = self._fresh_values if self._made else None
        self._shape = row_function(codes, self._tail, fresh) if self._fast_ok else _all_rows_slow
        # by column first (a few C passes per column), row by row when a value misses the checks,
        # where the chunk stays by column (a columnar database) or encrypted fields are sealed a
        # column at a time; else the rows are made in one loop, which costs less than the columns
        # and their zip into tuples (SQLite, 100k rows of 3 fields: ~10 ms of ~300 ms CPU)
        by_column = self._fresh_columns if self._made else None
        by_columns = self._columnar or bool(self.model.encrypted)
        self._shape_columns = (
            column_function(codes, self._tail, by_column) if self._fast_ok and given and by_columns else None
        )

    def _code(self, f: Any) -> FieldCode:
        """What the generated code checks and converts of field ``f``."""
        kinds = (f.type.python,) if f.type.name == "enum" else _FAST_TYPES.get(f.type.name, ())
        is_int, is_real, convert = f.type.name == "integer", f.type.name == "float", self._converter(f)
        return FieldCode(
            f.name, tuple(kinds), f.nullable, convert, is_int, is_real, self._builder(f, convert)
        )

    def _builder(self, f: Any, convert: Any) -> Any:
        """The dialect's maker of ``f``'s whole column, in a columnar chunk, for a value written as
        given (not an id, a kept key, an encrypted field, or a converted value)."""
        if not self._columnar or convert is not None or f.primary_key or f.name in self._keep:
            return None
        return None if f.name in self.model.encrypted else self.mt.dialect.column_builder(f.type.name)

    def _default_db(self, f: Any) -> Any:
        if f.default is not MISSING:
            return self.mt.stage(f.name, f.default)
        if f.nullable:
            return None
        return _REQUIRED  # a row relying on it fails on the slow path, naming the field

    def _converter(self, f: Any) -> Any:
        to_db = self.mt.stager(f.name)  # an encrypted field's value is sealed with its row (seal_rows)
        if f.type.name in ("datetime", "decimal"):  # normalize to aware UTC / fit the digits, then convert
            check = f.type.check
            return (lambda v: to_db(check(v))) if to_db else check
        return to_db

    # -- chunks ----------------------------------------------------------
    def chunks(self, data: Any, size: int | ChunkSizer) -> Iterator[Chunk]:
        index = 0
        for records in iter_records(data, size, fill=self._fill):
            if not records:
                continue
            if self.columns is None:
                self._require_mapping(records[0], index)
                self._layout(records[0])
            yield self.prepare(records, index)
            index += len(records)
            del records  # let it go before the next chunk is read (iter_records)

    def prepare(self, records: Sequence[Any], first_index: int) -> Chunk:
        """One chunk, shaped by column when every row passes (kept so for a columnar database,
        else zipped into tuples), else row by row."""
        if self._shape_columns is not None and (by_column := self._shape_columns(records)) is not None:
            if self._reals:  # checked on the rows (the NaN a Decimal's check lets through), then sealed
                made = Chunk(self._laid_out, None, first_index, by_column=by_column).rows
                return self._finished(made, records, first_index, [])
            # encrypted fields sealed a column at a time, each value bound to the id beside it
            columns, by_column = self._seal_columns(self._laid_out, by_column, packed=self._columnar)
            chunk = Chunk(columns, None, first_index, by_column=by_column)
            return chunk if self._columnar else Chunk(columns, chunk.rows, first_index)
        skipped: list[dict[str, Any]] = []

        def slow(record: Any, offset: int, rows: list[tuple[Any, ...]]) -> None:
            try:
                rows.append(self._slow(record, first_index + offset))
            except ValidationError as exc:
                if self.on_error != "skip":
                    raise
                skipped.append({"index": first_index + offset, "error": exc.message})

        return self._finished(self._shape(records, slow), records, first_index, skipped)

    def _finished(
        self,
        rows: list[tuple[Any, ...]],
        records: Sequence[Any],
        first_index: int,
        skipped: list[dict[str, Any]],
    ) -> Chunk:
        """``rows`` checked for what only a full pass finds, then sealed (encrypted fields)."""
        if self._reals and rows and not self._reals_ok(rows):
            return self._all_slow(records, first_index)  # a NaN or Infinity Create refuses: name it
        columns, sealed = self._seal(self._laid_out, rows)  # encrypted fields: each bound to its row
        return Chunk(columns, sealed, first_index, skipped)

    def _reals_ok(self, rows: list[tuple[Any, ...]]) -> bool:
        """No float NaN and no non-finite Decimal (what the fields' checks refuse on Create).

        Values may already be converted for the driver: a Decimal stored as text is finite
        exactly when its text ends in a digit ('NaN', 'Infinity', 'sNaN' do not).
        """
        for i in self._reals:
            for v in (r[i] for r in rows):
                if isinstance(v, float) and v != v or isinstance(v, Decimal) and not v.is_finite():
                    return False
                if isinstance(v, str) and not v[-1:].isdigit():
                    return False
        return True

    def _all_slow(self, records: Sequence[Any], first_index: int) -> Chunk:
        rows, skipped = [], []
        for offset, record in enumerate(records):
            try:
                rows.append(self._slow(record, first_index + offset))
            except ValidationError as exc:
                if self.on_error != "skip":
                    raise
                skipped.append({"index": first_index + offset, "error": exc.message})
        columns, sealed = self._seal(self._laid_out, rows)  # encrypted fields: each bound to its row
        return Chunk(columns, sealed, first_index, skipped)

    def _fresh_values(self) -> tuple[Any, ...]:
        if len(self._made) == 1 and self.mt.writers[self._made[0][0]] is None:  # an id made per row
            return (self._made[0][1](),)
        return tuple(self.mt.to_db(name, make()) for name, make in self._made)

    def _fresh_columns(self, n: int) -> list[list[Any]]:
        """``_fresh_values`` of ``n`` rows, a list per made column."""
        if len(self._made) == 1 and self.mt.writers[self._made[0][0]] is None:  # an id made per row
            make = self._made[0][1]
            return [random_ids(n) if make is random_id else [make() for _ in range(n)]]
        rows = [self._fresh_values() for _ in range(n)]
        return [[row[i] for row in rows] for i in range(len(self._made))]

    def _slow(self, record: Any, index: int) -> tuple[Any, ...]:
        """Check one row field by field; coerce lossless values or raise naming row and field."""
        where = f"{self.node}: row {index}"
        self._require_mapping(record, index)
        unknown = [k for k in record if k not in self.writable_names]
        if unknown and unknown[0] in self._stamps:
            raise ValidationError(
                f"{where}: field '{unknown[0]}' is managed by dataflow_lab and cannot be given.",
                hint="tenant_id comes from `with db.tenant(...)`; version and deleted_at from the nodes.",
            )
        if unknown:
            raise ValidationError(
                f"{where}: unknown or read-only field '{unknown[0]}'.{did_you_mean(unknown[0], self.writable_names)}",
                hint=f"writable fields of {self.model.name}: {', '.join(sorted(self.writable_names))}.",
            )
        values = {}
        for name, value in record.items():
            try:
                values[name] = self.mt.check(name, value)
            except ValidationError as exc:
                raise ValidationError(f"{where}: {exc.message}", hint=exc.hint) from None
        missing = [f.name for f in self.writable if f.required and f.name not in values]
        if missing:
            raise ValidationError(
                f"{where}: missing required field '{missing[0]}'.",
                hint="give every row a value for each required field.",
            )
        extra = [n for n in values if n not in self._laid_out]
        if extra:
            raise ValidationError(
                f"{where}: field '{extra[0]}' is given here but not in row {0}, which fixed the columns.",
                hint="give every row the same fields (use None for missing optional values).",
            )
        row = self.mt.new_row({**values, **dict.fromkeys(self._times, self._now), **self._stamps})
        return tuple(self.mt.stage(c, row.get(c)) for c in self._laid_out)

    def _require_mapping(self, record: Any, index: int) -> None:
        if not isinstance(record, Mapping):
            raise ValidationError(
                f"{self.node}: row {index} is {type(record).__name__}, not a dict.",
                hint="pass a list of dicts, a DataFrame, or an iterable of dicts.",
            )


class _Required:
    def __repr__(self) -> str:
        return "<required>"


_REQUIRED = _Required()


def _staged(columns: tuple[str, ...], values: list[Any], **_: Any) -> tuple[tuple[str, ...], list[Any]]:
    """Rows or columns left as they are (``seal=False``: the node seals them)."""
    return columns, values


def _all_rows_slow(records: Sequence[Any], slow: Callable[[Any, int, list], None]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for offset, record in enumerate(records):
        slow(record, offset, rows)
    return rows


def is_sized(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None
