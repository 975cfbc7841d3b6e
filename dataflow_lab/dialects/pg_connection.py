"""PostgreSQL's connection: asyncpg's, with transactions as plain SQL (PREPARE TRANSACTION works too).

A statement that commits on its own (``commit_alone``) goes through ``pg_alone.Alone``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, cast

from .connection import Connection, QueryResult
from .pg_alone import Alone

__all__ = ["PostgresConnection", "dying_connection", "literal", "never_sent"]

_ISOLATION_SQL = {
    "read_uncommitted": "READ UNCOMMITTED", "read_committed": "READ COMMITTED",
    "repeatable_read": "REPEATABLE READ", "serializable": "SERIALIZABLE",
}  # fmt: skip


class PostgresConnection(Connection):
    """Transactions are plain SQL (not asyncpg's Transaction), so PREPARE TRANSACTION works too."""

    __slots__ = ("raw", "_in_tx", "_alone", "_spoiled")

    def __init__(self, raw: Any):
        self.raw = raw  # asyncpg.Connection
        self._in_tx = False
        self._alone: Alone | None = None  # its next statement commits on its own (pg_alone.py)
        self._spoiled = False  # a cancel request was sent on it: never handed out again

    def commit_alone(self) -> bool:
        """Send the next statement without BEGIN: the server commits it as it ends (pg_alone.py)."""
        self._alone = Alone()
        return True

    @property
    def committed_alone(self) -> bool:
        return self._alone is not None and self._alone.committed

    async def _single(self, sql: str, send: Any) -> Any:
        assert self._alone is not None
        return await self._alone.run(
            sql, send, cancel=self._cancel_on_server, never_sent=never_sent, where="PostgreSQL"
        )

    async def _cancel_on_server(self) -> None:
        """PostgreSQL's cancel request for this connection's running statement (asyncpg's own, the one
        it sends when a query's task is cancelled, which would not let the statement's outcome be read)."""
        self._spoiled = True
        sent = asyncio.get_running_loop().create_future()
        self.raw._cancel_current_command(sent)
        await sent

    async def begin(self, isolation: str | None = None) -> None:
        level = f" ISOLATION LEVEL {_ISOLATION_SQL[isolation]}" if isolation else ""
        await self.raw.execute(f"BEGIN{level}")
        self._in_tx = True

    async def commit(self) -> None:
        self._in_tx = False
        await self.raw.execute("COMMIT")

    async def rollback(self) -> None:
        in_tx, self._in_tx = self._in_tx, False
        if in_tx and not self.raw.is_closed():
            await self.raw.execute("ROLLBACK")

    async def prepare(self, gid: str) -> None:
        """Phase one of two-phase commit: the transaction survives a crash, awaiting a verdict."""
        self._in_tx = False
        await self.raw.execute(f"PREPARE TRANSACTION {literal(gid)}")

    async def finish_prepared(self, gid: str, *, commit: bool) -> None:
        await self.raw.execute(f"{'COMMIT' if commit else 'ROLLBACK'} PREPARED {literal(gid)}")

    @property
    def usable(self) -> bool:
        return not self._spoiled and not self.raw.is_closed()

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        if self._alone is not None:
            return cast(list, await self._single(sql, lambda: self._fetch(sql, params)))
        return await self._fetch(sql, params)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        if self.note is not None:
            self.note(sql, params)
        started = time.perf_counter()
        try:
            rows = await self.raw.fetch(sql, *params)
        except BaseException as exc:
            self.took(sql, started, params, exc)
            raise
        self.took(sql, started, params)
        return rows

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if self._alone is not None:
            return cast(int, await self._single(sql, lambda: self._execute(sql, params)))
        return await self._execute(sql, params)

    async def _execute(self, sql: str, params: Sequence[Any]) -> int:
        if self.note is not None:
            self.note(sql, params)
        started = time.perf_counter()
        try:
            status = await self.raw.execute(sql, *params)
        except BaseException as exc:
            self.took(sql, started, params, exc)
            raise
        self.took(sql, started, params)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    async def copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self._alone is not None:
            self._alone.refuse("PostgreSQL")
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        if self.note is not None:
            self.note(sql, None)
        started = time.perf_counter()
        try:
            await self.raw.copy_records_to_table(table, records=rows, columns=list(columns))
        except BaseException as exc:
            self.took(sql, started, None, exc)
            raise
        self.took(sql, started)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        if self._alone is not None:
            self._alone.refuse("PostgreSQL")
        if self.note is not None:
            self.note(sql, params)
        statement = await self.raw.prepare(sql)
        rows = [tuple(r) for r in await statement.fetch(*params)]
        tail = (statement.get_statusmsg() or "").rsplit(" ", 1)[-1]  # 'UPDATE 3', 'INSERT 0 1'
        columns = [a.name for a in statement.get_attributes()]
        return QueryResult(columns, rows, int(tail) if tail.isdigit() else -1)

    async def query_read_only(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        if self._alone is not None:
            self._alone.refuse("PostgreSQL")
        # In a savepoint that is always rolled back, with the transaction read-only until then: the
        # server refuses writes, and the savepoint's end restores read-write for the rest of the run.
        if not self._in_tx:
            await self.raw.execute("BEGIN READ ONLY")
            try:
                return await self.query(sql, params)
            finally:
                await self.raw.execute("ROLLBACK")
        await self.raw.execute("SAVEPOINT dataflow_read_only")
        try:
            await self.raw.execute("SET LOCAL transaction_read_only = on")
            return await self.query(sql, params)
        finally:
            await self.raw.execute("ROLLBACK TO SAVEPOINT dataflow_read_only")
            await self.raw.execute("RELEASE SAVEPOINT dataflow_read_only")

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self._alone is not None:
            self._alone.refuse("PostgreSQL")
        if self.note is not None:
            self.note(sql, None)
        started = time.perf_counter()
        try:
            await self.raw.executemany(sql, rows)
        except BaseException as exc:
            self.took(sql, started, None, exc)
            raise
        self.took(sql, started)


def literal(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"  # names are validated identifiers; this is belt and braces


def never_sent(error: BaseException) -> bool:
    """Whether a statement that failed with ``error`` never left: asyncpg refuses to send anything on a
    connection it already knows is closed, or that is still taking in the server's last error (it
    checks its state before writing a message)."""
    if dying_connection(error):
        return True
    return type(error).__name__ == "InterfaceError" and "connection is closed" in str(error)


def dying_connection(error: BaseException) -> bool:
    """asyncpg's error for a statement on a connection still taking in an error nobody asked for:
    the FATAL a server sends every idle session as it shuts down (``pg_ctl stop -m fast``, 57P01),
    read before the socket's close. State 2 is asyncpg's PROTOCOL_ERROR_CONSUME; the statement was
    never sent, and the connection is about to be closed."""
    return type(error).__name__ == "InternalClientError" and "another operation (2) is in progress" in str(
        error
    )
