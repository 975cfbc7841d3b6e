"""Existing tables as models: ``db.reflect()`` and ``DataFlow(url, existing_schema=True)``.

Rules:
- A table becomes a model named after it in the singular (``order_items`` ->
  ``OrderItem``), with the twelve nodes (``OrderItemCreateNode``...).
- It needs a single-column primary key named ``id``. An integer ``id`` with a
  database default (SQLite ``INTEGER PRIMARY KEY``, a sequence, an identity)
  is generated; without one, and for a text ``id``, the caller supplies it.
  Tables without such a key are skipped with a warning (named explicitly, they
  are refused), because every node addresses rows by ``id``.
- Columns map back to logical types (``_LOGICAL``). A column of another type
  is left out of the model with a warning that names it.
- A column with a database default (``DEFAULT 'new'``, a sequence...) is
  optional: a Create or BulkCreate that omits it leaves it to the database.
- ``created_at`` / ``updated_at`` columns, when present, are kept up to date
  like a declared model's; tables without them simply have none.
- A text column holding dataflow_lab ciphertexts (``dfe1:...``) is left out with a warning,
  and so is its blind index: reflection cannot tell the field's type (str, dict, bytes) to
  decrypt it, and a write would put plaintext among the ciphertexts. Declare that model.
- Reflected tables are never created, altered or migrated.
"""

from __future__ import annotations

import datetime as dt
import uuid
import warnings
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ..encryption import PREFIX
from ..errors import ValidationError
from ..model import BLIND_SUFFIX, TIMESTAMP_FIELDS, Field, ModelSchema, check_identifier
from ..schema import ModelTable
from ..transactions import borrowed
from ..types import LOGICAL_TYPES, LogicalType, decimal_type
from .engine import check_untouched
from .live import TableShape, read_table, table_names

__all__ = ["ReflectedTable", "reflect", "model_from_table"]

SAMPLED = 100  # values of a text column looked at for ciphertexts (_sealed_columns)

_LOGICAL: dict[str, type] = {
    **dict.fromkeys(("INTEGER", "INT", "BIGINT", "SMALLINT", "TINYINT", "INT2", "INT4", "MEDIUMINT"), int),
    **dict.fromkeys(("VARCHAR", "CHAR", "CHARACTER", "CLOB", "STRING", "NVARCHAR", "NCHAR"), str),
    **dict.fromkeys(("REAL", "DOUBLE", "FLOAT", "FLOAT4"), float),
    **dict.fromkeys(
        ("TIMESTAMP", "DATETIME", "TIMESTAMPWITHTIMEZONE", "TIMESTAMPWITHOUTTIMEZONE"), dt.datetime
    ),
    "BOOLEAN": bool,
    "DATE": dt.date,
    "DECIMAL": Decimal,
    "BLOB": bytes,
    "UUID": uuid.UUID,
    "JSON": dict,
    "JSONB": dict,
}


class ReflectedTable(ModelTable):
    """A model table that already exists: checked at first use, never changed."""

    async def ensure(self, conn: Any, **_policy: Any) -> None:
        await check_untouched(conn, self)


async def reflect(db: Any, tables: list[str] | None, scope: Any = None) -> list[str]:
    dialect = await db.database.open()
    async with borrowed(db, scope) as conn:  # inside db.transaction(): the block's connection
        available = await table_names(dialect, conn)
        wanted = available if tables is None else list(tables)
        modeled = {m.table_name for m in db.models.values()}
        shapes = []
        for name in wanted:
            if name in modeled and tables is None:
                continue
            shape = await read_table(dialect, conn, name)
            if shape is None:
                raise ValidationError(f"Table '{name}' does not exist in {db!r}.",
                                      hint=f"tables: {', '.join(available) or 'none'}.")  # fmt: skip
            shapes.append((shape, await _sealed_columns(dialect, conn, shape)))
    added = []
    for shape, sealed in shapes:
        # safety_level testing and maximum: what would be a warning (a table skipped) is an error
        strict = tables is not None or db.config.safety.warnings_are_errors
        schema = model_from_table(
            shape, strict=strict, columns_strict=db.config.safety.warnings_are_errors, sealed=sealed
        )
        if schema is None:
            continue
        db.database.install(schema, ReflectedTable(schema, db.database.dialect), reflected=True)
        added.append(schema.name)
    return added


async def _sealed_columns(dialect: Any, conn: Any, shape: TableShape) -> frozenset[str]:
    """The text columns of ``shape`` holding dataflow_lab ciphertexts (among the first
    ``SAMPLED`` values the database returns: a migration encrypts a column whole), with their
    blind index columns."""
    found: set[str] = set()
    for column in shape.columns.values():
        if _LOGICAL.get(column.type.partition("(")[0]) is not str or column.name == "id":
            continue
        c = sa.column(column.name, sa.Text())
        sample = (
            sa.select(c).select_from(sa.table(shape.name, c)).where(c.is_not(None)).limit(SAMPLED).subquery()
        )
        probe = (
            sa.select(sa.literal(1))
            .select_from(sample)
            .where(sample.c[column.name].startswith(PREFIX))
            .limit(1)
        )
        if await conn.fetch(*dialect.compile(probe)):
            found.update((column.name, column.name + BLIND_SUFFIX))
    return frozenset(found & set(shape.columns))


