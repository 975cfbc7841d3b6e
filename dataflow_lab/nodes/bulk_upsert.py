"""BulkUpsert: insert rows, or update those whose ``conflict_on`` key exists.

When the input holds a key twice, the last row wins; inserted and updated counts
are exact on every backend (the dialect reports them where it can).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from ..errors import ValidationError
from ..model import ModelSchema
from ..rows import Chunk, is_dataframe, is_sized, iter_records
from . import images
from .base import Param, RunContext
from .bulk_rows import BulkRows, common_parameters
from .model_node import check_conflict_on
from .undo import RowUndo, rows_before

__all__ = ["BulkUpsert"]

_NULL_KEY = object()  # marks a key holding a NULL: unique to its row (see _last_wins)


def _key_tuples(rows: list[tuple], key_index: list[int]) -> list[tuple]:
    """Each row's key, as a tuple of its ``key_index`` values (made in C: itemgetter, zip)."""
    if len(key_index) == 1:
        return list(zip(map(itemgetter(key_index[0]), rows)))
    return list(map(itemgetter(*key_index), rows))


class _SeenKeys:
    """The conflict_on keys earlier chunks wrote, and which of them this node inserted.

    A key written again by a later chunk counts once (the last row wins), and with update_fields
    a row this node inserted is overwritten whole; so each chunk asks which of its keys earlier
    chunks wrote. The first chunk's keys stay in memory; from the second chunk on they all go to a
    temporary table in the run's transaction (dropped at the end, or with a rollback), so memory
    does not grow with the input. Keys holding a NULL are not kept: NULL equals nothing in SQL, so
    such a row never meets another.
    """

    def __init__(self, node: BulkUpsert, conflict_on: list[str]):
        self.node, self.conflict_on = node, conflict_on
        self.first: dict[tuple, bool] | None = None  # the first chunk's keys -> inserted by this node
        self.table: sa.Table | None = None

    async def lookup(self, conn: Any, keys: list[tuple]) -> tuple[set[tuple], set[tuple]]:
        """Of ``keys``: those earlier chunks wrote, and those of them this node inserted (a key
        holding a NULL is never among them: it matches no other row)."""
        keys = [k for k in keys if None not in k]
        if self.first is None or not keys:
            return set(), set()
        found: dict[tuple, bool] = {}
        if self.table is None:
            found.update((k, self.first[k]) for k in keys if k in self.first)
        elif len(self.conflict_on) == 1:  # one parameter for the chunk's keys (an array, or JSON on SQLite)
            col = self.table.c[self.conflict_on[0]]
            cond = self.node.mt.dialect.in_array(col, [k[0] for k in keys if None not in k])
            sql, params = self.node.mt.dialect.compile(sa.select(col, self.table.c.ours).where(cond))
            found.update(((r[0],), bool(r[1])) for r in await conn.fetch(sql, params))
        else:
            for cols, cond in self.node._key_matches(self.conflict_on, keys, self.table):
                sql, params = self.node.mt.dialect.compile(sa.select(*cols, self.table.c.ours).where(cond))
                found.update((tuple(r[:-1]), bool(r[-1])) for r in await conn.fetch(sql, params))
        return set(found), {k for k, ours in found.items() if ours}

    async def record(self, conn: Any, keys: list[tuple], ours: set[tuple]) -> None:
        """Note ``keys`` as written (none of them seen before), ``ours`` among them inserted by this node."""
        marks = {k: k in ours for k in keys if None not in k}  # a NULL key is never met again
        if self.first is None:
            self.first = marks
            return
        if self.table is None:
            self.table = await self._create(conn)
            marks = {**self.first, **marks}
            self.first = {}
        if marks:
            columns = [*self.conflict_on, "ours"]
            rows = [(*k, int(v)) for k, v in marks.items()]
            await self.node.mt.dialect.bulk_insert(conn, self.table, columns, rows)

    async def _create(self, conn: Any) -> sa.Table:
        mt = self.node.mt
        name = f"dataflow_seen_{uuid.uuid4().hex[:16]}"
        cols = [
            sa.Column(c, mt.dialect.key_type(mt.table.c[c].type), primary_key=True, autoincrement=False)
            for c in self.conflict_on
        ]
        table = sa.Table(name, sa.MetaData(), *cols, sa.Column("ours", sa.Integer), prefixes=["TEMPORARY"])
        await conn.execute(mt.dialect.ddl(sa.schema.CreateTable(table)))
        return table

    async def close(self, conn: Any) -> None:
        if self.table is not None:
            await conn.execute(self.node.mt.dialect.ddl(sa.schema.DropTable(self.table)))
            self.table = None


@dataclass
class _Tally:
    """What a BulkUpsert run has counted so far."""

    inserted: int = 0
    updated: int = 0
    seen: _SeenKeys | None = None  # keys written by earlier chunks (and which this node inserted)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    wrote_ids: bool = False


