"""BulkUpsert: insert rows, or update those whose ``conflict_on`` key exists.

When the input holds a key twice, the last row wins; inserted and updated counts
are exact on every backend (the dialect reports them where it can).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..dialects.arrow_columns import Same
from ..errors import ValidationError
from ..model import ModelSchema
from ..rows import Chunk, is_dataframe, is_sized, iter_records
from . import images
from .base import Param, RunContext
from .bulk_rows import BulkRows, common_parameters
from .model_node import check_conflict_on
from .undo import RowUndo, rows_before
from .upsert_keys import SeenKeys, key_matches, keys_of_column, keys_of_rows, without_nulls

__all__ = ["BulkUpsert"]

_NULL_KEY = object()  # marks a key holding a NULL: unique to its row (see _last_wins)


class _Tally:
    """What a BulkUpsert run has counted so far."""

    __slots__ = ("inserted", "updated", "seen", "skipped", "wrote_ids")

    def __init__(self) -> None:
        self.inserted = self.updated = 0
        self.seen: SeenKeys | None = None  # keys written by earlier chunks (and which this node inserted)
        self.skipped: list[dict[str, Any]] = []
        self.wrote_ids = False


class _Plan(NamedTuple):
    """How one chunk is upserted."""

    columns: tuple[str, ...]
    conflict_on: list[str]
    key_index: list[int]
    mine: set[Hashable]  # keys this node inserted in earlier chunks: overwritten whole
    update: list[str]  # what an update of an existing row changes
    overwrite: list[str]  # what an update of a row of ``mine`` changes
    guard: tuple[str, ...]  # columns an existing row must share for the upsert to change it


class BulkUpsert(BulkRows):
    outputs = {"inserted": int, "updated": int, "skipped": list[dict]}
    new_ids: list[Any] | None = None  # ids of rows inserted without one, kept when undo will need them
    op_name = "Upsert"
    writes = True
    description = (
        "Insert rows, or update those whose conflict_on key exists; when the input holds a key "
        "twice, the last row wins. Returns {'inserted': a, 'updated': b}."
    )

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            *common_parameters(),
            Param(
                "conflict_on",
                list,
                default=["id"],
                description="primary key or unique fields",
                check=lambda v: check_conflict_on(model, v, what="conflict_on"),
            ),
            Param(
                "update_fields",
                (list, type(None)),
                default=None,
                description="fields an update may change (default: every field given)",
                check=lambda v: (
                    None if v is None else [model.field(n, context="update_fields").name for n in v]
                ),
            ),
        )

    def statements(self) -> list[Any]:
        """One INSERT ... ON CONFLICT DO UPDATE over all rows (PostgreSQL: from a COPY-filled temp table)."""
        columns = [f.name for f in self.model.fields]
        conflict_on = self.conflict_target(self.params["conflict_on"])
        update = self._update_columns(tuple(columns), conflict_on)
        guard = self.behaviours.upsert_guard(conflict_on)
        return [self.mt.dialect.upsert_statement(self.mt.table, columns, conflict_on, update, guard)]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        conn = await ctx.connection(self.dataflow)
        total = is_sized(self.params["data"])  # a list's last chunk needs not note its keys for later ones
        tally = _Tally()
        shaper = self.shaper(allow_id=True, seal=False, columnar=self._columnar(), keep=self._kept(total))
        for staged in self.chunks(ctx, shaper):
            chunk = await self.behaviours.sealing(self, conn, staged)  # each row's id known: sealed
            tally.skipped.extend(chunk.skipped)
            if self._all_new(chunk.columns):
                tally.inserted += await self._insert_chunk(ctx, conn, chunk)
            else:
                last = total is not None and staged.span.stop >= total
                await self._upsert_chunk(ctx, conn, chunk, shaper.given, tally, last=last)
            del staged, chunk  # let them go before the next chunk is read (rows.iter_records)
        if tally.seen is not None:
            await tally.seen.close(conn)
        if tally.wrote_ids and self.model.id_field.generated and tally.inserted:
            await self._sync_id_sequence(conn)
        result: dict[str, Any] = {"inserted": tally.inserted, "updated": tally.updated}
        if self.params.get("on_error") == "skip":
            result["skipped"] = sorted(tally.skipped + self.refused, key=lambda s: s["index"])
        return result

    def _kept(self, total: int | None) -> list[str]:
        """The key columns a chunk keeps as lists, for the node to read: all of them, unless the
        data is one chunk (a list within the database's chunk) and the database checks its keys."""
        dialect, keys = self.mt.dialect, self.conflict_target(self.params["conflict_on"])
        size = self.params.get("batch_size") or dialect.bulk_batch_size(len(self.model.fields))
        one_chunk = total is not None and total <= size
        return [] if one_chunk and dialect.checks_upsert_keys else keys

    def _columnar(self) -> bool:
        """Chunks may stay by column (DuckDB's Arrow path) when nothing needs them as rows: no
        behaviour reads or checks the written rows, and no refused chunk is retried row by row."""
        skips_rows = self.params.get("on_error") == "skip" and self.mt.dialect.supports_savepoints
        return not (self.behaviours.watched or self.behaviours.checks_upserts or skips_rows)

    async def _insert_chunk(self, ctx: RunContext, conn: Any, chunk: Chunk) -> int:
        """Insert a chunk of new rows; how many were written."""
        if chunk.by_column is not None and self.new_ids is None:  # every row passed: one columnar load
            await self.mt.dialect.bulk_insert_columns(
                conn, self.mt.table, chunk.columns, chunk.by_column, ids=False
            )
            return chunk.count

        async def write(rows: list[tuple]) -> None:
            ids = await self.insert_rows(ctx, conn, chunk.columns, rows, ids=self.new_ids is not None)
            if self.new_ids is not None:
                self.new_ids.extend(ids)

        return len(await self.write_or_skip(conn, chunk, write))

    async def _sync_id_sequence(self, conn: Any) -> None:
        """Rows written with their own integer ids: the next generated id must come after them."""
        sync = self.mt.dialect.sync_id_sequence_sql(self.mt.table)
        if sync:
            await conn.fetch(sync)

    def _all_new(self, columns: tuple[str, ...]) -> bool:
        """No ids given, conflicting on ids: every row is new (and rows lacking another key are refused)."""
        conflict_on = self.conflict_target(self.params["conflict_on"])
        missing = [c for c in conflict_on if c not in columns]
        if missing == ["id"] and conflict_on == ["id"]:
            return True
        if missing:
            raise ValidationError(
                f"{self.where(self.node_id)}: rows lack conflict_on field(s) {missing}.",
                hint="every row needs a value for each conflict_on field.",
            )
        return False

    async def _upsert_chunk(
        self, ctx: RunContext, conn: Any, chunk: Chunk, given: tuple[str, ...], tally: _Tally, *, last: bool
    ) -> None:
        """Upsert one chunk (the last row of each key), and count what it inserted and updated.

        ``last``: no chunk follows, so its keys are not noted for later chunks to look up."""
        columns, conflict_on = chunk.columns, self.conflict_target(self.params["conflict_on"])
        key_index = [columns.index(c) for c in conflict_on]
        if last and tally.seen is None and await self._upsert_distinct(conn, chunk, key_index, given, tally):
            return
        if tally.seen is None:
            tally.seen = SeenKeys(self.mt, conflict_on)
        keys, indexes = self._last_wins(chunk, key_index)
        repeats, mine = await tally.seen.lookup(conn, keys)
        new_keys = [k for k in keys if k not in repeats] if repeats else keys
        plan = _Plan(
            columns,
            conflict_on,
            key_index,
            mine=mine if last else await self._claim(conn, conflict_on, new_keys, mine, tally.seen),
            update=self._update_columns(columns, conflict_on, given),
            overwrite=self._update_columns(columns, conflict_on, given, restricted=False),
            guard=self.behaviours.upsert_guard(conflict_on),
        )
        existing = None
        if not self.mt.dialect.upsert_reports_counts:
            existing = await self._count_existing(conn, conflict_on, new_keys)
        counts: list[tuple[int, int] | None] = []
        if chunk.by_column is not None and not plan.mine:  # by column, as it came: one load
            mt = self.mt
            counts.append(
                await mt.dialect.bulk_upsert_columns(
                    conn, mt.table, columns, chunk.by_column, conflict_on, plan.update, plan.guard
                )
            )
            written = chunk.count
        else:
            written = len(
                await self.write_or_skip(
                    conn, chunk, lambda part: self._write(ctx, conn, plan, part, counts), indexes
                )
            )
        if existing is None:  # the database counted for us (PostgreSQL)
            fresh = sum(c[0] for c in counts if c)
        else:
            fresh = len(new_keys) - existing
        tally.inserted += fresh
        tally.updated += written - fresh - len(repeats)
        tally.wrote_ids = tally.wrote_ids or "id" in columns

    async def _upsert_distinct(
        self, conn: Any, chunk: Chunk, key_index: list[int], given: tuple[str, ...], tally: _Tally
    ) -> bool:
        """The only chunk, by column, where the database checks its keys (``checks_upsert_keys``):
        upserted whole when the database finds no key on two rows; False (nothing written) when
        it finds one, or the chunk is not such a chunk (its keys are then read here)."""
        by_column, dialect = chunk.by_column, self.mt.dialect
        if by_column is None or not dialect.checks_upsert_keys:
            return False
        columns, conflict_on = chunk.columns, self.conflict_target(self.params["conflict_on"])
        # a one-value key column (the tenant) is a parameter, not a column: the others tell the keys apart
        varying = [
            c for c, i in zip(conflict_on, key_index, strict=True) if not isinstance(by_column[i], Same)
        ]
        if not varying:
            return False
        update = self._update_columns(columns, conflict_on, given)
        guard = self.behaviours.upsert_guard(conflict_on)
        counts = await dialect.bulk_upsert_distinct(
            conn, self.mt.table, columns, by_column, conflict_on, update, guard, varying
        )
        if counts is None:
            return False
        tally.inserted, tally.updated = tally.inserted + counts[0], tally.updated + counts[1]
        tally.wrote_ids = tally.wrote_ids or "id" in columns
        return True

    async def _claim(
        self, conn: Any, conflict_on: list[str], keys: list[Hashable], mine: set[Hashable], seen: SeenKeys
    ) -> set[Hashable]:
        """``mine`` (the keys of this chunk this node inserted in earlier chunks), after noting ``keys``
        (this chunk's new ones) as seen, and which of them this chunk inserts.

        With update_fields, such a row is overwritten whole (the last row wins), while rows
        that existed before the run get only update_fields.
        """
        ours: set[Hashable] = set()
        if self.params["update_fields"] is not None:
            before = await self._existing_keys(conn, conflict_on, keys)
            ours = {k for k in keys if k not in before}
        await seen.record(conn, keys, ours)
        return mine

    async def _write(
        self, ctx: RunContext, conn: Any, plan: _Plan, part: list[tuple], counts: list[tuple[int, int] | None]
    ) -> None:
        """Upsert ``part``: rows this node inserted earlier overwritten whole, the others as asked."""
        mt, behaviours, c, conflict_on = self.mt, self.behaviours, plan.columns, plan.conflict_on
        before = await images.rows_by_keys(mt, conn, c, part, conflict_on) if behaviours.watched else None
        own, rest = [], part
        if plan.mine:
            keys = keys_of_rows(part, plan.key_index)
            own = [r for k, r in zip(keys, part, strict=True) if k in plan.mine]
            rest = [r for k, r in zip(keys, part, strict=True) if k not in plan.mine]
        if own:
            found = await mt.dialect.bulk_upsert(
                conn, mt.table, c, own, conflict_on, plan.overwrite, plan.guard
            )
            counts.append((0, len(own)) if found is not None else None)
        if rest:
            counts.append(
                await mt.dialect.bulk_upsert(conn, mt.table, c, rest, conflict_on, plan.update, plan.guard)
            )
        await behaviours.upserted(self, conn, c, part, conflict_on)
        if before is not None:
            await behaviours.written(
                self, ctx, await images.upserted_changes(mt, conn, c, part, conflict_on, before)
            )

    @staticmethod
    def _last_wins(chunk: Chunk, key_index: list[int]) -> tuple[list[Hashable], list[int]]:
        """Keep the last row of each key: (the kept rows' keys, their input indexes); ``chunk``
        then holds the kept rows (made rows, where it held columns and a key came twice).

        A key holding a NULL is never the same key twice (see upsert_keys)."""
        by_column = chunk.by_column
        keys = (
            keys_of_rows(chunk.rows, key_index) if by_column is None else keys_of_column(by_column, key_index)
        )
        single, distinct = len(key_index) == 1, set(keys)
        nulls = (
            None in distinct if single else len(without_nulls(keys, single)) < len(keys)
        )  # a hash, not a scan
        if len(distinct) == len(keys) and not nulls:
            start = chunk.first_index  # no key twice (the common case): the rows as they are
            return keys, list(range(start, start + len(keys)))
        unique: dict[Any, tuple[int, Hashable, tuple]] = {}
        for offset, (key, row) in enumerate(zip(keys, chunk.rows, strict=True)):
            index = chunk.first_index + offset
            mark = (_NULL_KEY, index) if (key is None if single else None in key) else key  # type: ignore[operator]
            unique.pop(mark, None)
            unique[mark] = (index, key, row)
        chunk.rows = [r for _, _, r in unique.values()]
        return [k for _, k, _ in unique.values()], [i for i, _, _ in unique.values()]

    def _update_columns(
        self,
        columns: tuple[str, ...],
        conflict_on: list[str],
        given: tuple[str, ...] | None = None,
        *,
        restricted: bool = True,
    ) -> list[str]:
        """What an update changes: the fields the rows give (not defaults filled in), within update_fields,
        and the managed columns the behaviours refresh (updated_at...; created_at and the like stay)."""
        allowed = self.params["update_fields"] if restricted else None
        given = columns if given is None else given
        managed = {c for c in columns if self.model.by_name[c].generated}  # a user's own 'version' is data
        refreshed, keep = self.behaviours.refreshed, {"id", *conflict_on}
        follows = self.behaviours.companions  # a blind index is written with its field
        chosen = [
            c
            for c in columns
            if (
                c in refreshed
                if c in managed
                else c not in keep and c in given and (allowed is None or c in allowed)
            )
        ]
        return chosen + [c for c in columns if follows.get(c) in chosen and c not in chosen]

    async def _existing_keys(self, conn: Any, conflict_on: list[str], keys: list[Hashable]) -> set[Hashable]:
        """Which of ``keys`` are in the table now (a key holding a NULL matches no row)."""
        found: set[Hashable] = set()
        mt, single = self.mt, len(conflict_on) == 1
        for cols, cond in key_matches(
            mt.table, conflict_on, without_nulls(keys, single), mt.dialect.max_bind_params
        ):
            sql, params = mt.dialect.compile(sa.select(*cols).where(cond))
            found.update(r[0] if single else tuple(r) for r in await conn.fetch(sql, params))
        return found

    async def _count_existing(self, conn: Any, conflict_on: list[str], keys: list[Hashable]) -> int:
        """How many of ``keys`` the table holds: the rows the upsert will update, not insert."""
        total, mt = 0, self.mt
        usable = without_nulls(keys, len(conflict_on) == 1)
        for _, cond in key_matches(mt.table, conflict_on, usable, mt.dialect.max_bind_params):
            sql, params = mt.dialect.compile(sa.select(sa.func.count()).select_from(mt.table).where(cond))
            total += int((await conn.fetch(sql, params))[0][0])
        return total

    # -- compensation (nodes/undo.py) -------------------------------------------------
    async def before_image(self, conn: Any) -> list[dict[str, Any]]:
        """The rows whose conflict_on keys the data names (an iterator is made a list: it is read twice)."""
        data = self.params["data"]
        if not isinstance(data, list | tuple) and not is_dataframe(data):
            self.params["data"] = list(data)
        self.new_ids = []  # rows without an id get theirs from the database: undo deletes them by it
        keys = self._data_keys()
        return await rows_before(self, conn, self._keys_filter(keys)) if keys else []

    async def undo(self, conn: Any, before: list[dict[str, Any]], result: Any) -> RowUndo:
        """Delete the rows it inserted (keys that were not there before); write back those it updated."""
        conflict_on = self.params["conflict_on"]
        known = {tuple(row[k] for k in conflict_on) for row in before}
        fresh = [key for key in self._data_keys() if key not in known and None not in key]
        created = (
            [row["id"] for row in await rows_before(self, conn, self._keys_filter(fresh))] if fresh else []
        )
        return RowUndo.of(self, created=[*created, *(self.new_ids or [])], before=before)

    def _data_keys(self) -> list[tuple]:
        """The conflict_on key of each row of ``data`` that gives a valid one, checked as stored."""
        names, keys = self.params["conflict_on"], []
        for batch in iter_records(self.params["data"], 10_000):
            for row in batch:
                if not isinstance(row, Mapping) or not all(k in row for k in names):
                    continue  # such a row inserts (or was refused): nothing there before
                try:
                    keys.append(tuple(self.mt.check(k, row[k]) for k in names))
                except ValidationError:  # refused by the node itself (on_error="skip")
                    continue
        return keys

    def _keys_filter(self, keys: list[tuple]) -> dict[str, Any]:
        names = self.params["conflict_on"]
        if len(names) == 1:
            return {names[0]: {"$in": [key[0] for key in keys]}}
        return {"$or": [{k: {"$eq": v} for k, v in zip(names, key, strict=True)} for key in keys]}
