"""The rows a write changes, before and after it: what a node hands to the behaviours that
want them (``Behaviour.wants_images``, such as the audit log).

Reads happen on the run's connection, inside the write's transaction. A node reads the
rows only when one of its model's behaviours asks for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ..behaviours.base import Change
from ..schema import ModelTable

__all__ = [
    "deleted_changes",
    "inserted_rows",
    "rows_by_ids",
    "rows_by_keys",
    "upserted_changes",
    "updated_changes",
]


async def rows_by_ids(mt: ModelTable, conn: Any, ids: Iterable[Any]) -> dict[Any, dict[str, Any]]:
    """The current rows with these ids, by id (read before an update or delete)."""
    ids = list(ids)
    found: dict[Any, dict[str, Any]] = {}
    step = max(1, mt.dialect.max_bind_params - 1)
    for start in range(0, len(ids), step):
        part = [mt.to_db("id", i) for i in ids[start : start + step]]
        cond = mt.table.c.id == part[0] if len(part) == 1 else mt.dialect.in_array(mt.table.c.id, part)
        sql, params = mt.dialect.compile(sa.select(*mt.table.c).where(cond))
        found.update((r["id"], r) for r in mt.rows(await conn.fetch(sql, params)))
    return found


async def rows_by_keys(
    mt: ModelTable, conn: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]], keys: Sequence[str]
) -> dict[tuple, dict[str, Any]]:
    """Current rows whose ``keys`` match those of driver-ready ``rows``, by their key values."""
    index = [columns.index(k) for k in keys]
    wanted = list({tuple(r[i] for i in index) for r in rows})
    cols = [mt.table.c[k] for k in keys]
    step = max(1, mt.dialect.max_bind_params // (2 * len(keys)) - 1)
    found: dict[tuple, dict[str, Any]] = {}
    for start in range(0, len(wanted), step):
        part = wanted[start : start + step]
        if len(cols) == 1:
            cond = cols[0].in_([k[0] for k in part])
        else:
            cond = sa.or_(*[sa.and_(*[c == v for c, v in zip(cols, k, strict=True)]) for k in part])
        sql, params = mt.dialect.compile(sa.select(*mt.table.c).where(cond))
        found.update((tuple(r[k] for k in keys), r) for r in mt.rows(await conn.fetch(sql, params)))
    return found


async def _rows_matching(mt: ModelTable, conn: Any, where: Any) -> dict[Any, dict[str, Any]]:
    stmt = sa.select(*mt.table.c)
    if where is not None:
        stmt = stmt.where(where)
    sql, params = mt.dialect.compile(stmt)
    return {r["id"]: r for r in mt.rows(await conn.fetch(sql, params))}


async def _returning(mt: ModelTable, conn: Any, stmt: Any) -> list[dict[str, Any]]:
    """Run an UPDATE or DELETE with RETURNING every column: the rows after (or before) it."""
    sql, params = mt.dialect.compile(stmt.returning(*mt.table.c))
    return mt.rows(await conn.fetch(sql, params))


async def inserted_rows(
    mt: ModelTable, conn: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[list[Any], list[Change]]:
    """Bulk insert that learns the new ids and reads the rows as stored: (ids, changes)."""
    if "id" in columns:
        await mt.dialect.bulk_insert(conn, mt.table, columns, rows)
        ids = [r[columns.index("id")] for r in rows]
    else:
        ids = await mt.dialect.bulk_insert_returning_ids(conn, mt.table, columns, rows)
    stored = await rows_by_ids(mt, conn, ids)
    return ids, [(None, stored[i]) for i in ids if i in stored]


async def updated_changes(mt: ModelTable, conn: Any, stmt: Any, where: Any) -> list[Change]:
    """Run a bulk UPDATE: the matching rows read first, the new ones from RETURNING."""
    before = await _rows_matching(mt, conn, where)
    after = await _returning(mt, conn, stmt)
    return [(before.get(row["id"]), row) for row in after]


async def deleted_changes(mt: ModelTable, conn: Any, stmt: Any) -> list[Change]:
    """Run a bulk DELETE (DELETE ... RETURNING gives the values before)."""
    return [(row, None) for row in await _returning(mt, conn, stmt)]


async def upserted_changes(
    mt: ModelTable,
    conn: Any,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    keys: Sequence[str],
    before: dict[tuple, dict[str, Any]],
) -> list[Change]:
    """The rows a bulk upsert of ``rows`` changed, as stored now, against ``before`` (None: inserted)."""
    after = await rows_by_keys(mt, conn, columns, rows, keys)
    return [(before.get(k), row) for k, row in after.items() if before.get(k) != row]