@dataclass(frozen=True)
class _Plan:
    """How one chunk is upserted."""

    columns: tuple[str, ...]
    conflict_on: list[str]
    key_index: list[int]
    mine: set[tuple]  # keys this node inserted in earlier chunks: overwritten whole
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
        tally, shaper = _Tally(), self.shaper(allow_id=True, seal=False)
        total = is_sized(self.params["data"])  # a list's last chunk needs not note its keys for later ones
        for staged in self.chunks(ctx, shaper):
            chunk = await self.behaviours.sealing(self, conn, staged)  # each row's id known: sealed
            tally.skipped.extend(chunk.skipped)
            if self._all_new(chunk.columns):
                tally.inserted += await self._insert_chunk(ctx, conn, chunk)
            else:
                last = total is not None and staged.span.stop >= total
                await self._upsert_chunk(ctx, conn, chunk, shaper.given, tally, last=last)
        if tally.seen is not None:
            await tally.seen.close(conn)
        if tally.wrote_ids and self.model.id_field.generated and tally.inserted:
            await self._sync_id_sequence(conn)
        result: dict[str, Any] = {"inserted": tally.inserted, "updated": tally.updated}
        if self.params.get("on_error") == "skip":
            result["skipped"] = sorted(tally.skipped + self.refused, key=lambda s: s["index"])
        return result

    async def _insert_chunk(self, ctx: RunContext, conn: Any, chunk: Chunk) -> int:
        """Insert a chunk of new rows; how many were written."""

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
        if tally.seen is None:
            tally.seen = _SeenKeys(self, conflict_on)
        rows, indexes = self._last_wins(chunk, key_index)
        keys = _key_tuples(rows, key_index)
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
        chunk.rows = rows
        written = await self.write_or_skip(
            conn, chunk, lambda part: self._write(ctx, conn, plan, part, counts), indexes
        )
        if existing is None:  # the database counted for us (PostgreSQL)
            fresh = sum(c[0] for c in counts if c)
        else:
            fresh = len(new_keys) - existing
        tally.inserted += fresh
        tally.updated += len(written) - fresh - len(repeats)
        tally.wrote_ids = tally.wrote_ids or "id" in columns

    async def _claim(
        self, conn: Any, conflict_on: list[str], keys: list[tuple], mine: set[tuple], seen: _SeenKeys
    ) -> set[tuple]:
        """``mine`` (the keys of this chunk this node inserted in earlier chunks), after noting ``keys``
        (this chunk's new ones) as seen, and which of them this chunk inserts.

        With update_fields, such a row is overwritten whole (the last row wins), while rows
        that existed before the run get only update_fields.
        """
        ours: set[tuple] = set()
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
            keys = _key_tuples(part, plan.key_index)
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
    def _last_wins(chunk: Chunk, key_index: list[int]) -> tuple[list[tuple], list[int]]:
        """Keep the last row of each key (with its input index).

        A key holding a NULL is never the same key twice: NULL equals nothing in SQL, so the unique
        constraint lets every such row in, and each is inserted."""
        keys = _key_tuples(chunk.rows, key_index)
        if len(set(keys)) == len(keys) and None not in itertools.chain.from_iterable(keys):
            start = chunk.first_index  # no key twice (the common case): the rows as they are
            return chunk.rows, list(range(start, start + len(keys)))
        unique: dict[tuple, tuple[int, tuple]] = {}
        for offset, (key, row) in enumerate(zip(keys, chunk.rows, strict=True)):
            if None in key:
                key = (_NULL_KEY, chunk.first_index + offset)  # its own key: never replaced
            unique.pop(key, None)
            unique[key] = (chunk.first_index + offset, row)
        return [r for _, r in unique.values()], [i for i, _ in unique.values()]

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

    def _key_matches(
        self, conflict_on: list[str], keys: list[tuple], table: sa.Table | None = None
    ) -> Iterator[tuple[list, Any]]:
        """(key columns, a condition matching a chunk of ``keys``), chunked to the bind limit.

        ``table``: the model's table, or another holding the same key columns."""
        mt = self.mt
        cols = [(mt.table if table is None else table).c[c] for c in conflict_on]
        chunk = max(1, mt.dialect.max_bind_params // (len(cols) * 2) - 1)
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            if len(cols) == 1:
                yield cols, cols[0].in_([k[0] for k in part])
            else:
                yield cols, sa.or_(*[sa.and_(*[c == v for c, v in zip(cols, k, strict=True)]) for k in part])

    async def _existing_keys(self, conn: Any, conflict_on: list[str], keys: list[tuple]) -> set[tuple]:
        """Which of ``keys`` are in the table now (a key holding a NULL matches no row)."""
        found: set[tuple] = set()
        for cols, cond in self._key_matches(conflict_on, [k for k in keys if None not in k]):
            sql, params = self.mt.dialect.compile(sa.select(*cols).where(cond))
            found.update(tuple(r) for r in await conn.fetch(sql, params))
        return found

    async def _count_existing(self, conn: Any, conflict_on: list[str], keys: list[tuple]) -> int:
        """How many of ``keys`` the table holds: the rows the upsert will update, not insert."""
        total, table = 0, self.mt.table
        for _, cond in self._key_matches(conflict_on, [k for k in keys if None not in k]):
            sql, params = self.mt.dialect.compile(sa.select(sa.func.count()).select_from(table).where(cond))
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
