"""DuckDB's connection: each statement on the database's one worker thread, or inline on a claimed thread.

DuckDB's Python connection is not safe to share between threads, so ``dialects.duckdb``'s dialect
keeps one, on a worker thread of its own; ``DuckDBConnection`` sends each statement there (a
cancelled one is interrupted), or runs it inline when a run holds the database on its own thread.
DuckDB's parser tells which statements of a user's SQL write (``query_read_only``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..deadlines import earliest, interrupting
from ..errors import ValidationError
from ..sqltext import writes
from .connection import Connection, QueryResult, alone_takes

if TYPE_CHECKING:  # pragma: no cover
    from duckdb import DuckDBPyConnection


class DuckDBWorker(Protocol):
    """What a DuckDBConnection asks of its dialect (``dialects.duckdb.DuckDBDialect``)."""

    _claimed_by: int | None  # the thread a run on its own loop claimed the database for, if any

    @property
    def con(self) -> DuckDBPyConnection: ...

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future: ...


class DuckDBConnection(Connection):
    def __init__(self, dialect: DuckDBWorker):
        self.dialect = dialect
        self._in_tx = False
        self._alone: str | None = None  # "armed", then "committed": its one statement commits alone

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    def commit_alone(self) -> bool:
        """On a run's claimed thread (inline), the next statement runs outside a transaction, which
        DuckDB commits as it ends: its outcome is known at once (refused, or interrupted at a
        deadline, it left nothing; completed, it stands and the run keeps it). After it, reads only
        (Connection.commit_alone). On the worker thread a cancelled statement could still complete
        after the cancellation reached the run, so there it begins a transaction as usual."""
        if self.dialect._claimed_by != threading.get_ident():
            return False
        self._alone = "armed"
        return True

    @property
    def committed_alone(self) -> bool:
        return self._alone == "committed"

    async def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` where this connection runs its statements (a bulk load: ``dialects.duckdb_bulk``):
        inline on the thread that claimed the database, else on the worker thread; a cancelled
        one is interrupted."""
        return await self._run(fn)

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
        if self._alone is not None:
            alone_takes(self._alone, sql, "DuckDB")
        if self.note is not None:
            self.note(sql, params)
        rows = await self._timed(sql, params, lambda: self.dialect.con.execute(sql, list(params)).fetchall())
        if self._alone is not None:
            self._alone = "committed"  # (a statement DuckDB refused, or interrupted, left nothing)
        return rows

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if self._alone is not None:
            alone_takes(self._alone, sql, "DuckDB")
        if self.note is not None:
            self.note(sql, params)

        def run() -> int:
            result = self.dialect.con.execute(sql, list(params)).fetchall()
            return (
                int(result[0][0]) if result and len(result[0]) == 1 and isinstance(result[0][0], int) else -1
            )

        count = await self._timed(sql, params, run)
        if self._alone is not None:
            self._alone = "committed"
        return count

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
