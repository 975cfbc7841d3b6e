"""The four bulk nodes: BulkCreate, BulkUpdate, BulkDelete (here) and BulkUpsert (bulk_upsert.py).

They are atomic by default: rows are checked as they are written, inside the
run's transaction, so a bad row anywhere leaves the database as it was.
Inserts take the dialect's fastest path (SQLite executemany, PostgreSQL COPY,
DuckDB Arrow); ``data`` is consumed chunk by chunk, so a generator of a million
rows never sits in memory at once.
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa

from .. import filters
from ..errors import ValidationError
from ..model import ModelSchema
from ..rows import Chunk
from . import images
from .base import Param, RunContext
from .bulk_rows import BulkRows, common_parameters
from .bulk_upsert import BulkUpsert
from .increments import set_values, split
from .model_node import ModelNode
from .model_node import filtered as once_per_shape
from .outputs import ID
from .undo import RowUndo, rows_before

__all__ = ["BULK_OPERATIONS", "BulkCreate", "BulkDelete", "BulkUpdate", "BulkUpsert"]


class BulkCreate(BulkRows):
    outputs = {"inserted": int, "ids": list[ID | None], "skipped": list[dict]}  # ids, skipped: when asked
    op_name = "Create"
    writes = True
    description = "Insert many rows, all or nothing; ids follow input order."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            *common_parameters(),
            Param("return_ids", bool, default=False, description="also return the new ids, in input order"),
        )

    def statements(self) -> list[Any]:
        """One INSERT, run for every row (the dialect may use a faster path: COPY, Arrow)."""
        columns = [f.name for f in self.model.fields if f.name != "id" or not f.generated]
        return [sa.insert(self.mt.table).values({c: sa.bindparam(c) for c in columns})]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        conn = await ctx.connection(self.dataflow)
        return_ids = bool(self.params.get("return_ids"))
        inserted, ids, skipped = 0, list[Any](), list[dict[str, Any]]()
        shaper = self.shaper(allow_id=False, columnar=not self.behaviours.watched)
        for chunk in self.chunks(ctx, shaper):
            skipped.extend(chunk.skipped)
            if not chunk.count:
                ids.extend([None] * len(chunk.span) if return_ids else [])
                continue
            refused_before = len(self.refused)
            written, chunk_ids = await self._write(ctx, conn, chunk, return_ids)
            inserted += written
            if return_ids:  # in input order, None where a row was skipped
                gone = {s["index"] for s in chunk.skipped + self.refused[refused_before:]}
                got = iter(chunk_ids)
                ids.extend(None if i in gone else next(got) for i in chunk.span)
            del chunk  # let it go before the next chunk is read (rows.iter_records)
        result: dict[str, Any] = {"inserted": inserted}
        if return_ids:
            result["ids"] = ids
        if self.params.get("on_error") == "skip":
            result["skipped"] = sorted(skipped + self.refused, key=lambda s: s["index"])
        return result

    async def _write(self, ctx: RunContext, conn: Any, chunk: Chunk, return_ids: bool) -> tuple[int, list]:
        """Write one chunk: (how many rows were written, their ids when ``return_ids``).

        Own ids (id: str, id: UUID) are in the rows; generated integer ids come back from the database.
        """
        own_ids = not self.model.id_field.generated
        if chunk.by_column is not None:  # every row passed, shaped by column: one load, nothing to skip
            dialect, table = self.mt.dialect, self.mt.table
            learned = await dialect.bulk_insert_columns(
                conn, table, chunk.columns, chunk.by_column, ids=return_ids and not own_ids
            )
            if return_ids and own_ids:
                return chunk.count, self.mt.ids_from_db(chunk.by_column[chunk.columns.index("id")])
            return chunk.count, learned
        learned = []

        async def write(rows: list[tuple]) -> None:
            learned.extend(
                await self.insert_rows(ctx, conn, chunk.columns, rows, ids=return_ids and not own_ids)
            )

        written = await self.write_or_skip(conn, chunk, write)
        if return_ids and own_ids:
            at = chunk.columns.index("id")
            return len(written), self.mt.ids_from_db(r[at] for r in written)
        return len(written), learned

    # -- compensation (nodes/undo.py) -------------------------------------------------
    async def before_image(self, conn: Any) -> None:
        """Nothing to read: the rows are new. But run() must report their ids, for undo to delete."""
        self.params["return_ids"] = True

    async def undo(self, conn: Any, before: Any, result: dict[str, Any]) -> RowUndo:
        """Delete the rows it inserted."""
        return RowUndo.of(self, created=list(result.get("ids", [])))


class _FilterWrite(ModelNode):
    verb: ClassVar[str]  # "update" or "delete", for messages

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        if partial and "filter" not in params:
            return
        if not params.get("filter") and cls.dataflow.config.safety.every_row_writes == "refused":
            raise ValidationError(
                f"{cls.where(node_id)}: an empty filter would {cls.verb} every {cls.model.name} row, which "
                f"safety_level='{cls.dataflow.config.safety_level}' refuses, confirmed or not.",
                hint="pass a filter that names the rows; a change to every row is a reviewed migration "
                "or a run on a DataFlow with safety_level='testing'.",
            )
        if not params.get("filter") and not params.get("confirmed", False):
            raise ValidationError(
                f"{cls.where(node_id)}: an empty filter would {cls.verb} every {cls.model.name} row.",
                hint="pass a filter, or confirmed=True if you really mean every row.",
            )

    def where_clause(self, *, include_deleted: bool | None = None) -> Any:
        """The filter, within the node's guards (``include_deleted`` None: as the node's parameters say)."""
        where = filters.to_sql(self.mt, self.params.get("filter") or {})
        conditions = [c for c in (where, *self.guards(include_deleted=include_deleted)) if c is not None]
        return sa.and_(*conditions) if len(conditions) > 1 else (conditions[0] if conditions else None)

    def filtered(self, stmt: Any, where: Any = None) -> Any:
        """``stmt`` (an UPDATE or DELETE) limited to the filter (or ``where``, the filter as an
        expression already made), the guards and the behaviours' checks."""
        if where is None:
            where = filters.to_sql(self.mt, self.params.get("filter") or {})
        checks = self.behaviours.update_where(self, self.mt.table)
        return stmt.where(*[c for c in (where, *self.guards(), *checks) if c is not None])

    async def write_once_per_shape(
        self, ctx: RunContext, build: Any, *key: Any, values: dict[str, Any]
    ) -> int:
        """Run ``build(where)``, compiled once per filter shape and ``key`` (the filter's values, the
        behaviours' and ``values`` bound by name each run); how many rows it changed."""
        sql, params = once_per_shape(self, self.params.get("filter") or {}, build, *key, values=values)
        return await (await ctx.connection(self.dataflow)).execute(sql, params)

    async def write(self, ctx: RunContext, stmt: Any) -> int:
        """Run the statement; how many rows it changed. Images go to the behaviours that want them."""
        conn = await ctx.connection(self.dataflow)
        if not self.behaviours.watched:
            return await conn.execute(*self.mt.dialect.compile(stmt))
        if isinstance(stmt, sa.Delete):  # DELETE ... RETURNING gives the rows as they were
            changes = await images.deleted_changes(self.mt, conn, stmt)
        else:
            changes = await images.updated_changes(self.mt, conn, stmt, self.where_clause())
        await self.behaviours.written(self, ctx, changes)
        return len(changes)


