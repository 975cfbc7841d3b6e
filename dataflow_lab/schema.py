"""A model's table on one database: columns, value conversion, and DDL.

``ModelTable`` is what the nodes use: the SQLAlchemy ``Table`` built with the
dialect's storage types, the per-field converters to and from the driver, and
``ensure``, which creates the table on first use and migrates it as the
environment allows (``migrations/``).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from .clock import SystemClock
from .dialects import Connection, Dialect
from .migrations.engine import ensure_table
from .migrations.ops import typed_literal
from .model import MISSING, TIMESTAMP_FIELDS, Field, ModelSchema, check_value, parse_model

__all__ = ["ModelTable", "internal_table"]


MAX_TEMPLATES = 1000  # compiled statements kept per table


def _enum_reader(enum_cls: Any) -> Any:
    by_text = {str(m.value): m for m in enum_cls}
    return lambda value: by_text[str(value)]


class ModelTable:
    """One model bound to one dialect."""

    def __init__(self, model: ModelSchema, dialect: Dialect, *, server_defaults: bool = True):
        self.model = model
        self.dialect = dialect
        self._server_defaults = server_defaults  # False: dataflow_lab's own tables, which only it writes
        self.writers = {f.name: self._writer(f) for f in model.fields}  # field -> to-database converter
        self.table = self._build_table(sa.MetaData())
        self.columns = tuple(f.name for f in model.fields)
        self._row_dict = _row_builder(model.fields, [self._reader(f) for f in model.fields])
        # (sql, bind names) from compile_named, or (sql, params) from compile: keyed apart by the caller
        self._sql: dict[Any, tuple[str, Any]] = {}

    def template(self, key: Any, build: Any) -> tuple[str, tuple[str, ...]]:
        """Compile ``build()`` once per key: (sql, bind names in order).

        At most ``MAX_TEMPLATES`` are kept (filters of many shapes, such as $in lists of every
        length, would grow it without end): the oldest goes first.
        """
        hit = self._sql.get(key)
        if hit is None:
            if len(self._sql) >= MAX_TEMPLATES:
                del self._sql[next(iter(self._sql))]
            hit = self._sql[key] = self.dialect.compile_named(build())
        return hit

    def compiled(self, key: Any, build: Any) -> tuple[str, list[Any]]:
        """Compile ``build()`` once per key, values included: (sql, params)."""
        hit = self._sql.get(key)
        if hit is None:
            hit = self._sql[key] = self.dialect.compile(build())
        return hit

    # -- building --------------------------------------------------------
    def _build_table(self, metadata: sa.MetaData) -> sa.Table:
        d, m = self.dialect, self.model
        columns = [d.id_column(m.table_name, m.id_field.type.name)]
        for f in m.fields[1:]:
            info = {"counter": True} if f.name in m.counters else {}  # an upsert counts it up
            kind = self._column_type(f)
            default = self._server_default(f, kind)
            columns.append(sa.Column(f.name, kind, nullable=f.nullable, info=info, server_default=default))
        unique, indexed = m.unique, m.indexes
        if m.key_scope:  # uniqueness holds within it (a tenant), and every query filters on it
            unique = tuple(_scoped(m.key_scope, g) for g in unique)
            indexed = tuple(dict.fromkeys((m.key_scope, *(_scoped(m.key_scope, g) for g in indexed))))
        constraints = [
            sa.UniqueConstraint(*group, name=f"uq_{m.table_name}_{'_'.join(group)}") for group in unique
        ]
        indexes = [sa.Index(f"ix_{m.table_name}_{'_'.join(group)}", *group) for group in indexed]
        return sa.Table(m.table_name, metadata, *columns, *constraints, *indexes, **d.table_kwargs())

    def _column_type(self, f: Field) -> sa.types.TypeEngine:
        if f.type.name == "decimal":
            return self.dialect.decimal_type(self.model.name, f.name, f.type.digits)
        return self.dialect.column_type(f.type.name)

    def _server_default(self, f: Field, kind: sa.types.TypeEngine) -> sa.ColumnClause | None:
        """The column's DEFAULT, so that rows other tools insert are valid: the moment of insert for
        created_at / updated_at, a field's literal default (None: no DEFAULT, NULL is implied).

        literal_column, not text(): the SQL is kept as written (text() would take ':00' for a bind).
        """
        if not self._server_defaults:
            return None
        if f.generated and f.name in TIMESTAMP_FIELDS and f.type.name == "datetime":
            return sa.literal_column(self.dialect.now_default)
        if f.default is MISSING or f.default is None:
            return None
        return sa.literal_column(typed_literal(self.dialect, self.to_db(f.name, f.default), kind))

    def _writer(self, f: Field) -> Any:
        return self.dialect.to_db.get(f.type.name)

    def reader(self, name: str) -> Any:
        """The from-database converter of field ``name`` (None: the driver's value is the Python value)."""
        return self._reader(self.model.by_name[name])

    def _reader(self, f: Field) -> Any:
        if f.type.name == "enum":
            return _enum_reader(f.type.python)
        return self.dialect.from_db.get(f.type.name)

    # -- values ----------------------------------------------------------
    def check(self, name: str, value: Any, *, node: str = "") -> Any:
        """Validate (and losslessly coerce) one value for field ``name``."""
        f = self.model.field(name, context=node)
        return check_value(self.model, f, value, node=node)

    def to_db(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        convert = self.writers[name]
        return convert(value) if convert is not None else value

    def db_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A dict of Python values -> driver values."""
        return {k: self.to_db(k, v) for k, v in values.items()}

    def ids_from_db(self, raw_ids: Iterable[Any]) -> list[Any]:
        """Driver id values -> Python ids (a UUID stored as text comes back as uuid.UUID)."""
        read = self._reader(self.model.id_field)
        return [read(i) for i in raw_ids] if read is not None else list(raw_ids)

    def rows(self, raw_rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        """Driver rows (in column order) -> dicts of Python values."""
        return list(map(self._row_dict, raw_rows))

    def new_row(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A complete row for INSERT: ``values`` (the caller's and the behaviours' stamps, such as the
        timestamps), then defaults (a server default: left out)."""
        row: dict[str, Any] = {}
        for f in self.model.fields:
            if f.name in values:
                row[f.name] = values[f.name]
            elif f.default is not MISSING:
                row[f.name] = _fresh(f.default)
            elif f.default_factory is not None:
                row[f.name] = f.default_factory()
            elif f.nullable and not f.server_default:
                row[f.name] = None
        return row

    # -- DDL -------------------------------------------------------------
    async def ensure(self, conn: Connection, *, auto_migrate: bool, existing_schema: bool = False,
                     clock: Any = None, create: bool = False) -> None:  # fmt: skip
        """Create the table if missing, and migrate it as the environment allows (migrations/engine.py).

        ``clock`` (the DataFlow's) dates the migration history; None: the system clock. ``create``:
        a missing table is made even without auto_migrate (``db.create_tables()``).
        """

        await ensure_table(conn, self, auto_migrate=auto_migrate, existing_schema=existing_schema,
                           clock=clock or SystemClock(), create=create)  # fmt: skip


_INTERNAL: weakref.WeakKeyDictionary[Any, dict[type, ModelTable]] = weakref.WeakKeyDictionary()


def internal_table(model_class: type, dataflow: Any) -> ModelTable:
    """The table of one of dataflow_lab's own models (the audit log, the saga log) on ``dataflow``.

    Parsed once per class, bound once per DataFlow (and forgotten with it).
    """
    tables = _INTERNAL.setdefault(dataflow, {})
    table = tables.get(model_class)
    if table is None:
        schema = _internal_schema(model_class)
        table = tables[model_class] = ModelTable(schema, dataflow.database.dialect, server_defaults=False)
    return table


@functools.cache
def _internal_schema(model_class: type) -> ModelSchema:
    return parse_model(model_class, internal=True)


def _scoped(scope: tuple[str, ...], group: tuple[str, ...]) -> tuple[str, ...]:
    """``group`` led by the key scope's columns (a unique group holds within a tenant)."""
    return (*scope, *(c for c in group if c not in scope))


def _row_builder(fields: Sequence[Field], readers: Sequence[Any]) -> Any:
    """A function row -> dict for these fields, generated once per table.

    This is the hot path of every read (a List of 1,000 rows calls it 1,000
    times), so instead of looping over columns per row, it is one dict display:
    ``lambda r: {"id": r[0], "active": _r4(r[4]) if r[4] is not None else None, ...}``.
    Field names are validated identifiers, so the generated source is safe.
    """
    namespace: dict[str, Any] = {}
    items = []
    for i, (f, read) in enumerate(zip(fields, readers, strict=True)):
        if read is None:
            items.append(f"{f.name!r}: r[{i}]")
        else:
            namespace[f"_r{i}"] = read
            guard = "" if (not f.nullable and f.generated) else f" if r[{i}] is not None else None"
            items.append(f"{f.name!r}: _r{i}(r[{i}]){guard}")
    return eval(f"lambda r: {{{', '.join(items)}}}", namespace)  # noqa: S307 - built from identifiers only


def _fresh(default: Any) -> Any:
    if isinstance(default, dict | list):
        import copy

        return copy.deepcopy(default)
    return default
