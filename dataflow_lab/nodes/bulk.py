"""The four bulk nodes: BulkCreate, BulkUpdate, BulkDelete, BulkUpsert.

All of them are atomic: every row is checked before anything is written, and
the writes happen in the run's transaction, so a bad row anywhere leaves the
database as it was. Inserts take the dialect's fastest path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from .. import filters
from ..errors import ValidationError, did_you_mean
from ..model import ModelSchema
from .base import Param, RunContext
from .model_node import ModelNode, check_conflict_on

__all__ = ["BULK_OPERATIONS"]

DEFAULT_BATCH = 10_000


class _BulkRows(ModelNode):
    """Shared by the nodes that take ``data``: checking rows into tuples."""

    def prepared_rows(self, *, with_id: bool) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """Check every row; return (columns, driver-ready tuples). Raises naming the row index."""
        mt, model = self.mt, self.model
        now = self.now()
        writable = {f.name for f in model.user_fields} | ({"id"} if with_id else set())
        columns: tuple[str, ...] | None = None
        out: list[tuple[Any, ...]] = []
        for index, raw in enumerate(self.params["data"]):
            if not isinstance(raw, Mapping):
                raise ValidationError(
                    f"{self.where(self.node_id)}: row {index} is {type(raw).__name__}, not a dict."
                )
            unknown = [k for k in raw if k not in writable]
            if unknown:
                raise ValidationError(
                    f"{self.where(self.node_id)}: row {index}: unknown or read-only field '{unknown[0]}'."
                    + did_you_mean(unknown[0], writable),
                    hint=f"writable fields of {model.name}: {', '.join(sorted(writable))}.",
                )
            values = {}
            for name, value in raw.items():
                try:
                    values[name] = mt.check(name, value)
                except ValidationError as exc:
                    raise ValidationError(
                        f"{self.where(self.node_id)}: row {index}: {exc.message}", hint=exc.hint
                    ) from None
            missing = [f.name for f in model.user_fields if f.required and f.name not in values]
            if missing:
                raise ValidationError(
                    f"{self.where(self.node_id)}: row {index}: missing required field '{missing[0]}'.",
                    hint="give every row a value for each required field.",
                )
            row = mt.new_row(values, now=now)
            if columns is None:
                columns = tuple(row)
            elif tuple(row) != columns:
                row = {c: row.get(c) for c in columns} if set(row) == set(columns) else row
                if tuple(row) != columns:
                    raise ValidationError(
                        f"{self.where(self.node_id)}: row {index} has fields {sorted(raw)}, unlike row 0.",
                        hint="give every row the same fields (use None for missing optional values).",
                    )
            out.append(tuple(mt.to_db(c, row[c]) for c in columns))
        return columns or (), out

    def batch_size(self, columns: int) -> int:
        size = self.params.get("batch_size") or DEFAULT_BATCH
        return max(1, size)


def _data_check(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        return value.to_dict("records")
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return list(value)
    raise ValidationError(f"'data' must be a list of dicts (or a DataFrame), got {type(value).__name__}.")


def _batch_check(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"'batch_size' must be a positive int, got {value!r}.")
    return value


class BulkCreate(_BulkRows):
    outputs = ("inserted",)
    op_name = "Create"
    writes = True
    description = "Insert many rows, all or nothing; ids follow input order."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "data", list, required=True, description="a list of dicts (or a DataFrame)", check=_data_check
            ),
            Param(
                "batch_size",
                (int, type(None)),
                default=None,
                description="rows per batch",
                check=_batch_check,
            ),
        )

    def statements(self) -> list[Any]:
        """One INSERT, run for every row (the dialect may use a faster path)."""
        columns = [f.name for f in self.model.fields if not f.generated or f.name != "id"]
        return [sa.insert(self.mt.table).values({c: sa.bindparam(c) for c in columns})]

    async def run(self, ctx: RunContext) -> dict[str, int]:
        columns, rows = self.prepared_rows(with_id=self.model.id_field.type.name == "text")
        if rows:
            conn = await ctx.connection(self.dataflow)
            size = self.batch_size(len(columns))
            for start in range(0, len(rows), size):
                await self.mt.dialect.bulk_insert(conn, self.mt.table, columns, rows[start : start + size])
        return {"inserted": len(rows)}


class _FilterWrite(ModelNode):
    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        if partial and "filter" not in params:
            return
        if not params.get("filter") and not params.get("confirmed", False):
            raise ValidationError(
                f"{cls.where(node_id)}: an empty filter would {cls.verb} every {cls.model.name} row.",
                hint="pass a filter, or confirmed=True if you really mean every row.",
            )

    def where_clause(self) -> Any:
        return filters.to_sql(self.mt, self.params.get("filter") or {})


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
                description="field -> new value",
                check=cls._fields_checker("fields"),
            ),
            Param("confirmed", bool, default=False, description="required with an empty filter"),
        )

    def statements(self) -> list[Any]:
        return [self._statement()]

    def _statement(self) -> Any:
        mt = self.mt
        values = {**self.params["fields"], "updated_at": self.now()}
        stmt = sa.update(mt.table).values({k: mt.to_db(k, v) for k, v in values.items()})
        where = self.where_clause()
        return stmt if where is None else stmt.where(where)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        conn = await ctx.connection(self.dataflow)
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
        )

    def statements(self) -> list[Any]:
        return [self._statement()]

    def _statement(self) -> Any:
        where = self.where_clause()
        stmt = sa.delete(self.mt.table)
        return stmt if where is None else stmt.where(where)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        conn = await ctx.connection(self.dataflow)
        return {"deleted": await conn.execute(*self.mt.dialect.compile(self._statement()))}


class BulkUpsert(_BulkRows):
    outputs = ("inserted", "updated")
    op_name = "Upsert"
    writes = True
    description = (
        "Insert rows, or update those whose conflict_on key exists; duplicate keys in the "
        "input: the last one wins. Returns {'inserted': a, 'updated': b}."
    )

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "data", list, required=True, description="a list of dicts (or a DataFrame)", check=_data_check
            ),
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
                description="fields an update may change (default: all given)",
                check=lambda v: (
                    None if v is None else [model.field(n, context="update_fields").name for n in v]
                ),
            ),
            Param(
                "batch_size",
                (int, type(None)),
                default=None,
                description="rows per batch",
                check=_batch_check,
            ),
        )

    def statements(self) -> list[Any]:
        """One INSERT ... ON CONFLICT DO UPDATE, run for every row."""
        columns = [f.name for f in self.model.fields]
        conflict_on = self.params["conflict_on"]
        update = self._update_columns(tuple(columns), conflict_on)
        return [self.mt.dialect.upsert_statement(self.mt.table, columns, conflict_on, update)]

    async def run(self, ctx: RunContext) -> dict[str, int]:
        mt, conflict_on = self.mt, self.params["conflict_on"]
        columns, rows = self.prepared_rows(with_id=True)
        if not rows:
            return {"inserted": 0, "updated": 0}
        missing = [c for c in conflict_on if c not in columns]
        if missing == ["id"] and conflict_on == ["id"]:  # no ids given: every row is new
            conn = await ctx.connection(self.dataflow)
            await mt.dialect.bulk_insert(conn, mt.table, columns, rows)
            return {"inserted": len(rows), "updated": 0}
        if missing:
            raise ValidationError(
                f"{self.where(self.node_id)}: rows lack conflict_on field(s) {missing}.",
                hint="every row needs a value for each conflict_on field.",
            )
        key_index = [columns.index(c) for c in conflict_on]
        unique: dict[tuple, tuple] = {}
        for row in rows:  # the last duplicate wins
            key = tuple(row[i] for i in key_index)
            unique.pop(key, None)
            unique[key] = row
        rows = list(unique.values())
        conn = await ctx.connection(self.dataflow)
        existing = await self._count_existing(conn, conflict_on, list(unique))
        update_columns = self._update_columns(columns, conflict_on)
        size = self.batch_size(len(columns))
        for start in range(0, len(rows), size):
            await mt.dialect.bulk_upsert(
                conn, mt.table, columns, rows[start : start + size], conflict_on, update_columns
            )
        sync = (
            mt.dialect.sync_id_sequence_sql(mt.table)
            if "id" in columns and not self.model.id_field.required
            else None
        )
        if sync and len(rows) > existing:
            await conn.fetch(sync)
        return {"inserted": len(rows) - existing, "updated": existing}

    def _update_columns(self, columns: tuple[str, ...], conflict_on: list[str]) -> list[str]:
        allowed = self.params["update_fields"]
        keep = {"id", "created_at", *conflict_on}
        chosen = [
            c for c in columns if c not in keep and (allowed is None or c in allowed or c == "updated_at")
        ]
        return chosen

    async def _count_existing(self, conn: Any, conflict_on: list[str], keys: list[tuple]) -> int:
        mt = self.mt
        cols = [mt.table.c[c] for c in conflict_on]
        chunk = max(1, mt.dialect.max_bind_params // (len(cols) * 2) - 1)
        total = 0
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            if len(cols) == 1:
                cond = cols[0].in_([k[0] for k in part])
            else:
                cond = sa.or_(*[sa.and_(*[c == v for c, v in zip(cols, k, strict=True)]) for k in part])
            sql, params = mt.dialect.compile(sa.select(sa.func.count()).select_from(mt.table).where(cond))
            total += int((await conn.fetch(sql, params))[0][0])
        return total


BULK_OPERATIONS = (BulkCreate, BulkUpdate, BulkDelete, BulkUpsert)
