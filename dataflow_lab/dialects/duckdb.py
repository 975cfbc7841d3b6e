"""DuckDB through its own Python API, on one worker thread per database.

Facts:
- A DuckDB connection is not safe to share between threads, so every call
  runs on one dedicated worker thread, and transactions are serialized.
- SQL is compiled with duckdb-engine's dialect (qmark parameters).
- Ids come from a sequence: ``BIGINT DEFAULT nextval('<table>_id_seq')``.
- Bulk inserts go through a pyarrow table (``dialects.duckdb_bulk``); DuckDB's ``executemany``
  runs at about 2k rows/s and is never used for bulk work.
- Statements run on that worker thread through ``dialects.duckdb_connection``, or inline on a
  run's claimed thread, where a one-statement run's write commits alone (no BEGIN, COMMIT).
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

from ..errors import DataFlowError, PoolExhaustedError, ValidationError
from ..leaks import owner
from ..statement_log import without_values
from ..types import DECIMAL_DEFAULT
from .base import Dialect
from .change_feed import OneProcessFeed
from .connection import Connection, statement_note
from .duckdb_bulk import DuckDBBulk
from .duckdb_connection import DuckDBConnection

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


class DuckDBDialect(DuckDBBulk, Dialect):
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
