"""A raw driver connection as the runtime sees it, and what a statement it sends is noted by.

``Connection`` is the base each dialect's connection fills in (sqlite3's, asyncpg's, duckdb's,
asyncmy's); ``QueryResult`` is what a user's own SQL returns; ``statement_note`` is what a
connection calls with each statement (echo and monitoring's count). ``PooledDialect``
(``dialects.pooled``) hands these connections out.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from ..encryption import PREFIX as CIPHERTEXT_PREFIX
from ..errors import TransactionError
from ..query_count import count_statement, keep_statement
from ..sqltext import writes
from ..statement_log import StatementLog

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
        connection can keep every guarantee of a transaction that way (PostgreSQL: pg_alone.py;
        SQLite; DuckDB on a claimed thread). False: it cannot, and the caller begins one as usual."""
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


def alone_takes(state: str | None, sql: str, where: str) -> None:
    """Before a statement on an inline connection armed by ``commit_alone`` (SQLite's, DuckDB's on a
    claimed thread), in ``state`` "armed" or "committed": the first goes; after it, reads only."""
    if state == "armed" or not writes(sql):
        return
    raise TransactionError(
        f"A second write on a {where} connection whose run commits its one statement alone: it "
        "would not be in one transaction with the first.",
        hint="this is a bug in dataflow_lab (a node that declared one statement sent more); "
        "please report it. Nothing of this statement was sent.",
    )


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
