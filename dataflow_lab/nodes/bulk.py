"""The four bulk nodes: BulkCreate, BulkUpdate, BulkDelete (here) and BulkUpsert (bulk_upsert.py).

They are atomic by default: rows are checked as they are written, inside the
run's transaction, so a bad row anywhere leaves the database as it was.
Inserts take the dialect's fastest path (SQLite executemany, PostgreSQL COPY,
DuckDB Arrow); ``data`` is consumed chunk by chunk, so a generator of a million
rows never sits in memory at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import sqlalchemy as sa

from .. import audit, filters
from ..errors import ValidationError
from ..model import ModelSchema
from .base import Param, RunContext
from .bulk_rows import BulkRows, common_parameters
from .bulk_upsert import BulkUpsert
from .crud import hard_param
from .increments import set_values, split
from .model_node import ModelNode, include_deleted_param

__all__ = ["BULK_OPERATIONS", "BulkCreate", "BulkDelete", "BulkUpdate", "BulkUpsert"]


class BulkCreate(BulkRows):
    outputs = ("inserted", "ids", "skipped")
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
        mt, dialect = self.mt, self.mt.dialect
        conn = await ctx.connection(self.dataflow)
        shaper = self.shaper(allow_id=False)
        # own ids (id: str, id: UUID) are in the rows; generated integer ids come back from the database
        return_ids, text_ids = self.params.get("return_ids"), not self.model.id_field.generated
        inserted, ids, skipped = 0, list[Any](), list[dict[str, Any]]()
        for chunk in self.chunks(ctx, shaper):
            skipped.extend(chunk.skipped)
            chunk_ids: list[Any] = []
            if not chunk.rows:
                ids.extend([None] * len(chunk.span) if return_ids else [])
                continue
            refused_before = len(self.refused)
            write: Callable[[list[tuple]], Awaitable[None]]
            if self.model.audit_log:  # learn the new ids, to log each row as stored

                async def write(
                    rows: list[tuple], columns: tuple[str, ...] = chunk.columns, out=chunk_ids
                ) -> None:
                    new_ids = await audit.insert_and_record(self, ctx, conn, columns, rows)
                    if return_ids and not text_ids:
                        out.extend(new_ids)
            elif return_ids and not text_ids:

                async def write(
                    rows: list[tuple], columns: tuple[str, ...] = chunk.columns, out=chunk_ids
                ) -> None:
                    out.extend(await dialect.bulk_insert_returning_ids(conn, mt.table, columns, rows))
            else:

                async def write(rows: list[tuple], columns: tuple[str, ...] = chunk.columns) -> None:
                    await dialect.bulk_insert(conn, mt.table, columns, rows)

            written = await self.write_or_skip(conn, chunk, write)
            inserted += len(written)
            if return_ids:  # in input order, None where a row was skipped
                at = chunk.columns.index("id") if text_ids else 0
                got = iter(mt.ids_from_db(r[at] for r in written) if text_ids else chunk_ids)
                gone = {s["index"] for s in chunk.skipped + self.refused[refused_before:]}
                ids.extend(None if i in gone else next(got) for i in chunk.span)
        result: dict[str, Any] = {"inserted": inserted}
        if return_ids:
            result["ids"] = ids
        if self.params.get("on_error") == "skip":
            result["skipped"] = sorted(skipped + self.refused, key=lambda s: s["index"])
        return result


class _FilterWrite(ModelNode):
    verb: ClassVar[str]  # "update" or "delete", for messages

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        if partial and "filter" not in params:
            return
        if not params.get("filter") and not params.get("confirmed", False):
            raise ValidationError(
                f"{cls.where(node_id)}: an empty filter would {cls.verb} every {cls.model.name} row.",
                hint="pass a filter, or confirmed=True if you really mean every row.",
            )

    def where_clause(self, *, include_deleted: bool | None = None) -> Any:
        """The filter, within the node's guards (the tenant's rows; live ones unless include_deleted)."""
        where = filters.to_sql(self.mt, self.params.get("filter") or {})
        conditions = [c for c in (where, *self.guards(include_deleted=include_deleted)) if c is not None]
        return sa.and_(*conditions) if len(conditions) > 1 else (conditions[0] if conditions else None)


class BulkUpdate(_FilterWrite):
    outputs = ("updated",)
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
            *include_deleted_param(model),
        )

    def statements(self) -> list[Any]:
        return [self._statement()]

    def _statement(self) -> Any:
        mt = self.mt
        plain, increments = split(self.params["fields"])
        values = mt.db_values(mt.touched(plain, self.now()))
        stmt = sa.update(mt.table).values(set_values(mt.table, tuple(values), increments, values))
        if self.model.versioned:
            stmt = stmt.values(version=mt.table.c.version + sa.literal_column("1"))
        where = self.where_clause()
        return stmt if where is None else stmt.where(where)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        conn = await ctx.connection(self.dataflow)
        if self.model.audit_log:
            updated = await audit.update_and_record(self, ctx, conn, self._statement(), self.where_clause())
            return {"updated": updated}
        return {"updated": await conn.execute(*self.mt.dialect.compile(self._statement()))}


class BulkDelete(_FilterWrite):
    outputs = ("deleted",)
    op_name = "Delete"
    verb = "delete"
    writes = True
    description = "Delete every row matching a filter in one statement; returns {'deleted': n}."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param("filter", dict, default={}, description="which rows", check=cls._filter_checker()),
            Param("confirmed", bool, default=False, description="required with an empty filter"),
            *hard_param(model),
        )

    def statements(self) -> list[Any]:
        return [self._statement()]

    def _soft(self) -> bool:
        return self.model.soft_delete and not self.params.get("hard")

    def _statement(self) -> Any:
        """Soft delete: mark the live matching rows; otherwise (or hard=True) remove them."""
        where = self.where_clause(include_deleted=bool(self.params.get("hard")))
        stmt: sa.Update | sa.Delete
        if self._soft():
            now = self.mt.to_db("updated_at", self.now())
            stmt = sa.update(self.mt.table).values(deleted_at=now, updated_at=now)
        else:
            stmt = sa.delete(self.mt.table)
        return stmt if where is None else stmt.where(where)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        conn = await ctx.connection(self.dataflow)
        if self.model.audit_log and self._soft():
            updated = await audit.update_and_record(self, ctx, conn, self._statement(), self.where_clause())
            return {"deleted": updated}
        if self.model.audit_log:
            return {"deleted": await audit.delete_and_record(self, ctx, conn, self._statement())}
        return {"deleted": await conn.execute(*self.mt.dialect.compile(self._statement()))}


BULK_OPERATIONS = (BulkCreate, BulkUpdate, BulkDelete, BulkUpsert)
