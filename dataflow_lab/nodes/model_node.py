"""ModelNode: the base of every generated node, bound to one model of one DataFlow.

It holds what the eleven operations share: parameter checkers for fields,
filters and ids, the statement builders, and ``sql()``, which shows the SQL a
node will run (for teaching and debugging).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

import sqlalchemy as sa

from .. import filters, tenancy
from ..errors import ConcurrencyError, DataFlowError, NotFoundError, ValidationError
from ..model import ModelSchema
from ..schema import ModelTable
from ..types import LOGICAL_TYPES
from .base import Node, Param, RunContext
from .increments import check_increment, is_increment, set_values, split

if TYPE_CHECKING:  # pragma: no cover
    from ..dataflow import DataFlow

__all__ = ["ModelNode", "Records", "check_conflict_on"]


class Records(list):
    """A list of row dicts that can become a pandas DataFrame."""

    def to_pandas(self) -> Any:
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the install
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
    # set on every generated class (DataFlow.install): never None here, unlike on Node
    dataflow: ClassVar[DataFlow]
    model: ClassVar[ModelSchema]
    op_name: ClassVar[str] = ""

    outputs: ClassVar[tuple[str, ...] | None] = None  # None: the model's fields (a row)
    previewing = False  # True inside sql(): a missing tenant shows as '<tenant>' instead of raising

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
    def _fields_checker(
        cls, what: str, *, allow_id: bool = False, supplied_id: bool = False, increments: bool = False
    ) -> Any:
        """``allow_id``: any id may be named; ``supplied_id``: a caller-supplied (not generated) id may;
        ``increments``: a numeric field may be ``{"$inc": n}`` (increments.py)."""
        model = cls.model

        def check(values: Any) -> dict[str, Any]:
            if not isinstance(values, Mapping):
                raise ValidationError(
                    f"{model.name}: '{what}' must be a dict of field -> value, got {type(values).__name__}."
                )
            out = {}
            for name, value in values.items():
                f = model.field(name, context=f"'{what}'")
                own_id = f.primary_key and (allow_id or (supplied_id and not f.generated))
                if (f.generated or f.primary_key) and not own_id:
                    raise ValidationError(
                        f"{model.name}: field '{name}' cannot be set in '{what}'.",
                        hint=f"dataflow_lab manages {name}{_MANAGED_HOW.get(name, '')}.",
                    )
                if is_increment(f, value):
                    out[name] = check_increment(cls.mt, f, value, what=what, allowed=increments)
                else:
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

    # the model's flag options (multi_tenant, soft_delete, versioned), in one place ------------
    def tenant(self) -> str | None:
        """The run's tenant for a multi_tenant model (None for others); a missing one is refused."""
        if not self.model.multi_tenant:
            return None
        if self.previewing:
            return tenancy.current(self.dataflow) or "<tenant>"
        return tenancy.require(self.dataflow, self.model, self.where(self.node_id))

    def guards(self, *, include_deleted: bool | None = None) -> list[Any]:
        """What every statement of this node must add to its WHERE: the tenant's rows, not deleted ones.

        ``include_deleted`` defaults to the node's own parameter (False when it has none).
        """
        c, conditions = self.mt.table.c, []
        if self.model.multi_tenant:
            conditions.append(c.tenant_id == sa.bindparam("_tenant", self.tenant()))
        if include_deleted is None:
            include_deleted = bool(self.params.get("include_deleted"))
        if self.model.soft_delete and not include_deleted:
            conditions.append(c.deleted_at.is_(None))
        return conditions

    def guarded(self, stmt: Any, *, include_deleted: bool | None = None) -> Any:
        conditions = self.guards(include_deleted=include_deleted)
        return stmt.where(*conditions) if conditions else stmt

    def stamps(self) -> dict[str, Any]:
        """Values a new row takes from the run rather than the caller: its tenant."""
        return {"tenant_id": self.tenant()} if self.model.multi_tenant else {}

    def bind(self, names: tuple[str, ...], values: Mapping[str, Any]) -> list[Any]:
        """Values for a compiled template's bind names; ``_tenant`` is the run's tenant, ``_id`` as stored."""
        to_db = self.mt.to_db
        return [self.tenant() if n == "_tenant" else to_db("id", values[n]) if n == "_id" else values[n]
                for n in names]  # fmt: skip

    def conflict_target(self, names: list[str]) -> list[str]:
        """The columns of the unique constraint behind ``names``: tenant_id leads for multi_tenant models."""
        if not self.model.multi_tenant or names == ["id"]:
            return names
        return ["tenant_id", *(n for n in names if n != "tenant_id")]

    def update_one(
        self,
        columns: tuple[str, ...],
        *,
        check_version: bool,
        include_deleted: bool = False,
        values: Mapping[str, Any] | None = None,
        increments: frozenset[str] = frozenset(),
    ) -> Any:
        """UPDATE one row by ``_id`` (bind names: the columns, _id, _version, _tenant); bumps ``version``.

        ``values`` binds the parameters in (for ``sql()``); templates leave them unbound.
        ``increments``: columns set to ``col + :col`` (atomic increments, increments.py).
        """
        t, values = self.mt.table, values or {}
        stmt = sa.update(t).values(set_values(t, columns, increments, values))
        if self.model.versioned:
            stmt = stmt.values(version=t.c.version + sa.literal_column("1"))
        stmt = stmt.where(t.c.id == sa.bindparam("_id", self.mt.to_db("id", values.get("_id"))))
        stmt = self.guarded(stmt, include_deleted=include_deleted)
        if check_version:
            stmt = stmt.where(t.c.version == sa.bindparam("_version", values.get("_version")))
        return stmt.returning(*t.c)

    async def version_conflict(
        self, conn: Any, row_id: Any, *, action: str = "updated", include_deleted: bool = False
    ) -> None:
        """After a versioned Update (or Delete) changed nothing: raise ConcurrencyError if the row exists."""
        t = self.mt.table
        select = sa.select(t.c.version).where(t.c.id == self.mt.to_db("id", row_id))
        sql, params = self.mt.dialect.compile(self.guarded(select, include_deleted=include_deleted))
        found = await conn.fetch(sql, params)
        if not found:
            return
        expected, actual = self.params["version"], found[0][0]
        raise ConcurrencyError(
            f"{self.where(self.node_id)}: {self.model.name} with id {row_id!r} is at version {actual}, "
            f"not the expected {expected}; someone else changed it. Nothing was {action}.",
            model=self.model.name,
            id=row_id,
            expected=expected,
            actual=actual,
            hint="read the row again, reapply your change to what it holds now, and update with its version.",
        )

    def _id_from(self, params: dict[str, Any]) -> Any:
        if "id" in params:
            return params["id"]
        doc = params.get("filter") or {}
        return doc["id"]["$eq"]

    @classmethod
    def _open_id(cls, supplied: Collection[str]) -> list[str]:
        """For nodes taking 'id' or filter={'id': ...}: 'id' stays open when neither is supplied."""
        return [] if {"id", "filter"} & set(supplied) else ["id"]

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

    def _update_statement(
        self, row_id: Any, fields: dict[str, Any], *, check_version: bool, include_deleted: bool
    ) -> Any:
        """The UPDATE of one row, its values bound in (for ``sql()``)."""
        plain, increments = split(fields)
        values = self.mt.db_values(self.mt.touched(plain, self.now()))
        bound = {**values, "_id": row_id, "_version": self.params.get("version")}
        return self.update_one(tuple(values), check_version=check_version, include_deleted=include_deleted,
                               values=bound, increments=increments)  # fmt: skip

    @classmethod
    def sql(cls, params: Mapping[str, Any] | None = None) -> str:
        """The SQL this node would run for ``params``, with its bound values listed.

        >>> db.nodes["UserReadNode"].sql({"id": 1})  # doctest: +SKIP
        'SELECT users.id, ... FROM users WHERE users.id = ?\n-- parameters: [1]'
        """
        node = cls("sql", cls.check(params or {}, node_id="sql"))
        node.previewing = True
        parts = []
        for stmt in node.statements():
            text, values = cls.mt.dialect.compile(stmt)
            parts.append(f"{text.strip()}\n-- parameters: {values!r}")
        return "\n\n".join(parts)