class BulkUpdate(_FilterWrite):
    outputs = {"updated": int}
    op_name = "Update"
    verb = "update"
    writes = True
    description = "Update every row matching a filter in one statement; returns {'updated': n}."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param("filter", dict, default={}, description="which rows", check=cls._filter_checker()),
            Param(
                "fields",
                dict,
                required=True,
                description="field -> new value, or {'$inc': n} to add n atomically",
                check=cls._fields_checker("fields", increments=True),
            ),
            Param("confirmed", bool, default=False, description="required with an empty filter"),
            *cls.behaviours.parameters(cls.operation),
        )

    def statements(self) -> list[Any]:
        return [self._statement()]

    def _statement(self, sealed: dict[str, Any] | None = None) -> Any:
        """The UPDATE; ``sealed``: the SET values of encrypted fields, one ciphertext per row (else shown)."""
        mt, behaviours = self.mt, self.behaviours
        plain, increments = split(self.params["fields"])
        per_row = mt.bound_to_rows(plain)
        rest = {k: v for k, v in plain.items() if k not in per_row}
        values = mt.db_values({**rest, **behaviours.touch_values(self, self.now())})
        stmt = sa.update(mt.table).values(set_values(mt.table, tuple(values), increments, values))
        extra = {**behaviours.update_set(mt.table), **(mt.shown(per_row) if sealed is None else sealed)}
        if extra:
            stmt = stmt.values(extra)
        return self.filtered(stmt)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        mt, behaviours = self.mt, self.behaviours
        plain, increments = split(self.params["fields"])
        per_row = mt.bound_to_rows(plain)
        if per_row:
            return {"updated": await self._write_sealed(ctx, len(per_row))}
        if behaviours.watched:
            return {"updated": await self.write(ctx, self._statement())}
        values = mt.db_values({**plain, **behaviours.touch_values(self, self.now())})
        columns = tuple(values)

        def build(where: Any) -> Any:
            stmt = sa.update(mt.table).values(set_values(mt.table, columns, increments, {}))
            extra = behaviours.update_set(mt.table)
            return self.filtered(stmt.values(extra) if extra else stmt, where)

        return {
            "updated": await self.write_once_per_shape(
                ctx, build, "bulk_update", columns, increments, values=values
            )
        }

    async def _write_sealed(self, ctx: RunContext, width: int) -> int:
        """Encrypted fields bind each row's id: the matching ids are read first, then each chunk of
        them is one UPDATE sealing every row's value to its id, joined to the ciphertexts by id
        (``ModelTable.sealed_for_rows``), in the run's transaction."""
        mt, conn = self.mt, await ctx.connection(self.dataflow)
        where, plain = self.where_clause(), split(self.params["fields"])[0]
        select = sa.select(mt.table.c.id) if where is None else sa.select(mt.table.c.id).where(where)
        ids = [r[0] for r in await conn.fetch(*mt.dialect.compile(select))]
        step = max(1, (mt.dialect.max_bind_params - 100) // (width + 1))
        total = 0
        for start in range(0, len(ids), step):
            part = ids[start : start + step]
            sets, joined = mt.sealed_for_rows(mt.bound_to_rows(plain), part)
            stmt = self._statement(sets)
            stmt = stmt.where(joined if joined is not None else mt.dialect.in_array(mt.table.c.id, part))
            total += await self.write(ctx, stmt)
        return total

    # -- compensation (nodes/undo.py) -------------------------------------------------
    async def before_image(self, conn: Any) -> list[dict[str, Any]]:
        return await rows_before(self, conn, self.params.get("filter") or {})

    async def undo(self, conn: Any, before: list[dict[str, Any]], result: Any) -> RowUndo:
        """Write back every matching row as it was."""
        return RowUndo.of(self, before=before)


class BulkDelete(_FilterWrite):
    outputs = {"deleted": int}
    op_name = "Delete"
    verb = "delete"
    writes = True
    description = "Delete every row matching a filter in one statement; returns {'deleted': n}."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param("filter", dict, default={}, description="which rows", check=cls._filter_checker()),
            Param("confirmed", bool, default=False, description="required with an empty filter"),
            *cls.behaviours.parameters(cls.operation),
        )

    def statements(self) -> list[Any]:
        return [self._statement()]

    def _statement(self) -> Any:
        """Remove the matching rows, or, when a behaviour marks rows instead, UPDATE them with its marks."""
        marks = self.behaviours.delete_values(self, self.now())
        if marks is None:
            return self.filtered(sa.delete(self.mt.table))
        return self.filtered(sa.update(self.mt.table).values(self.mt.db_values(marks)))

    async def run(self, ctx: RunContext) -> dict[str, int]:
        if self.behaviours.watched:
            return {"deleted": await self.write(ctx, self._statement())}
        marks, table = self.behaviours.delete_values(self, self.now()), self.mt.table
        values = self.mt.db_values(marks or {})

        def build(where: Any) -> Any:
            if marks is None:
                return self.filtered(sa.delete(table), where)
            return self.filtered(sa.update(table).values({c: sa.bindparam(c) for c in values}), where)

        key = None if marks is None else tuple(values)
        return {"deleted": await self.write_once_per_shape(ctx, build, "bulk_delete", key, values=values)}

    # -- compensation (nodes/undo.py) -------------------------------------------------
    async def before_image(self, conn: Any) -> list[dict[str, Any]]:
        return await rows_before(self, conn, self.params.get("filter") or {})

    async def undo(self, conn: Any, before: list[dict[str, Any]], result: Any) -> RowUndo:
        """Write back every matching row as it was."""
        return RowUndo.of(self, before=before)


BULK_OPERATIONS = (BulkCreate, BulkUpdate, BulkDelete, BulkUpsert)
