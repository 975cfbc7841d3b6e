"""SQLite through sqlite3, on the runtime's loop thread: STRICT tables, one writer, executemany for bulk.

Facts:
- STRICT tables accept only INTEGER, REAL, TEXT, BLOB and ANY, so booleans are
  stored as INTEGER and dates, decimals, UUIDs and JSON as TEXT; the model
  layer converts them back. STRICT makes SQLite refuse "abc" in an INTEGER
  column instead of storing it.
- SQLite has one writer at a time, so this dialect serializes transactions.
- The zero-config database is in memory, on one connection that every
  workflow of the DataFlow shares (StaticPool); two DataFlows never share it.
- Decimals are stored as TEXT, and compared and sorted exactly through
  ``dataflow_decimal_key``, a function registered on each connection that maps
  a decimal's text to bytes in numeric order (``sqlite_functions.decimal_key``).
- ``case_sensitive_like`` is on, so $like matches case like the other databases;
  $ilike folds case through ``dataflow_lower``, a registered Unicode lower()
  (SQLite's own folds only ASCII), the simple mapping PostgreSQL and DuckDB use.
- The driver runs in autocommit mode and dataflow_lab issues BEGIN itself, so
  DDL and reads are inside the transaction too.
- The result cache sees other processes' writes to a file through ``PRAGMA data_version``
  (``change_feed.DataVersionFeed``); an in-memory database is this process's alone.
- Statements run on the runtime's loop thread, through sqlite3 itself, not on a
  driver thread (aiosqlite): four thread hand-offs were most of a Create's time.
  See SQLiteConnection (``dialects.sqlite_connection``) for how lock waits, time limits and
  long statements go.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa

from .change_feed import DataVersionFeed
from .connection import Connection, DuckAttachment
from .pooled import PooledDialect
from .sqlite_connection import SQLiteConnection
from .sqlite_functions import DECIMAL_AGGREGATES, decimal_out, register_functions

MAX_BIND_PARAMS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


def _enum_text(member: Any) -> str:
    return str(member.value)


# the date a bucket starts on, from an ISO 8601 text (SQLite's date() reads its UTC offset)
_BUCKET_MODIFIERS: dict[str, tuple[str, ...]] = {"day": (), "week": ("weekday 0", "-6 days"), "month": ("start of month",),
                     "year": ("start of year",)}  # fmt: skip


class SQLiteDialect(PooledDialect):
    name = "sqlite"
    serialized = True
    runs_on_any_thread = (
        True  # its statements are calls (SQLiteConnection): a run may stay on its caller's thread
    )
    adds_decimals_exactly = False  # Decimals are stored as text (see above)
    change_feed = DataVersionFeed  # a file's PRAGMA data_version, for the result cache
    warm_modules = ("sqlalchemy.dialects.sqlite.pysqlite",)
    max_bind_params = MAX_BIND_PARAMS
    storage = {
        "text": sa.Text,
        "integer": sa.Integer,
        "float": sa.REAL,
        "boolean": sa.Integer,
        "datetime": sa.Text,
        "date": sa.Text,
        "decimal": sa.Text,
        "bytes": sa.LargeBinary,
        "uuid": sa.Text,
        "enum": sa.Text,
        "json": sa.Text,
    }
    to_db = {
        "datetime": dt.datetime.isoformat,
        "date": dt.date.isoformat,
        "decimal": str,
        "uuid": str,
        "enum": _enum_text,
        "json": json.dumps,
    }
    from_db = {
        "float": float,  # RETURNING hands back REAL 2.0 as the integer 2
        "boolean": bool,
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "decimal": decimal_out,
        "uuid": uuid.UUID,
        "json": json.loads,
    }

    def _sa_dialect(self) -> sa.engine.Dialect:
        from sqlalchemy.dialects.sqlite.pysqlite import dialect

        return dialect()

    @property
    def single_connection(self) -> bool:
        return self.in_memory

    @functools.cached_property
    def in_memory(self) -> bool:  # asked at every checkout: the URL is parsed once
        path = self.path
        query = sa.engine.make_url(self.url).query
        return path in ("", ":memory:") or "mode=memory" in path or query.get("mode") == "memory"

    def process_local(self) -> bool:
        return self.in_memory

    def starts_empty(self) -> bool:
        # Not a shared-cache "mode=memory" database: another DataFlow of the process reaches that one.
        return self.path in ("", ":memory:")

    async def attach_to_duckdb(self, directory: str) -> DuckAttachment:
        if not self.in_memory:
            if not os.path.exists(self.path):  # no table yet: SQLite makes the file at first use,
                sqlite3.connect(self.path).close()  # and DuckDB cannot attach a file that is not there
            return DuckAttachment("sqlite", self.path, None)
        # Another process's (DuckDB's) view of an in-memory database: a consistent copy, per query.
        snapshot = os.path.join(directory, "snapshot.sqlite")
        target = sqlite3.connect(snapshot)
        conn = await self.acquire()
        try:
            cast("SQLiteConnection", conn).raw.backup(target)
        finally:
            await self.release(conn)
            target.close()
        return DuckAttachment("sqlite", snapshot, None)

    # Migrations: ALTER TABLE only adds a column (nullable or defaulted, SQLite's own rule), and
    # that DEFAULT stays the column's for good; a rebuild defers foreign keys to its end.
    hex_sql = "CASE WHEN {0} IS NULL THEN NULL ELSE hex({0}) END"  # SQLite's hex(NULL) is ''
    alters_in_place = frozenset({"add_column"})
    added_column_keeps_default = True
    # ISO 8601 text in UTC, as dt.datetime.isoformat writes ours, with six digits after the second:
    # SQLite's clock has millisecond resolution, so the last three are zeros. An expression in
    # parentheses, which ALTER TABLE ... ADD COLUMN refuses (such a column is added by a rebuild).
    now_default = "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000+00:00')"
    rebuild_preamble = ("PRAGMA defer_foreign_keys = ON",)

    @classmethod
    def transient_reason(cls, error: BaseException) -> str | None:
        if isinstance(error, sqlite3.OperationalError) and "locked" in str(error).lower():
            return "database locked"
        return None

    @functools.cached_property
    def path(self) -> str:
        return sa.engine.make_url(self.url).database or ":memory:"

    def engine_url(self) -> str:
        # The query goes too: ``file:name?mode=memory&cache=shared&uri=true`` is a URI filename
        # (uri=true), and without its mode it would open, or make, a file of that name on disk.
        url = sa.engine.make_url(self.url).set(drivername="sqlite+pysqlite", database=self.path)
        return url.render_as_string(hide_password=False)

    @property
    def busy_timeout(self) -> float:
        """Seconds a statement waits for another writer's lock (asynchronously, see SQLiteConnection)."""
        return self.config.statement_timeout or 30.0

    def engine_options(self) -> dict[str, Any]:
        from sqlalchemy.pool import StaticPool

        # No busy timeout in sqlite3 (its wait would block the loop thread: SQLiteConnection waits);
        # used from the loop thread, and from a worker thread for long statements, one at a time.
        # No reset on return: a connection comes back outside a transaction, or release() ends it.
        options: dict[str, Any] = {
            "connect_args": {"timeout": 0, "check_same_thread": False},
            "pool_reset_on_return": None,
        }
        if self.in_memory:
            options["poolclass"] = StaticPool
        else:
            options.update(
                pool_size=self.config.pool_size,
                max_overflow=self.config.max_overflow,
                pool_timeout=self.config.pool_timeout,
                pool_recycle=self.config.pool_recycle,
                pool_pre_ping=self.config.pool_pre_ping,
            )
        return options

    def _install_events(self, sync_engine: sa.engine.Engine) -> None:
        file_backed = not self.in_memory

        @sa.event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(
                "PRAGMA case_sensitive_like=ON"
            )  # $like is case-sensitive everywhere; $ilike is not
            if file_backed:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
            register_functions(dbapi_connection)  # dataflow_decimal_key, dataflow_lower...

    def busy_at_connect(self, error: BaseException) -> bool:
        # A connection's first statements (PRAGMA journal_mode=WAL when the file is new) can meet
        # SQLITE_BUSY without SQLite calling the busy handler, while another connection converts the
        # file to WAL or holds the write lock: the next attempt a moment later succeeds.
        text = str(error)
        return "database is locked" in text or "database is busy" in text

    def wrap(self, driver_connection: Any) -> Connection:
        return SQLiteConnection(driver_connection, self.busy_timeout)

    # The pool: SQLAlchemy's, of its sync engine (sqlite3), driven from the loop thread. A checkout
    # and a return are calls, not thread hand-offs; a full pool is waited for here, with asyncio.
    def _create_engine(self) -> Any:
        return sa.create_engine(self.engine_url(), **self.engine_options())

    async def _pool_connect(self) -> Any:
        assert self.engine is not None, "prepare() made the engine"
        if not self.in_memory and self.config.max_overflow >= 0:
            most = self.config.pool_size + self.config.max_overflow
            deadline = time.monotonic() + (self.config.pool_timeout or 30.0)
            pool: Any = self.engine.pool  # a QueuePool
            while pool.checkedout() >= most:  # its own wait would block the loop thread
                if time.monotonic() >= deadline:
                    raise sa.exc.TimeoutError("the pool is full")
                await asyncio.sleep(0.005)
        return self.engine.raw_connection()

    async def _driver_connection(self, handle: Any) -> Any:
        return handle.driver_connection

    async def _pool_return(self, handle: Any, *, invalidate: bool = False) -> None:
        if invalidate:
            handle.invalidate()
        else:
            handle.close()

    async def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    def id_column(self, table_name: str, logical: str) -> sa.Column:
        return sa.Column(
            "id", sa.Integer if logical == "integer" else sa.Text, primary_key=True
        )  # uuid: text

    supports_nulls_order = sqlite3.sqlite_version_info >= (3, 30)  # older SQLite: emulated

    def table_kwargs(self) -> dict[str, Any]:
        return {"sqlite_autoincrement": True, "sqlite_strict": sqlite3.sqlite_version_info >= (3, 37)}

    upsert_reports_counts = True

    def bulk_batch_size(self, n_columns: int) -> int:
        """executemany binds row by row, so no bind limit applies: a chunk is what the memory
        budget allows, at most 50,000 rows (was the bind limit, 6,553 rows of 5 columns)."""
        return 50_000

    # A model with encrypted fields keeps the old chunk: sealing holds each chunk's ids, plaintexts and
    # ciphertexts at once, and with column-wise sealing 50,000-row chunks were no faster (100k rows,
    # 3 interleaved runs: 0.48-0.66x of plain against 0.48-0.66x) and held 1.8x the memory.
    sealed_chunk_rows = 5_000

    async def bulk_upsert(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> tuple[int, int]:
        """executemany of INSERT ... ON CONFLICT; new rows are those past the old max(rowid).

        Exact because this connection holds SQLite's write lock (BEGIN IMMEDIATE), and an
        update never changes a row's rowid.
        """
        quote = self.sa_dialect.identifier_preparer.quote
        if "id" in columns and isinstance(table.c.id.type, sa.Integer):
            # Explicit integer ids are the rowid: a new row may land below the old max. Count keys instead.
            ids = json.dumps([row[columns.index("id")] for row in rows])
            sql = f"SELECT count(*) FROM {quote(table.name)} WHERE id IN (SELECT value FROM json_each(?))"
            existing = int((await conn.fetch(sql, (ids,)))[0][0])
            await super().bulk_upsert(conn, table, columns, rows, conflict_on, update_columns, guard)
            return len(rows) - existing, existing
        before = (await conn.fetch(f"SELECT coalesce(max(rowid), 0) FROM {quote(table.name)}"))[0][0]
        await super().bulk_upsert(conn, table, columns, rows, conflict_on, update_columns, guard)
        count = await conn.fetch(f"SELECT count(*) FROM {quote(table.name)} WHERE rowid > ?", (before,))
        inserted = int(count[0][0])
        return inserted, len(rows) - inserted

    def in_array(self, column: sa.ColumnElement, values: list[Any]) -> sa.ColumnElement:
        if any(isinstance(v, bytes) or (isinstance(v, str) and "\x00" in v) for v in values):
            # JSON cannot carry these faithfully through json_each: bind them one by one, in groups
            return sa.or_(*[column.in_(values[i : i + 500]) for i in range(0, len(values), 500)])
        each = sa.func.json_each(sa.bindparam(None, json.dumps(values))).table_valued("value")
        return column.in_(sa.select(each.c.value))

    def rows_table(self, name: str, columns: Sequence[sa.ColumnClause], rows: list[tuple[Any, ...]]) -> Any:
        # SQLite's VALUES takes no column names: the rows are one JSON parameter, read by json_each
        each = sa.func.json_each(sa.bindparam(None, json.dumps(rows))).table_valued("value")
        picked = [
            sa.func.json_extract(each.c.value, f"$[{i}]", type_=c.type).label(c.name)
            for i, c in enumerate(columns)
        ]
        return sa.select(*picked).subquery(name)

    def comparable(self, expr: sa.ColumnElement, logical: str) -> sa.ColumnElement:
        # Decimals are stored as exact TEXT; compare and sort them exactly, as numbers.
        return sa.func.dataflow_decimal_key(expr, type_=sa.LargeBinary) if logical == "decimal" else expr

    def bucket(self, unit: str, column: sa.ColumnElement, logical: str) -> sa.ColumnElement:
        modifiers: list[Any] = [sa.literal_column(f"'{m}'") for m in _BUCKET_MODIFIERS[unit]]
        return sa.func.date(column, *modifiers, type_=sa.Text)

    def aggregate(self, function: str, column: sa.ColumnElement | None, logical: str) -> sa.ColumnElement:
        if logical == "decimal" and function in DECIMAL_AGGREGATES and column is not None:
            kind = sa.Double if function == "avg" else sa.Text
            return getattr(sa.func, f"dataflow_decimal_{function}")(column, type_=kind)
        return super().aggregate(function, column, logical)

    def decimal_type(self, model: str, field: str, digits: tuple[int, int] | None) -> sa.types.TypeEngine:
        return sa.Text()  # the declared digits are enforced by the field's check

    def ilike(self, column: sa.ColumnElement, pattern: sa.ColumnElement) -> sa.ColumnElement:
        folded = sa.func.dataflow_lower(pattern, type_=sa.Text)
        return sa.func.dataflow_lower(column, type_=sa.Text).like(folded, escape="\\")

    def insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)
