"""What a table looks like: read from the database, or derived from a model.

Both sides of a schema diff are a ``TableShape``, so ``diff.py`` compares like
with like. Reading runs on our own driver connections (sqlite3, asyncpg,
DuckDB's worker thread) through the catalogue each database offers:
``pragma_*`` on SQLite, ``pg_catalog`` on PostgreSQL, ``duckdb_*()`` on DuckDB,
``information_schema`` on MySQL and MariaDB (whose types ``mysql_type`` spells as declared).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, cast

import sqlalchemy as sa

from .._record import Record
from ..dialects import Connection, Dialect
from ..dialects.type_names import normalize_type

__all__ = [
    "ColumnShape", "IndexShape", "TableShape", "column_default", "model_shape", "read_table", "table_names"
]  # fmt: skip

INTERNAL_PREFIXES = ("dataflow_", "_dataflow")  # history, audit, 2PC decisions, backups


class ColumnShape(NamedTuple):
    name: str
    type: str  # normalized, comparable across spellings ("TEXT" and "VARCHAR" are one)
    nullable: bool
    raw_type: str = ""  # as the database spells it, for DDL that recreates the column
    default: str | None = None  # server default, as SQL text


class IndexShape(NamedTuple):
    name: str
    columns: tuple[str, ...]
    unique: bool
    constraint: bool = False  # a UNIQUE constraint of the table (not droppable with DROP INDEX)
    sql: str | None = None  # the statement that recreates it, when the database keeps one


class TableShape(Record):
    """One table: its columns by name, primary key, indexes, the CREATE TABLE the database keeps
    (SQLite, DuckDB), and ``extra`` facts, which equality leaves out."""

    __slots__ = ("name", "columns", "primary_key", "indexes", "ddl", "extra")
    name: str
    columns: dict[str, ColumnShape]
    primary_key: tuple[str, ...]
    indexes: tuple[IndexShape, ...]
    ddl: str | None
    extra: dict[str, Any]

    def __init__(
        self,
        name: str,
        columns: dict[str, ColumnShape],
        primary_key: tuple[str, ...] = (),
        indexes: tuple[IndexShape, ...] = (),
        ddl: str | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self._fill(name, columns, primary_key, indexes, ddl, extra or {})

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(self._values(self)[:-1] == self._values(other)[:-1])  # all but extra

    __hash__ = None  # type: ignore[assignment]  # it holds dicts


def model_shape(dialect: Dialect, table: sa.Table) -> TableShape:
    """The shape a model's table should have on this dialect."""
    columns = {}
    for c in table.columns:
        nullable = bool(c.nullable) and not c.primary_key
        columns[c.name] = ColumnShape(c.name, dialect.declared_type(c), nullable, default=column_default(c))
    # cast: the package's tables name every index and constraint (schema.py)
    indexes = [
        IndexShape(cast(str, i.name), tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes
    ]
    indexes += [
        IndexShape(cast(str, u.name), tuple(c.name for c in u.columns), True, constraint=True)
        for u in table.constraints
        if isinstance(u, sa.UniqueConstraint)
    ]
    pk = tuple(c.name for c in table.primary_key.columns)
    return TableShape(table.name, columns, pk, tuple(indexes))


def column_default(column: sa.Column) -> str | None:
    """A column's server DEFAULT as SQL text (a key's is the dialect's id machinery: not compared)."""
    arg = None if column.primary_key else getattr(column.server_default, "arg", None)
    return None if arg is None else str(getattr(arg, "text", None) or getattr(arg, "name", arg))


async def read_table(dialect: Dialect, conn: Connection, name: str) -> TableShape | None:
    """The table as it exists in the database; None when there is no such table."""
    return await _READERS[dialect.name][0](conn, name)


async def table_names(dialect: Dialect, conn: Connection) -> list[str]:
    """User tables of the connection's schema (dataflow_lab's own tables left out)."""
    names = await _READERS[dialect.name][1](conn)
    return sorted(n for n in names if not n.startswith(INTERNAL_PREFIXES))


# -- SQLite ---------------------------------------------------------------------
async def _sqlite_table(conn: Connection, name: str) -> TableShape | None:
    rows = await conn.fetch('SELECT name, type, "notnull", pk, dflt_value FROM pragma_table_info(?)', (name,))
    if not rows:
        return None
    columns = {
        n: ColumnShape(n, normalize_type(t or "ANY"), not notnull and not pk, t, dflt)
        for n, t, notnull, pk, dflt in rows
    }
    pk = tuple(r[0] for r in sorted(rows, key=lambda r: r[3]) if r[3])
    if len(pk) == 1 and columns[pk[0]].raw_type.upper() == "INTEGER":  # the rowid: SQLite numbers it
        column = columns[pk[0]]
        columns[pk[0]] = ColumnShape(column.name, column.type, False, column.raw_type, "rowid")
    indexes = []
    for index, unique, origin in await conn.fetch(
        'SELECT name, "unique", origin FROM pragma_index_list(?)', (name,)
    ):
        if origin == "pk":
            continue
        cols = await conn.fetch("SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index,))
        sql = await conn.fetch("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (index,))
        indexes.append(
            IndexShape(
                index, tuple(c[0] for c in cols), bool(unique), origin == "u", sql[0][0] if sql else None
            )
        )
    ddl = await conn.fetch("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return TableShape(name, columns, pk, tuple(indexes), ddl[0][0])


async def _sqlite_names(conn: Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return [r[0] for r in rows]


# -- PostgreSQL -------------------------------------------------------------------
_PG_COLUMNS = """
SELECT column_name, data_type, is_nullable, column_default, is_identity,
       CASE WHEN data_type = 'character varying' AND character_maximum_length IS NOT NULL
            THEN 'varchar(' || character_maximum_length || ')'
            WHEN data_type = 'numeric' AND numeric_precision IS NOT NULL
            THEN 'numeric(' || numeric_precision || ',' || numeric_scale || ')' ELSE data_type END
FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"""

_PG_INDEXES = """
SELECT i.relname, ix.indisunique, ix.indisprimary,
       array(SELECT a.attname::text FROM unnest(ix.indkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o),
       con.conname, pg_get_indexdef(ix.indexrelid)
FROM pg_index ix
JOIN pg_class t ON t.oid = ix.indrelid
JOIN pg_class i ON i.oid = ix.indexrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_constraint con ON con.conindid = ix.indexrelid AND con.contype = 'u'
WHERE t.relname = $1 AND n.nspname = current_schema() ORDER BY i.relname"""


async def _pg_table(conn: Connection, name: str) -> TableShape | None:
    rows = await conn.fetch(_PG_COLUMNS, (name,))
    if not rows:
        return None
    columns = {}
    for n, kind, nullable, default, identity, raw in rows:
        default = "identity" if identity == "YES" else default
        declared = raw if kind == "numeric" else kind  # NUMERIC(p, s): its digits are part of the type
        columns[n] = ColumnShape(n, normalize_type(declared), nullable == "YES", raw, default)
    pk: tuple[str, ...] = ()
    indexes = []
    for index, unique, primary, cols, constraint, sql in await conn.fetch(_PG_INDEXES, (name,)):
        if primary:
            pk = tuple(cols)
            continue
        indexes.append(IndexShape(constraint or index, tuple(cols), unique, constraint is not None, sql))
    return TableShape(name, columns, pk, tuple(indexes))


async def _pg_names(conn: Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    )
    return [r[0] for r in rows]


# -- DuckDB -----------------------------------------------------------------------
async def _duckdb_table(conn: Connection, name: str) -> TableShape | None:
    rows = await conn.fetch(
        "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (name,),
    )
    if not rows:
        return None
    columns = {n: ColumnShape(n, normalize_type(k), nul == "YES", k, d) for n, k, nul, d in rows}
    pk: tuple[str, ...] = ()
    indexes = []
    for kind, cols, cname in await conn.fetch(
        "SELECT constraint_type, constraint_column_names, constraint_name FROM duckdb_constraints() "
        "WHERE table_name = ? AND schema_name = current_schema() AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
        (name,),
    ):
        if kind == "PRIMARY KEY":
            pk = tuple(cols)
        else:
            indexes.append(IndexShape(cname, tuple(cols), True, constraint=True))
    for index, unique, expressions, sql in await conn.fetch(
        "SELECT index_name, is_unique, expressions, sql FROM duckdb_indexes() "
        "WHERE table_name = ? AND schema_name = current_schema()",
        (name,),
    ):
        indexes.append(IndexShape(index, _duckdb_columns(expressions), unique, False, sql))
    ddl = await conn.fetch(
        "SELECT sql FROM duckdb_tables() WHERE table_name = ? AND schema_name = current_schema()", (name,)
    )
    for c in pk:  # DuckDB reports primary key columns as nullable
        columns[c] = ColumnShape(c, columns[c].type, False, columns[c].raw_type, columns[c].default)
    return TableShape(name, columns, pk, tuple(indexes), ddl[0][0] if ddl else None)


def _duckdb_columns(expressions: Any) -> tuple[str, ...]:
    items = expressions if isinstance(expressions, list) else re.split(r",\s*", str(expressions).strip("[]"))
    return tuple(str(item).strip().strip("'\"") for item in items if str(item).strip())


async def _duckdb_names(conn: Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = current_schema() AND NOT temporary"
    )
    return [r[0] for r in rows]


# -- MySQL and MariaDB ------------------------------------------------------------
_MY_COLUMNS = """
SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, DATA_TYPE
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s
ORDER BY ORDINAL_POSITION"""

_MY_INDEXES = """
SELECT s.INDEX_NAME, s.NON_UNIQUE, s.COLUMN_NAME, c.CONSTRAINT_TYPE
FROM information_schema.STATISTICS s
LEFT JOIN information_schema.TABLE_CONSTRAINTS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA
  AND c.TABLE_NAME = s.TABLE_NAME AND c.CONSTRAINT_NAME = s.INDEX_NAME
WHERE s.TABLE_SCHEMA = DATABASE() AND s.TABLE_NAME = %s ORDER BY s.INDEX_NAME, s.SEQ_IN_INDEX"""

# MariaDB keeps a JSON column as LONGTEXT with CHECK (json_valid(`column`)), named after it
_MY_JSON_CHECKS = """
SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = %s"""


async def _mysql_table(conn: Connection, name: str) -> TableShape | None:
    from ..dialects.mysql import mysql_type

    rows = await conn.fetch(_MY_COLUMNS, (name,))
    if not rows:
        return None
    json_columns = {
        n for n, check in await conn.fetch(_MY_JSON_CHECKS, (name,)) if "json_valid" in str(check).lower()
    }
    columns = {}
    for n, raw, nullable, default, extra, kind in rows:
        raw = _text(raw)
        declared = "JSON" if n in json_columns or _text(kind).lower() == "json" else raw
        default = "identity" if "auto_increment" in _text(extra).lower() else _mysql_default(default, raw)
        # a JSON column is re-created as JSON (a rollback's MODIFY), which brings its json_valid check back
        recreated = "JSON" if declared == "JSON" else raw
        columns[n] = ColumnShape(n, mysql_type(declared), nullable == "YES", recreated, default)
    pk: tuple[str, ...] = ()
    grouped: dict[str, tuple[list[str], bool, bool]] = {}
    for index, non_unique, column, constraint in await conn.fetch(_MY_INDEXES, (name,)):
        cols, _, _ = grouped.setdefault(index, ([], not non_unique, constraint == "UNIQUE"))
        cols.append(column)
    indexes = []
    for index, (cols, unique, constraint) in grouped.items():
        if index == "PRIMARY":
            pk = tuple(cols)
        else:
            indexes.append(IndexShape(index, tuple(cols), unique, constraint and index.startswith("uq_")))
    return TableShape(name, columns, pk, tuple(indexes))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _mysql_default(value: Any, raw_type: str) -> str | None:
    """A DEFAULT as we write it: MariaDB reports DEFAULT NULL as 'NULL', current_timestamp(6) in
    lower case, and a boolean's true as 1."""
    text = _text(value)
    if value is None or text.upper() == "NULL":
        return None
    if text.lower().startswith("current_timestamp"):
        return text.upper()
    if raw_type.lower().startswith("tinyint(1)") and text in ("0", "1"):
        return "true" if text == "1" else "false"
    return text


async def _mysql_names(conn: Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT TABLE_NAME FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'"
    )
    return [_text(r[0]) for r in rows]


_Reader = tuple[
    Callable[[Connection, str], Awaitable[TableShape | None]], Callable[[Connection], Awaitable[list[str]]]
]
_READERS: dict[str, _Reader] = {
    "sqlite": (_sqlite_table, _sqlite_names),
    "postgresql": (_pg_table, _pg_names),
    "duckdb": (_duckdb_table, _duckdb_names),
    "mysql": (_mysql_table, _mysql_names),
}
