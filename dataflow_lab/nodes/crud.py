"""Six single-record nodes: Create, Read, Update, Delete, List, Count (Upsert: upsert.py).

Each operation is a class parameterized by a model; ``dataflow.py`` makes a
named subclass per model (``UserCreateNode``...). SQL is built with
SQLAlchemy Core and compiled once per statement shape.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from .. import audit, filters
from ..model import ModelSchema
from .base import Param, RunContext
from .increments import split
from .model_node import (
    ModelNode,
    Records,
    field_check,
    include_deleted_param,
    insert_returning,
    missing_row,
    non_negative,
    read_by_id,
    select_rows,
)
from .upsert import Upsert

__all__ = ["CRUD_OPERATIONS"]


class Create(ModelNode):
    op_name = "Create"
    writes = True
    description = "Insert one row; returns it with id, created_at and updated_at."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return tuple(
            Param(
                f.name,
                f.type.python if not f.nullable else (f.type.python, type(None)),
                required=f.required,
                default=f.default,
                description=f"{model.name}.{f.name}: {f.describe()}",
                check=field_check(cls, f.name),
            )
            for f in model.user_fields
        )

    def statements(self) -> list[Any]:
        mt = self.mt
        row = mt.new_row({**self.params, **self.stamps()}, now=self.now())
        return [sa.insert(mt.table).values(mt.db_values(row)).returning(*mt.table.c)]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt = self.mt
        row = mt.new_row({**self.params, **self.stamps()}, now=self.now())
        columns = tuple(row)
        sql, names = mt.template(("insert", columns), lambda c=columns: insert_returning(mt, c))
        rows = await self._fetch_rows(ctx, sql, [mt.to_db(n, row[n]) for n in names])
        if self.model.audit_log:
            await audit.record(self, ctx, [(None, rows[0])])
        return rows[0]


class Read(ModelNode):
    op_name = "Read"
    description = "Fetch one row by id."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "id",
                model.id_field.type.python,
                required=True,
                description=f"id of the {model.name}",
                check=cls._id_checker(),
            ),
            Param(
                "raise_on_not_found",
                bool,
                default=True,
                description="raise NotFoundError when missing (else return None)",
            ),
            *include_deleted_param(model),
        )

    def statements(self) -> list[Any]:
        t = self.mt.table
        return [self.guarded(sa.select(*t.c).where(t.c.id == self.mt.to_db("id", self.params["id"])))]

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        rows = await self._fetch_rows(ctx, *read_by_id(self, self.params["id"]))
        return rows[0] if rows else missing_row(self, self.params["id"])


class Update(ModelNode):
    op_name = "Update"
    writes = True
    description = "Change fields of one row; returns the row after the update."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "id",
                model.id_field.type.python,
                description=f"id of the {model.name}",
                check=cls._id_checker(),
            ),
            Param(
                "filter", dict, description="alternative to id: {'id': value}", check=cls._filter_checker()
            ),
            Param(
                "fields",
                dict,
                required=True,
                description="field -> new value, or {'$inc': n} to add n atomically",
                check=cls._fields_checker("fields", increments=True),
            ),
            Param(
                "raise_on_not_found",
                bool,
                default=True,
                description="raise NotFoundError when missing (else return None)",
            ),
            *_version_param(model),
        )

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        cls._check_id_or_filter(params, node_id, partial)

    @classmethod
    def open_inputs(cls, supplied: Collection[str]) -> list[str]:
        return [*cls._open_id(supplied), *super().open_inputs(supplied)]

    def statements(self) -> list[Any]:
        row_id, versioned = self._id_from(self.params), self.model.versioned
        return [
            self._update_statement(
                row_id, self.params["fields"], check_version=versioned, include_deleted=False
            )
        ]

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        mt, row_id, versioned = self.mt, self._id_from(self.params), self.model.versioned
        plain, increments = split(self.params["fields"])
        values = mt.db_values(mt.touched(plain, self.now()))
        columns = tuple(values)
        sql, names = mt.template(
            ("update", columns, increments),
            lambda: self.update_one(columns, check_version=versioned, increments=increments),
        )
        params = self.bind(names, {**values, "_id": row_id, "_version": self.params.get("version")})
        before = await audit.row_before(self, ctx, row_id) if self.model.audit_log else None
        rows = await self._fetch_rows(ctx, sql, params)
        if rows and before is not None:
            await audit.record(self, ctx, [(before, rows[0])])
        if not rows and versioned:
            await self.version_conflict(await ctx.connection(self.dataflow), row_id)
        return rows[0] if rows else missing_row(self, row_id)


class Delete(ModelNode):
    op_name = "Delete"
    outputs = ("id", "deleted")
    writes = True
    description = "Delete one row by id; returns {'id': id, 'deleted': bool}."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "id",
                model.id_field.type.python,
                description=f"id of the {model.name}",
                check=cls._id_checker(),
            ),
            Param(
                "filter", dict, description="alternative to id: {'id': value}", check=cls._filter_checker()
            ),
            *hard_param(model),
            *_version_param(model, required=False),
        )

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        cls._check_id_or_filter(params, node_id, partial)

    @classmethod
    def open_inputs(cls, supplied: Collection[str]) -> list[str]:
        return [*cls._open_id(supplied), *super().open_inputs(supplied)]

    def statements(self) -> list[Any]:
        now = self.mt.to_db("updated_at", self.now())
        return [self._statement(self._values(now))]

    def _values(self, now: Any) -> dict[str, Any]:
        p = self.params
        return {
            "_id": self.mt.to_db("id", self._id_from(p)),
            "_now": now,
            "_now2": now,
            "_version": p.get("version"),
        }

    def _statement(self, values: dict[str, Any] | None = None) -> Any:
        """Soft delete: mark the live row; otherwise (or hard=True) remove it. ``values`` binds them in.

        With ``version`` (versioned models), only the row still at that version is deleted.
        """
        t, values = self.mt.table, values or {}
        stmt: sa.Update | sa.Delete
        if self.model.soft_delete and not self.params.get("hard"):
            stmt = sa.update(t).values(
                deleted_at=sa.bindparam("_now", values.get("_now")),
                updated_at=sa.bindparam("_now2", values.get("_now2")),
            )
        else:
            stmt = sa.delete(t)
        stmt = stmt.where(t.c.id == sa.bindparam("_id", values.get("_id")))
        if self.params.get("version") is not None:
            stmt = stmt.where(t.c.version == sa.bindparam("_version", values.get("_version")))
        return self.guarded(stmt, include_deleted=bool(self.params.get("hard"))).returning(t.c.id)

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, row_id, hard = self.mt, self._id_from(self.params), bool(self.params.get("hard"))
        checked = self.params.get("version") is not None
        sql, names = mt.template(("delete", hard, checked), self._statement)
        conn = await ctx.connection(self.dataflow)
        before = await audit.row_before(self, ctx, row_id) if self.model.audit_log else None
        rows = await conn.fetch(sql, self.bind(names, self._values(mt.to_db("updated_at", self.now()))))
        if rows and before is not None:
            await audit.record(self, ctx, [(before, None)])
        if not rows and checked:
            await self.version_conflict(conn, row_id, action="deleted", include_deleted=hard)
        return {"id": row_id, "deleted": bool(rows)}


class List(ModelNode):
    op_name = "List"
    outputs = ("records", "count")
    description = "Rows matching a filter, ordered (id ascending by default); no silent limit."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "filter",
                dict,
                default={},
                description='e.g. {"age": {"$gte": 18}}',
                check=cls._filter_checker(),
            ),
            Param(
                "order_by",
                (str, list, dict),
                default=[],
                description="'age', ['-age'], [{'age': -1}] or {'age': {'nulls': 'first'}}",
                check=lambda v: filters.normalize_order_by(model, v),
            ),
            Param(
                "limit",
                (int, type(None)),
                default=None,
                description="at most this many rows",
                check=non_negative("limit", allow_none=True),
            ),
            Param("offset", int, default=0, description="skip this many rows", check=non_negative("offset")),
            *include_deleted_param(model),
        )

    def statements(self) -> list[Any]:
        p = self.params
        return [
            select_rows(self.mt, p["filter"], tuple(p["order_by"]), p["limit"], p["offset"], self.guards())
        ]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, p = self.mt, self.params
        order, limit, offset = tuple(p["order_by"]), p["limit"], p["offset"]
        guards = self.guards()
        if p["filter"] or guards:  # the tenant is a bound value: never cache it with the SQL
            sql, params = mt.dialect.compile(select_rows(mt, p["filter"], order, limit, offset, guards))
        else:
            sql, params = mt.compiled(
                ("list", order, limit, offset), lambda: select_rows(mt, {}, order, limit, offset)
            )
        records = Records(await self._fetch_rows(ctx, sql, params))
        return {"records": records, "count": len(records)}


class Count(ModelNode):
    op_name = "Count"
    outputs = ("count",)
    description = "How many rows match a filter."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "filter", dict, default={}, description='e.g. {"active": True}', check=cls._filter_checker()
            ),
            *include_deleted_param(model),
        )

    def statements(self) -> list[Any]:
        return [self._count()]

    def _count(self) -> Any:
        stmt = self.guarded(sa.select(sa.func.count()).select_from(self.mt.table))
        where = filters.to_sql(self.mt, self.params["filter"])
        return stmt if where is None else stmt.where(where)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        sql, params = self.mt.dialect.compile(self._count())
        conn = await ctx.connection(self.dataflow)
        return {"count": int((await conn.fetch(sql, params))[0][0])}


def _version_param(model: ModelSchema, *, required: bool = True) -> tuple[Param, ...]:
    """Update must name the version it read; Delete may (then a row that moved on is not deleted)."""
    if not model.versioned:
        return ()
    return (
        Param(
            "version",
            int,
            required=required,
            description="the version you read (versioned model); if the row moved on, ConcurrencyError",
            check=non_negative("version"),
        ),
    )


def hard_param(model: ModelSchema) -> tuple[Param, ...]:
    if not model.soft_delete:
        return ()
    return (Param("hard", bool, default=False, description="remove rows for good instead of marking them"),)


CRUD_OPERATIONS = (Create, Read, Update, Delete, List, Count, Upsert)
