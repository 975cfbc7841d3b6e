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
  taking a GET_LOCK lock, backing up what a destructive step drops, and writing the history row
  after the last statement: a migration that failed part-way is planned again from the live
  table, so only what is left is applied (see ``migrations.engine``).
- Upsert is ``INSERT ... ON DUPLICATE KEY UPDATE``; bulk inserts are multi-row INSERTs.
- Deadlocks (1213) and lock wait timeouts (1205) are transient: the runtime retries them.
- The server is asked at the first connection: MariaDB runs INSERT and DELETE ... RETURNING
  itself; on MySQL 8 they are made of what it has (mysql_returning), and its collation is
  ``utf8mb4_0900_bin`` (NO PAD too: MySQL 8 has no ``utf8mb4_nopad_bin``).
- Two-phase commit is XA; recovery reads XA RECOVER (``mysql_xa.py``).

Types and converters are in ``mysql_types``, bulk writes in ``mysql_bulk``, the connection in
``mysql_connection``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .connection import Connection
from .mysql_bulk import (
    STATEMENT_BYTES,
    flat,
    id_steps,
    inserted_ids,
    on_conflict_sql,
    statements,
    upsert_statement,
)
from .mysql_connection import OR_NOTHING, MySQLConnection, errno, literal
from .mysql_types import (
    FROM_DB,
    KEY_TEXT_LENGTH,
    STORAGE,
    TO_DB,
    UNDECLARED_SCALE,
    decimal_type,
    is_text,
    mysql_type,
)
from .mysql_xa import MySQLTwoPhase, recover_allowed
from .pooled import PooledDialect

__all__ = ["MySQLDialect", "mysql_type", "server_returns", "statements"]

# MySQL's error numbers worth retrying: the whole transaction again
_TRANSIENT_ERRNOS = {
    1213: "deadlock", 1205: "lock wait timeout",
    2006: "connection lost", 2013: "connection lost", 2003: "cannot connect", 2002: "cannot connect",
    1927: "connection lost", 1053: "server shut down", 4031: "connection lost",
}  # fmt: skip

SQL_MODE = "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
COLLATION = "utf8mb4_nopad_bin"  # MariaDB's; MySQL 8's is MYSQL_COLLATION (both binary, NO PAD)
MYSQL_COLLATION = "utf8mb4_0900_bin"
_LIMIT = re.compile(r"LIMIT %s(?:\s*,\s*%s)?(?:\s+OFFSET %s)?")  # EXPLAIN's LIMIT takes no NULL
_MARIADB = re.compile(r"(\d+)\.(\d+)\.\d+-MariaDB")


def server_returns(version: str) -> bool:
    """Whether a server of this version string runs INSERT ... RETURNING: MariaDB 10.5 and later."""
    found = _MARIADB.search(version)  # MariaDB 10 says '5.5.5-10.11.6-MariaDB-0+deb12u1'
    return found is not None and (int(found[1]), int(found[2])) >= (10, 5)


def _modify(table: str, column: str, type_sql: str, nullable: bool, default: str | None) -> str:
    """MODIFY COLUMN restates the whole column: its type, NULL or NOT NULL, and its DEFAULT."""
    tail = (" NULL" if nullable else " NOT NULL") + (f" DEFAULT {default}" if default is not None else "")
    return f"ALTER TABLE {table} MODIFY COLUMN {column} {type_sql}{tail}"


