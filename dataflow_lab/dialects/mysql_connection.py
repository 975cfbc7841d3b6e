"""A MySQL or MariaDB connection (asyncmy), as the runtime sees it (dialects/mysql.py makes them).

Autocommit mode, with transactions as plain SQL. What MySQL lacks is
made here: UPDATE ... RETURNING (the matching rows locked, updated and read back), an INSERT that
does nothing on a duplicate key (its error read as no row), and a named lock (GET_LOCK) held for
one transaction, as PostgreSQL's advisory transaction lock is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .base import Connection, QueryResult

_ISOLATION_SQL = {
    "read_uncommitted": "READ UNCOMMITTED", "read_committed": "READ COMMITTED",
    "repeatable_read": "REPEATABLE READ", "serializable": "SERIALIZABLE",
}  # fmt: skip


def _args(params: Sequence[Any]) -> Any:
    # No parameters: None, so a '%' in the text (LIKE 'a%') is not read as a placeholder.
    return tuple(params) if params else None


class MySQLConnection(Connection):
    """One asyncmy connection in autocommit mode; transactions are plain SQL."""

    __slots__ = ("raw", "_in_tx", "_named_locks", "_kill", "_broken")

    def __init__(self, raw: Any, kill: Callable[[int], Awaitable[None]] | None = None):
        self.raw = raw  # asyncmy.Connection
        self._in_tx = False
        self._named_locks = False  # a GET_LOCK taken in this transaction (ddl_lock_sql)
        self._kill = kill  # ends a server thread from another connection (KILL n)
        self._broken = False  # a statement was cancelled mid-reply: never used again

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
        await self._plain("START TRANSACTION")
        self._in_tx = True

    async def _plain(self, sql: str) -> None:
        cursor = self.raw.cursor()
        await cursor.execute(sql)
        await cursor.close()

    async def commit(self) -> None:
        self._in_tx = False
        try:
            await self._plain("COMMIT")
        finally:
            await self._release_named_locks()

    async def rollback(self) -> None:
        in_tx, self._in_tx = self._in_tx, False
        try:
            if in_tx and self.usable:
                await self._plain("ROLLBACK")
        finally:
            await self._release_named_locks()

    @property
    def usable(self) -> bool:
        return bool(self.raw.connected) and not self._broken

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        if sql.startswith("UPDATE ") and " RETURNING " in sql:
            return await self._update_returning(sql, params)
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
            if sql.startswith(OR_NOTHING) and errno(exc) == _DUPLICATE_KEY:
                return []  # MySQL undid only this statement: the transaction goes on
            raise
        rows = await cursor.fetchall()
        await cursor.close()
        return list(rows)

    async def _update_returning(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        """UPDATE ... RETURNING, which MySQL and MariaDB lack: lock the matching rows (SELECT ...
        FOR UPDATE), update exactly those, then read them back, all in one transaction."""
        head, _, returned = sql.rpartition(" RETURNING ")
        # the tables: one, or (a multi-table UPDATE) the table joined to rows bound in the statement
        tables = head[len("UPDATE ") :].split(" SET ", 1)[0]
        table = tables.split(",", 1)[0]
        sets, found, where = head.partition(" WHERE ")
        where = where if found else "1 = 1"
        where_params = [*list(params)[: tables.count("%s")], *list(params)[sets.count("%s") :]]
        key = f"{table}.id"
        own = not self._in_tx
        if own:
            await self.begin()
        try:
            ids = [
                r[0]
                for r in await self.fetch(
                    f"SELECT {key} FROM {tables} WHERE {where} FOR UPDATE", where_params
                )
            ]
            rows: list[Sequence[Any]] = []
            if ids:
                marks = ", ".join(["%s"] * len(ids))
                await self.execute(f"{sets} WHERE ({where}) AND {key} IN ({marks})", [*params, *ids])
                rows = await self.fetch(
                    f"SELECT {returned} FROM {table} WHERE {key} IN ({marks}) ORDER BY {key}", ids
                )
        except BaseException:
            if own:
                await self.rollback()
            raise
        if own:
            await self.commit()
        return rows

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


OR_NOTHING = "INSERT /* dataflow:or_nothing */"  # insert_or_nothing's mark: a duplicate key is no row
_DUPLICATE_KEY = 1062


def errno(error: BaseException) -> int | None:
    code = error.args[0] if error.args else None
    return code if isinstance(code, int) else None


def literal(name: str) -> str:
    return "'" + name.replace("\\", "\\\\").replace("'", "''") + "'"
