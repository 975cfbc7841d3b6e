"""What every dialect provides, and the pooled connection source they share.

A dialect module holds the facts of one database: how each logical type is
stored and converted, its bind-parameter limit, its upsert syntax, and its
fastest bulk path. Nodes ask the dialect; they never branch on its name.

Execution goes through the raw driver connection (sqlite3, asyncpg or
duckdb). SQLAlchemy Core compiles every statement and, for SQLite and
PostgreSQL, owns the connection pool.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import sqlalchemy as sa

from ..config import DataFlowConfig, scrub
from ..encryption import PREFIX as CIPHERTEXT_PREFIX
from ..errors import ConnectionError, PoolExhaustedError, ValidationError
from ..leaks import owner
from ..query_count import count_statement, keep_statement
from ..statement_log import StatementLog
from .arrow_columns import Same
from .change_feed import ChangeFeed
from .connect_errors import generic_failure
from .kinds import register_kind

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.sql.compiler import SQLCompiler

log = logging.getLogger("dataflow_lab.sql")

Converter = Callable[[Any], Any] | None


def echo_sql(sql: str, params: Sequence[Any] | None = None) -> None:
    """Log a statement on 'dataflow_lab.sql' (the ``echo`` setting; on in development)."""
    if log.isEnabledFor(logging.INFO):
        shown = [_masked(p) for p in params] if params is not None else "executemany"
        log.info("%s  -- %r", sql.strip(), shown)


def _masked(value: Any) -> Any:
    """An encrypted field's ciphertext is echoed as '<encrypted>' (its plaintext never reaches here)."""
    return "<encrypted>" if isinstance(value, str) and value.startswith(CIPHERTEXT_PREFIX) else value


Note = Callable[[str, Sequence[Any] | None], None]


@functools.cache
def statement_note(echo: bool, observe: int) -> Note | None:
    """What a connection calls with each statement it sends: echo it, count it, both, or nothing.

    ``observe``: 0 off, 1 count statements for monitoring, 2 count them and keep their text.
    ``echo`` also keeps their text: a notebook run's summary lists each node's statements.
    """
    if not observe and not echo:
        return None

    count = keep_statement if observe > 1 or echo else count_statement
    if not echo:
        return count

    def echo_and_count(sql: str, params: Sequence[Any] | None) -> None:
        echo_sql(sql, params)
        count(sql, params)

    return echo_and_count


_TYPE_SYNONYMS = {
    "TEXT": "VARCHAR", "CHARACTERVARYING": "VARCHAR", "DOUBLEPRECISION": "DOUBLE", "FLOAT8": "DOUBLE",
    "BYTEA": "BLOB", "NUMERIC": "DECIMAL", "INT8": "BIGINT", "TIMESTAMPTZ": "TIMESTAMPWITHTIMEZONE",
    "BOOL": "BOOLEAN",
}  # fmt: skip


def normalize_type(name: str) -> str:
    """'double precision' and 'DOUBLE', 'TEXT' and 'VARCHAR'... -> one spelling, for schema diffs."""
    compact = "".join(str(name).upper().split())
    base, _, args = compact.partition("(")
    base = _TYPE_SYNONYMS.get(base, base)
    return f"{base}({args}" if args else base


