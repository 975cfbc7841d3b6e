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
  a decimal's text to bytes in numeric order (``_decimal_key``).
- ``case_sensitive_like`` is on, so $like matches case like the other databases;
  $ilike folds case through ``dataflow_lower``, a registered Unicode lower()
  (SQLite's own folds only ASCII), the simple mapping PostgreSQL and DuckDB use.
- The driver runs in autocommit mode and dataflow_lab issues BEGIN itself, so
  DDL and reads are inside the transaction too.
- The result cache sees other processes' writes to a file through ``PRAGMA data_version``
  (``change_feed.DataVersionFeed``); an in-memory database is this process's alone.
- Statements run on the runtime's loop thread, through sqlite3 itself, not on a
  driver thread (aiosqlite): four thread hand-offs were most of a Create's time.
  See SQLiteConnection for how lock waits, time limits and long statements go.
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
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar, cast

import sqlalchemy as sa

from ..deadlines import passed
from ..errors import TransactionError
from ..sqltext import writes
from .change_feed import DataVersionFeed
from .connection import Connection, DuckAttachment, QueryResult
from .pooled import PooledDialect

T = TypeVar("T")

MAX_BIND_PARAMS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


# Every this many SQLite VM steps an inline statement asks whether its task's deadline has passed.
_PROGRESS_STEPS = 2000


def _unhex(text: Any) -> bytes | None:
    """SQLite 3.41's unhex(), for older SQLite: hex text -> bytes (NULL for NULL or bad hex)."""
    try:
        return None if text is None else bytes.fromhex(str(text))
    except ValueError:
        return None


def _busy(error: sqlite3.OperationalError) -> bool:
    text = str(error)
    return "database is locked" in text or "database is busy" in text


class SQLiteConnection(Connection):
    """A sqlite3 connection, driven from the runtime's loop thread.

    A statement of a node (``fetch``, ``execute``), BEGIN, COMMIT and savepoints run inline,
    on the loop thread: they are short and SQLite has no network to wait on, and a thread
    hand-off each would cost more than the statement. Their waits never block the loop:
    the connection has no busy timeout, and a statement that finds the database locked is
    tried again after an asyncio sleep, until ``busy_timeout`` seconds have passed. A run's
    time limit stops an inline statement too: a progress handler asks, every few thousand
    SQLite steps, whether the running task's deadline has passed, and interrupts it.
    Long work (``executemany``, a user's SQL) runs on a worker thread, interrupted when
    cancelled, as before.
    """

    __slots__ = ("raw", "busy_timeout", "_inline", "_alone")

    def __init__(self, raw: sqlite3.Connection, busy_timeout: float = 30.0):
        self.raw = raw
        self.busy_timeout = busy_timeout
        self._inline: asyncio.Task | None = None  # the task whose statement runs inline now
        self._alone: str | None = None  # "armed", then "committed": its one statement commits alone
        raw.set_progress_handler(self._progress, _PROGRESS_STEPS)

    def commit_alone(self) -> bool:
        """The next statement runs outside a transaction, which SQLite commits as it ends: its outcome
        is always known here (it runs inline; a time limit interrupts it, which undoes it, or it
        completes first, and the run keeps it). After it, reads only (Connection.commit_alone)."""
        self._alone = "armed"
        return True

    @property
    def committed_alone(self) -> bool:
        return self._alone == "committed"

    def _alone_takes(self, sql: str) -> None:
        """Before a statement on a connection armed by commit_alone: the first goes; then reads only."""
        if self._alone == "armed":
            return
        if writes(sql):
            raise TransactionError(
                "A second write on a SQLite connection whose run commits its one statement alone: it "
                "would not be in one transaction with the first.",
                hint="this is a bug in dataflow_lab (a node that declared one statement sent more); "
                "please report it. Nothing of this statement was sent.",
            )

    def _progress(self) -> int:
        task = self._inline
        return 1 if task is not None and passed(task.get_loop(), task) else 0

    async def _call(self, fn: Callable[[], T], *, inline: bool = True) -> T:
        """``fn()``: inline or on a worker thread; tried again, after a sleep, while the database is locked."""
        delay, deadline = 0.001, None
        while True:
            try:
                if not inline:
                    return await self._threaded(fn)
                self._inline = asyncio.current_task()
                try:
                    return fn()
                finally:
                    self._inline = None
            except sqlite3.OperationalError as exc:
                if inline and str(exc) == "interrupted":  # the progress handler: the deadline's timer
                    for _ in range(3):  # fires now, and cancels this task at one of these awaits
                        await asyncio.sleep(0)
                    raise
                if not _busy(exc):
                    raise
                now = time.monotonic()
                deadline = now + self.busy_timeout if deadline is None else deadline
                if now >= deadline:
                    raise
                await asyncio.sleep(min(delay, deadline - now))
                delay = min(delay * 2, 0.05)

    async def _threaded(self, fn: Callable[[], T]) -> T:
        future = asyncio.get_running_loop().run_in_executor(None, fn)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self.raw.interrupt()  # thread-safe: the statement stops, and the ROLLBACK after it waits for that
            await asyncio.wait([future])
            raise

    async def begin(self, isolation: str | None = None) -> None:
        # SQLite transactions are serializable whatever level is asked for.
        # IMMEDIATE takes the write lock now (waiting, as above, for other writers); a deferred
        # BEGIN would fail at once with "database is locked" when its first write finds one.
        await self._call(lambda: self.raw.execute("BEGIN IMMEDIATE"))

    async def commit(self) -> None:
        await self._call(lambda: self.raw.execute("COMMIT"))

    async def rollback(self) -> None:
        if self.raw.in_transaction:
            self.raw.execute("ROLLBACK")  # never waits for a lock

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.in_transaction)

    async def _sent(
        self, sql: str, params: Sequence[Any] | None, fn: Callable[[], T], *, inline: bool = True
    ) -> T:
        """``fn()`` sends one statement: noted (echo, counts) and timed (the slow-statement log)."""
        if self.note is not None:
            self.note(sql, params)
        started = time.perf_counter()
        try:
            result = await self._call(fn, inline=inline)
        except BaseException as exc:
            self.took(sql, started, params, exc)
            raise
        self.took(sql, started, params)
        return result

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        if self._alone is not None:
            return await self._sent_alone(sql, params, lambda: self.raw.execute(sql, params).fetchall())
        return await self._sent(sql, params, lambda: self.raw.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if self._alone is not None:
            return await self._sent_alone(sql, params, lambda: self.raw.execute(sql, params).rowcount)
        return await self._sent(sql, params, lambda: self.raw.execute(sql, params).rowcount)

    async def _sent_alone(self, sql: str, params: Sequence[Any], fn: Callable[[], T]) -> T:
        self._alone_takes(sql)
        result = await self._sent(sql, params, fn)
        self._alone = "committed"  # (a statement SQLite refused, or interrupted, left nothing)
        return result

    async def query(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        def run() -> QueryResult:
            cursor = self.raw.execute(sql, params)
            try:
                rows = [tuple(r) for r in cursor.fetchall()]
                return QueryResult([d[0] for d in cursor.description or ()], rows, cursor.rowcount)
            finally:
                cursor.close()

        if self.note is not None:
            self.note(sql, params)
        return await self._call(run, inline=False)  # a user's query may run long: not on the loop

    async def query_read_only(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        # query_only: SQLite itself refuses any write on this connection until it is turned off.
        self.raw.execute("PRAGMA query_only = ON")
        try:
            return await self.query(sql, params)
        finally:
            self.raw.execute("PRAGMA query_only = OFF")

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._sent(sql, None, lambda: self.raw.executemany(sql, rows).close(), inline=False)

    async def interrupt(self) -> None:
        """Stop the statement running on a worker thread (a time limit, Ctrl-C)."""
        self.raw.interrupt()


def _enum_text(member: Any) -> str:
    return str(member.value)


def _decimal_key(text: Any) -> Any:
    """A decimal's text -> bytes whose byte order is the numbers' order, equal for equal numbers.

    Layout: a sign byte (negative < zero < positive), then for the magnitude the
    exponent of its first digit (8 bytes, offset so that byte order is numeric
    order) and its digits without leading or trailing zeros. A negative's magnitude
    bytes are complemented, and end in 0xFF so that a longer magnitude sorts first.
    Text that is not a finite decimal comes back unchanged (SQLite sorts text before bytes).
    Integers and reals (a reflected NUMERIC column's) get the key of the number they print as.
    """
    if isinstance(text, int | float):  # a NUMERIC column of a table made elsewhere holds numbers
        text = repr(text)
    if not isinstance(text, str):
        return text
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("+-").partition(".")
    if not (whole + fraction).isdigit() or not whole.isascii() or not fraction.isascii():
        return _exotic_key(text)  # an exponent (1E+3), spaces, or not a number
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return b"\x02"
    first = len(whole.lstrip("0")) - 1 if whole.lstrip("0") else len(digits) - len(fraction) - 1
    body = (first + 2**63).to_bytes(8, "big") + digits.rstrip("0").encode()
    if negative:
        return b"\x01" + body.translate(_COMPLEMENT) + b"\xff"
    return b"\x03" + body


_COMPLEMENT = bytes(range(255, -1, -1))  # byte b -> 255 - b


def _exotic_key(text: str) -> Any:
    try:
        number = Decimal(text)
    except ArithmeticError:
        return text
    if not number.is_finite():
        return text
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    fixed = "".join(map(str, digits))
    if exponent >= 0:
        plain = fixed + "0" * exponent
    else:
        fixed = fixed.rjust(-exponent + 1, "0")
        plain = f"{fixed[:exponent]}.{fixed[exponent:]}"
    return _decimal_key(("-" if sign else "") + plain)


def _decimal_out(value: Any) -> Decimal:
    # A NUMERIC column of a table made elsewhere hands back REAL: take the number it prints as.
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _lower(text: Any) -> Any:
    """Unicode lower case, one character to one (the simple mapping PostgreSQL's lower() uses)."""
    if not isinstance(text, str):
        return text
    if "\u03a3" not in text and "\u0130" not in text:  # Σ and İ: str.lower() maps them by context / to two
        return text.lower()
    return "".join(ch.lower()[0] for ch in text)


class _DecimalAggregate:
    """sum / min / max / avg of Decimals stored as text, exactly (SQLite's own would read them as floats)."""

    def __init__(self) -> None:
        self.values: list[Decimal] = []

    def step(self, text: Any) -> None:
        if text is not None:
            self.values.append(_decimal_out(text))


class _DecimalSum(_DecimalAggregate):
    def finalize(self) -> str | None:
        return str(sum(self.values, Decimal(0))) if self.values else None


class _DecimalMin(_DecimalAggregate):
    def finalize(self) -> str | None:
        return str(min(self.values)) if self.values else None


class _DecimalMax(_DecimalAggregate):
    def finalize(self) -> str | None:
        return str(max(self.values)) if self.values else None


class _DecimalAvg(_DecimalAggregate):
    def finalize(self) -> float | None:
        return float(sum(self.values, Decimal(0)) / len(self.values)) if self.values else None


_DECIMAL_AGGREGATES = {"sum": _DecimalSum, "min": _DecimalMin, "max": _DecimalMax, "avg": _DecimalAvg}


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
        "decimal": _decimal_out,
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
            dbapi_connection.create_function("dataflow_decimal_key", 1, _decimal_key, deterministic=True)
            dbapi_connection.create_function("dataflow_lower", 1, _lower, deterministic=True)
            if sqlite3.sqlite_version_info < (3, 41):  # unhex() came in 3.41 (Dialect.unhex_sql)
                dbapi_connection.create_function("unhex", 1, _unhex, deterministic=True)
            for function, aggregate in _DECIMAL_AGGREGATES.items():
                dbapi_connection.create_aggregate(f"dataflow_decimal_{function}", 1, aggregate)

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
        if logical == "decimal" and function in _DECIMAL_AGGREGATES and column is not None:
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
