"""MySQL and MariaDB through asyncmy, pooled by SQLAlchemy's async engine.

Facts:
- Statements are compiled with SQLAlchemy's mysql+asyncmy dialect (``%s`` parameters) and run on
  the raw asyncmy connection, in autocommit mode: dataflow_lab sends START TRANSACTION itself.
- Every connection sets strict SQL mode (a bad value is an error, never a silent truncation),
  utf8mb4 and ``time_zone = '+00:00'``, whatever the server's defaults are.
- Tables are InnoDB, utf8mb4 with MariaDB's ``utf8mb4_nopad_bin`` collation (no padding: 'a' and
  'a ' differ, as on the other databases): text compares, sorts and matches
  ``$like`` and ``$regex`` by code point, case-sensitively, as on the other databases; ``$ilike``
  folds case with LOWER() on both sides.
- Datetimes are DATETIME(6): microseconds, stored as UTC wall time, returned aware (UTC).
- Booleans are TINYINT(1) and come back as ``bool``; Decimals are DECIMAL (exact; an undeclared
  one is DECIMAL(38, 18)); JSON is JSON (on MariaDB, LONGTEXT with a json_valid check).
- Text is LONGTEXT. A UNIQUE key on it is MariaDB's long unique key (a hash of the whole value,
  10.4+), an index covers its first 255 characters; a text id is VARCHAR(255).
- DDL is not transactional in MySQL: every CREATE/ALTER commits at once. Migrations stay safe by
  taking a GET_LOCK lock, backing up what a destructive step drops, and applying one step at a
  time with its history row written after it (see ``migrations.engine``).
- Upsert is ``INSERT ... ON DUPLICATE KEY UPDATE``; bulk inserts are multi-row INSERTs.
- Deadlocks (1213) and lock wait timeouts (1205) are transient: the runtime retries them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Iterator, Sequence
from decimal import Context, Decimal
from typing import Any

import sqlalchemy as sa

from ..errors import ValidationError
from .base import Connection, PooledDialect, normalize_type
from .mysql_connection import OR_NOTHING, MySQLConnection, errno, literal

# MySQL's error numbers worth retrying: the whole transaction again
_TRANSIENT_ERRNOS = {
    1213: "deadlock", 1205: "lock wait timeout",
    2006: "connection lost", 2013: "connection lost", 2003: "cannot connect", 2002: "cannot connect",
    1927: "connection lost", 1053: "server shut down", 4031: "connection lost",
}  # fmt: skip

SQL_MODE = "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
UNDECLARED_SCALE = 18  # an undeclared Decimal is DECIMAL(38, 18), as on DuckDB
KEY_TEXT_LENGTH = 255  # 255 utf8mb4 characters are 1,020 bytes: three fit in one key of 3,072


def _modify(table: str, column: str, type_sql: str, nullable: bool, default: str | None) -> str:
    """MODIFY COLUMN restates the whole column: its type, NULL or NOT NULL, and its DEFAULT."""
    tail = (" NULL" if nullable else " NOT NULL") + (f" DEFAULT {default}" if default is not None else "")
    return f"ALTER TABLE {table} MODIFY COLUMN {column} {type_sql}{tail}"


def _is_text(kind: sa.types.TypeEngine) -> bool:
    return isinstance(kind, sa.String) and kind.length is None  # TEXT, LONGTEXT


def _float_in(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):  # (NaN: every field's check refuses it)
        raise ValidationError(
            f"{value!r} cannot be stored: MySQL's DOUBLE holds no infinity.",
            hint="store None for a missing value, or a finite bound such as sys.float_info.max.",
        )
    return value


def _enum_text(member: Any) -> str:
    return str(member.value)


def _datetime_in(value: dt.datetime) -> dt.datetime:
    """Aware -> UTC wall time (DATETIME holds no zone); naive is taken as UTC already."""
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _datetime_out(value: Any) -> Any:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _json_out(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _uuid_out(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


_WIDE = Context(prec=100)  # normalize() rounds to the context's precision: 28 digits by default


def _decimal_out(value: Any) -> Decimal:
    """An exact Decimal; an undeclared column's 18 digits of scale lose their trailing zeros."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if number.as_tuple().exponent != -UNDECLARED_SCALE:
        return number
    if number == number.to_integral_value():
        return number.quantize(Decimal(1), context=_WIDE)
    return number.normalize(_WIDE)


def _bool_out(value: Any) -> bool:
    return bool(value)


def _longtext() -> sa.types.TypeEngine:
    from sqlalchemy.dialects.mysql import LONGTEXT

    return LONGTEXT()