_MANAGED_HOW = {
    "tenant_id": ": it is the tenant of `with db.tenant(...)`",
    "version": ": pass the version you read as the node's 'version' parameter",
    "deleted_at": ": use the model's Delete nodes",
}


def field_check(cls: type[ModelNode], name: str) -> Any:
    return lambda value: cls.mt.check(name, value)


def non_negative(name: str, *, allow_none: bool = False) -> Any:
    def check(value: Any) -> Any:
        if value is None and allow_none:
            return None
        try:
            number = cast(int, LOGICAL_TYPES[int].check(value))
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


def missing_row(node: ModelNode, row_id: Any) -> dict[str, Any] | None:
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


def read_by_id(node: ModelNode, row_id: Any) -> tuple[str, list[Any]]:
    """The compiled SELECT of one row by id, within the node's guards, and its values."""
    t = node.mt.table
    key = ("read", bool(node.params.get("include_deleted")))
    sql, names = node.mt.template(
        key, lambda: node.guarded(sa.select(*t.c).where(t.c.id == sa.bindparam("_id")))
    )
    return sql, node.bind(names, {"_id": row_id})


def include_deleted_param(model: ModelSchema) -> tuple[Param, ...]:
    """The ``include_deleted`` parameter, for the nodes that read or filter a soft_delete model."""
    if not model.soft_delete:
        return ()
    return (
        Param("include_deleted", bool, default=False, description="also rows marked deleted (soft_delete)"),
    )


def select_rows(
    mt: ModelTable,
    doc: dict[str, Any],
    order: tuple,
    limit: int | None,
    offset: int,
    guards: Collection[Any] = (),
) -> Any:
    stmt = sa.select(*mt.table.c)
    where = filters.to_sql(mt, doc)
    if where is not None:
        stmt = stmt.where(where)
    if guards:
        stmt = stmt.where(*guards)
    stmt = stmt.order_by(*filters.order_clauses(mt, list(order)))
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return stmt
