"""ModelNode: the base of every generated node, bound to one model of one DataFlow.

It holds what the eleven operations share: parameter checkers for fields,
filters and ids, the statement builders, and ``sql()``, which shows the SQL a
node will run (for teaching and debugging).
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

__all__ = ["ModelNode", "Records", "check_conflict_on"]


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
        return self.dataflow.clock.now()  # clock.py: the system clock, or a stepping one in testing

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

    # teaching ------------------------------------------------------------
    def statements(self) -> list[Any]:
        """The SQLAlchemy statements this node runs, with its parameters bound."""
        raise NotImplementedError

    def _update_statement(self, mt: ModelTable, row_id: Any, fields: dict[str, Any]) -> Any:
        values = mt.db_values(mt.touched(fields, self.now()))
        return sa.update(mt.table).values(values).where(mt.table.c.id == row_id).returning(*mt.table.c)

    @classmethod
    def sql(cls, params: Mapping[str, Any] | None = None) -> str:
        """The SQL this node would run for ``params``, with its bound values listed.

        >>> db.nodes["UserReadNode"].sql({"id": 1})  # doctest: +SKIP
        'SELECT users.id, ... FROM users WHERE users.id = ?\n-- parameters: [1]'
        """
        node = cls("sql", cls.check(params or {}, node_id="sql"))
        parts = []
        for stmt in node.statements():
            text, values = cls.mt.dialect.compile(stmt)
            parts.append(f"{text.strip()}\n-- parameters: {values!r}")
        return "\n\n".join(parts)


def field_check(cls: type[ModelNode], name: str) -> Any:
    return lambda value: cls.mt.check(name, value)


def non_negative(name: str, *, allow_none: bool = False) -> Any:
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


def missing_row(node: ModelNode, row_id: Any) -> None:
    if node.params.get("raise_on_not_found", True):
        raise NotFoundError(
            f"{node.model.name} with id {row_id!r} was not found.",
            model=node.model.name,
            id=row_id,
            hint="check the id, or pass raise_on_not_found=False to get None instead.",
        )
    return None


def insert_returning(mt: ModelTable, columns: tuple[str, ...]) -> Any:
    return sa.insert(mt.table).values({c: sa.bindparam(c) for c in columns}).returning(*mt.table.c)


def insert_or_nothing(mt: ModelTable, columns: tuple[str, ...], conflict_on: list[str]) -> Any:
    stmt = mt.dialect.insert(mt.table).values({c: sa.bindparam(c) for c in columns})
    return stmt.on_conflict_do_nothing(index_elements=list(conflict_on)).returning(*mt.table.c)


def update_by_id(mt: ModelTable, columns: tuple[str, ...]) -> Any:
    return (
        sa.update(mt.table)
        .values({c: sa.bindparam(c) for c in columns})
        .where(mt.table.c.id == sa.bindparam("_id"))
        .returning(*mt.table.c)
    )


def select_rows(mt: ModelTable, doc: dict[str, Any], order: tuple, limit: int | None, offset: int) -> Any:
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
