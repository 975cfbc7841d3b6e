"""The bulk paths a dialect gives the bulk nodes, and the INSERT / upsert statements under them.

``BulkPaths`` is a part of ``dialects.base.Dialect``. The defaults here are portable (executemany,
multi-row INSERT ... RETURNING, ON CONFLICT); each database's fastest path overrides them
(PostgreSQL's COPY, DuckDB's Arrow tables, MySQL's sized multi-row INSERTs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .arrow_columns import Same
from .connection import Connection


class BulkPaths:
    """Many rows in few statements; the chunk sizes that fit one statement."""

    # set by Dialect: its bind-parameter limit and the SQLAlchemy dialect that quotes names
    max_bind_params: int
    sa_dialect: sa.engine.Dialect

    upsert_reports_counts = False  # True when bulk_upsert returns (inserted, updated)

    bulk_copies = 0  # further copies of a chunk the bulk path makes at once (DuckDB: its Arrow table)
    sealed_chunk_rows = 1_000_000  # the most rows per chunk of a model with encrypted fields
    columnar = False  # True where the bulk path takes columns (DuckDB's Arrow): chunks are shaped so

    def column_builder(self, kind: str) -> Any:
        """How a columnar chunk's column of logical type ``kind`` is made as it is checked
        (``row_code.FieldCode.build``); None: it stays a list."""
        return None

    def insert(self, table: sa.Table) -> Any:
        """An INSERT construct that supports ON CONFLICT for this database."""
        return sa.insert(table)

    def insert_or_nothing(self, insert: Any, conflict_on: Sequence[str]) -> Any:
        """``insert`` (of ``self.insert``) that inserts nothing, and returns no row, on a conflict."""
        return insert.on_conflict_do_nothing(index_elements=list(conflict_on))

    async def bulk_insert_columns(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], by_column: list[Any], *, ids: bool
    ) -> list[Any]:
        """Insert a chunk given column by column (``rows.Chunk.by_column``: a list per column, or a
        ``arrow_columns.Same``); with ``ids``, the new ids in order. Here: made rows, then ``bulk_insert``."""
        n = max((len(c) for c in by_column if not isinstance(c, Same)), default=0)
        made = (c if not isinstance(c, Same) else [c.value] * n for c in by_column)
        rows = list(zip(*made, strict=True))
        if ids:
            return await self.bulk_insert_returning_ids(conn, table, columns, rows)
        await self.bulk_insert(conn, table, columns, rows)
        return []

    def bulk_batch_size(self, n_columns: int) -> int:
        """The most rows per bulk chunk: what one statement may bind (and a sane cap); the memory
        budget (``bulk_memory_mb``) may make chunks smaller (rows.ChunkSizer)."""
        return max(1, min(50_000, self.max_bind_params // max(1, n_columns)))

    async def bulk_insert(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert many rows, in the caller's transaction (executemany)."""
        await conn.executemany(self.multirow_insert_sql(table, columns, 1), rows)

    async def bulk_insert_returning_ids(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[Any]:
        """Multi-row INSERT ... RETURNING id; ids in input order."""
        ids: list[Any] = []
        per_statement = max(1, self.max_bind_params // max(1, len(columns)))
        for start in range(0, len(rows), per_statement):
            part = rows[start : start + per_statement]
            sql = self.multirow_insert_sql(table, columns, len(part)) + " RETURNING id"
            returned = await conn.fetch(sql, [v for row in part for v in row])
            ids.extend(sorted(r[0] for r in returned))  # ids grow in insertion order within a statement
        return ids

    def multirow_insert_sql(self, table: sa.Table, columns: Sequence[str], n_rows: int) -> str:
        quote = self.sa_dialect.identifier_preparer.quote
        cols = ", ".join(quote(c) for c in columns)
        values = ", ".join(self.placeholders(len(columns), start=i * len(columns)) for i in range(n_rows))
        return f"INSERT INTO {quote(table.name)} ({cols}) VALUES {values}"

    def placeholder(self, index: int) -> str:
        """The driver's positional parameter ``index`` (from 0) in SQL text."""
        return "?"

    def placeholders(self, n: int, *, start: int = 0) -> str:
        return "(" + ", ".join("?" * n) + ")"

    async def bulk_upsert(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> tuple[int, int] | None:
        """INSERT ... ON CONFLICT DO UPDATE for many rows (keys unique within ``rows``).

        Returns (inserted, updated) when the database reports them, else None
        (the caller then counts existing keys beforehand). ``guard``: see ``on_conflict_sql``.
        """
        sql = (
            self.multirow_insert_sql(table, columns, 1)
            + " "
            + self.on_conflict_sql(table, conflict_on, update_columns, guard)
        )
        await conn.executemany(sql, rows)
        return None

    async def bulk_upsert_columns(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        by_column: list[Any],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> tuple[int, int] | None:
        """``bulk_upsert`` of a chunk given column by column (``rows.Chunk.by_column``). Here: made
        rows, then ``bulk_upsert``; a columnar database (DuckDB) loads the columns as they are."""
        n = max((len(c) for c in by_column if not isinstance(c, Same)), default=0)
        rows = list(zip(*(c if not isinstance(c, Same) else [c.value] * n for c in by_column), strict=True))
        return await self.bulk_upsert(conn, table, columns, rows, conflict_on, update_columns, guard)

    checks_upsert_keys = False  # True where bulk_upsert_distinct finds a repeated key itself (DuckDB)

    async def bulk_upsert_distinct(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        by_column: list[Any],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
        varying: Sequence[str] = (),
    ) -> tuple[int, int] | None:
        """``bulk_upsert_columns`` of a chunk whose keys the database checks: (inserted, updated),
        or None, having written nothing, when a key is on two rows. ``varying``: the key columns
        that are columns of the chunk (not one value for all of it). Where ``checks_upsert_keys``
        is False the node checks the keys."""
        raise NotImplementedError(f"{type(self).__name__} leaves the keys to the node (checks_upsert_keys)")

    def on_conflict_sql(
        self,
        table: sa.Table,
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> str:
        """``ON CONFLICT ... DO UPDATE``; a counter column (versioned's ``version``) counts up instead.

        ``guard``: columns the existing row must share with the new one to be updated (tenant_id:
        the check is in the statement, so no concurrent writer can slip in between check and write).
        """
        quote = self.sa_dialect.identifier_preparer.quote
        keys = ", ".join(quote(c) for c in conflict_on)
        if not update_columns:
            return f"ON CONFLICT ({keys}) DO NOTHING"
        sets = ", ".join(
            f"{quote(c)} = {quote(table.name)}.{quote(c)} + 1"
            if table.c[c].info.get("counter")
            else f"{quote(c)} = excluded.{quote(c)}"
            for c in update_columns
        )
        where = " AND ".join(f"{quote(table.name)}.{quote(c)} = excluded.{quote(c)}" for c in guard)
        return f"ON CONFLICT ({keys}) DO UPDATE SET {sets}" + (f" WHERE {where}" if where else "")

    def upsert_statement(
        self,
        table: sa.Table,
        columns: Sequence[str],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> Any:
        stmt = self.insert(table).values({c: sa.bindparam(c) for c in columns})
        if not update_columns:
            return stmt.on_conflict_do_nothing(index_elements=list(conflict_on))
        sets = {
            c: table.c[c] + 1 if table.c[c].info.get("counter") else stmt.excluded[c] for c in update_columns
        }
        where = sa.and_(*(table.c[c] == stmt.excluded[c] for c in guard)) if guard else None
        return stmt.on_conflict_do_update(index_elements=list(conflict_on), set_=sets, where=where)
