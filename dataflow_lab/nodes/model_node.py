"""ModelNode: the base of every generated node, bound to one model of one DataFlow.

It holds what the twelve operations share: parameter checkers for fields,
filters and ids, the statement builders, and ``sql()``, which shows the SQL a
node will run (for teaching and debugging).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import sqlalchemy as sa

from .. import behaviours as behaviours_of
from .. import filters
from ..errors import DataFlowError, NotFoundError, ValidationError
from ..model import ModelSchema
from ..schema import ModelTable
from ..types import LOGICAL_TYPES
from . import images
from .base import Node, Param, RunContext
from .increments import check_increment, is_increment, set_values, split
from .outputs import ROW, Expects, resolve, row_type

if TYPE_CHECKING:  # pragma: no cover
    from ..interfaces import DataFlow

__all__ = ["ModelNode", "Records", "check_conflict_on"]

_Row = TypeVar("_Row")  # what a Records holds: ``Records[ROW]`` in a node's ``outputs``


class Records(list[_Row]):
    """A list of row dicts that can become a pandas DataFrame. ``Records[ROW]``: its type, in ``outputs``."""

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


class _ComposedBehaviours:
    """``cls.behaviours``: the behaviours of the node's model, composed when its nodes are made."""

    def __get__(self, node: Any, cls: type[ModelNode]) -> behaviours_of.Behaviours:
        return behaviours_of.of(cls.mt)


class ModelNode(Node):
    """A node bound to one model of one DataFlow."""

    mt: ClassVar[ModelTable]
    # set on every generated class (DataFlow.install): never None here, unlike on Node
    dataflow: ClassVar[DataFlow]
    model: ClassVar[ModelSchema]
    op_name: ClassVar[str] = ""

    # what run() returns (outputs.py): ROW, the model's row; a dict: named outputs; ID: the id's type
    outputs: ClassVar[Any] = ROW
    _output_type: ClassVar[Any]  # outputs, resolved (output_type)
    behaviours = _ComposedBehaviours()  # the model's options, composed once (behaviours/)
    previewing = False  # True inside sql(): a missing tenant shows as '<tenant>' instead of raising

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        raise NotImplementedError

    @classmethod
    def tables(cls) -> tuple[Any, ...]:
        return (cls.mt,)

    @classmethod
    def written_tables(cls) -> tuple[str, ...]:
        return tuple(t.model.table_name for t in cls.tables())

    @classmethod
    def output_type(cls) -> Any:
        """``outputs`` made this model's: a User row, ``{"records": Records[User], "count": int}``..."""
        cached = cls.__dict__.get("_output_type")
        if cached is None:
            model = cls.model
            assert model is not None  # a ModelNode class is made for a model
            cached = resolve(cls.outputs, row_type(model), model.id_field.type.python, cls.type_name)
            cls._output_type = cached
        return cached

    @classmethod
    def input_type(cls, path: str) -> Expects | None:
        """A model field's input ('id', Create's 'name', 'fields.age', 'where.email'): the field's type."""
        root, _, rest = path.partition(".")
        by_name = cls.model.by_name
        p = cls.param_map().get(root)
        if p is None or p.check is None:
            return super().input_type(path)
        if not rest and root in by_name and (root == "id" or cls.operation == "create"):
            return _field_expects(by_name[root])
        if rest in by_name and root in _FIELD_DICTS:
            return _field_expects(by_name[rest], increments=True)
        return None

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
                        hint=f"dataflow_lab manages {name}{cls.behaviours.how(name)}.",
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

    # what the model's behaviours add (behaviours/), asked in one place ---------------------------
    def guards(self, *, include_deleted: bool | None = None) -> list[Any]:
        """What every statement of this node must add to its WHERE (the tenant's rows, live ones...).

        ``include_deleted``: None lets the node's own parameters decide.
        """
        return self.behaviours.guards(self, self.mt.table, include_deleted=include_deleted)

    def guarded(self, stmt: Any, *, include_deleted: bool | None = None) -> Any:
        conditions = self.guards(include_deleted=include_deleted)
        return stmt.where(*conditions) if conditions else stmt

    def stamps(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """Values a new row takes from the run rather than the caller (its tenant, timestamps...)."""
        return self.behaviours.insert_values(self, self.now() if now is None else now)

    def bind(self, names: tuple[str, ...], values: Mapping[str, Any]) -> list[Any]:
        """Values for a compiled template's bind names: ``values``, the behaviours' own (``_tenant``...),
        and ``_id`` as stored."""
        given, to_db = {**self.behaviours.binds(self), **values}, self.mt.to_db
        return [to_db("id", given[n]) if n == "_id" else given[n] for n in names]

    def conflict_target(self, names: list[str]) -> list[str]:
        """The columns of the unique constraint behind ``names`` (a behaviour may lead with tenant_id)."""
        return self.behaviours.conflict_target(names)

    def template_key(self, *parts: Any) -> tuple:
        """A cache key for a compiled statement: ``parts`` and what the behaviours make of the params."""
        return (*parts, self.behaviours.shape(self))

    def update_one(
        self,
        columns: tuple[str, ...],
        *,
        check_version: bool = True,
        include_deleted: bool | None = None,
        values: Mapping[str, Any] | None = None,
        increments: frozenset[str] = frozenset(),
    ) -> Any:
        """UPDATE one row by ``_id`` (bind names: the columns, _id, the behaviours' own), RETURNING it.

        The behaviours add what every update sets (version + 1) and checks (the version read;
        ``check_version=False`` leaves those checks out). ``values`` binds the parameters in (for
        ``sql()``); templates leave them unbound. ``increments``: columns set to ``col + :col``.
        """
        t, values = self.mt.table, values or {}
        stmt = sa.update(t).values(set_values(t, columns, increments, values))
        extra = self.behaviours.update_set(t)
        if extra:
            stmt = stmt.values(extra)
        stmt = stmt.where(t.c.id == sa.bindparam("_id", self.mt.to_db("id", values.get("_id"))))
        stmt = self.guarded(stmt, include_deleted=include_deleted)
        checks = self.behaviours.update_where(self, t) if check_version else []
        return (stmt.where(*checks) if checks else stmt).returning(*t.c)

    async def nothing_changed(self, conn: Any, row_id: Any, *, action: str = "updated") -> None:
        """After a single-row Update or Delete changed nothing: the behaviours may say why (a version)."""
        await self.behaviours.unchanged(self, conn, row_id, action=action, include_deleted=None)

    async def row_before(self, ctx: RunContext, row_id: Any) -> dict[str, Any] | None:
        """The row as it is now (read before a single-row write, for the behaviours that want images)."""
        conn = await ctx.connection(self.dataflow)
        return (await images.rows_by_ids(self.mt, conn, [row_id])).get(row_id)

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
        self, row_id: Any, fields: dict[str, Any], *, include_deleted: bool | None = None
    ) -> Any:
        """The UPDATE of one row, its values bound in (for ``sql()``)."""
        plain, increments = split(fields)
        values = self.mt.shown({**plain, **self.behaviours.touch_values(self, self.now())})
        bound = {**values, "_id": row_id}
        return self.update_one(tuple(values), include_deleted=include_deleted, values=bound,
                               increments=increments)  # fmt: skip

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