class _Json(sa.types.TypeDecorator):
    """JSON whose literal (a DEFAULT) is its text: MariaDB has no CAST(... AS JSON)."""

    impl = sa.JSON
    cache_ok = True

    def literal_processor(self, dialect: Any) -> Any:
        return lambda value: "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _longblob() -> sa.types.TypeEngine:
    from sqlalchemy.dialects.mysql import LONGBLOB

    return LONGBLOB()


_INT_WIDTH = re.compile(r"^(TINYINT|SMALLINT|MEDIUMINT|INT|INTEGER|BIGINT)\(\d+\)")
# LONGTEXT is text without a length (VARCHAR, as normalize_type spells TEXT), LONGBLOB a BLOB
_MYSQL_SYNONYMS = {"BOOL": "BOOLEAN", "TINYINT(1)": "BOOLEAN", "INTEGER": "INT", "REAL": "DOUBLE",
                   "NUMERIC": "DECIMAL", "LONGTEXT": "VARCHAR", "MEDIUMTEXT": "VARCHAR",
                   "LONGBLOB": "BLOB", "MEDIUMBLOB": "BLOB"}  # fmt: skip


STATEMENT_BYTES = 2**20  # 1 MB statements: 8 MB ones took MariaDB longer per row (measured)
_LIMIT = re.compile(r"LIMIT %s(?:\s*,\s*%s)?(?:\s+OFFSET %s)?")  # EXPLAIN's LIMIT takes no NULL


