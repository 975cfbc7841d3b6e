"""Aggregate: rows grouped and measured in one SQL statement (``UserAggregateNode``).

``group_by=["station", ("day", "started_at")]`` names fields, or a date bucket of a
datetime or date field (day, week from Monday, month, year; in UTC), whose key is
``started_at_day``. ``metrics={"trips": "count", "km": ("sum", "km")}`` names what to
measure: count (rows, or ``("count", field)``: non-NULL values), count_distinct, sum,
avg, min, max. ``filter`` (the filter language) picks rows before grouping; ``having``
(the same language, on the metric names) picks groups; ``order_by`` takes the group keys
and metric names (default: the group keys, ascending). The output is List's:
``{"records": [...], "count": n}``. Values are bound; names are checked against the model.
"""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa

from .. import filters
from ..errors import ValidationError, did_you_mean
from ..model import Field, ModelSchema, check_identifier
from ..types import ANY_DECIMAL, LOGICAL_TYPES
from .base import Param, RunContext
from .model_node import ModelNode, Records, non_negative

__all__ = ["AGGREGATE_OPERATIONS", "Aggregate", "BUCKETS", "FUNCTIONS"]

BUCKETS = ("day", "week", "month", "year")
FUNCTIONS = ("count", "count_distinct", "sum", "avg", "min", "max")
_NUMERIC = ("integer", "float", "decimal", "boolean")  # what sum and avg take
_ORDERED = ("integer", "float", "decimal", "text", "enum", "date", "datetime")  # what min and max take
_TAKES = {"sum": _NUMERIC, "avg": _NUMERIC, "min": _ORDERED, "max": _ORDERED}
_KINDS = {"integer": "int", "float": "float", "decimal": "Decimal", "boolean": "bool", "text": "str",
          "enum": "Enum", "date": "date", "datetime": "datetime"}  # fmt: skip
_FORMS = "'count', ('count', field), ('count_distinct', field), ('sum' | 'avg' | 'min' | 'max', field)"


class _Column(NamedTuple):
    """One output column: its name, SQL expression, logical type (for having) and reader."""

    name: str
    expr: Any
    field: Field  # the column as a filter or order_by sees it
    read: Callable[[Any], Any] | None


class _Grouped:
    """What ``filters.to_sql`` asks of a table, for ``having``: the metrics as its columns."""

    def __init__(self, mt: Any, model: ModelSchema, columns: dict[str, Any]):
        self.model, self.dialect, self.c, self._mt = model, mt.dialect, columns, mt

    @property
    def table(self) -> _Grouped:
        return self

    def to_db(self, name: str, value: Any) -> Any:
        convert = self.dialect.to_db.get(self.model.by_name[name].type.name)
        return value if value is None or convert is None else convert(value)


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


class _Output:
    """Result rows -> record dicts: the column names, and the readers of the columns that have one.

    A reader that is a type (int, float) is skipped for a value that already is one: a million-row
    GROUP BY returns few rows, but this runs on each of them, inside the query's time.
    """

    __slots__ = ("names", "readers")

    def __init__(self, columns: list[tuple[str, Callable[[Any], Any] | None]]):
        self.names = tuple(name for name, _ in columns)
        self.readers = [(i, name, read) for i, (name, read) in enumerate(columns) if read is not None]

    def records(self, rows: list[Any]) -> list[dict[str, Any]]:
        names, readers = self.names, self.readers
        out = []
        for row in rows:
            record = dict(zip(names, row, strict=True))
            for i, name, read in readers:
                value = row[i]
                if value is not None and type(value) is not read:
                    record[name] = read(value)
            out.append(record)
        return out


