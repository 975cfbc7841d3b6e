"""A MySQL or MariaDB connection (asyncmy), as the runtime sees it (dialects/mysql.py makes them).

Autocommit mode, with transactions as plain SQL. What MySQL lacks is
made here: RETURNING where the server has none (mysql_returning: UPDATE always, INSERT and DELETE
on MySQL 8), an INSERT that does nothing on a duplicate key (its error read as no row), and a named
lock (GET_LOCK) held for one transaction, as PostgreSQL's advisory transaction lock is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .connection import Connection, QueryResult
from .mysql_returning import (
    DUPLICATE_KEY,
    OR_NOTHING,
    delete_returning,
    errno,
    insert_returning,
    update_returning,
)

_ISOLATION_SQL = {
    "read_uncommitted": "READ UNCOMMITTED", "read_committed": "READ COMMITTED",
    "repeatable_read": "REPEATABLE READ", "serializable": "SERIALIZABLE",
}  # fmt: skip


def _args(params: Sequence[Any]) -> Any:
    # No parameters: None, so a '%' in the text (LIKE 'a%') is not read as a placeholder.
    return tuple(params) if params else None


class MySQLConnection(Connection):
    """One asyncmy connection in autocommit mode; transactions are plain SQL."""

    __slots__ = ("raw", "returns", "_in_tx", "_named_locks", "_kill", "_broken", "xa")

    def __init__(
        self, raw: Any, kill: Callable[[int], Awaitable[None]] | None = None, *, returns: bool = True
    ):
        self.raw = raw  # asyncmy.Connection
        self.returns = returns  # the server runs INSERT ... RETURNING and DELETE ... RETURNING (MariaDB)
        self._in_tx = False
        self._named_locks = False  # a GET_LOCK taken in this transaction (ddl_lock_sql)
        self._kill = kill  # ends a server thread from another connection (KILL n)
        self._broken = False  # a statement was cancelled mid-reply: never used again
        self.xa: Any = None  # the XA branch (mysql_xa.Branch) its transaction is, in a two-phase run

    async def _cancelled(self) -> None:
        """A statement was cancelled (a time limit, Ctrl-C): the server stops it and rolls its
        transaction back (KILL of this connection's thread), and the pool drops this connection,
        whose reply was cut off."""
        self._broken, self._in_tx = True, False
        if self._kill is not None:
            await asyncio.shield(self._kill(self.raw.thread_id()))

    async def _release_named_locks(self) -> None:
        if self._named_locks and self.usable:
            self._named_locks = False
            await self._plain("SELECT RELEASE_ALL_LOCKS()")

    async def _run(self, sql: str, params: Sequence[Any] | None) -> Any:
        if self.note is not None:
            self.note(sql, params)
        started = time.perf_counter()
        cursor = self.raw.cursor()
        try:
            await cursor.execute(sql, _args(params or ()))
        except BaseException as exc:
            self.took(sql, started, params, exc)
            if isinstance(exc, asyncio.CancelledError):
                await self._cancelled()
            raise
        self.took(sql, started, params)
        return cursor

    async def begin(self, isolation: str | None = None) -> None:
        if isolation:
            await self._plain(f"SET TRANSACTION ISOLATION LEVEL {_ISOLATION_SQL[isolation]}")
        await self._plain("START TRANSACTION" if self.xa is None else self.xa.start_sql)
        self._in_tx = True

    async def _plain(self, sql: str) -> None:
        cursor = self.raw.cursor()
        await cursor.execute(sql)
        await cursor.close()

    async def commit(self) -> None:
        self._in_tx = False
        try:
            await (self._plain("COMMIT") if self.xa is None else self.xa.commit_one_phase(self))
        finally:
            await self._release_named_locks()

    async def rollback(self) -> None:
        in_tx, self._in_tx = self._in_tx, False
        try:
            if in_tx and self.usable:
                await (self._plain("ROLLBACK") if self.xa is None else self.xa.rollback(self))
        finally:
            await self._release_named_locks()

    async def prepare(self, gid: str) -> None:
        """XA END and XA PREPARE of the branch it began (two-phase commit: mysql_xa.py)."""
        if self.xa is None or self.xa.gid != gid:
            raise RuntimeError(f"this connection's transaction is not the XA branch {gid}")
        self._in_tx = False
        await self.xa.prepare(self)

    @property
    def usable(self) -> bool:
        # a prepared XA branch binds the session: closed, never pooled, it passes to XA RECOVER
        return (
            bool(self.raw.connected) and not self._broken and not (self.xa is not None and self.xa.prepared)
        )

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        if " RETURNING " in sql:
            if sql.startswith("UPDATE "):
                return await update_returning(self, sql, params)
            if not self.returns and sql.startswith("INSERT "):
                return await insert_returning(self, sql, params)
            if not self.returns and sql.startswith("DELETE "):
                return await delete_returning(self, sql, params)
        if sql.startswith("SELECT GET_LOCK("):
            rows = await self._fetch(sql, params)
            if not rows or rows[0][0] != 1:
                raise TimeoutError(f"{sql}: another process held the lock for 60 s")
            self._named_locks = True
            return rows
        return await self._fetch(sql, params)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        try:
            cursor = await self._run(sql, params)
        except Exception as exc:
            if sql.startswith(OR_NOTHING) and errno(exc) == DUPLICATE_KEY:
                return []  # MySQL undid only this statement: the transaction goes on
            raise
        rows = await cursor.fetchall()
        await cursor.close()
        return list(rows)

    async def insert(self, sql: str, params: Sequence[Any]) -> tuple[int, int]:
        """Run an INSERT: (LAST_INSERT_ID(), the first id it made; the rows it inserted)."""
        cursor = await self._run(sql, params)
        first, count = cursor.lastrowid, cursor.rowcount
        await cursor.close()
        return int(first or 0), int(count)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._run(sql, params)
        count = cursor.rowcount
        await cursor.close()
        return int(count) if count is not None and count >= 0 else -1

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # asyncmy rewrites INSERT ... VALUES (...) into multi-row INSERTs of up to max_stmt_length
        if self.note is not None:
            self.note(sql, None)
        started = time.perf_counter()
        cursor = self.raw.cursor()
        try:
            await cursor.executemany(sql, rows)
        except BaseException as exc:
            self.took(sql, started, None, exc)
            if isinstance(exc, asyncio.CancelledError):
                await self._cancelled()
            raise
        finally:
            await cursor.close()
        self.took(sql, started)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        cursor = await self._run(sql, params)
        try:
            columns = [d[0] for d in cursor.description or ()]
            rows = [tuple(r) for r in await cursor.fetchall()] if columns else []
            return QueryResult(columns, rows, cursor.rowcount if not columns else -1)
        finally:
            await cursor.close()

    async def query_read_only(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        # Outside a transaction: START TRANSACTION READ ONLY, so the server refuses writes. Inside
        # one (MySQL cannot make a running transaction read-only), in a savepoint always rolled
        # back; the statement was already judged a read (sqltext.writes).
        if not self._in_tx:
            await self._plain("START TRANSACTION READ ONLY")
            try:
                return await self.query(sql, params)
            finally:
                await self._plain("ROLLBACK")
        await self._plain("SAVEPOINT dataflow_read_only")
        try:
            return await self.query(sql, params)
        finally:
            await self._plain("ROLLBACK TO SAVEPOINT dataflow_read_only")
            await self._plain("RELEASE SAVEPOINT dataflow_read_only")


def literal(name: str) -> str:
    return "'" + name.replace("\\", "\\\\").replace("'", "''") + "'"
