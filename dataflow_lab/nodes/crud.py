"""Six single-record nodes: Create, Read, Update, Delete, List, Count (Upsert: upsert.py).

Each operation is a class parameterized by a model; ``dataflow.py`` makes a
named subclass per model (``UserCreateNode``...). SQL is built with
SQLAlchemy Core and compiled once per statement shape.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from .. import filters
from ..model import ModelSchema
from .base import Param, RunContext
from .cached import CACHE_PARAM, copy_rows, through_cache
from .increments import split
from .model_node import (
    ModelNode,
    Records,
    field_check,
    filtered,
    insert_returning,
    missing_row,
    non_negative,
    read_by_id,
    select_rows,
)
from .outputs import ID, ROW
from .undo import RowUndo, rows_before
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

    @classmethod
    def one_statement(cls) -> bool:
        return not cls.behaviours.watched  # the INSERT alone (an audited model writes its log too)

    def statements(self) -> list[Any]:
        mt = self.mt
        row = mt.new_row({**self.params, **self.stamps()})
        return [sa.insert(mt.table).values(mt.shown(row)).returning(*mt.table.c)]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt = self.mt
        row = mt.new_row({**self.params, **self.stamps()})
        values = mt.sealed(row, row.get("id"))  # encrypted fields bind the id (made before the INSERT)
        columns = tuple(values)
        sql, names = mt.template(("insert", columns), lambda c=columns: insert_returning(mt, c))
        rows = await self._fetch_rows(ctx, sql, [values[n] for n in names])
        if self.behaviours.watched:
            await self.behaviours.written(self, ctx, [(None, rows[0])])
        return rows[0]

    # -- compensation (nodes/undo.py) -------------------------------------------------
    async def undo(self, conn: Any, before: Any, result: dict[str, Any]) -> RowUndo:
        """Delete the row it inserted."""
        return RowUndo.of(self, created=[result["id"]])


class Read(ModelNode):
    op_name = "Read"
    outputs = ROW | None  # None: raise_on_not_found=False and no such row
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
            CACHE_PARAM,
            *cls.behaviours.parameters(cls.operation),
        )

    def statements(self) -> list[Any]:
        t = self.mt.table
        return [self.guarded(sa.select(*t.c).where(t.c.id == self.mt.to_db("id", self.params["id"])))]

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        sql, params = read_by_id(self, self.params["id"])
        rows = await through_cache(
            self, ctx, sql, params, lambda: self._fetch_rows(ctx, sql, params), copy_rows
        )
        return rows[0] if rows else missing_row(self, self.params["id"])


class Update(ModelNode):
    op_name = "Update"
    outputs = ROW | None
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
            *cls.behaviours.parameters(cls.operation),
        )

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        cls._check_id_or_filter(params, node_id, partial)

    @classmethod
    def open_inputs(cls, supplied: Collection[str]) -> list[str]:
        return [*cls._open_id(supplied), *super().open_inputs(supplied)]

    @classmethod
    def one_statement(cls) -> bool:
        return not cls.behaviours.watched  # the UPDATE (matching no row, it reads why: no write)

    def statements(self) -> list[Any]:
        return [self._update_statement(self._id_from(self.params), self.params["fields"])]

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        mt, row_id, behaviours = self.mt, self._id_from(self.params), self.behaviours
        plain, increments = split(self.params["fields"])
        values = mt.sealed({**plain, **behaviours.touch_values(self, self.now())}, row_id)
        columns = tuple(values)
        sql, names = mt.template(
            self.template_key("update", columns, increments),
            lambda: self.update_one(columns, increments=increments),
        )
        params = self.bind(names, {**values, "_id": row_id})
        before = await self.row_before(ctx, row_id) if behaviours.watched else None
        rows = await self._fetch_rows(ctx, sql, params)
        if rows and before is not None:
            await behaviours.written(self, ctx, [(before, rows[0])])
        if not rows:
            await self.nothing_changed(await ctx.connection(self.dataflow), row_id)
        return rows[0] if rows else missing_row(self, row_id)

    # -- compensation (nodes/undo.py) -------------------------------------------------
    async def before_image(self, conn: Any) -> list[dict[str, Any]]:
        return await rows_before(self, conn, {"id": {"$eq": self._id_from(self.params)}})

    async def undo(self, conn: Any, before: list[dict[str, Any]], result: Any) -> RowUndo:
        """Write back the row as it was."""
        return RowUndo.of(self, before=before)


class Delete(ModelNode):
    op_name = "Delete"
    outputs = {"id": ID, "deleted": bool}
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
            *cls.behaviours.parameters(cls.operation),
        )

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        cls._check_id_or_filter(params, node_id, partial)

    @classmethod
    def open_inputs(cls, supplied: Collection[str]) -> list[str]:
        return [*cls._open_id(supplied), *super().open_inputs(supplied)]

    @classmethod
    def one_statement(cls) -> bool:
        return not cls.behaviours.watched  # the DELETE, or a soft delete's UPDATE (as Update's)

    def statements(self) -> list[Any]:
        marks = self.behaviours.delete_values(self, self.now())
        return [self._statement(marks, {"_id": self.mt.to_db("id", self._id_from(self.params))})]

    def _statement(self, marks: dict[str, Any] | None, values: dict[str, Any] | None = None) -> Any:
        """Remove the row, or, when a behaviour marks rows instead (``marks``), UPDATE it with them.

        The behaviours' checks apply (a version given: only the row still at that version goes).
        ``values`` binds the parameters in (for ``sql()``); templates leave them unbound.
        """
        t, values = self.mt.table, values or {}
        stmt: sa.Update | sa.Delete
        if marks is None:
            stmt = sa.delete(t)
        else:
            stmt = sa.update(t).values({c: sa.bindparam(c, v) for c, v in self.mt.db_values(marks).items()})
        stmt = stmt.where(
            t.c.id == sa.bindparam("_id", values.get("_id")), *self.behaviours.update_where(self, t)
        )
        return self.guarded(stmt).returning(t.c.id)

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, row_id, behaviours = self.mt, self._id_from(self.params), self.behaviours
        marks = behaviours.delete_values(self, self.now())
        key = self.template_key("delete", None if marks is None else tuple(marks))
        sql, names = mt.template(key, lambda: self._statement(marks))
        conn = await ctx.connection(self.dataflow)
        before = await self.row_before(ctx, row_id) if behaviours.watched else None
        rows = await conn.fetch(sql, self.bind(names, {**mt.db_values(marks or {}), "_id": row_id}))
        if rows and before is not None:
            await behaviours.written(self, ctx, [(before, None)])
        if not rows:
            await self.nothing_changed(conn, row_id, action="deleted")
        return {"id": row_id, "deleted": bool(rows)}

    # -- compensation (nodes/undo.py) -------------------------------------------------
    async def before_image(self, conn: Any) -> list[dict[str, Any]]:
        return await rows_before(self, conn, {"id": {"$eq": self._id_from(self.params)}})

    async def undo(self, conn: Any, before: list[dict[str, Any]], result: Any) -> RowUndo:
        """Write back the row as it was."""
        return RowUndo.of(self, before=before)


class List(ModelNode):
    op_name = "List"
    outputs = {"records": Records[ROW], "count": int}
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
            CACHE_PARAM,
            *cls.behaviours.parameters(cls.operation),
        )

    def statements(self) -> list[Any]:
        p = self.params
        return [
            select_rows(self.mt, p["filter"], tuple(p["order_by"]), p["limit"], p["offset"], self.guards())
        ]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, p = self.mt, self.params
        order, limit, offset = tuple(p["order_by"]), p["limit"], p["offset"]
        if limit is None and offset:  # SQLite says LIMIT -1 OFFSET n, an unnamed value: not a template
            sql, params = mt.dialect.compile(select_rows(mt, p["filter"], order, None, offset, self.guards()))
        else:
            pages: tuple[Any, Any] = (None, None)  # LIMIT and OFFSET: bound, as the filter's values are
            if limit is not None:
                pages = (sa.bindparam("_limit", limit), sa.bindparam("_offset", offset))

            def build(where: Any) -> Any:
                return select_rows(mt, {}, order, *pages, self.guards(), where=where)

            bounds = {"_limit": limit, "_offset": offset}
            sql, params = filtered(self, p["filter"], build, "list", order, limit is None, values=bounds)
        rows = await through_cache(
            self, ctx, sql, params, lambda: self._fetch_rows(ctx, sql, params), copy_rows
        )
        records = Records(rows)
        return {"records": records, "count": len(records)}


class Count(ModelNode):
    op_name = "Count"
    outputs = {"count": int}
    description = "How many rows match a filter."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "filter", dict, default={}, description='e.g. {"active": True}', check=cls._filter_checker()
            ),
            CACHE_PARAM,
            *cls.behaviours.parameters(cls.operation),
        )

    def statements(self) -> list[Any]:
        return [self._count()]

    def _count(self, where: Any = None) -> Any:
        """SELECT count(*) within the guards, of ``where`` (None: the filter, its values bound in)."""
        stmt = self.guarded(sa.select(sa.func.count()).select_from(self.mt.table))
        if where is None:
            where = filters.to_sql(self.mt, self.params["filter"])
        return stmt if where is None else stmt.where(where)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        sql, params = filtered(self, self.params["filter"], self._count, "count")

        async def fetch() -> int:
            conn = await ctx.connection(self.dataflow)
            return int((await conn.fetch(sql, params))[0][0])

        return {"count": await through_cache(self, ctx, sql, params, fetch, int)}


CRUD_OPERATIONS = (Create, Read, Update, Delete, List, Count, Upsert)
