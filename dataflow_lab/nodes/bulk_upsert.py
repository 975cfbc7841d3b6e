"""BulkUpsert: insert rows, or update those whose ``conflict_on`` key exists.

When the input holds a key twice, the last row wins; inserted and updated counts
are exact on every backend (the dialect reports them where it can).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from .. import audit
from ..errors import ValidationError
from ..model import ModelSchema
from ..rows import Chunk, is_dataframe, iter_records
from .base import Param, RunContext
from .bulk_rows import BulkRows, common_parameters
from .model_node import check_conflict_on
from .undo import RowUndo, rows_before

__all__ = ["BulkUpsert"]

# Managed columns an update always writes: the new updated_at, version + 1, deleted_at NULL (a revive).
_ALWAYS_UPDATED = ("updated_at", "version", "deleted_at")


class BulkUpsert(BulkRows):
    outputs = ("inserted", "updated", "skipped")
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
        guard = ("tenant_id",) if self.model.multi_tenant and conflict_on == ["id"] else ()
        return [self.mt.dialect.upsert_statement(self.mt.table, columns, conflict_on, update, guard)]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, dialect, conflict_on = self.mt, self.mt.dialect, self.conflict_target(self.params["conflict_on"])
        conn = await ctx.connection(self.dataflow)
        inserted = updated = 0
        seen: set[tuple] = set()
        ours: set[tuple] = set()  # keys this node inserted (tracked when update_fields is given)
        skipped: list[dict[str, Any]] = []
        wrote_ids = False
        shaper = self.shaper(allow_id=True)
        for chunk in self.chunks(ctx, shaper):
            skipped.extend(chunk.skipped)
            columns = chunk.columns
            missing = [c for c in conflict_on if c not in columns]
            if missing == ["id"] and conflict_on == ["id"]:  # no ids given: every row is new
                written = await self.write_or_skip(
                    conn,
                    chunk,
                    lambda rows, c=columns: (
                        audit.insert_and_record(self, ctx, conn, c, rows)
                        if self.model.audit_log
                        else dialect.bulk_insert(conn, mt.table, c, rows)
                    ),
                )
                inserted += len(written)
                continue
            if missing:
                raise ValidationError(
                    f"{self.where(self.node_id)}: rows lack conflict_on field(s) {missing}.",
                    hint="every row needs a value for each conflict_on field.",
                )
            key_index = [columns.index(c) for c in conflict_on]
            rows, indexes, repeats = self._last_wins(chunk, key_index, seen)
            update_columns = self._update_columns(columns, conflict_on, shaper.given)
            new_keys = [k for k in self._keys(rows, columns, conflict_on) if k not in repeats]
            existing = None
            counts: list[tuple[int, int] | None] = []
            # With update_fields, a key this node itself inserted in an earlier chunk is overwritten
            # whole (the last row wins), while rows that existed before get only update_fields.
            mine = set(ours) if self.params["update_fields"] is not None else set()
            if self.params["update_fields"] is not None:
                before_keys = await self._existing_keys(conn, conflict_on, new_keys)
                ours.update(k for k in new_keys if k not in before_keys)
            overwrite = self._update_columns(columns, conflict_on, shaper.given, restricted=False)
            guard = ("tenant_id",) if self.model.multi_tenant and conflict_on == ["id"] else ()

            async def write(
                part: list[tuple],
                c: tuple[str, ...] = columns,
                u: list[str] = update_columns,
                out: list = counts,
                k: list[int] = key_index,
                m: set = mine,
                o: list[str] = overwrite,
                g: tuple[str, ...] = guard,
            ) -> None:
                audited = self.model.audit_log
                before = await audit.rows_by_keys(self, conn, c, part, conflict_on) if audited else None
                own = [r for r in part if tuple(r[i] for i in k) in m] if m else []
                rest = [r for r in part if tuple(r[i] for i in k) not in m] if m else part
                if own:
                    found = await dialect.bulk_upsert(conn, mt.table, c, own, conflict_on, o, g)
                    out.append((0, len(own)) if found is not None else None)
                if rest:
                    out.append(await dialect.bulk_upsert(conn, mt.table, c, rest, conflict_on, u, g))
                if g:  # the statement left other tenants' rows alone; any still there is an error
                    await self._refuse_other_tenants(conn, self._keys(part, c, conflict_on))
                if before is not None:
                    await audit.record_upsert(self, ctx, conn, c, part, conflict_on, before)

            if not dialect.upsert_reports_counts:
                existing = await self._count_existing(conn, conflict_on, new_keys)
            chunk.rows = rows
            written = await self.write_or_skip(conn, chunk, write, indexes)
            if existing is None:  # the database counted for us (PostgreSQL)
                got_inserted = sum(c[0] for c in counts if c)
                inserted += got_inserted
                updated += len(written) - got_inserted - len(repeats)
            else:
                fresh = len(new_keys) - existing
                inserted += fresh
                updated += len(written) - fresh - len(repeats)
            wrote_ids = wrote_ids or "id" in columns
        if wrote_ids and self.model.id_field.generated and inserted:
            sync = dialect.sync_id_sequence_sql(mt.table)
            if sync:
                await conn.fetch(sync)
        result: dict[str, Any] = {"inserted": inserted, "updated": updated}
        if self.params.get("on_error") == "skip":
            result["skipped"] = sorted(skipped + self.refused, key=lambda s: s["index"])
        return result

    @staticmethod
    def _last_wins(
        chunk: Chunk, key_index: list[int], seen: set[tuple]
    ) -> tuple[list[tuple], list[int], set[tuple]]:
        """Keep the last row of each key (with its input index); say which keys earlier chunks wrote."""
        unique: dict[tuple, tuple[int, tuple]] = {}
        for offset, row in enumerate(chunk.rows):
            key = tuple(row[i] for i in key_index)
            unique.pop(key, None)
            unique[key] = (chunk.first_index + offset, row)
        repeats = {k for k in unique if k in seen}
        seen.update(unique)
        return [r for _, r in unique.values()], [i for i, _ in unique.values()], repeats

    @staticmethod
    def _keys(rows: list[tuple], columns: tuple[str, ...], conflict_on: list[str]) -> list[tuple]:
        index = [columns.index(c) for c in conflict_on]
        return [tuple(row[i] for i in index) for row in rows]

    def _update_columns(
        self,
        columns: tuple[str, ...],
        conflict_on: list[str],
        given: tuple[str, ...] | None = None,
        *,
        restricted: bool = True,
    ) -> list[str]:
        """What an update changes: the fields the rows give (not defaults filled in), within update_fields."""
        allowed = self.params["update_fields"] if restricted else None
        given = columns if given is None else given
        managed = {c for c in columns if self.model.by_name[c].generated}  # a user's own 'version' is data
        keep = {"id", *conflict_on, *({"created_at", "tenant_id"} & managed)}
        return [
            c
            for c in columns
            if c in _ALWAYS_UPDATED
            and c in managed
            or (c not in keep and c in given and (allowed is None or c in allowed))
        ]

    async def _refuse_other_tenants(self, conn: Any, keys: list[tuple]) -> None:
        """Ids that another tenant's rows hold after the guarded write (which left them unchanged): an error.

        Raised inside the run's transaction, so the batch leaves the database as it was
        (with on_error='skip', just those rows are skipped and reported).
        """
        t, tenant = self.mt.table, self.tenant()
        ids = [k[0] for k in keys]
        step = max(1, self.mt.dialect.max_bind_params - 2)
        for start in range(0, len(ids), step):
            part = ids[start : start + step]
            others = sa.or_(t.c.tenant_id != tenant, t.c.tenant_id.is_(None))
            stmt = sa.select(t.c.id).where(t.c.id.in_(part), others).limit(5)
            taken = [r[0] for r in await conn.fetch(*self.mt.dialect.compile(stmt))]
            if taken:
                raise ValidationError(
                    f"{self.where(self.node_id)}: id(s) {taken} belong to rows of another tenant; "
                    "nothing was written.",
                    hint="leave out 'id' to insert new rows, or use ids of your own tenant's rows.",
                )

    def _key_matches(self, conflict_on: list[str], keys: list[tuple]) -> Iterator[tuple[list, Any]]:
        """(key columns, a condition matching a chunk of ``keys``), chunked to the bind limit."""
        mt = self.mt
        cols = [mt.table.c[c] for c in conflict_on]
        chunk = max(1, mt.dialect.max_bind_params // (len(cols) * 2) - 1)
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            if len(cols) == 1:
                yield cols, cols[0].in_([k[0] for k in part])
            else:
                yield cols, sa.or_(*[sa.and_(*[c == v for c, v in zip(cols, k, strict=True)]) for k in part])

    async def _existing_keys(self, conn: Any, conflict_on: list[str], keys: list[tuple]) -> set[tuple]:
        """Which of ``keys`` are in the table now."""
        found: set[tuple] = set()
        for cols, cond in self._key_matches(conflict_on, keys):
            sql, params = self.mt.dialect.compile(sa.select(*cols).where(cond))
            found.update(tuple(r) for r in await conn.fetch(sql, params))
        return found

    async def _count_existing(self, conn: Any, conflict_on: list[str], keys: list[tuple]) -> int:
        total, table = 0, self.mt.table
        for _, cond in self._key_matches(conflict_on, keys):
            sql, params = self.mt.dialect.compile(sa.select(sa.func.count()).select_from(table).where(cond))
            total += int((await conn.fetch(sql, params))[0][0])
        return total

    # -- compensation (nodes/undo.py) -------------------------------------------------
    async def before_image(self, conn: Any) -> list[dict[str, Any]]:
        """The rows whose conflict_on keys the data names (an iterator is made a list: it is read twice)."""
        data = self.params["data"]
        if not isinstance(data, list | tuple) and not is_dataframe(data):
            self.params["data"] = list(data)
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
        return RowUndo.of(self, created=created, before=before)

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
