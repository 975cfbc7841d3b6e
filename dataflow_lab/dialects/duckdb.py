"""DuckDB through its own Python API, on one worker thread per database.

Facts:
- A DuckDB connection is not safe to share between threads, so every call
  runs on one dedicated worker thread, and transactions are serialized.
- SQL is compiled with duckdb-engine's dialect (qmark parameters).
- Ids come from a sequence: ``BIGINT DEFAULT nextval('<table>_id_seq')``.
- Bulk inserts go through a pyarrow table; DuckDB's ``executemany`` runs at
  about 2k rows/s and is never used for bulk work.
- Decimals are DECIMAL(p, s): the field's declared digits, else (38, 18). DuckDB
  rounds a value with more decimals, and binds a filter value it cannot hold as
  DOUBLE, so the field's check refuses such writes and filters rewrite such bounds
  (``decimal_bounds``); PostgreSQL and SQLite compare any Decimal exactly.
- Sessions use ``TimeZone='UTC'`` so timestamps come back in UTC.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..deadlines import earliest, interrupting
from ..errors import DataFlowError, PoolExhaustedError, ValidationError
from ..leaks import owner
from ..sqltext import writes
from ..statement_log import without_values
from ..types import DECIMAL_DEFAULT
from .arrow_columns import Same, arrow_source, by_column_of
from .base import Dialect
from .change_feed import OneProcessFeed
from .connection import Connection, QueryResult, statement_note

if TYPE_CHECKING:  # pragma: no cover
    from duckdb import DuckDBPyConnection


def _enum_text(member: Any) -> str:
    return str(member.value)


def _utc(value: dt.datetime) -> dt.datetime:
    # Sessions run with TimeZone='UTC', so only the tzinfo object differs.
    return value.replace(tzinfo=dt.UTC)


_KEYWORDS: set[str] = set()
_KEYWORDS_LOCK = threading.Lock()


def _duckdb_keywords() -> set[str]:
    # Two DataFlows made at once (one on the warm-up thread) both get here: one asks, on a connection
    # of its own (DuckDB's module-level default connection refuses a second thread's call).
    with _KEYWORDS_LOCK:
        if not _KEYWORDS:
            import duckdb

            con = duckdb.connect()
            try:
                sql = "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'"
                _KEYWORDS.update(r[0].lower() for r in con.execute(sql).fetchall())
            finally:
                con.close()
    return _KEYWORDS


# A chunk's Arrow table is read by DuckDB's replacement scan: a statement naming a table the
# catalog lacks reads the Python variable of that name in the calling function. A view made with
# ``register`` would keep its Arrow data alive until the transaction ends (unregister or not), so a
# streamed BulkCreate or BulkUpsert, one transaction, would hold every chunk it loaded. No model's
# table takes this name: names starting with _dataflow are reserved (model.check_table_name).
_ARROW_ROWS = '"_dataflow_bulk_rows"'


class DuckDBConnection(Connection):
    def __init__(self, dialect: DuckDBDialect):
        self.dialect = dialect
        self._in_tx = False

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        dialect = self.dialect
        if dialect._claimed_by == threading.get_ident():
            return await self._inline(fn, *args)
        try:
            return await dialect.run(fn, *args)
        except asyncio.CancelledError:  # a time limit, Ctrl-C: stop the statement on the worker thread,
            dialect.con.interrupt()  # or the rollback queued after it would wait for its end
            raise

    async def _inline(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A run on its caller's thread (the thread claimed the database) calls DuckDB there: a hand-off
        to the worker thread and back would cost more than a one-row statement. The run's deadline
        still stops it: the watchdog thread interrupts the statement when the deadline passes."""
        task = asyncio.current_task()
        assert task is not None, "a statement is sent inside a task"
        try:
            with interrupting(earliest(task), self.dialect.con.interrupt):
                return fn(*args)
        except Exception as exc:
            if "interrupt" in type(exc).__name__.lower() or "interrupted" in str(exc).lower():
                for _ in range(3):  # the deadline's timer fires now, and cancels this task at one of these
                    await asyncio.sleep(0)
            raise

    async def begin(self, isolation: str | None = None) -> None:
        # DuckDB runs snapshot isolation, and this dialect admits one writer at a time.
        await self._run(self.dialect.con.begin)
        self._in_tx = True

    async def commit(self) -> None:
        self._in_tx = False
        await self._run(self.dialect.con.commit)

    async def rollback(self) -> None:
        def rollback() -> None:
            try:
                self.dialect.con.rollback()
            except Exception as exc:  # no transaction is active: nothing to undo
                if "no transaction is active" not in str(exc).lower():
                    raise

        self._in_tx = False
        await self._run(rollback)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        if self.note is not None:
            self.note(sql, params)
        return await self._timed(sql, params, lambda: self.dialect.con.execute(sql, list(params)).fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if self.note is not None:
            self.note(sql, params)

        def run() -> int:
            result = self.dialect.con.execute(sql, list(params)).fetchall()
            return (
                int(result[0][0]) if result and len(result[0]) == 1 and isinstance(result[0][0], int) else -1
            )

        return await self._timed(sql, params, run)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.note is not None:
            self.note(sql, None)
        await self._timed(sql, None, lambda: self.dialect.con.executemany(sql, [list(r) for r in rows]))

    async def _timed(self, sql: str, params: Sequence[Any] | None, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            result = await self._run(fn)
        except BaseException as exc:
            self.took(sql, started, params, exc)
            raise
        self.took(sql, started, params)
        return result

    async def query(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        if self.note is not None:
            self.note(sql, params)

        def run() -> QueryResult:
            con = self.dialect.con
            kind = _statement_kinds(con, sql)
            cursor = con.execute(sql, list(params))
            columns = [d[0] for d in cursor.description or ()]
            rows = [tuple(r) for r in cursor.fetchall()]
            if kind <= _COUNTED and columns == ["Count"] and len(rows) == 1:  # a write reports its count
                return QueryResult([], [], int(rows[0][0]))
            return QueryResult(columns, rows, -1)

        return await self._run(run)

    async def query_read_only(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        # DuckDB has no read-only switch per transaction: its own parser says what the statement is.
        kinds = await self._run(lambda: _statement_kinds(self.dialect.con, sql))
        if not kinds <= _READ_KINDS or _explain_analyze_writes(sql):
            raise ValidationError(
                f"this {', '.join(sorted(kinds))} statement writes, and SQL runs read-only by default.",
                hint="pass write=True (db.sql) or --write (%%dataflow sql) to run it in a transaction.",
            )
        return await self.query(sql, params)


_READ_KINDS = frozenset({"SELECT", "EXPLAIN", "PRAGMA"})
_COUNTED = frozenset({"INSERT", "UPDATE", "DELETE"})


def _statement_kinds(con: Any, sql: str) -> frozenset[str]:
    """What DuckDB's parser says each statement of ``sql`` is: 'SELECT', 'INSERT', ..."""
    return frozenset(str(s.type).rsplit(".", 1)[-1] for s in con.extract_statements(sql))


def _explain_analyze_writes(sql: str) -> bool:
    return writes(sql) and sql.lstrip().lower().startswith("explain")


class DuckDBDialect(Dialect):
    name = "duckdb"
    serialized = True
    warm_modules = ("duckdb",)  # opening opens (and locks) the file: that stays at the first use
    change_feed = OneProcessFeed  # DataFlows of this process on one file invalidate each other's caches
    max_bind_params = 65535
    storage = {
        "text": sa.Text,
        "integer": sa.BigInteger,
        "float": sa.Double,
        "boolean": sa.Boolean,
        "datetime": lambda: sa.DateTime(timezone=True),
        "date": sa.Date,
        "decimal": sa.Text,
        "bytes": sa.LargeBinary,
        "uuid": sa.Uuid,
        "enum": sa.Text,
        "json": sa.Text,
    }
    to_db = {"enum": _enum_text, "json": json.dumps}
    from_db = {"datetime": _utc, "json": json.loads}
    max_decimal_digits = 38

    def __init__(self, config: Any, url: str):
        super().__init__(config, url)
        self._con: DuckDBPyConnection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock: asyncio.Lock | None = None
        self._claim = threading.Lock()  # see runs_on_any_thread
        self._claimed_by: int | None = None
        self._owner: tuple[str, str] | None = None  # (run id, node id) the connection is out for
        self.stats = {"waiting": 0, "acquired_total": 0, "failures": 0, "invalidated": 0}

    def _sa_dialect(self) -> sa.engine.Dialect:
        try:
            import duckdb_engine
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DataFlowError(
                "DuckDB support needs the duckdb extra.", hint="pip install 'dataflow-lab[duckdb]'"
            ) from exc
        dialect = duckdb_engine.Dialect(paramstyle="qmark")
        # duckdb-engine quotes PostgreSQL's reserved words; DuckDB reserves more (e.g. "at").
        preparer = dialect.identifier_preparer
        preparer.reserved_words = set(preparer.reserved_words) | _duckdb_keywords()
        return dialect

    @property
    def path(self) -> str:
        return sa.engine.make_url(self.url).database or ":memory:"

    def process_local(self) -> bool:
        return True  # one process opens (and locks) a DuckDB file at a time

    def starts_empty(self) -> bool:
        return self.path == ":memory:"  # each connect() to :memory: makes its own database

    # Migrations: DuckDB will not drop or retype a column an index or constraint depends on, so
    # every column change rebuilds the table.
    alters_in_place: frozenset[str] = frozenset()

    def bytes_literal(self, value: bytes) -> str:
        return "'" + "".join(f"\\x{b:02x}" for b in value) + "'::BLOB"

    @classmethod
    def transient_reason(cls, error: BaseException) -> str | None:
        if type(error).__name__ == "TransactionException" and "conflict" in str(error).lower():
            return "write conflict"
        return None

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        import duckdb

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataflow-duckdb")

        def connect() -> DuckDBPyConnection:
            con = duckdb.connect(self.path)
            con.execute("SET TimeZone='UTC'")
            return con

        self._con = await self.run(connect)

    @property
    def con(self) -> DuckDBPyConnection:
        """The database's one connection (open() makes it, dispose() closes it)."""
        assert self._con is not None, "the DuckDB dialect is open"
        return self._con

    # Its statements run on its worker thread from whichever loop awaits them, so a run may stay on
    # its caller's thread (runtime.py); the claim is held by that thread, or by the connection out
    # on the background loop, and the other one waits.
    runs_on_any_thread = True

    def claim(self) -> bool:
        if self._con is None or not self._claim.acquire(blocking=False):
            return False
        self._claimed_by = threading.get_ident()
        return True

    def unclaim(self) -> None:
        self._claimed_by = None
        self._claim.release()

    async def acquire(self) -> Connection:
        """The one connection, waited for at most ``pool_timeout`` seconds."""
        if self._claimed_by == threading.get_ident():  # a run on this thread holds the database
            return self._connection()
        if self._lock is None:
            self._lock = asyncio.Lock()
        self.stats["waiting"] += 1
        try:
            if self._lock.locked():
                await asyncio.wait_for(self._lock.acquire(), self.config.pool_timeout)
            else:
                await self._lock.acquire()  # free: no waiting task to make
            try:
                await self._wait_for_claim()
            except BaseException:
                self._lock.release()
                raise
        except TimeoutError:
            self.stats["failures"] += 1
            raise PoolExhaustedError(
                f"DuckDB's connection to {self.path} stayed in use for pool_timeout="
                f"{self.config.pool_timeout:g} s: another run or transaction of this process holds it.",
                size=1, overflow=0, checked_out=1, timeout=self.config.pool_timeout,
                hint="DuckDB runs one transaction at a time here; finish the other run or "
                "db.transaction() block first, or raise pool_timeout.",
            ) from None  # fmt: skip
        finally:
            self.stats["waiting"] -= 1
        return self._connection()

    async def _wait_for_claim(self) -> None:
        """Wait, on the background loop, until no run on another thread holds the database."""
        delay, deadline = 0.0002, None
        while not self._claim.acquire(blocking=False):
            now = time.monotonic()
            deadline = now + (self.config.pool_timeout or 30.0) if deadline is None else deadline
            if now >= deadline:
                raise TimeoutError
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _connection(self) -> Connection:
        self.stats["acquired_total"] += 1
        self._owner = owner()
        conn = DuckDBConnection(self)
        conn.note = statement_note(self.config.echo, self.observe)
        conn.statements = self.statements
        return conn

    async def release(self, conn: Connection) -> None:
        self._owner = None
        try:
            if conn.in_transaction:  # left open by a failure (a later database's COMMIT failed)
                await conn.rollback()
        finally:
            if self._claimed_by != threading.get_ident():  # (a run on this thread ends its claim itself)
                assert self._lock is not None, "acquire() made the lock"
                self._claim.release()
                self._lock.release()

    async def dispose(self) -> None:
        if self._con is not None:
            con, self._con = self._con, None
            await self.run(con.close)
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def pool_usage(self) -> str:
        return f"{int(self._lock is not None and self._lock.locked())}/1"

    explains = True

    async def explain(self, sql: str, params: Sequence[Any] | None) -> str:
        """DuckDB's plan, which needs the values: they are written back as their placeholders."""
        conn = await self.acquire()
        conn.note = conn.statements = None  # the EXPLAIN is neither the run's query nor a slow one
        try:
            rows = await self.run(lambda: self.con.execute(f"EXPLAIN {sql}", list(params or ())).fetchall())
        finally:
            await self.release(conn)
        return without_values("\n".join(str(row[-1]) for row in rows), params)

    def pool_status(self) -> dict[str, Any]:
        locked = self._lock is not None and self._lock.locked()
        return {
            "pool": "single DuckDB connection",
            "size": 1,
            "checked_out": int(locked),
            "overflow": 0,
            **self.stats,
        }

    def held_connections(self) -> int:
        return int(self._con is not None)

    def checked_out_for(self, run_id: str) -> list[str]:
        held = self._owner
        return [held[1]] if held is not None and held[0] == run_id else []

    def id_column(self, table_name: str, logical: str) -> sa.Column:
        if logical == "integer":
            seq = f"{table_name}_id_seq"
            return sa.Column(
                "id", sa.BigInteger, primary_key=True, server_default=sa.text(f"nextval('{seq}')")
            )
        return sa.Column("id", self.column_type(logical), primary_key=True)  # text, or native UUID

    def decimal_type(self, model: str, field: str, digits: tuple[int, int] | None) -> sa.types.TypeEngine:
        precision, scale = digits or DECIMAL_DEFAULT
        if precision > self.max_decimal_digits:
            raise ValidationError(
                f"Model '{model}': field '{field}' is Decimal({precision}, {scale}); DuckDB's DECIMAL "
                f"holds at most {self.max_decimal_digits} digits.",
                hint=f"declare Annotated[Decimal, {self.max_decimal_digits}, {min(scale, 38)}] or fewer digits.",
            )
        return sa.Numeric(precision, scale)

    def decimal_bounds(self, digits: tuple[int, int] | None) -> tuple[int, int] | None:
        return digits or DECIMAL_DEFAULT

    def in_array(self, column: sa.ColumnElement, values: list[Any]) -> sa.ColumnElement:
        return column.in_(sa.select(sa.func.unnest(sa.bindparam(None, values))))

    def rows_table(self, name: str, columns: Sequence[sa.ColumnClause], rows: list[tuple[Any, ...]]) -> Any:
        # one list parameter per column, unnested side by side, where VALUES binds every value apart
        values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
        picked = [
            sa.func.unnest(sa.bindparam(None, list(v)), type_=c.type).label(c.name)
            for c, v in zip(columns, values, strict=True)
        ]
        return sa.select(*picked).subquery(name)

    def before_create(self, table: sa.Table) -> list[str]:
        if isinstance(table.c.id.type, sa.BigInteger):
            return [f'CREATE SEQUENCE IF NOT EXISTS "{table.name}_id_seq" START 1']
        return []

    def sync_id_sequence_sql(self, table: sa.Table) -> str | None:
        seq = f"'{table.name}_id_seq'"
        return f'SELECT setval({seq}, GREATEST(COALESCE((SELECT MAX(id) FROM "{table.name}"), 0), nextval({seq})))'

    def insert(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    supports_savepoints = False
    runs_duckdb_sql = True
    adds_decimals_exactly = True  # DECIMAL(p, s): `col + :v` is exact (the result is checked against p, s)

    bulk_copies = 1  # the Arrow table is a second copy of the chunk

    def bulk_batch_size(self, n_columns: int) -> int:
        return 100_000

    columnar = True  # chunks come by column (rows.Chunk.by_column): no tuples made, none taken apart

    async def _from_arrow(
        self,
        table: sa.Table,
        columns: Sequence[str],
        by_column: Sequence[Any],
        statement: Callable[[str, str, str], str],
        fetch: bool = False,
    ) -> Any:
        """Run ``statement(the Arrow table's name, quoted columns, select list)`` over the columns
        as an Arrow table (``_ARROW_ROWS``); a one-value column is a parameter of the statement
        (``arrow_columns``)."""
        data, select, params = arrow_source([table.c[c].type for c in columns], columns, by_column)
        quoted = ", ".join(f'"{c}"' for c in columns)

        def load() -> Any:
            _dataflow_bulk_rows = data  # noqa: F841 - read by DuckDB by its name (_ARROW_ROWS)
            result = self.con.execute(statement(_ARROW_ROWS, quoted, ", ".join(select)), params)
            return result.fetchall() if fetch else None

        return await self.run(load)

    async def bulk_insert(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Arrow ingestion: about 0.9M rows/s, where executemany manages 2k."""
        await self.bulk_insert_columns(conn, table, columns, by_column_of(rows), ids=False)

    async def bulk_insert_returning_ids(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[Any]:
        return await self.bulk_insert_columns(conn, table, columns, by_column_of(rows), ids=True)

    async def bulk_insert_columns(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], by_column: list[Any], *, ids: bool
    ) -> list[Any]:
        tail = " RETURNING id" if ids else ""
        returned = await self._from_arrow(
            table,
            columns,
            by_column,
            lambda view, cols, select: (
                f'INSERT INTO "{table.name}" ({cols}) SELECT {select} FROM {view}{tail}'
            ),
            fetch=ids,
        )
        return sorted(r[0] for r in returned) if ids else []

    upsert_reports_counts = True

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
        return await self.bulk_upsert_columns(
            conn, table, columns, by_column_of(rows), conflict_on, update_columns, guard
        )

    async def bulk_upsert_columns(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        by_column: list[Any],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> tuple[int, int]:
        """Typed Arrow columns -> one INSERT ... ON CONFLICT; the new rows are the table's count after
        less its count before (a count(*) reads no rows: far cheaper than joining on the keys).

        Exact: the run's transaction sees its snapshot and its own writes only, and an upsert
        deletes nothing."""
        action = self.on_conflict_sql(table, conflict_on, update_columns, guard)
        n = max((len(c) for c in by_column if not isinstance(c, Same)), default=1)
        data, select, params = arrow_source([table.c[c].type for c in columns], columns, by_column)
        cols = ", ".join(f'"{c}"' for c in columns)
        count = f'SELECT count(*) FROM "{table.name}"'

        def load() -> int:
            _dataflow_bulk_rows = data  # noqa: F841 - read by DuckDB by its name (_ARROW_ROWS)
            before = self.con.execute(count).fetchall()[0][0]
            insert = (
                f'INSERT INTO "{table.name}" ({cols}) SELECT {", ".join(select)} FROM {_ARROW_ROWS} {action}'
            )
            self.con.execute(insert, params)
            return int(self.con.execute(count).fetchall()[0][0] - before)

        inserted = await self.run(load)
        return inserted, n - inserted