_FIELD_DICTS = ("fields", "where", "create", "update")  # dict parameters of field -> value


def _field_expects(f: Any, *, increments: bool = False) -> Expects:
    """A field takes its own type (losslessly coerced); a numeric one in a dict also {'$inc': n}."""
    also = (dict,) if increments and f.type.python in (int, float, Decimal) else ()
    return Expects.field(f.type.python, f.nullable, *also)


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
    return mt.dialect.insert_or_nothing(stmt, conflict_on).returning(*mt.table.c)


def read_by_id(node: ModelNode, row_id: Any) -> tuple[str, list[Any]]:
    """The compiled SELECT of one row by id, within the node's guards, and its values."""
    t = node.mt.table
    key = node.template_key("read")
    sql, names = node.mt.template(
        key, lambda: node.guarded(sa.select(*t.c).where(t.c.id == sa.bindparam("_id")))
    )
    return sql, node.bind(names, {"_id": row_id})


def select_rows(
    mt: ModelTable,
    doc: dict[str, Any],
    order: tuple,
    limit: Any,
    offset: Any,
    guards: Collection[Any] = (),
    *,
    where: Any = None,
) -> Any:
    """SELECT the rows of ``doc`` (its values bound in), or of ``where``, an expression already made.

    ``limit`` and ``offset`` are ints or bind parameters (a cached template's: ``filtered_rows``).
    """
    stmt = sa.select(*mt.table.c)
    where = filters.to_sql(mt, doc) if where is None else where
    if where is not None:
        stmt = stmt.where(where)
    if guards:
        stmt = stmt.where(*guards)
    stmt = stmt.order_by(*filters.order_clauses(mt, list(order)))
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset is not None and (not isinstance(offset, int) or offset):
        stmt = stmt.offset(offset)
    return stmt


def filtered(
    node: ModelNode, doc: dict[str, Any], build: Any, *key: Any, values: Mapping[str, Any] | None = None
) -> tuple[str, list[Any]]:
    """A statement of ``build(where)`` compiled once per filter shape (and ``key``, and the behaviours'
    shape), and this run's values for it: the filter's, the tenant's, ``values`` (its own bind names).

    ``where`` is the filter as an expression of named bind parameters. A filter whose SQL depends on
    its values (a long $in list, bound as one array) is compiled with them, every time.
    """
    shape = filters.shaped(node.mt, doc)
    if shape is None:
        return node.mt.dialect.compile(build(filters.to_sql(node.mt, doc)))
    sql, names = node.mt.template(node.template_key(*key, shape.key), lambda: build(shape.where()))
    return sql, node.bind(names, {**shape.values, **(values or {})})
