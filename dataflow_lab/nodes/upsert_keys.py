"""The conflict_on keys of a BulkUpsert: each row's key, and the keys earlier chunks wrote.

A key is the value itself when conflict_on names one column (a str, an int: no tuple per row,
and sets of them hash the value alone), else a tuple of the values. A key holding a NULL is
never the same key twice: NULL equals nothing in SQL, so the unique constraint lets every such
row in, and each is inserted.
"""

from __future__ import annotations

import uuid
from collections.abc import Hashable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from ..dialects.arrow_columns import Same

__all__ = ["SeenKeys", "key_matches", "keys_of_column", "keys_of_rows", "without_nulls"]


def keys_of_rows(rows: Sequence[Sequence[Any]], key_index: Sequence[int]) -> list[Hashable]:
    """Each row's key (made in C: itemgetter, map)."""
    if len(key_index) == 1:
        return list(map(itemgetter(key_index[0]), rows))
    return list(map(itemgetter(*key_index), rows))


def keys_of_column(by_column: Sequence[Any], key_index: Sequence[int]) -> list[Hashable]:
    """Each row's key, from a chunk held by column (``rows.Chunk.by_column``: a list, the
    database's own column, an Arrow array, read back as values, or a ``Same``: one value on
    every row, such as the tenant a multi-tenant key leads with)."""
    n = max(len(c) for c in by_column if not isinstance(c, Same))
    lists = [by_column[i] for i in key_index]
    lists = [
        [c.value] * n if isinstance(c, Same) else c if isinstance(c, list) else c.to_pylist() for c in lists
    ]
    return lists[0] if len(lists) == 1 else list(zip(*lists, strict=True))


def without_nulls(keys: list[Hashable], single: bool) -> list[Hashable]:
    """``keys`` less those holding a NULL (they match no other row): ``keys`` itself when none does."""
    if single:
        return [k for k in keys if k is not None] if None in keys else keys
    return [k for k in keys if None not in k]  # type: ignore[operator]


def key_matches(
    table: sa.Table, conflict_on: Sequence[str], keys: Sequence[Hashable], max_bind_params: int
) -> Iterator[tuple[list[Any], Any]]:
    """(key columns, a condition matching a part of ``keys``), in parts within the bind limit.

    ``table``: the model's table, or another holding the same key columns."""
    cols = [table.c[c] for c in conflict_on]
    step = max(1, max_bind_params // (len(cols) * 2) - 1)
    for start in range(0, len(keys), step):
        part = keys[start : start + step]
        if len(cols) == 1:
            yield cols, cols[0].in_(list(part))
        else:
            yield cols, sa.or_(*[sa.and_(*[c == v for c, v in zip(cols, k, strict=True)]) for k in part])  # type: ignore[call-overload]


class SeenKeys:
    """The conflict_on keys earlier chunks wrote, and which of them this node inserted.

    A key written again by a later chunk counts once (the last row wins), and with update_fields
    a row this node inserted is overwritten whole; so each chunk asks which of its keys earlier
    chunks wrote. The first chunk's keys stay in memory; from the second chunk on they all go to a
    temporary table in the run's transaction (dropped at the end, or with a rollback), so memory
    does not grow with the input. Keys holding a NULL are not kept.
    """

    def __init__(self, mt: Any, conflict_on: list[str]):
        self.mt, self.conflict_on = mt, conflict_on
        self.single = len(conflict_on) == 1
        self.first: dict[Hashable, bool] | None = None  # the first chunk's keys -> inserted by this node
        self.table: sa.Table | None = None

    async def lookup(self, conn: Any, keys: list[Hashable]) -> tuple[set[Hashable], set[Hashable]]:
        """Of ``keys``: those earlier chunks wrote, and those of them this node inserted."""
        if self.first is None or not keys:
            return set(), set()
        keys = without_nulls(keys, self.single)
        dialect, found = self.mt.dialect, dict[Hashable, bool]()
        if self.table is None:
            first = self.first
            found.update((k, first[k]) for k in filter(first.__contains__, keys))  # the test in C
        elif self.single:  # one parameter for the chunk's keys (an array, or JSON on SQLite)
            col = self.table.c[self.conflict_on[0]]
            sql, params = dialect.compile(
                sa.select(col, self.table.c.ours).where(dialect.in_array(col, keys))
            )
            found.update((r[0], bool(r[1])) for r in await conn.fetch(sql, params))
        else:
            for cols, cond in key_matches(self.table, self.conflict_on, keys, dialect.max_bind_params):
                sql, params = dialect.compile(sa.select(*cols, self.table.c.ours).where(cond))
                found.update((tuple(r[:-1]), bool(r[-1])) for r in await conn.fetch(sql, params))
        return set(found), {k for k, ours in found.items() if ours}

    async def record(self, conn: Any, keys: list[Hashable], ours: set[Hashable]) -> None:
        """Note ``keys`` as written (none of them seen before), ``ours`` among them inserted by this node."""
        keys = without_nulls(keys, self.single)  # a NULL key is never met again
        marks = {k: k in ours for k in keys} if ours else dict.fromkeys(keys, False)
        if self.first is None:
            self.first = marks
            return
        if self.table is None:  # the second chunk: the first one's keys go to the table too
            self.table = await self._create(conn)
            first, self.first = self.first, {}
            await self._insert(conn, first)
        await self._insert(conn, marks)

    async def _insert(self, conn: Any, marks: dict[Hashable, bool]) -> None:
        """Write ``marks`` (key -> inserted by this node) to the table, a list per column."""
        if not marks:
            return
        keys = list(marks)
        by_key = [keys] if self.single else [list(c) for c in zip(*keys, strict=True)]
        ours = list(map(int, marks.values()))
        columns = [*self.conflict_on, "ours"]
        assert self.table is not None, "made at the second chunk"
        await self.mt.dialect.bulk_insert_columns(conn, self.table, columns, [*by_key, ours], ids=False)

    async def _create(self, conn: Any) -> sa.Table:
        mt = self.mt
        name = f"dataflow_seen_{uuid.uuid4().hex[:16]}"
        cols = [
            sa.Column(c, mt.dialect.key_type(mt.table.c[c].type), primary_key=True, autoincrement=False)
            for c in self.conflict_on
        ]
        table = sa.Table(name, sa.MetaData(), *cols, sa.Column("ours", sa.Integer), prefixes=["TEMPORARY"])
        await conn.execute(mt.dialect.ddl(sa.schema.CreateTable(table)))
        return table

    async def close(self, conn: Any) -> None:
        if self.table is not None:
            await conn.execute(self.mt.dialect.ddl(sa.schema.DropTable(self.table)))
            self.table = None