class Aggregate(ModelNode):
    op_name = "Aggregate"
    outputs = {"records": Records[dict[str, Any]], "count": int}
    _outputs: typing.ClassVar[dict[tuple[str, str], _Output]]  # per generated class (_output)
    description = (
        "Group rows and measure each group (count, sum, avg, min, max, count_distinct) in one query."
    )

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param("group_by", (list, tuple, str), default=[], check=lambda v: _group_by(model, v),
                  description="fields, or (bucket, field) with bucket day | week | month | year"),
            Param("metrics", dict, default={"count": ("count", None)}, check=lambda v: _metrics(model, v),
                  description='name -> "count" or (function, field): count, count_distinct, sum, avg, min, max'),
            Param("filter", dict, default={}, description="rows to group, before grouping",
                  check=cls._filter_checker()),
            Param("having", dict, default={}, description='groups to keep, on metric names: {"trips": {"$gt": 5}}'),
            Param("order_by", (str, list, dict), default=[],
                  description="group keys and metric names, e.g. '-trips' (default: the group keys)"),
            Param("limit", (int, type(None)), default=None, description="at most this many groups",
                  check=non_negative("limit", allow_none=True)),
            *cls.behaviours.parameters(cls.operation),
        )  # fmt: skip

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        if "group_by" not in params or "metrics" not in params:
            return  # (partial: a connection brings them)
        keys = _key_names(params["group_by"])
        clash = sorted(set(keys) & set(params["metrics"]))
        if clash:
            raise ValidationError(
                f"{cls.where(node_id)}: '{clash[0]}' is both a group key and a metric name.",
                hint=f"rename the metric, e.g. '{clash[0]}_total'.",
            )
        where = cls.where(node_id)
        if params.get("having"):
            result = _result_schema(cls.model, [], params["metrics"])
            _check_names(where, "having", _filter_names(params["having"]), list(params["metrics"]), "metric")
            try:
                filters.normalize(result, params["having"])
            except ValidationError as exc:
                raise ValidationError(f"{where}: having: {exc.message}", hint=exc.hint) from None
        if params.get("order_by"):
            names = [*keys, *params["metrics"]]
            _check_names(where, "order_by", _order_names(params["order_by"]), names, "group key or metric")

    @classmethod
    def output_type_for(cls, params: Mapping[str, Any]) -> Any:
        """The output with each record's keys and types, when ``params`` say them (build() checks paths)."""
        metrics = params.get("metrics", {"count": ("count", None)})
        if not isinstance(metrics, dict) or not isinstance(params.get("group_by", []), list):
            return cls.output_type()  # (unchecked: a connection brings them)
        schema = _result_schema(cls.model, params.get("group_by", []), metrics)
        row = typing.TypedDict(  # type: ignore[misc]
            f"{cls.model.name}AggregateRow",
            {f.name: f.type.python | None if f.nullable else f.type.python for f in schema.fields},
        )
        return typing.TypedDict(f"{cls.type_name}Output", {"records": Records[row], "count": int})  # type: ignore[operator]

    # -- the statement -------------------------------------------------------------------
    def _columns(self) -> tuple[list[_Column], list[_Column]]:
        """The group keys and the metrics, as output columns."""
        mt, dialect = self.mt, self.mt.dialect
        schema = _result_schema(self.model, self.params["group_by"], self.params["metrics"])
        keys = []
        for (unit, name), f in zip(_keys(self.params["group_by"]), schema.fields, strict=False):
            column, logical = mt.table.c[name], self.model.by_name[name].type.name
            if unit is None:
                keys.append(_Column(f.name, column, f, mt.reader(name)))
            else:
                keys.append(
                    _Column(f.name, dialect.bucket(unit, column, logical), f, dialect.from_db.get("date"))
                )
        metrics = []
        for (name, (function, field_name)), f in zip(self.params["metrics"].items(), schema.fields[len(keys):],
                                                     strict=True):  # fmt: skip
            measured = None if field_name is None else mt.table.c[field_name]
            logical = "" if field_name is None else self.model.by_name[field_name].type.name
            expr = dialect.aggregate(function, measured, logical)
            metrics.append(_Column(name, expr, f, _reader(mt, function, field_name, f)))
        return keys, metrics

    def _statement(self) -> Any:
        mt, p = self.mt, self.params
        keys, metrics = self._columns()
        stmt = sa.select(*(c.expr.label(c.name) for c in (*keys, *metrics))).select_from(mt.table)
        where = filters.to_sql(mt, p["filter"])
        conditions = [*([where] if where is not None else []), *self.guards()]
        if conditions:
            stmt = stmt.where(*conditions)
        if keys:
            stmt = stmt.group_by(*(c.expr for c in keys))
        if p["having"]:
            result = ModelSchema(self.model.name, self.model.table_name, tuple(c.field for c in metrics))
            grouped = _Grouped(mt, result, {c.name: c.expr for c in metrics})
            stmt = stmt.having(filters.to_sql(grouped, filters.normalize(result, p["having"])))
        stmt = stmt.order_by(*self._order(keys, metrics))
        return stmt if p["limit"] is None else stmt.limit(p["limit"])

    def _order(self, keys: list[_Column], metrics: list[_Column]) -> list[Any]:
        """ORDER BY: what order_by names, then every group key ascending (so the order is stable)."""
        dialect, by_name = self.mt.dialect, {c.name: c for c in (*keys, *metrics)}
        result = ModelSchema(self.model.name, self.model.table_name, tuple(c.field for c in by_name.values()))
        order = filters.normalize_order_by(result, self.params["order_by"], node=self.node_id)
        named = {name for name, _, _ in order}
        order += [(c.name, False, False) for c in keys if c.name not in named]
        clauses: list[Any] = []
        for name, desc, nulls_first in order:
            column = by_name[name]
            expr = dialect.comparable(column.expr, column.field.type.name)
            clause = expr.desc() if desc else expr.asc()
            clauses += (
                dialect.nulls_placed(expr, clause, first=nulls_first) if column.field.nullable else [clause]
            )
        return clauses

    def statements(self) -> list[Any]:
        return [self._statement()]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, p = self.mt, self.params
        if p["filter"] or p["having"] or self.guards():  # bound values (a tenant...): compiled each time
            sql, params = mt.dialect.compile(self._statement())
        else:
            shape = ("aggregate", repr(p["group_by"]), repr(p["metrics"]), repr(p["order_by"]), p["limit"])
            sql, params = mt.compiled(self.template_key(*shape), self._statement)
        conn = await ctx.connection(self.dataflow)
        records = Records(self._output().records(await conn.fetch(sql, params)))
        return {"records": records, "count": len(records)}

    def _output(self) -> _Output:
        """How this node's result rows become records: made once per (group_by, metrics) and class."""
        cache: dict[tuple[str, str], _Output] | None = type(self).__dict__.get("_outputs")
        if cache is None:
            cache = {}
            type(self)._outputs = cache
        key = (repr(self.params["group_by"]), repr(self.params["metrics"]))
        output = cache.get(key)
        if output is None:
            keys, metrics = self._columns()
            output = cache[key] = _Output([(c.name, c.read) for c in (*keys, *metrics)])
        return output