class MySQLDialect(PooledDialect):
    name = "mysql"
    max_bind_params = 65535
    warm_modules = ("asyncmy", "sqlalchemy.dialects.mysql.asyncmy")
    storage = STORAGE
    to_db = TO_DB
    from_db = FROM_DB
    returns: bool | None = None  # the server runs INSERT/DELETE ... RETURNING: asked at its first connection
    collation = COLLATION  # the tables' and the connections' (MySQL 8: MYSQL_COLLATION), asked likewise

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
            "NAMES utf8mb4",
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
            self._know_server(dbapi_connection.driver_connection.get_server_info())
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET NAMES utf8mb4 COLLATE {self.collation}")
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

    def _know_server(self, version: str) -> None:
        """MariaDB or MySQL, from the first connection's version string (a test may have decided)."""
        if self.returns is None:
            self.returns = server_returns(version)
        if "MariaDB" not in version:
            self.collation = MYSQL_COLLATION

    def ddl(self, element: sa.schema.ExecutableDDLElement) -> str:
        text = super().ddl(element)
        return text if self.collation == COLLATION else text.replace(COLLATION, self.collation)

    def wrap(self, driver_connection: Any) -> Connection:
        return MySQLConnection(driver_connection, self._kill, returns=self.returns is not False)

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
        return sa.String(KEY_TEXT_LENGTH) if is_text(kind) else kind

    def index_options(self, columns: Sequence[sa.Column]) -> dict[str, Any]:
        """An index on TEXT covers its first 255 characters (a lookup reads the rest from the row)."""
        lengths = {c.name: KEY_TEXT_LENGTH for c in columns if is_text(c.type)}
        return {"mysql_length": lengths} if lengths else {}

    def table_kwargs(self) -> dict[str, Any]:
        return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": COLLATION}  # (see ddl)

    def decimal_type(self, model: str, field: str, digits: tuple[int, int] | None) -> sa.types.TypeEngine:
        return decimal_type(model, field, digits)

    def decimal_bounds(self, digits: tuple[int, int] | None) -> tuple[int, int] | None:
        return digits or (38, UNDECLARED_SCALE)

    def declared_type(self, column: sa.Column) -> str:
        return mysql_type(column.type.compile(dialect=self.sa_dialect))

    supports_two_phase = True  # XA START/END/PREPARE/COMMIT, XA RECOVER (mysql_xa.py)
    two_phase_sql = MySQLTwoPhase()

    async def two_phase_enabled(self, conn: Connection) -> bool:
        return await recover_allowed(conn)  # MySQL 8: XA RECOVER needs XA_RECOVER_ADMIN

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

    retype_converts = False  # MODIFY converts by MySQL's own rules: an UPDATE converts first (ops.py)

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

    def rows_table(self, name: str, columns: Sequence[sa.ColumnClause], rows: list[tuple[Any, ...]]) -> Any:
        # MariaDB takes no column names after a VALUES derived table: one SELECT per row, UNION ALL
        selects = [
            sa.select(*(sa.literal(v, c.type).label(c.name) for c, v in zip(columns, row, strict=True)))
            for row in rows
        ]
        return (sa.union_all(*selects) if len(selects) > 1 else selects[0]).subquery(name)

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
        quote = self.sa_dialect.identifier_preparer.quote
        return on_conflict_sql(quote, table, conflict_on, update_columns, guard)

    def upsert_statement(
        self,
        table: sa.Table,
        columns: Sequence[str],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> Any:
        insert = self.insert(table).values({c: sa.bindparam(c) for c in columns})
        return upsert_statement(insert, table, conflict_on, update_columns, guard)

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
            await conn.execute(sql, flat(part))

    _id_step: int | None = 0  # ids of one multi-row INSERT are this far apart (None: maybe not)

    async def bulk_insert_returning_ids(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[Any]:
        """Multi-row INSERTs sized as ``bulk_insert``'s; the new ids (mysql_bulk.inserted_ids)."""
        returning = self.returns is not False
        if not returning and self._id_step == 0:
            self._id_step = await id_steps(conn)
        parts = statements(rows, len(columns), self.max_bind_params, await self.statement_bytes(conn))
        return await inserted_ids(conn, lambda n: self.multirow_insert_sql(table, columns, n), parts,
                                  returning=returning, step=self._id_step)  # fmt: skip

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
            await conn.execute(sql, flat(part))
        return None
