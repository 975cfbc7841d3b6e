"""SQLite's connection: sqlite3 driven from the runtime's loop thread, long work on a worker thread.

``SQLiteConnection`` runs a node's statements inline (no thread hand-off), waits out another
writer's lock with asyncio sleeps, stops an inline statement at its task's deadline through a
progress handler, and sends executemany and a user's SQL to a worker thread it can interrupt.
``dialects.sqlite`` (the dialect) makes one per pooled sqlite3 connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..deadlines import passed
from .connection import Connection, QueryResult, alone_takes

T = TypeVar("T")


# Every this many SQLite VM steps an inline statement asks whether its task's deadline has passed.
_PROGRESS_STEPS = 2000


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
        alone_takes(self._alone, sql, "SQLite")
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
        await self._sent(sql, None, lambda: self._threaded_many(sql, rows), inline=False)

    def _threaded_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """executemany on the worker thread, without the progress handler: the handler only stops
        inline statements (a threaded one is stopped by ``interrupt``), and calling it back into
        Python every few thousand steps of a long executemany costs it time."""
        self.raw.set_progress_handler(None, 0)
        try:
            self.raw.executemany(sql, rows).close()
        finally:
            self.raw.set_progress_handler(self._progress, _PROGRESS_STEPS)

    async def interrupt(self) -> None:
        """Stop the statement running on a worker thread (a time limit, Ctrl-C)."""
        self.raw.interrupt()