def model_from_table(
    shape: TableShape,
    *,
    strict: bool = False,
    columns_strict: bool = False,
    sealed: frozenset[str] = frozenset(),
) -> ModelSchema | None:
    """A ModelSchema for an existing table (None, with a warning, when it cannot have nodes).

    ``strict``: a table that cannot have nodes is an error; ``columns_strict``: so is a column
    that would be left out of the model. ``sealed``: columns holding ciphertexts of encrypted
    fields (and their blind indexes), which a reflected model leaves out: it cannot tell their
    fields' types (str, dict, bytes) to decrypt them, and a write would put plaintext among them.
    """
    problem = _key_problem(shape)
    if problem:
        if strict:
            raise ValidationError(f"Table '{shape.name}' cannot be reflected: {problem}.",
                                  hint="give it a single-column primary key named id.")  # fmt: skip
        warnings.warn(f"dataflow_lab: table '{shape.name}' skipped: {problem}.", stacklevel=3)
        return None
    fields = []
    for column in shape.columns.values():
        python = _LOGICAL.get(column.type.partition("(")[0])
        if python is None or column.name in sealed:
            problem = (f"column '{shape.name}.{column.name}' has type {column.raw_type or column.type}, "
                       "which has no logical type")  # fmt: skip
            how = "change or drop the column"
            if column.name in sealed:
                problem = f"column '{shape.name}.{column.name}' holds encrypted values (or their blind index)"
                how = "declare the model, its field Encrypted[str], Encrypted[dict] or Encrypted[bytes]"
            if columns_strict:
                raise ValidationError(
                    f"Table '{shape.name}' cannot be reflected whole: {problem}.",
                    hint=f"{how}, or reflect with safety_level='development', "
                    "which leaves it out of the model with a warning.",
                )
            warnings.warn(f"dataflow_lab: {problem}; it is left out of the model.", stacklevel=3)
            continue
        fields.append(_field(shape, column.name, python, column.nullable, column.default, column.type))
    fields.sort(key=lambda f: f.name != "id")
    indexes = tuple(i.columns for i in shape.indexes if not i.unique)
    unique = tuple(i.columns for i in shape.indexes if i.unique)
    try:
        name = check_identifier(class_name_for(shape.name), f"Model name for table '{shape.name}'")
    except ValidationError as exc:
        if strict:
            raise
        warnings.warn(f"dataflow_lab: table '{shape.name}' skipped: {exc.message}", stacklevel=3)
        return None
    return ModelSchema(name, shape.name, tuple(fields), unique=unique, indexes=indexes)


def _key_problem(shape: TableShape) -> str | None:
    if shape.primary_key != ("id",):
        found = ", ".join(shape.primary_key) or "none"
        return f"its primary key is ({found}), not a single 'id' column"
    if shape.columns["id"].type.partition("(")[0] not in _LOGICAL:
        return f"its id column has type {shape.columns['id'].raw_type}"
    return None


def _field(
    shape: TableShape, name: str, python: type, nullable: bool, default: str | None, kind: str = ""
) -> Field:
    logical = _decimal_of(kind) if python is Decimal else LOGICAL_TYPES[python]
    if name == "id":
        return Field("id", logical, primary_key=True, generated=python is int and default is not None)
    if name in TIMESTAMP_FIELDS and python is dt.datetime:
        return Field(name, logical, nullable=nullable, generated=True)
    return Field(name, logical, nullable=nullable, server_default=default is not None)


def _decimal_of(kind: str) -> LogicalType:
    """DECIMAL(10,2) -> a Decimal field with those digits (so writes are checked, never rounded)."""
    args = [a for a in kind.partition("(")[2].rstrip(")").split(",") if a.strip().isdigit()]
    if not args:
        return LOGICAL_TYPES[Decimal]
    return decimal_type(int(args[0]), int(args[1]) if len(args) > 1 else 0)


_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "data": "datum",
              "media": "medium", "criteria": "criterion", "indices": "index", "mice": "mouse"}  # fmt: skip


def class_name_for(table: str) -> str:
    """users -> User, order_items -> OrderItem, people -> Person, categories -> Category."""
    words = [w for w in table.split("_") if w] or [table]
    last = words[-1].lower()
    if last in _IRREGULAR:
        last = _IRREGULAR[last]
    elif last.endswith("ies") and len(last) > 3:
        last = last[:-3] + "y"
    elif last.endswith(("ses", "xes", "zes", "ches", "shes")):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith(("ss", "us", "is")):
        last = last[:-1]
    words[-1] = last
    return "".join(w[:1].upper() + w[1:] for w in words)