# -- checking the parameters ------------------------------------------------------------------
def _keys(group_by: Any) -> list[tuple[str | None, str]]:
    """Checked group_by -> (bucket or None, field name) per key."""
    return [(None, item) if isinstance(item, str) else (item[0], item[1]) for item in group_by]


def _key_names(group_by: Any) -> list[str]:
    return [name if unit is None else f"{name}_{unit}" for unit, name in _keys(group_by)]


def _group_by(model: ModelSchema, value: Any) -> list[Any]:
    items = [value] if isinstance(value, str) else list(value)
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            f = model.field(item, context="group_by")
            _groupable(model, f)
            out.append(f.name)
        elif isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(i, str) for i in item):
            unit, name = item
            if unit not in BUCKETS:
                raise ValidationError(
                    f"{model.name}: group_by bucket '{unit}' is not known.{did_you_mean(unit, BUCKETS)}",
                    hint=f"buckets: {', '.join(BUCKETS)}, as in ('day', 'created_at').",
                )
            f = model.field(name, context="group_by")
            if f.type.name not in ("date", "datetime"):
                raise ValidationError(
                    f"{model.name}: group_by ('{unit}', '{name}') buckets field '{name}', which holds "
                    f"{f.type.python.__name__}; buckets take datetime and date fields.",
                    hint=f"group by '{name}' itself, or bucket a datetime field such as created_at.",
                )
            out.append((unit, name))
        else:
            raise ValidationError(
                f"{model.name}: group_by item {item!r:.60} is not a field name or a (bucket, field) pair.",
                hint="write group_by=['station', ('day', 'created_at')].",
            )
    names = _key_names(out)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValidationError(f"{model.name}: group_by names '{twice[0]}' twice.", hint="name each key once.")
    return out


def _groupable(model: ModelSchema, f: Field) -> None:
    if f.type.name == "json":
        raise ValidationError(
            f"{model.name}: field '{f.name}' holds JSON ({f.type.python.__name__}), which cannot be grouped.",
            hint="group by a field of another type.",
        )


def _metrics(model: ModelSchema, value: Any) -> dict[str, tuple[str, str | None]]:
    if not isinstance(value, Mapping) or not value:
        raise ValidationError(
            f"{model.name}: metrics must be a non-empty dict of name -> function, got {value!r:.60}.",
            hint='write metrics={"trips": "count", "km": ("sum", "km")}.',
        )
    out: dict[str, tuple[str, str | None]] = {}
    for name, spec in value.items():
        check_identifier(name, f"Metric name of {model.name}")
        function, field_name = (spec, None) if isinstance(spec, str) else _pair(model, name, spec)
        if function not in FUNCTIONS:
            raise ValidationError(
                f"{model.name}: metric '{name}' uses unknown function '{function}'.{did_you_mean(function, FUNCTIONS)}",
                hint=f"functions: {', '.join(FUNCTIONS)}; forms: {_FORMS}.",
            )
        if field_name is None:
            if function != "count":
                raise ValidationError(
                    f"{model.name}: metric '{name}' is '{function}' without a field.",
                    hint=f"name the field: ('{function}', 'field'); only 'count' counts rows alone.",
                )
        else:
            _measurable(model, name, function, model.field(field_name, context=f"metric '{name}'"))
        out[name] = (function, field_name)
    return out


