"""Query counting: a thin proxy around each connection a monitored database hands out.

Each statement bumps the tally of the node running in the current task (a
context variable the MetricsCollector sets in ``before_node``), so concurrent
runs on one event loop never mix their counts. With monitoring off the
dialect hands out its connections unwrapped, and nothing here runs.

Not counted: DuckDB's Arrow bulk path (it runs on the database's own
connection object, not through ``Connection``), and BEGIN / COMMIT, which the
transaction monitor counts as transactions instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

__all__ = ["MAX_SQL_PER_NODE", "ObservedConnection", "Tally", "start_tally"]

MAX_SQL_PER_NODE = 50  # statements kept per node run (a skip-mode bulk load may run thousands)


class Tally:
    """Statements one node run has sent (and their text, when SQL capture is on)."""

    __slots__ = ("queries", "sql")

    def __init__(self, capture_sql: bool):
        self.queries = 0
        self.sql: list[str] | None = [] if capture_sql else None

    def note(self, sql: str) -> None:
        self.queries += 1
        if self.sql is not None and len(self.sql) < MAX_SQL_PER_NODE:
            self.sql.append(sql.strip())


_TALLY: ContextVar[Tally | None] = ContextVar("dataflow_lab_tally", default=None)


class ObservedConnection:
    """A connection that counts its statements for the node running in this task."""

    __slots__ = ("inner", "begin", "commit", "rollback")

    def __init__(self, inner: Any):
        self.inner = inner
        self.begin, self.commit, self.rollback = inner.begin, inner.commit, inner.rollback

    def __getattr__(self, name: str) -> Any:  # raw, echo, usable, savepoint...
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"<observed {self.inner!r}>"

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> Any:
        tally = _TALLY.get()
        if tally is not None:
            tally.note(sql)
        return await self.inner.fetch(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        tally = _TALLY.get()
        if tally is not None:
            tally.note(sql)
        return await self.inner.execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        tally = _TALLY.get()
        if tally is not None:
            tally.note(sql)
        await self.inner.executemany(sql, rows)

    async def copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        tally = _TALLY.get()
        if tally is not None:
            tally.note(f"COPY {table} ({', '.join(columns)}) FROM STDIN")
        await self.inner.copy(table, columns, rows)


def start_tally(capture_sql: bool) -> Tally:
    """A fresh tally for the node about to run in this task."""
    tally = Tally(capture_sql)
    _TALLY.set(tally)
    return tally
