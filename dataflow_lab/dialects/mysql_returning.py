"""``RETURNING`` where the server lacks it, made of what it has, in one transaction.

MariaDB has ``INSERT ... RETURNING`` (10.5+) and ``DELETE ... RETURNING``; MySQL 8 has neither,
and neither has ``UPDATE ... RETURNING``. The statements come as the nodes compile them (SQLAlchemy
Core, values bound); ``MySQLConnection.fetch`` hands those the server cannot run to these:

- UPDATE: lock the matching rows (SELECT ... FOR UPDATE), update exactly those, read them back;
- INSERT: insert, then read the row back by its id (given, or LAST_INSERT_ID());
- DELETE: lock and read the matching rows, then delete exactly those.

Each row is locked from the moment it is read or written to the end of the transaction, so what
comes back is what the statement wrote (or removed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from ..errors import DataFlowError

OR_NOTHING = "INSERT /* dataflow:or_nothing */"  # insert_or_nothing's mark: a duplicate key is no row
DUPLICATE_KEY = 1062


def errno(error: BaseException) -> int | None:
    code = error.args[0] if error.args else None
    return code if isinstance(code, int) else None


@asynccontextmanager
async def _transaction(conn: Any) -> AsyncIterator[None]:
    """The caller's transaction, or one of its own when there is none (autocommit)."""
    own = not conn.in_transaction
    if own:
        await conn.begin()
    try:
        yield
    except BaseException:
        if own:
            await conn.rollback()
        raise
    if own:
        await conn.commit()


def _marks(n: int) -> str:
    return ", ".join(["%s"] * n)


async def update_returning(conn: Any, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
    head, _, returned = sql.rpartition(" RETURNING ")
    # the tables: one, or (a multi-table UPDATE) the table joined to rows bound in the statement
    tables = head[len("UPDATE ") :].split(" SET ", 1)[0]
    table = tables.split(",", 1)[0]
    sets, found, where = head.partition(" WHERE ")
    where = where if found else "1 = 1"
    where_params = [*list(params)[: tables.count("%s")], *list(params)[sets.count("%s") :]]
    key = f"{table}.id"
    async with _transaction(conn):
        locked = await conn.fetch(f"SELECT {key} FROM {tables} WHERE {where} FOR UPDATE", where_params)
        ids = [r[0] for r in locked]
        if not ids:
            return []
        await conn.execute(f"{sets} WHERE ({where}) AND {key} IN ({_marks(len(ids))})", [*params, *ids])
        return await conn.fetch(
            f"SELECT {returned} FROM {table} WHERE {key} IN ({_marks(len(ids))}) ORDER BY {key}", ids
        )


async def delete_returning(conn: Any, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
    head, _, returned = sql.rpartition(" RETURNING ")
    table, found, where = head[len("DELETE FROM ") :].partition(" WHERE ")
    key = f"{table}.id"
    async with _transaction(conn):
        rows = await conn.fetch(
            f"SELECT {key}, {returned} FROM {table} WHERE {where if found else '1 = 1'} FOR UPDATE", params
        )
        if rows:
            await conn.execute(
                f"DELETE FROM {table} WHERE {key} IN ({_marks(len(rows))})", [r[0] for r in rows]
            )
        return [tuple(r[1:]) for r in rows]


async def insert_returning(conn: Any, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
    head, _, returned = sql.rpartition(" RETURNING ")
    table, _, rest = head.split(" INTO ", 1)[1].partition(" (")
    columns = [c.strip().strip("`") for c in rest.split(")", 1)[0].split(",")]
    values = head.split(" VALUES ", 1)[1]
    row = f"({_marks(len(columns))})"
    n_rows = len(params) // max(1, len(columns))
    given = "id" in columns and values == ", ".join([row] * n_rows)
    if not given and ("id" in columns or values != row):
        raise DataFlowError(
            f"This INSERT ... RETURNING cannot be run on a MySQL server without RETURNING: {head[:120]}",
            hint="a dataflow_lab bug: please report it (with the statement).",
        )
    key = f"{table}.id"
    async with _transaction(conn):
        try:
            first, count = await conn.insert(head, params)
        except Exception as exc:
            if head.startswith(OR_NOTHING) and errno(exc) == DUPLICATE_KEY:
                return []  # MySQL undid only this statement: the transaction goes on
            raise
        ids = list(params)[columns.index("id") :: len(columns)] if given else [first]
        if not count:
            return []
        rows = {
            r[0]: tuple(r[1:])
            for r in await conn.fetch(
                f"SELECT {key}, {returned} FROM {table} WHERE {key} IN ({_marks(len(ids))})", ids
            )
        }
        return [rows[i] for i in ids if i in rows]