def _pair(model: ModelSchema, name: str, spec: Any) -> tuple[str, str | None]:
    if (
        isinstance(spec, list | tuple)
        and len(spec) == 2
        and isinstance(spec[0], str)
        and (spec[1] is None or isinstance(spec[1], str))
    ):
        return spec[0], spec[1]
    raise ValidationError(
        f"{model.name}: metric '{name}' is {spec!r:.60}, which is not a function.", hint=f"forms: {_FORMS}."
    )


def _measurable(model: ModelSchema, metric: str, function: str, f: Field) -> None:
    logical = f.type.name
    if function in ("count", "count_distinct"):
        if function == "count_distinct" and logical == "json":
            _groupable(model, f)
        return
    takes = _TAKES[function]
    if logical not in takes:
        kinds = ", ".join(dict.fromkeys(_KINDS[k] for k in takes))
        raise ValidationError(
            f"{model.name}: metric '{metric}' is {function} over field '{f.name}', which holds "
            f"{f.type.python.__name__}; {function} works on {kinds} fields.",
            hint=f"use ('count', '{f.name}') or ('count_distinct', '{f.name}') for it, or {function} a "
            "field of those types.",
        )


def _result_schema(model: ModelSchema, group_by: Any, metrics: Mapping[str, Any]) -> ModelSchema:
    """The output rows as a schema: what having and order_by check against (and whether NULLs are placed)."""
    fields = []
    for (unit, name), key in zip(_keys(group_by), _key_names(group_by), strict=True):
        source = model.by_name[name]
        kind = source.type if unit is None else LOGICAL_TYPES[dt.date]
        fields.append(Field(key, kind, nullable=source.nullable))
    for name, (function, field_name) in metrics.items():
        counts = function in ("count", "count_distinct")  # never NULL; the others are over no rows
        fields.append(Field(name, _metric_type(model, function, field_name), nullable=not counts))
    return ModelSchema(model.name, model.table_name, tuple(fields))


def _metric_type(model: ModelSchema, function: str, field_name: str | None) -> Any:
    if function in ("count", "count_distinct"):
        return LOGICAL_TYPES[int]
    if function == "avg":
        return LOGICAL_TYPES[float]
    kind = model.by_name[field_name or ""].type
    if function == "sum":
        return (
            ANY_DECIMAL if kind.name == "decimal" else LOGICAL_TYPES[float if kind.name == "float" else int]
        )
    return ANY_DECIMAL if kind.name == "decimal" else kind


def _reader(mt: Any, function: str, field_name: str | None, f: Field) -> Callable[[Any], Any] | None:
    if function in ("min", "max"):
        return mt.reader(field_name)
    readers: dict[str, Callable[[Any], Any]] = {"integer": int, "float": float, "decimal": _decimal}
    return readers[f.type.name]


def _filter_names(doc: Any) -> list[str]:
    """The field names a filter document uses, at any depth."""
    if not isinstance(doc, Mapping):
        return []
    names = []
    for key, value in doc.items():
        if key in ("$and", "$or"):
            names += [n for d in (value if isinstance(value, list | tuple) else []) for n in _filter_names(d)]
        elif key == "$not":
            names += _filter_names(value)
        elif isinstance(key, str) and not key.startswith("$"):
            names.append(key)
    return names


def _order_names(order_by: Any) -> list[str]:
    items = [order_by] if isinstance(order_by, str | Mapping) else list(order_by)
    names = []
    for item in items:
        if isinstance(item, str):
            names.append(item.lstrip("-+"))
        elif isinstance(item, tuple) and item and isinstance(item[0], str):
            names.append(item[0])
        elif isinstance(item, Mapping):
            names += [n for n in item if isinstance(n, str)]
    return names


def _check_names(where: str, what: str, names: list[str], known: list[str], kind: str) -> None:
    for name in names:
        if name not in known:
            raise ValidationError(
                f"{where}: {what} names '{name}', which is not a {kind}.{did_you_mean(name, known)}",
                hint=f"{what} takes the {kind} names: {', '.join(known) or 'none'}"
                + ("; filter rows before grouping with filter=." if what == "having" else "."),
            )


AGGREGATE_OPERATIONS = (Aggregate,)