class Connection:
    """One raw driver connection, as the runtime sees it."""

    # Called with each statement sent (echo and/or monitoring's query count); set at every checkout.
    note: Note | None = None
    # Where a statement that ran slow goes (statement_log.py); set at every checkout, None: not logged.
    statements: StatementLog | None = None

    def took(
        self,
        sql: str,
        started: float,
        params: Sequence[Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """A statement sent at ``started`` (perf_counter) ended: log it if it ran slow."""
        log = self.statements
        if log is not None:
            seconds = time.perf_counter() - started
            if seconds >= log.threshold:
                log.took(sql, seconds, params, error)

    @property
    def usable(self) -> bool:
        """False once the driver connection is known to be dead."""
        return True

    @property
    def in_transaction(self) -> bool:
        """True while a transaction this connection began is open (the pool never takes one back so)."""
        return False

    def commit_alone(self) -> bool:
        """Send the next statement without BEGIN, to be committed by the server as it ends, if this
        connection can keep every guarantee of a transaction that way (PostgreSQL: pg_alone.py).
        False: it cannot, and the caller begins a transaction as usual."""
        return False

    @property
    def committed_alone(self) -> bool:
        """Whether the statement ``commit_alone`` armed it for has committed."""
        return False

    async def begin(self, isolation: str | None = None) -> None: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...

    async def savepoint(self, name: str) -> None:
        await self.execute(f"SAVEPOINT {name}")

    async def release_savepoint(self, name: str) -> None:
        await self.execute(f"RELEASE SAVEPOINT {name}")

    async def rollback_to_savepoint(self, name: str) -> None:
        await self.execute(f"ROLLBACK TO SAVEPOINT {name}")
        await self.execute(f"RELEASE SAVEPOINT {name}")

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    # -- a user's own SQL (db.sql, %%dataflow sql) ---------------------------------
    async def query(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        """Run one statement of the user's: its column names, rows and rows affected."""
        raise NotImplementedError

    async def query_read_only(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        """``query`` with writes refused by the database itself, whatever the statement is."""
        raise NotImplementedError


class DuckAttachment(NamedTuple):
    """How DuckDB attaches a database read-only (``db.sql(..., engine="duckdb")``)."""

    extension: str  # the DuckDB scanner: "sqlite" or "postgres"
    target: str  # the ATTACH string: a file path, or a libpq connection string
    schema: str | None  # the schema the model tables are in, where the database has schemas


class QueryResult(NamedTuple):
    columns: list[str]
    rows: list[tuple[Any, ...]]
    rowcount: int  # rows a write changed; -1 when the driver does not say


class TwoPhaseConnection(Protocol):
    """A connection that can prepare its transaction (PostgreSQL's; two_phase.py uses it)."""

    async def prepare(self, gid: str) -> None: ...
    async def finish_prepared(self, gid: str, *, commit: bool) -> None: ...


class Dialect:
    """Facts about one database. Subclasses fill in the tables and hooks."""

    name = "base"
    serialized = False  # True when the database allows one writer at a time
    max_bind_params = 32766
    storage: dict[str, Callable[[], sa.types.TypeEngine]] = {}
    to_db: dict[str, Converter] = {}
    from_db: dict[str, Converter] = {}
    observe = 0  # monitoring: 0 off, 1 count each connection's statements, 2 count and keep their text
    warm_modules: tuple[str, ...] = ()  # what opening imports: the warm-up loads them early (_warmup.py)

    def __init__(self, config: DataFlowConfig, url: str):
        self.config = config
        self.url = url
        self.sa_dialect = self._sa_dialect()
        threshold = config.slow_query_threshold
        self.statements: StatementLog | None = (
            None
            if threshold is None
            else StatementLog(threshold, explain=self.explain if self.explains else None)
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_kind(cls)  # so retry.py can ask every dialect about a driver's error

    def prepare(self) -> None:
        """What opening needs that involves no connection and no event loop (the warm-up does it)."""

    # -- compiling -------------------------------------------------------
    def _sa_dialect(self) -> sa.engine.Dialect:
        raise NotImplementedError

    def compile(self, stmt: sa.ClauseElement) -> tuple[str, list[Any]]:
        """Compile a statement whose values are bound in it: (sql, params)."""
        compiled = cast(
            "SQLCompiler", stmt.compile(dialect=self.sa_dialect, compile_kwargs={"render_postcompile": True})
        )
        values = compiled.params
        return compiled.string, [values[name] for name in compiled.positiontup or ()]

    def compile_named(self, stmt: sa.ClauseElement) -> tuple[str, tuple[str, ...]]:
        """Compile a statement of named bindparams: (sql, bind names in order)."""
        compiled = cast("SQLCompiler", stmt.compile(dialect=self.sa_dialect))
        return compiled.string, tuple(compiled.positiontup or ())

    def ddl(self, element: sa.schema.ExecutableDDLElement) -> str:
        return str(element.compile(dialect=self.sa_dialect))

    # -- schema facts ----------------------------------------------------
    def column_type(self, logical: str) -> sa.types.TypeEngine:
        return self.storage[logical]()

    def decimal_type(self, model: str, field: str, digits: tuple[int, int] | None) -> sa.types.TypeEngine:
        """The column type of a Decimal field; ``digits`` is its declared (precision, scale), or None."""
        return sa.Numeric(*digits) if digits else sa.Numeric()

    def decimal_bounds(self, digits: tuple[int, int] | None) -> tuple[int, int] | None:
        """The (precision, scale) a Decimal bound in a filter must fit; None: any Decimal compares exactly.

        A bound is cast to its column's type, so it must fit the declared digits.
        """
        return digits

    def id_column(self, table_name: str, logical: str) -> sa.Column:
        raise NotImplementedError

    def table_kwargs(self) -> dict[str, Any]:
        return {}

    def key_type(self, kind: sa.types.TypeEngine) -> sa.types.TypeEngine:
        """The type of a column in a primary key of a scratch table (MySQL: TEXT needs a length)."""
        return kind

    def index_options(self, columns: Sequence[sa.Column]) -> dict[str, Any]:
        """What ``sa.Index`` needs besides the columns (MySQL: a prefix length for a TEXT column)."""
        return {}

    def before_create(self, table: sa.Table) -> list[str]:
        """DDL that must run before CREATE TABLE (sequences, say)."""
        return []

    def declared_type(self, column: sa.Column) -> str:
        """The normalized type name this dialect declares for a column."""
        return normalize_type(column.type.compile(dialect=self.sa_dialect))

    def busy_at_connect(self, error: BaseException) -> bool:
        """Whether a new connection failed only because another held a lock: worth a short wait."""
        return False

    def commit_never_sent(self, error: BaseException) -> bool:
        """True when COMMIT failed before reaching the server (so the server rolled back)."""
        return False

    # -- capabilities the other layers ask about (they never branch on the name) ---------
    supports_two_phase = False  # PREPARE TRANSACTION / COMMIT PREPARED, or XA (two_phase.py)
    two_phase_sql: Any = None  # its statements of two-phase commit (a two_phase_sql.TwoPhaseSQL), if any

    async def two_phase_enabled(self, conn: Connection) -> bool:
        """Whether the server is set up for two-phase commit (asked once per database)."""
        return False

    def process_local(self) -> bool:
        """Whether the database lives in this process only, so no other process can open it
        (an in-memory SQLite; DuckDB, whose file one process holds at a time)."""
        return False

    def starts_empty(self) -> bool:
        """Whether each opening makes a new, empty database that nothing else can reach (a private
        in-memory one): no earlier run can have left a saga compensation or a prepared transaction."""
        return False

    # how other processes' writes reach the result cache (change_feed.py); ``changes`` is the one
    change_feed: type[ChangeFeed] = ChangeFeed

    @functools.cached_property
    def changes(self) -> ChangeFeed:
        return self.change_feed(self)

    @classmethod
    def transient_reason(cls, error: BaseException) -> str | None:
        """Why this database's driver ``error`` is worth retrying ("deadlock"...), None if it is not
        one of this driver's transient errors (retry.py asks every dialect)."""
        return None

    # -- migration facts (migrations/ops.py) -----------------------------------------------
    # Column changes made with ALTER TABLE; the others rebuild the table. "drop_constraint":
    # ALTER TABLE ... DROP CONSTRAINT (a table-level UNIQUE).
    alters_in_place: frozenset[str] = frozenset()
    added_column_keeps_default = False  # ADD COLUMN ... DEFAULT stays the column's default for good
    # The server DEFAULT of created_at / updated_at: the current moment in UTC, stored as ours are.
    now_default = "CURRENT_TIMESTAMP"
    rebuild_preamble: tuple[str, ...] = ()  # statements a table rebuild runs first

    def bytes_literal(self, value: bytes) -> str:
        """``value`` as an SQL literal (DEFAULT clauses and back-fills)."""
        return f"X'{value.hex()}'"

    def cast_literal(self, text: str, type_sql: str) -> str:
        """A quoted text literal as a value of a type that has no literal of its own (JSONB...)."""
        return f"CAST({text} AS {type_sql})"

    # The ALTER TABLE statements of in-place migrations (migrations/ops.py); names are quoted.
    # ``nullable`` and ``default`` (SQL text) are what the column keeps: MySQL restates them all.
    def retype_sql(self, table: str, column: str, type_sql: str, using: str, nullable: bool,
                   default: str | None) -> str:  # fmt: skip
        return f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {type_sql} USING {using}"

    retype_converts = True  # retype_sql converts each value by ``using`` (MySQL's MODIFY has none)
    # bytes as hex text and back, in SQL (templates of the value, ``{0}``; NULL stays NULL): a
    # bytes field turned encrypted or plain is retyped through them (migrations/sealing.py)
    hex_sql = "hex({})"
    unhex_sql = "unhex({})"

    def nullability_sql(self, table: str, column: str, type_sql: str, nullable: bool,
                        default: str | None) -> str:  # fmt: skip
        return f"ALTER TABLE {table} ALTER COLUMN {column} {'DROP' if nullable else 'SET'} NOT NULL"

    def drop_constraint_sql(self, table: str, name: str) -> str:
        return f"ALTER TABLE {table} DROP CONSTRAINT {name}"

    def drop_index_sql(self, table: str, name: str) -> str:
        return f"DROP INDEX {name}"

    def index_column_sql(self, column: str, type_sql: str, *, unique: bool) -> str:
        """A column of CREATE INDEX, of SQL type ``type_sql``."""
        return column

    def update_from_sql(self, table: str, columns: Sequence[str], source: str, match: str) -> str:
        """UPDATE ``table``'s ``columns`` from those of the ``source`` row (aliased b) that ``match``."""
        sets = ", ".join(f"{c} = b.{c}" for c in columns)
        return f"UPDATE {table} SET {sets} FROM {source} b WHERE {match}"

    def ddl_lock_sql(self, table_name: str) -> str | None:
        """SQL that serializes schema changes to one table across processes (None: not needed)."""
        return None

    def sync_id_sequence_sql(self, table: sa.Table) -> str | None:
        """SQL that moves the id sequence past ids a caller inserted explicitly (None: not needed)."""
        return None

    def comparable(self, expr: sa.ColumnElement, logical: str) -> sa.ColumnElement:
        """How to compare and sort a stored value of this logical type (identity by default)."""
        return expr

    supports_nulls_order = True  # ORDER BY ... NULLS FIRST / NULLS LAST

    def nulls_placed(self, column: sa.ColumnElement, clause: Any, *, first: bool) -> list[Any]:
        """``clause`` (column ASC or DESC) with its NULLs first or last, as ORDER BY clauses."""
        if self.supports_nulls_order:
            return [clause.nulls_first() if first else clause.nulls_last()]
        is_null = column.is_(None)  # emulated: sort on (column IS NULL) first
        return [is_null.desc() if first else is_null.asc(), clause]

    # -- analysis (nodes/aggregate.py) ------------------------------------
    def bucket(self, unit: str, column: sa.ColumnElement, logical: str) -> sa.ColumnElement:
        """The date that starts the ``unit`` ('day', 'week' from Monday, 'month', 'year') holding a
        stored datetime (in UTC) or date. ``unit`` is one of those four, so it is written as a literal:
        GROUP BY must repeat the very expression the SELECT has."""
        return sa.cast(sa.func.date_trunc(sa.literal_column(f"'{unit}'"), column), sa.Date)

    def aggregate(self, function: str, column: sa.ColumnElement | None, logical: str) -> sa.ColumnElement:
        """``function`` (count, count_distinct, sum, avg, min, max) over a stored column of a logical
        type (None: ``count(*)``). A sum or average of booleans counts the true ones; an average is a float."""
        if column is None:
            return sa.func.count()
        if function == "count_distinct":
            return sa.func.count(sa.distinct(column))
        if logical == "boolean" and function in ("sum", "avg"):
            column = sa.cast(column, sa.Integer)
        if function == "avg":
            return sa.cast(sa.func.avg(column), sa.Double)
        return getattr(sa.func, function)(column)

    def in_array(self, column: sa.ColumnElement, values: list[Any]) -> sa.ColumnElement:
        """``column IN values`` for a long list, bound as one parameter."""
        return column.in_(values)

    def rows_table(self, name: str, columns: Sequence[sa.ColumnClause], rows: list[tuple[Any, ...]]) -> Any:
        """``rows`` as a table to join in a statement: ``(VALUES (...), ...) AS name (columns)``."""
        return sa.values(*columns, name=name).data(rows)

    def ilike(self, column: sa.ColumnElement, pattern: sa.ColumnElement) -> sa.ColumnElement:
        """``$ilike``: LIKE with Unicode case folding (lower() of both sides), escape character ``\\``.

        ``pattern`` is the pattern's bind parameter (a value, or a placeholder of a cached template).
        """
        return column.ilike(pattern, escape="\\")

    def regex(self, column: sa.ColumnElement, pattern: sa.ColumnElement) -> sa.ColumnElement:
        return column.regexp_match(pattern)

    def insert(self, table: sa.Table) -> Any:
        """An INSERT construct that supports ON CONFLICT for this database."""
        return sa.insert(table)

    def insert_or_nothing(self, insert: Any, conflict_on: Sequence[str]) -> Any:
        """``insert`` (of ``self.insert``) that inserts nothing, and returns no row, on a conflict."""
        return insert.on_conflict_do_nothing(index_elements=list(conflict_on))

    # -- connections -----------------------------------------------------
    async def open(self) -> None:
        raise NotImplementedError

    async def acquire(self) -> Connection:
        raise NotImplementedError

    async def release(self, conn: Connection) -> None:
        raise NotImplementedError

    # A run on its caller's thread (runtime.py): a database whose connections need nothing of the
    # background loop (SQLite's) may be claimed by one thread at a time, which then runs a whole
    # run there, on a loop of its own (_loop.run_here); the background loop's users wait meanwhile.
    runs_on_any_thread = False

    def claim(self) -> bool:
        """Claim the database for a run on this thread; False: taken, or not possible here."""
        return False

    def unclaim(self) -> None:
        """End this thread's claim (after ``claim()`` said True)."""

    async def dispose(self) -> None:
        raise NotImplementedError

    def pool_status(self) -> dict[str, Any]:
        return {}

    # -- DuckDB over this database (db.sql(..., engine="duckdb")) ------------------
    runs_duckdb_sql = False  # True where the database is DuckDB itself: engine="duckdb" is the default path

    async def attach_to_duckdb(self, directory: str) -> DuckAttachment:
        """How DuckDB can read this database's tables; ``directory`` may hold a snapshot file."""
        raise ValidationError(
            f"engine='duckdb' reads SQLite and PostgreSQL databases, not {self.name}.",
            hint="run the query on the database itself: db.sql(query).",
        )

    def held_connections(self) -> int:
        """Connections open now, idle or checked out (leaks.py asks a DataFlow collected unclosed)."""
        return 0

    def checked_out_for(self, run_id: str) -> list[str]:
        """The node ids of connections still checked out for run ``run_id`` (leaks.py)."""
        return []

    async def warm(self, n: int) -> int:
        """Open connections until ``n`` are open (``min_connections``); returns how many were opened."""
        return 0

    finds_lock_waits = False  # whether ``lock_waits`` can tell (the transaction monitor asks)

    async def lock_waits(
        self, conns: Sequence[Connection], threshold: float
    ) -> list[tuple[int, float, float, str]]:
        """Which of ``conns`` wait on a lock for ``threshold`` seconds or more: (index, seconds, began, what)."""
        return []

    explains = False  # whether ``explain`` gives plans (the slow-statement log asks for them)

    async def explain(self, sql: str, params: Sequence[Any] | None) -> str:
        """The plan of a statement that ran slow, on a connection of its own (statement_log.py)."""
        raise NotImplementedError

    def pool_usage(self) -> str | None:
        """Connections in use / most the pool opens, e.g. "3/15" (per node, when monitored)."""
        return None

    # -- bulk paths (the fast path of each database overrides these) ----------
    supports_savepoints = True
    transactional_ddl = True  # False where CREATE/ALTER commit the open transaction (MySQL)
    text_allows_nul = True  # PostgreSQL text cannot hold "\x00"
    adds_decimals_exactly = True  # False where Decimals are stored as text: `col + :v` would be a float sum
    upsert_reports_counts = False  # True when bulk_upsert returns (inserted, updated)

    bulk_copies = 0  # further copies of a chunk the bulk path makes at once (DuckDB: its Arrow table)
    sealed_chunk_rows = 1_000_000  # the most rows per chunk of a model with encrypted fields
    columnar = False  # True where the bulk path takes columns (DuckDB's Arrow): chunks are shaped so

    async def bulk_insert_columns(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], by_column: list[Any], *, ids: bool
    ) -> list[Any]:
        """Insert a chunk given column by column (``rows.Chunk.by_column``: a list per column, or a
        ``arrow_columns.Same``); with ``ids``, the new ids in order. Here: made rows, then ``bulk_insert``."""
        n = max((len(c) for c in by_column if not isinstance(c, Same)), default=0)
        made = (c if not isinstance(c, Same) else [c.value] * n for c in by_column)
        rows = list(zip(*made, strict=True))
        if ids:
            return await self.bulk_insert_returning_ids(conn, table, columns, rows)
        await self.bulk_insert(conn, table, columns, rows)
        return []

    def bulk_batch_size(self, n_columns: int) -> int:
        """The most rows per bulk chunk: what one statement may bind (and a sane cap); the memory
        budget (``bulk_memory_mb``) may make chunks smaller (rows.ChunkSizer)."""
        return max(1, min(50_000, self.max_bind_params // max(1, n_columns)))

    async def bulk_insert(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert many rows, in the caller's transaction (executemany)."""
        await conn.executemany(self.multirow_insert_sql(table, columns, 1), rows)

    async def bulk_insert_returning_ids(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[Any]:
        """Multi-row INSERT ... RETURNING id; ids in input order."""
        ids: list[Any] = []
        per_statement = max(1, self.max_bind_params // max(1, len(columns)))
        for start in range(0, len(rows), per_statement):
            part = rows[start : start + per_statement]
            sql = self.multirow_insert_sql(table, columns, len(part)) + " RETURNING id"
            returned = await conn.fetch(sql, [v for row in part for v in row])
            ids.extend(sorted(r[0] for r in returned))  # ids grow in insertion order within a statement
        return ids

    def multirow_insert_sql(self, table: sa.Table, columns: Sequence[str], n_rows: int) -> str:
        quote = self.sa_dialect.identifier_preparer.quote
        cols = ", ".join(quote(c) for c in columns)
        values = ", ".join(self.placeholders(len(columns), start=i * len(columns)) for i in range(n_rows))
        return f"INSERT INTO {quote(table.name)} ({cols}) VALUES {values}"

    def placeholder(self, index: int) -> str:
        """The driver's positional parameter ``index`` (from 0) in SQL text."""
        return "?"

    def placeholders(self, n: int, *, start: int = 0) -> str:
        return "(" + ", ".join("?" * n) + ")"

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
        """INSERT ... ON CONFLICT DO UPDATE for many rows (keys unique within ``rows``).

        Returns (inserted, updated) when the database reports them, else None
        (the caller then counts existing keys beforehand). ``guard``: see ``on_conflict_sql``.
        """
        sql = (
            self.multirow_insert_sql(table, columns, 1)
            + " "
            + self.on_conflict_sql(table, conflict_on, update_columns, guard)
        )
        await conn.executemany(sql, rows)
        return None

    async def bulk_upsert_columns(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        by_column: list[Any],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> tuple[int, int] | None:
        """``bulk_upsert`` of a chunk given column by column (``rows.Chunk.by_column``). Here: made
        rows, then ``bulk_upsert``; a columnar database (DuckDB) loads the columns as they are."""
        n = max((len(c) for c in by_column if not isinstance(c, Same)), default=0)
        rows = list(zip(*(c if not isinstance(c, Same) else [c.value] * n for c in by_column), strict=True))
        return await self.bulk_upsert(conn, table, columns, rows, conflict_on, update_columns, guard)

    def on_conflict_sql(
        self,
        table: sa.Table,
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> str:
        """``ON CONFLICT ... DO UPDATE``; a counter column (versioned's ``version``) counts up instead.

        ``guard``: columns the existing row must share with the new one to be updated (tenant_id:
        the check is in the statement, so no concurrent writer can slip in between check and write).
        """
        quote = self.sa_dialect.identifier_preparer.quote
        keys = ", ".join(quote(c) for c in conflict_on)
        if not update_columns:
            return f"ON CONFLICT ({keys}) DO NOTHING"
        sets = ", ".join(
            f"{quote(c)} = {quote(table.name)}.{quote(c)} + 1"
            if table.c[c].info.get("counter")
            else f"{quote(c)} = excluded.{quote(c)}"
            for c in update_columns
        )
        where = " AND ".join(f"{quote(table.name)}.{quote(c)} = excluded.{quote(c)}" for c in guard)
        return f"ON CONFLICT ({keys}) DO UPDATE SET {sets}" + (f" WHERE {where}" if where else "")

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
            return stmt.on_conflict_do_nothing(index_elements=list(conflict_on))
        sets = {
            c: table.c[c] + 1 if table.c[c].info.get("counter") else stmt.excluded[c] for c in update_columns
        }
        where = sa.and_(*(table.c[c] == stmt.excluded[c] for c in guard)) if guard else None
        return stmt.on_conflict_do_update(index_elements=list(conflict_on), set_=sets, where=where)

    def scrub(self, text: str) -> str:
        return scrub(text, self.url)

    def connect_failure(self, exc: BaseException) -> tuple[str, str]:
        """(message, hint) of a failed connect, one line each; dialects name what was wrong."""

        return generic_failure(exc, self.scrub(self.url))


class PooledDialect(Dialect):
    """A dialect whose connections come from a SQLAlchemy engine's pool (the asyncio driver's)."""

    def __init__(self, config: DataFlowConfig, url: str):
        super().__init__(config, url)
        self.engine: sa.engine.Engine | None = None  # its pool gives the driver's async connections
        self._serial_lock: asyncio.Lock | None = None
        # held by the thread running a run on its own loop, or by the connection out on the background loop
        self._claim = threading.Lock() if self.runs_on_any_thread else None
        self._claimed_by: int | None = None  # the thread that claimed it (runtime.py)
        self._checkouts: dict[int, Any] = {}
        self._owners: dict[int, tuple[str, str]] = {}  # (run id, node id) a connection is out for
        self._capacity: str | None = None  # "/15", made at the first pool_usage()
        self.stats = {"waiting": 0, "acquired_total": 0, "failures": 0, "invalidated": 0}

    @property
    def single_connection(self) -> bool:
        return False

    def engine_url(self) -> str:
        raise NotImplementedError

    def engine_options(self) -> dict[str, Any]:
        return {}

    def wrap(self, driver_connection: Any) -> Connection:
        raise NotImplementedError

    def prepare(self) -> None:
        """Create the engine (no connection yet; the first one is made at the first acquire)."""
        if self.engine is None:
            engine = self._create_engine()
            self._install_events(engine)
            self.engine = engine

    def _create_engine(self) -> Any:
        """The engine that owns the pool, with the driver's asyncio dialect (SQLite overrides it).

        What ``create_async_engine`` makes, without the ``AsyncEngine`` around it: its sync engine,
        whose pool hands out the async driver's connections inside a greenlet (``_pool_connect``).
        We never used the wrapper's API, and ``sqlalchemy.ext.asyncio`` imports the ORM: about
        60 ms of a process's first run (cold start).
        """
        return sa.create_engine(self.engine_url(), _is_async=True, **self.engine_options())

    async def open(self) -> None:
        self.prepare()

    def _install_events(self, sync_engine: sa.engine.Engine) -> None:
        pass

    async def acquire(self) -> Connection:
        if self._claimed_by == threading.get_ident():  # a run on this thread holds the database
            conn = await self._checkout()
            self.stats["acquired_total"] += 1
            return conn
        self.stats["waiting"] += 1
        try:
            if self.serialized:
                if self._serial_lock is None:
                    self._serial_lock = asyncio.Lock()
                await self._serial_lock.acquire()
            try:
                if self._claim is not None:  # a run on another thread may hold the database: wait
                    delay = 0.0002
                    while not self._claim.acquire(blocking=False):
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 0.01)
                try:
                    conn = await self._checkout()
                except BaseException:
                    if self._claim is not None:
                        self._claim.release()
                    raise
            except BaseException:
                if self._serial_lock is not None and self.serialized:
                    self._serial_lock.release()
                raise
        finally:
            self.stats["waiting"] -= 1
        self.stats["acquired_total"] += 1
        return conn

    def claim(self) -> bool:
        if self._claim is None or not self._claim.acquire(blocking=False):
            return False
        self._claimed_by = threading.get_ident()
        return True

    def unclaim(self) -> None:
        assert self._claim is not None
        self._claimed_by = None
        self._claim.release()

    async def _connect(self) -> Any:
        """A pooled connection; a connect that found the database busy (busy_at_connect) is tried again."""
        delay, deadline = 0.005, time.monotonic() + (self.config.pool_timeout or 30.0)
        while True:
            try:
                return await self._pool_connect()
            except Exception as exc:
                if not self.busy_at_connect(exc) or time.monotonic() + delay > deadline:
                    raise
                log.debug("database busy while connecting; trying again in %.3f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _pool_connect(self) -> Any:
        """A connection out of the pool: the handle ``_pool_return`` gives back.

        The pool's own connection record, taken in one greenlet switch: an ``AsyncConnection``
        (``engine.connect()``) cost three switches and a SQLAlchemy Connection per run, unused.
        A failed connect is wrapped as ``engine.connect()`` wraps it (``sa.exc.DBAPIError``).
        """
        from sqlalchemy.util import greenlet_spawn

        assert self.engine is not None, "prepare() made the engine"
        sync_engine = self.engine
        try:
            return await greenlet_spawn(sync_engine.raw_connection)
        except sa.exc.TimeoutError:
            raise
        except Exception as exc:
            dbapi = sync_engine.dialect.loaded_dbapi
            if isinstance(exc, sa.exc.StatementError) or not isinstance(exc, dbapi.Error):
                raise
            raise sa.exc.DBAPIError.instance(None, None, exc, dbapi.Error) from exc

    async def _driver_connection(self, handle: Any) -> Any:
        """The driver's own connection under a pool handle."""
        return handle.driver_connection

    async def _pool_return(self, handle: Any, *, invalidate: bool = False) -> None:
        """Give a handle back to the pool (``invalidate``: the connection is dead or unsure, drop it)."""
        from sqlalchemy.util import greenlet_spawn

        await greenlet_spawn(handle.invalidate if invalidate else handle.close)

    async def _checkout(self) -> Connection:
        try:
            handle = await self._connect()
            try:
                conn = self.wrap(await self._driver_connection(handle))
                conn.note = statement_note(self.config.echo, self.observe)
                conn.statements = self.statements
            except BaseException:
                await self._pool_return(handle)
                raise
        except Exception as exc:
            if isinstance(exc, sa.exc.TimeoutError):  # the pool is full, the database may be fine
                raise self.pool_exhausted() from None
            self.stats["failures"] += 1
            if isinstance(exc, asyncio.CancelledError):
                raise
            message, hint = self.connect_failure(exc)
            raise ConnectionError(self.scrub(message), hint=self.scrub(hint)) from None
        self._checkouts[id(conn)] = handle
        run = owner()
        if run is not None:
            self._owners[id(conn)] = run
        return conn

    def pool_exhausted(self) -> PoolExhaustedError:
        """The error for a checkout that waited ``pool_timeout`` for a free connection in vain."""
        config, status = self.config, self.pool_status()
        size, overflow, timeout = status["size"], config.max_overflow, config.pool_timeout
        return PoolExhaustedError(
            f"No connection to {self.scrub(self.url)} came free within pool_timeout={timeout:g} s: "
            f"{status['checked_out']} are checked out, of pool_size={size} + max_overflow={overflow}.",
            size=size,
            overflow=overflow,
            checked_out=status["checked_out"],
            timeout=timeout,
            hint="the database answers; the pool is full. Run fewer workflows at once, raise "
            "DataFlow(pool_size=..., max_overflow=...), or look for runs that hold connections "
            "(db.pool_status()).",
        )

    async def release(self, conn: Connection) -> None:
        handle = self._checkouts.pop(id(conn))
        self._owners.pop(id(conn), None)
        try:
            invalidate = False
            if conn.usable and conn.in_transaction:  # left open by a failure: the pool never resets it
                try:
                    await conn.rollback()
                except Exception:  # a connection that cannot roll back is not handed out again
                    log.warning("rolling back a returned connection failed; discarding it", exc_info=True)
                    invalidate = True
            if not conn.usable:  # the server went away: never hand this connection out again
                self.stats["invalidated"] += 1
                invalidate = True
            await self._pool_return(handle, invalidate=invalidate)
        except Exception:  # closing a dead connection can fail; the pool has already let it go
            log.debug("closing a connection failed", exc_info=True)
        finally:
            if self._claimed_by != threading.get_ident():  # (a run on this thread ends its claim itself)
                if self._claim is not None:
                    self._claim.release()
                if self._serial_lock is not None and self.serialized:
                    self._serial_lock.release()

    async def dispose(self) -> None:
        from sqlalchemy.util import greenlet_spawn

        if self.engine is not None:
            await greenlet_spawn(self.engine.dispose)  # closing the async driver's connections awaits

    def _idle(self) -> int | None:
        """Idle pooled connections; None for a pool that keeps no count (one static connection)."""
        checkedin = getattr(self.engine.pool, "checkedin", None) if self.engine is not None else None
        return checkedin() if callable(checkedin) else None

    def held_connections(self) -> int:
        return len(self._checkouts) + (self._idle() or 0)

    def checked_out_for(self, run_id: str) -> list[str]:
        return [node for run, node in list(self._owners.values()) if run == run_id]

    async def warm(self, n: int) -> int:
        # A checkout takes an idle connection first, so all of the wanted ones are held at once:
        # the pool makes the missing ones, concurrently, and gets every one back idle.
        idle = self._idle()
        wanted = n - len(self._checkouts)
        if idle is None or idle >= wanted or self.engine is None:
            return 0
        held = await asyncio.gather(*(self._pool_connect() for _ in range(wanted)), return_exceptions=True)
        for handle in held:
            if isinstance(handle, BaseException):
                log.debug("opening a warm connection failed: %s", handle)
            else:
                await self._pool_return(handle)  # back to the pool, idle and connected
        return max(0, (self._idle() or 0) - idle)

    def pool_usage(self) -> str:
        capacity = self._capacity
        if capacity is None:  # asked per node: single_connection may parse the URL, so once
            config = self.config
            capacity = self._capacity = (
                "/1" if self.single_connection else f"/{config.pool_size + max(0, config.max_overflow)}"
            )
        return f"{len(self._checkouts)}{capacity}"

    def pool_status(self) -> dict[str, Any]:
        """size, checked_out, overflow, waiting, acquired_total, failures (and the pool's kind)."""
        pool = self.engine.pool if self.engine is not None else None
        status: dict[str, Any] = {
            "pool": type(pool).__name__ if pool is not None else "not opened",
            "size": self.config.pool_size if not self.single_connection else 1,
            "checked_out": len(self._checkouts),
            "overflow": 0,
            **self.stats,
        }
        if pool is not None:
            for key in ("size", "overflow", "checkedin"):
                method = getattr(pool, key, None)
                if callable(method):
                    status[key] = method()
            status["overflow"] = max(0, status["overflow"])
        return status
