"""What every dialect provides: the facts of one database, asked by the layers above.

A dialect module holds the facts of one database: how each logical type is
stored and converted, its bind-parameter limit, its upsert syntax, and its
fastest bulk path. Nodes ask the dialect; they never branch on its name.

Execution goes through the raw driver connection (sqlite3, asyncpg, duckdb or
asyncmy; ``dialects.connection``). SQLAlchemy Core compiles every statement and,
for the pooled databases, owns the connection pool (``dialects.pooled``). The
migration DDL (``dialects.migration_sql``) and the bulk paths (``dialects.bulk_paths``)
are parts of ``Dialect`` of their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from ..config import DataFlowConfig, scrub
from ..errors import ValidationError
from ..statement_log import StatementLog
from .bulk_paths import BulkPaths
from .change_feed import ChangeFeed
from .connection import Connection, DuckAttachment
from .kinds import register_kind
from .migration_sql import MigrationSQL
from .type_names import Converter, normalize_type

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.sql.compiler import SQLCompiler


class Dialect(BulkPaths, MigrationSQL):
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

    def scrub(self, text: str) -> str:
        return scrub(text, self.url)

    def connect_failure(self, exc: BaseException) -> tuple[str, str]:
        """(message, hint) of a failed connect, one line each; dialects name what was wrong."""
        from .connect_errors import generic_failure  # loaded by the first failed connect

        return generic_failure(exc, self.scrub(self.url))