def statements(
    rows: Sequence[Sequence[Any]], n_columns: int, max_binds: int, max_bytes: int
) -> Iterator[Sequence[Any]]:
    """``rows`` in runs of one statement each: within the bind limit and ``max_bytes`` of SQL text,
    as the largest of 64 rows sampled from each run counts them."""
    most = max(1, max_binds // max(1, n_columns))
    start = 0
    while start < len(rows):
        sample = rows[start : start + most : max(1, most // 64)]  # the next statement's, evenly spaced
        per_row = max(_text_size(r) for r in sample) if sample else 1
        count = max(1, min(most, max_bytes // max(1, per_row)))
        yield rows[start : start + count]
        start += count


def _text_size(row: Sequence[Any]) -> int:
    """About how many bytes of SQL a row's values make (escaping doubles a few characters)."""
    return sum(len(v) * 2 + 4 if isinstance(v, str | bytes) else 28 for v in row)


def mysql_type(spelling: str) -> str:
    """One spelling for a MySQL column type, declared or reflected, for schema diffs.

    TINYINT(1) and BOOLEAN are one; an integer's display width (BIGINT(20)) is dropped; UNSIGNED,
    charsets and collations are not part of the type; 'longtext' with a JSON check is JSON (the
    reader says so: MariaDB stores JSON as LONGTEXT).
    """
    compact = " ".join(str(spelling).upper().split())
    compact = re.sub(r"\s+(CHARACTER SET|COLLATE)\s+\S+", "", compact).replace(" UNSIGNED", "")
    compact = compact.replace(" ", "")
    if compact in _MYSQL_SYNONYMS:
        return _MYSQL_SYNONYMS[compact]
    compact = _INT_WIDTH.sub(r"\1", compact)
    base, paren, args = compact.partition("(")
    base = _MYSQL_SYNONYMS.get(base, base)
    if base == "DECIMAL" and not args:
        args = "10,0)"
    return normalize_type(f"{base}{paren}{args}")


class MySQLDialect(PooledDialect):
    name = "mysql"
    max_bind_params = 65535
    warm_modules = ("asyncmy", "sqlalchemy.dialects.mysql.asyncmy")
    storage = {
        "text": _longtext,
        "integer": sa.BigInteger,
        "float": sa.Double,
        "boolean": sa.Boolean,
        "datetime": lambda: __import__("sqlalchemy.dialects.mysql", fromlist=["DATETIME"]).DATETIME(fsp=6),
        "date": sa.Date,
        "decimal": lambda: sa.Numeric(38, 18),
        "bytes": _longblob,
        "uuid": lambda: sa.CHAR(36),
        "enum": lambda: sa.String(KEY_TEXT_LENGTH),
        "json": _Json,
    }
    to_db = {
        "enum": _enum_text,
        "float": _float_in,
        "json": json.dumps,
        "uuid": str,
        "datetime": _datetime_in,
    }
    from_db = {
        "boolean": _bool_out,
        "json": _json_out,
        "uuid": _uuid_out,
        "datetime": _datetime_out,
        "decimal": _decimal_out,
    }  # (DOUBLE comes back a float, BIGINT an int: no converter)

    def _sa_dialect(self) -> sa.engine.Dialect:
        from sqlalchemy.dialects.mysql.asyncmy import dialect

        return dialect()

    def engine_url(self) -> str:
        url = sa.engine.make_url(self.url)
        url = url.set(drivername="mysql+asyncmy").update_query_dict({"charset": "utf8mb4"})
        return url.render_as_string(hide_password=False)

    def engine_options(self) -> dict[str, Any]:
        settings = [
            f"sql_mode = '{SQL_MODE}'",
            "time_zone = '+00:00'",
            "NAMES utf8mb4 COLLATE utf8mb4_nopad_bin",
        ]
        return dict(
            pool_size=self.config.pool_size,
            max_overflow=self.config.max_overflow,
            pool_timeout=self.config.pool_timeout,
            pool_recycle=self.config.pool_recycle,
            pool_pre_ping=self.config.pool_pre_ping,
            pool_reset_on_return=None,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 10, "init_command": "SET " + ", ".join(settings)},
        )

    def _install_events(self, sync_engine: sa.engine.Engine) -> None:
        limit = self.config.statement_timeout

        @sa.event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # READ COMMITTED, as on PostgreSQL: each statement sees what committed before it (an
            # upsert that lost a race finds the winner's row); InnoDB's default is REPEATABLE READ.
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            if not limit:
                cursor.close()
                return
            try:  # MariaDB's limit on every statement, in seconds
                cursor.execute(f"SET max_statement_time = {float(limit):g}")
            except Exception:  # MySQL 8: its limit on SELECTs, in milliseconds
                cursor.execute(f"SET max_execution_time = {int(limit * 1000)}")
            finally:
                cursor.close()

    def wrap(self, driver_connection: Any) -> Connection:
        return MySQLConnection(driver_connection, self._kill)

    async def _side_connection(self) -> Any:
        """A connection of asyncmy's own, outside the pool (to KILL, to EXPLAIN)."""
        import asyncmy

        url = sa.engine.make_url(self.url)
        return await asyncmy.connect(host=url.host or "localhost", port=url.port or 3306, user=url.username,
                                     password=url.password or "", database=url.database, connect_timeout=10,
                                     autocommit=True)  # fmt: skip

    async def _kill(self, thread_id: int) -> None:
        """Stop a server thread's statement and roll back its transaction (a cancelled run's)."""
        try:
            conn = await self._side_connection()
        except Exception:  # unreachable: the server ends the thread when it sees its socket closed
            return
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(f"KILL {int(thread_id)}")
        except Exception:  # already gone
            pass
        finally:
            conn.close()

    explains = True

    async def explain(self, sql: str, params: Sequence[Any] | None) -> str:
        """EXPLAIN with every parameter NULL (no value reaches it), on a connection of its own."""
        conn = await self._side_connection()
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("EXPLAIN " + _LIMIT.sub("LIMIT 1", sql).replace("%s", "NULL"))
                names = [d[0] for d in cursor.description or ()]
                rows = await cursor.fetchall()
            return "\n".join(
                ", ".join(f"{n}={v}" for n, v in zip(names, r, strict=True) if v is not None) for r in rows
            )
        finally:
            conn.close()

    # -- schema facts ------------------------------------------------------
    def id_column(self, table_name: str, logical: str) -> sa.Column:
        if logical == "integer":
            return sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True)
        if logical == "uuid":
            return sa.Column("id", sa.CHAR(36), primary_key=True)
        return sa.Column("id", sa.String(KEY_TEXT_LENGTH), primary_key=True)

    def key_type(self, kind: sa.types.TypeEngine) -> sa.types.TypeEngine:
        """A primary key of TEXT needs a length (UNIQUE does not: MariaDB hashes a long one)."""
        return sa.String(KEY_TEXT_LENGTH) if _is_text(kind) else kind

    def index_options(self, columns: Sequence[sa.Column]) -> dict[str, Any]:
        """An index on TEXT covers its first 255 characters (a lookup reads the rest from the row)."""
        lengths = {c.name: KEY_TEXT_LENGTH for c in columns if _is_text(c.type)}
        return {"mysql_length": lengths} if lengths else {}

    def table_kwargs(self) -> dict[str, Any]:
        return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_nopad_bin"}

    def decimal_type(self, model: str, field: str, digits: tuple[int, int] | None) -> sa.types.TypeEngine:
        precision, scale = digits or (38, UNDECLARED_SCALE)
        if precision > 65 or scale > 30:
            raise ValidationError(
                f"Model '{model}': field '{field}' is Decimal({precision}, {scale}); MySQL's DECIMAL "
                "holds at most 65 digits, 30 of them after the point.",
                hint=f"declare Annotated[Decimal, {min(precision, 65)}, {min(scale, 30)}] or fewer digits.",
            )
        return sa.Numeric(precision, scale)

    def decimal_bounds(self, digits: tuple[int, int] | None) -> tuple[int, int] | None:
        return digits or (38, UNDECLARED_SCALE)

    def declared_type(self, column: sa.Column) -> str:
        return mysql_type(column.type.compile(dialect=self.sa_dialect))

    transactional_ddl = False  # every CREATE/ALTER commits at once
    supports_nulls_order = False  # MySQL has no NULLS FIRST / LAST: emulated
    text_allows_nul = True
    upsert_reports_counts = False  # affected rows mix inserts and updates: keys are counted first

    # Migrations: ALTER TABLE changes columns in place, but every DDL statement commits at once.
    alters_in_place = frozenset(
        ("add_column", "drop_column", "retype", "drop_not_null", "set_not_null", "drop_constraint")
        + ("set_default", "drop_default")
    )
    now_default = "CURRENT_TIMESTAMP(6)"  # in the session's time zone: UTC (engine_options)

    def retype_sql(self, table: str, column: str, type_sql: str, using: str, nullable: bool,
                   default: str | None) -> str:  # fmt: skip
        return _modify(table, column, type_sql, nullable, default)

    def nullability_sql(self, table: str, column: str, type_sql: str, nullable: bool,
                        default: str | None) -> str:  # fmt: skip
        return _modify(table, column, type_sql, nullable, default)

    def drop_constraint_sql(self, table: str, name: str) -> str:
        return f"ALTER TABLE {table} DROP INDEX {name}"  # a UNIQUE constraint is its index

    def drop_index_sql(self, table: str, name: str) -> str:
        return f"DROP INDEX {name} ON {table}"

    def index_column_sql(self, column: str, type_sql: str, *, unique: bool) -> str:
        text = not unique and "TEXT" in type_sql.upper()  # a UNIQUE one is a hash of the whole value
        return f"{column}({KEY_TEXT_LENGTH})" if text else column

    def update_from_sql(self, table: str, columns: Sequence[str], source: str, match: str) -> str:
        sets = ", ".join(f"{table}.{c} = b.{c}" for c in columns)
        return f"UPDATE {table} JOIN {source} b ON {match} SET {sets}"

    def ddl_lock_sql(self, table_name: str) -> str | None:
        # A named lock of the session, which MySQL keeps past COMMIT: the connection releases it
        # when its transaction ends (MySQLConnection), so it is held for one transaction, as
        # PostgreSQL's advisory transaction lock is. Refused after 60 s: "lock wait timeout".
        return f"SELECT GET_LOCK({literal('dataflow_lab:' + table_name)}, 60)"

    @classmethod
    def transient_reason(cls, error: BaseException) -> str | None:
        module = type(error).__module__ or ""
        if not module.startswith("asyncmy"):
            return None
        code = errno(error)
        if code in _TRANSIENT_ERRNOS:
            return _TRANSIENT_ERRNOS[code]
        return None

    def commit_never_sent(self, error: BaseException) -> bool:
        return type(error).__name__ == "InterfaceError" and "not connected" in str(error).lower()

    def placeholder(self, index: int) -> str:
        return "%s"

    def placeholders(self, n: int, *, start: int = 0) -> str:
        return "(" + ", ".join(["%s"] * n) + ")"

    def multirow_insert_sql(self, table: sa.Table, columns: Sequence[str], n_rows: int) -> str:
        quote = self.sa_dialect.identifier_preparer.quote
        row = self.placeholders(len(columns))
        values = ", ".join([row] * n_rows)
        return f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) VALUES {values}"

    # -- filters -----------------------------------------------------------
    def ilike(self, column: sa.ColumnElement, pattern: sa.ColumnElement) -> sa.ColumnElement:
        return sa.func.lower(column).like(sa.func.lower(pattern), escape="\\")

    def regex(self, column: sa.ColumnElement, pattern: sa.ColumnElement) -> sa.ColumnElement:
        return column.regexp_match(pattern)

    def bucket(self, unit: str, column: sa.ColumnElement, logical: str) -> sa.ColumnElement:
        day = sa.func.date(column, type_=sa.Date)
        if unit == "week":  # back to Monday (WEEKDAY: Monday is 0)
            return sa.func.subdate(day, sa.func.weekday(column), type_=sa.Date)
        if unit == "month":
            return sa.func.subdate(day, sa.func.dayofmonth(column) - sa.literal_column("1"), type_=sa.Date)
        if unit == "year":
            return sa.func.makedate(sa.func.year(column), sa.literal_column("1"), type_=sa.Date)
        return day

    def aggregate(self, function: str, column: sa.ColumnElement | None, logical: str) -> sa.ColumnElement:
        if function == "avg" and column is not None:  # AVG is DECIMAL here; times 1e0 makes it DOUBLE
            value = sa.cast(column, sa.Integer) if logical == "boolean" else column
            return sa.type_coerce(sa.func.avg(value) * sa.literal_column("1e0"), sa.Double)
        return super().aggregate(function, column, logical)

    def insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects.mysql import insert

        return insert(table)

    def insert_or_nothing(self, insert: Any, conflict_on: Sequence[str]) -> Any:
        """A plain INSERT, marked: the connection reads its duplicate-key error as no row inserted."""
        return insert.prefix_with(OR_NOTHING[len("INSERT ") :])

    def on_conflict_sql(
        self,
        table: sa.Table,
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> str:
        """``ON DUPLICATE KEY UPDATE``: a guard keeps each column as it was unless the guard matches.

        The guard is tested in every assignment before any of them changes a guarded column
        (the guard's columns are never among those updated).
        """
        quote = self.sa_dialect.identifier_preparer.quote
        if not update_columns:  # DO NOTHING: assign the key to itself
            first = quote(conflict_on[0])
            return f"ON DUPLICATE KEY UPDATE {first} = {first}"
        matches = " AND ".join(f"{quote(c)} <=> VALUES({quote(c)})" for c in guard)
        sets = []
        for c in update_columns:
            col = quote(c)
            new = f"{col} + 1" if table.c[c].info.get("counter") else f"VALUES({col})"
            sets.append(f"{col} = IF({matches}, {new}, {col})" if matches else f"{col} = {new}")
        return "ON DUPLICATE KEY UPDATE " + ", ".join(sets)

    def upsert_statement(
        self,
        table: sa.Table,
        columns: Sequence[str],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> Any:
        stmt = self.insert(table).values({c: sa.bindparam(c) for c in columns})
        if not update_columns:
            first = conflict_on[0]
            return stmt.on_duplicate_key_update({first: table.c[first]})
        sets = {}
        for c in update_columns:
            new = table.c[c] + 1 if table.c[c].info.get("counter") else stmt.inserted[c]
            if guard:
                matches = sa.and_(*(table.c[g].is_not_distinct_from(stmt.inserted[g]) for g in guard))
                new = sa.case((matches, new), else_=table.c[c])
            sets[c] = new
        return stmt.on_duplicate_key_update(sets)

    def bulk_batch_size(self, n_columns: int) -> int:
        return max(1, min(50_000, 4 * self.max_bind_params // max(1, n_columns)))

    _packet: int | None = None  # the server's max_allowed_packet, asked at the first bulk write

    async def statement_bytes(self, conn: Connection) -> int:
        """The most SQL text one multi-row INSERT carries: half the server's max_allowed_packet,
        1 MB at most, and a quarter of the bulk memory budget (the text is held twice: as str and
        as the bytes sent)."""
        if self._packet is None:
            self._packet = int((await conn.fetch("SELECT @@max_allowed_packet"))[0][0])
        return int(min(STATEMENT_BYTES, self._packet / 2, self.config.bulk_memory_mb * 2**20 / 4))

    async def bulk_insert(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Multi-row INSERTs, each within the bind limit and ``statement_bytes``."""
        size = await self.statement_bytes(conn)
        for part in statements(rows, len(columns), self.max_bind_params, size):
            sql = self.multirow_insert_sql(table, columns, len(part))
            await conn.execute(sql, [v for row in part for v in row])

    async def bulk_upsert(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> tuple[int, int] | None:
        """Multi-row INSERT ... ON DUPLICATE KEY UPDATE; the caller counts the existing keys first
        (MySQL's affected rows, 1 per insert and 2 per changed update, 0 or 1 per unchanged one
        depending on a client flag, cannot tell them apart)."""
        tail = " " + self.on_conflict_sql(table, conflict_on, update_columns, guard)
        size = await self.statement_bytes(conn)
        for part in statements(rows, len(columns), self.max_bind_params, size):
            sql = self.multirow_insert_sql(table, columns, len(part)) + tail
            await conn.execute(sql, [v for row in part for v in row])
        return None
