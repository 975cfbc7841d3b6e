"""The seven single-record nodes: Create, Read, Update, Delete, List, Count, Upsert.

Each operation is a class parameterized by a model; ``dataflow.py`` makes a
named subclass per model (``UserCreateNode``...). SQL is built with
SQLAlchemy Core and compiled once per statement shape.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from .. import audit, filters
from ..errors import ValidationError
from ..model import ModelSchema
from .base import Param, RunContext
from .model_node import (
    ModelNode,
    Records,
    check_conflict_on,
    field_check,
    insert_or_nothing,
    insert_returning,
    missing_row,
    non_negative,
    select_rows,
    update_by_id,
)

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
        row = mt.new_row(self.params, now=self.now())
        return [sa.insert(mt.table).values(mt.db_values(row)).returning(*mt.table.c)]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt = self.mt
        row = mt.new_row(self.params, now=self.now())
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
        )

    def statements(self) -> list[Any]:
        return [sa.select(*self.mt.table.c).where(self.mt.table.c.id == self.params["id"])]

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        mt = self.mt
        sql, _ = mt.template(
            "read", lambda: sa.select(*mt.table.c).where(mt.table.c.id == sa.bindparam("id"))
        )
        rows = await self._fetch_rows(ctx, sql, [self.params["id"]])
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
                description="field -> new value",
                check=cls._fields_checker("fields"),
            ),
            Param(
                "raise_on_not_found",
                bool,
                default=True,
                description="raise NotFoundError when missing (else return None)",
            ),
        )

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        cls._check_id_or_filter(params, node_id, partial)

    def statements(self) -> list[Any]:
        return [self._update_statement(self.mt, self._id_from(self.params), self.params["fields"])]

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        mt, row_id = self.mt, self._id_from(self.params)
        values = mt.touched(self.params["fields"], self.now())
        columns = tuple(values)
        sql, names = mt.template(("update", columns), lambda: update_by_id(mt, columns))
        params = [row_id if n == "_id" else mt.to_db(n, values[n]) for n in names]
        before = await audit.row_before(self, ctx, row_id) if self.model.audit_log else None
        rows = await self._fetch_rows(ctx, sql, params)
        if rows and before is not None:
            await audit.record(self, ctx, [(before, rows[0])])
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
        )

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        cls._check_id_or_filter(params, node_id, partial)

    def statements(self) -> list[Any]:
        t = self.mt.table
        return [sa.delete(t).where(t.c.id == self._id_from(self.params)).returning(t.c.id)]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, row_id = self.mt, self._id_from(self.params)
        sql, _ = mt.template(
            "delete",
            lambda: sa.delete(mt.table).where(mt.table.c.id == sa.bindparam("id")).returning(mt.table.c.id),
        )
        conn = await ctx.connection(self.dataflow)
        before = await audit.row_before(self, ctx, row_id) if self.model.audit_log else None
        rows = await conn.fetch(sql, [row_id])
        if rows and before is not None:
            await audit.record(self, ctx, [(before, None)])
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
                description="'age', ['-age'] or [{'age': -1}]",
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
        )

    def statements(self) -> list[Any]:
        p = self.params
        return [select_rows(self.mt, p["filter"], tuple(p["order_by"]), p["limit"], p["offset"])]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, p = self.mt, self.params
        order, limit, offset = tuple(p["order_by"]), p["limit"], p["offset"]
        if p["filter"]:
            sql, params = mt.dialect.compile(select_rows(mt, p["filter"], order, limit, offset))
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
        )

    def statements(self) -> list[Any]:
        return [self._count()]

    def _count(self) -> Any:
        stmt = sa.select(sa.func.count()).select_from(self.mt.table)
        where = filters.to_sql(self.mt, self.params["filter"])
        return stmt if where is None else stmt.where(where)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        sql, params = self.mt.dialect.compile(self._count())
        conn = await ctx.connection(self.dataflow)
        return {"count": int((await conn.fetch(sql, params))[0][0])}


class Upsert(ModelNode):
    op_name = "Upsert"
    outputs = ("created", "record")
    writes = True
    description = "Update the row matching `where`, or create it; returns {'created': bool, 'record': row}."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "where",
                dict,
                required=True,
                description="field -> value that identifies the row",
                check=cls._fields_checker("where", allow_id=True),
            ),
            Param(
                "create",
                dict,
                default={},
                description="extra fields when creating",
                check=cls._fields_checker("create"),
            ),
            Param(
                "update",
                dict,
                default={},
                description="fields to change when the row exists",
                check=cls._fields_checker("update"),
            ),
            Param(
                "conflict_on",
                (list, type(None)),
                default=None,
                description="unique fields (primary key or unique constraint) to resolve conflicts on",
                check=lambda v: check_conflict_on(model, v, what="conflict_on"),
            ),
        )

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        if "where" in params and not params["where"]:
            raise ValidationError(f"{cls.where(node_id)}: 'where' must name at least one field.")

    def statements(self) -> list[Any]:
        """Find the row; then update it (when found) or insert it (when not)."""
        mt, p = self.mt, self.params
        row = mt.new_row({**p["where"], **p["create"]}, now=self.now())
        conflict_on = p["conflict_on"] or (sorted(p["where"]) if self.model.is_unique(p["where"]) else None)
        insert = mt.dialect.insert(mt.table).values(mt.db_values(row))
        if conflict_on is not None:
            insert = insert.on_conflict_do_nothing(index_elements=conflict_on)
        statements = [self._find_statement(p["where"]), insert.returning(*mt.table.c)]
        if p["update"]:
            statements.append(self._update_statement(mt, "<the found id>", p["update"]))
        return statements

    def _find_statement(self, where: dict[str, Any]) -> Any:
        mt = self.mt
        condition = filters.to_sql(mt, {k: {"$eq": v} for k, v in where.items()})
        return sa.select(mt.table.c.id).where(condition).order_by(mt.table.c.id).limit(1)

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, p, now = self.mt, self.params, self.now()
        where = p["where"]
        conflict_on = p["conflict_on"] or (sorted(where) if self.model.is_unique(where) else None)
        conn = await ctx.connection(self.dataflow)
        for _attempt in range(2):
            found = await self._find(conn, where)
            if found is not None:
                audited = self.model.audit_log and self.params["update"]
                before = await audit.row_before(self, ctx, found) if audited else None
                record = await self._update(conn, found, now)
                if before is not None:
                    await audit.record(self, ctx, [(before, record)])
                return {"created": False, "record": record}
            row = mt.new_row({**where, **p["create"]}, now=now)
            missing = [f.name for f in self.model.user_fields if f.required and f.name not in row]
            if missing:
                raise ValidationError(
                    f"{self.where(self.node_id)}: no {self.model.name} matches {where}, and creating one "
                    f"needs field(s) {', '.join(missing)}.",
                    hint="put the values a new row needs in 'create'.",
                )
            columns = tuple(row)
            if conflict_on is None:
                sql, names = mt.template(("insert", columns), lambda c=columns: insert_returning(mt, c))
            else:
                sql, names = mt.template(
                    ("insert_or_nothing", columns, tuple(conflict_on)),
                    lambda c=columns: insert_or_nothing(mt, c, conflict_on),
                )
            inserted = mt.rows(await conn.fetch(sql, [mt.to_db(n, row[n]) for n in names]))
            if inserted:
                if self.model.audit_log:
                    await audit.record(self, ctx, [(None, inserted[0])])
                return {"created": True, "record": inserted[0]}
        raise ValidationError(
            f"{self.where(self.node_id)}: the row conflicts on {conflict_on} but does not "
            f"match where={where}.",
            hint="make 'where' name the conflict_on fields.",
        )

    async def _find(self, conn: Any, where: dict[str, Any]) -> Any:
        found = await conn.fetch(*self.mt.dialect.compile(self._find_statement(where)))
        return found[0][0] if found else None

    async def _update(self, conn: Any, row_id: Any, now: dt.datetime) -> dict[str, Any]:
        mt = self.mt
        if not self.params["update"]:
            sql, _ = mt.template(
                "read", lambda: sa.select(*mt.table.c).where(mt.table.c.id == sa.bindparam("id"))
            )
            return mt.rows(await conn.fetch(sql, [row_id]))[0]
        values = mt.touched(self.params["update"], now)
        columns = tuple(values)
        sql, names = mt.template(("update", columns), lambda: update_by_id(mt, columns))
        return mt.rows(
            await conn.fetch(sql, [row_id if n == "_id" else mt.to_db(n, values[n]) for n in names])
        )[0]


CRUD_OPERATIONS = (Create, Read, Update, Delete, List, Count, Upsert)
