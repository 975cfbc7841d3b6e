"""The seven single-record nodes: Create, Read, Update, Delete, List, Count, Upsert.

Each operation is a class parameterized by a model; ``dataflow.py`` makes a
named subclass per model (``UserCreateNode``...). SQL is built with
SQLAlchemy Core and compiled once per statement shape.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa

from .. import filters
from ..errors import NotFoundError, ValidationError
from ..model import ModelSchema
from ..schema import ModelTable
from ..types import LOGICAL_TYPES
from .base import Node, Param, RunContext

__all__ = ["CRUD_OPERATIONS", "ModelNode", "Records"]


class Records(list):
    """A list of row dicts that can become a pandas DataFrame."""

    def to_pandas(self) -> Any:
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the install
            from ..errors import DataFlowError

            raise DataFlowError("DataFrames need pandas.", hint="pip install 'dataflow-lab[pandas]'") from exc
        return pd.DataFrame.from_records(list(self))

    to_frame = to_pandas

    def _repr_html_(self) -> str | None:
        try:
            return self.to_pandas()._repr_html_()
        except Exception:
            return None


class ModelNode(Node):
    """A node bound to one model of one DataFlow."""

    mt: ClassVar[ModelTable]
    op_name: ClassVar[str] = ""

    outputs: ClassVar[tuple[str, ...] | None] = None  # None: the model's fields (a row)

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        raise NotImplementedError

    @classmethod
    def output_keys(cls) -> set[str]:
        return set(cls.outputs) if cls.outputs is not None else set(cls.model.by_name)

    @classmethod
    def where(cls, node_id: str) -> str:
        return f"{cls.type_name} '{node_id}'"

    # shared checkers ---------------------------------------------------
    @classmethod
    def _fields_checker(cls, what: str, *, allow_id: bool = False) -> Any:
        model = cls.model

        def check(values: Any) -> dict[str, Any]:
            if not isinstance(values, Mapping):
                raise ValidationError(
                    f"{model.name}: '{what}' must be a dict of field -> value, got {type(values).__name__}."
                )
            out = {}
            for name, value in values.items():
                f = model.field(name, context=f"'{what}'")
                if (f.generated or f.primary_key) and not (allow_id and f.primary_key):
                    raise ValidationError(
                        f"{model.name}: field '{name}' cannot be set in '{what}'.",
                        hint="id, created_at and updated_at are managed by dataflow_lab.",
                    )
                out[name] = cls.mt.check(name, value)
            return out

        return check

    @classmethod
    def _filter_checker(cls) -> Any:
        return lambda doc: filters.normalize(cls.model, doc)

    @classmethod
    def _id_checker(cls) -> Any:
        return lambda value: cls.mt.check("id", value)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def _id_from(self, params: dict[str, Any]) -> Any:
        if "id" in params:
            return params["id"]
        doc = params.get("filter") or {}
        return doc["id"]["$eq"]

    @classmethod
    def _check_id_or_filter(cls, params: dict[str, Any], node_id: str, partial: bool) -> None:
        if "id" in params or partial:
            return
        doc = params.get("filter")
        if not doc:
            raise ValidationError(
                f"{cls.where(node_id)}: needs 'id' (or filter={{'id': ...}}).",
                hint=f"pass the id of the {cls.model.name} row to work on.",
            )
        if set(doc) != {"id"} or set(doc["id"]) != {"$eq"} or doc["id"]["$eq"] is None:
            raise ValidationError(
                f"{cls.where(node_id)}: filter must be exactly {{'id': value}} here.",
                hint=f"to change many rows, use {cls.model.name}Bulk{cls.op_name}Node.",
            )

    async def _fetch_rows(self, ctx: RunContext, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        conn = await ctx.connection(self.dataflow)
        return self.mt.rows(await conn.fetch(sql, params))


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
                check=_field_check(cls, f.name),
            )
            for f in model.user_fields
        )

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt = self.mt
        row = mt.new_row(self.params, now=self.now())
        columns = tuple(row)
        sql, names = mt.template(("insert", columns), lambda c=columns: _insert_returning(mt, c))
        rows = await self._fetch_rows(ctx, sql, [mt.to_db(n, row[n]) for n in names])
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

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        mt = self.mt
        sql, _ = mt.template(
            "read", lambda: sa.select(*mt.table.c).where(mt.table.c.id == sa.bindparam("id"))
        )
        rows = await self._fetch_rows(ctx, sql, [self.params["id"]])
        return rows[0] if rows else _missing(self, self.params["id"])


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

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        mt, row_id = self.mt, self._id_from(self.params)
        values = {**self.params["fields"], "updated_at": self.now()}
        columns = tuple(values)
        sql, names = mt.template(("update", columns), lambda: _update_by_id(mt, columns))
        params = [row_id if n == "_id" else mt.to_db(n, values[n]) for n in names]
        rows = await self._fetch_rows(ctx, sql, params)
        return rows[0] if rows else _missing(self, row_id)


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

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, row_id = self.mt, self._id_from(self.params)
        sql, _ = mt.template(
            "delete",
            lambda: sa.delete(mt.table).where(mt.table.c.id == sa.bindparam("id")).returning(mt.table.c.id),
        )
        conn = await ctx.connection(self.dataflow)
        rows = await conn.fetch(sql, [row_id])
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
                check=_non_negative("limit", allow_none=True),
            ),
            Param("offset", int, default=0, description="skip this many rows", check=_non_negative("offset")),
        )

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, p = self.mt, self.params
        order, limit, offset = tuple(p["order_by"]), p["limit"], p["offset"]
        if p["filter"]:
            sql, params = mt.dialect.compile(_select(mt, p["filter"], order, limit, offset))
        else:
            sql, params = mt.compiled(
                ("list", order, limit, offset), lambda: _select(mt, {}, order, limit, offset)
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

    async def run(self, ctx: RunContext) -> dict[str, int]:
        mt = self.mt
        stmt = sa.select(sa.func.count()).select_from(mt.table)
        where = filters.to_sql(mt, self.params["filter"])
        if where is not None:
            stmt = stmt.where(where)
        sql, params = mt.dialect.compile(stmt)
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

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, p, now = self.mt, self.params, self.now()
        where = p["where"]
        conflict_on = p["conflict_on"] or (sorted(where) if self.model.is_unique(where) else None)
        conn = await ctx.connection(self.dataflow)
        for _attempt in range(2):
            found = await self._find(conn, where)
            if found is not None:
                return {"created": False, "record": await self._update(conn, found, now)}
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
                sql, names = mt.template(("insert", columns), lambda c=columns: _insert_returning(mt, c))
            else:
                sql, names = mt.template(
                    ("insert_or_nothing", columns, tuple(conflict_on)),
                    lambda c=columns: _insert_or_nothing(mt, c, conflict_on),
                )
            inserted = mt.rows(await conn.fetch(sql, [mt.to_db(n, row[n]) for n in names]))
            if inserted:
                return {"created": True, "record": inserted[0]}
        raise ValidationError(
            f"{self.where(self.node_id)}: the row conflicts on {conflict_on} but does not "
            f"match where={where}.",
            hint="make 'where' name the conflict_on fields.",
        )

    async def _find(self, conn: Any, where: dict[str, Any]) -> Any:
        mt = self.mt
        stmt = (
            sa.select(mt.table.c.id)
            .where(filters.to_sql(mt, {k: {"$eq": v} for k, v in where.items()}))
            .order_by(mt.table.c.id)
            .limit(1)
        )
        found = await conn.fetch(*mt.dialect.compile(stmt))
        return found[0][0] if found else None

    async def _update(self, conn: Any, row_id: Any, now: dt.datetime) -> dict[str, Any]:
        mt = self.mt
        if not self.params["update"]:
            sql, _ = mt.template(
                "read", lambda: sa.select(*mt.table.c).where(mt.table.c.id == sa.bindparam("id"))
            )
            return mt.rows(await conn.fetch(sql, [row_id]))[0]
        values = {**self.params["update"], "updated_at": now}
        columns = tuple(values)
        sql, names = mt.template(("update", columns), lambda: _update_by_id(mt, columns))
        return mt.rows(
            await conn.fetch(sql, [row_id if n == "_id" else mt.to_db(n, values[n]) for n in names])
        )[0]


CRUD_OPERATIONS = (Create, Read, Update, Delete, List, Count, Upsert)


# -- helpers -------------------------------------------------------------
def _field_check(cls: type[ModelNode], name: str) -> Any:
    return lambda value: cls.mt.check(name, value)


def _non_negative(name: str, *, allow_none: bool = False) -> Any:
    def check(value: Any) -> Any:
        if value is None and allow_none:
            return None
        try:
            number = LOGICAL_TYPES[int].check(value)
        except TypeError:
            number = -1
        if number < 0:
            raise ValidationError(f"parameter '{name}' must be a non-negative int, got {value!r}.")
        return number

    return check


def check_conflict_on(model: ModelSchema, value: Any, *, what: str) -> list[str] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        model.field(name, context=what)
    if not model.is_unique(names):
        uniques = [["id"], *[list(u) for u in model.unique]]
        raise ValidationError(
            f"{model.name}: {what}={names} is not a primary key or unique constraint, so conflicts on it "
            "cannot be detected.",
            hint=f"use one of {uniques}, or declare __dataflow__ = {{'unique': [{names!r}]}} on the model.",
        )
    return names


def _missing(node: ModelNode, row_id: Any) -> None:
    if node.params.get("raise_on_not_found", True):
        raise NotFoundError(
            f"{node.model.name} with id {row_id!r} was not found.",
            model=node.model.name,
            id=row_id,
            hint="check the id, or pass raise_on_not_found=False to get None instead.",
        )
    return None


def _insert_returning(mt: ModelTable, columns: tuple[str, ...]) -> Any:
    return sa.insert(mt.table).values({c: sa.bindparam(c) for c in columns}).returning(*mt.table.c)


def _insert_or_nothing(mt: ModelTable, columns: tuple[str, ...], conflict_on: list[str]) -> Any:
    stmt = mt.dialect.insert(mt.table).values({c: sa.bindparam(c) for c in columns})
    return stmt.on_conflict_do_nothing(index_elements=list(conflict_on)).returning(*mt.table.c)


def _update_by_id(mt: ModelTable, columns: tuple[str, ...]) -> Any:
    return (
        sa.update(mt.table)
        .values({c: sa.bindparam(c) for c in columns})
        .where(mt.table.c.id == sa.bindparam("_id"))
        .returning(*mt.table.c)
    )


def _select(mt: ModelTable, doc: dict[str, Any], order: tuple, limit: int | None, offset: int) -> Any:
    stmt = sa.select(*mt.table.c)
    where = filters.to_sql(mt, doc)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.order_by(*filters.order_clauses(mt, list(order)))
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return stmt
