"""DuckDB's bulk paths: chunks loaded as Arrow tables, by column, in one statement each.

DuckDB's ``executemany`` manages about 2k rows/s; an INSERT ... SELECT over an Arrow table about
0.9M. ``DuckDBBulk`` is a part of ``dialects.duckdb.DuckDBDialect``: chunks come to it by column
(``rows.Chunk.by_column``), and an upsert counts its new rows from the table's count before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from .arrow_columns import Same, arrow_source, by_column_of, column_builder
from .bulk_paths import BulkPaths
from .connection import Connection
from .duckdb_connection import DuckDBConnection

if TYPE_CHECKING:  # pragma: no cover
    from duckdb import DuckDBPyConnection

# A chunk's Arrow table is read by DuckDB's replacement scan: a statement naming a table the
# catalog lacks reads the Python variable of that name in the calling function. A view made with
# ``register`` would keep its Arrow data alive until the transaction ends (unregister or not), so a
# streamed BulkCreate or BulkUpsert, one transaction, would hold every chunk it loaded. No model's
# table takes this name: names starting with _dataflow are reserved (model.check_table_name).
_ARROW_ROWS = '"_dataflow_bulk_rows"'


class DuckDBBulk(BulkPaths):
    """Arrow ingestion for BulkCreate and BulkUpsert, on the dialect's connection, where the run's
    connection runs its statements (inline on a claimed thread, else the worker thread)."""

    @property
    def con(self) -> DuckDBPyConnection:  # DuckDBDialect's
        raise NotImplementedError

    bulk_copies = 1  # the Arrow table is a second copy of the chunk

    def bulk_batch_size(self, n_columns: int) -> int:
        return 100_000

    columnar = True  # chunks come by column (rows.Chunk.by_column): no tuples made, none taken apart

    def column_builder(self, kind: str) -> Any:
        """Text, int, float and bool columns become Arrow arrays as they are checked."""
        return column_builder(kind)

    async def _from_arrow(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        by_column: Sequence[Any],
        statement: Callable[[str, str, str], str],
        fetch: bool = False,
    ) -> Any:
        """Run ``statement(the Arrow table's name, quoted columns, select list)`` over the columns
        as an Arrow table (``_ARROW_ROWS``); a one-value column is a parameter of the statement
        (``arrow_columns``)."""
        data, select, params = arrow_source([table.c[c].type for c in columns], columns, by_column)
        quoted = ", ".join(f'"{c}"' for c in columns)

        def load() -> Any:
            _dataflow_bulk_rows = data  # noqa: F841 - read by DuckDB by its name (_ARROW_ROWS)
            result = self.con.execute(statement(_ARROW_ROWS, quoted, ", ".join(select)), params)
            return result.fetchall() if fetch else None

        return await cast(DuckDBConnection, conn).call(load)

    async def bulk_insert(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Arrow ingestion: about 0.9M rows/s, where executemany manages 2k."""
        await self.bulk_insert_columns(conn, table, columns, by_column_of(rows), ids=False)

    async def bulk_insert_returning_ids(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[Any]:
        return await self.bulk_insert_columns(conn, table, columns, by_column_of(rows), ids=True)

    async def bulk_insert_columns(
        self, conn: Connection, table: sa.Table, columns: Sequence[str], by_column: list[Any], *, ids: bool
    ) -> list[Any]:
        tail = " RETURNING id" if ids else ""
        returned = await self._from_arrow(
            conn,
            table,
            columns,
            by_column,
            lambda view, cols, select: (
                f'INSERT INTO "{table.name}" ({cols}) SELECT {select} FROM {view}{tail}'
            ),
            fetch=ids,
        )
        return sorted(r[0] for r in returned) if ids else []

    upsert_reports_counts = True

    async def bulk_upsert(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> tuple[int, int]:
        return await self.bulk_upsert_columns(
            conn, table, columns, by_column_of(rows), conflict_on, update_columns, guard
        )

    async def bulk_upsert_columns(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        by_column: list[Any],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str] = (),
    ) -> tuple[int, int]:
        """Typed Arrow columns -> one INSERT ... ON CONFLICT; the new rows are the table's count after
        less its count before (a count(*) reads no rows: far cheaper than joining on the keys).

        Exact: the run's transaction sees its snapshot and its own writes only, and an upsert
        deletes nothing."""
        counts = await self._upsert_columns(
            conn, table, columns, by_column, conflict_on, update_columns, guard
        )
        assert counts is not None, "no keys to check"
        return counts

    checks_upsert_keys = True

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
        """DuckDB counts the chunk's distinct keys (a hash aggregate over the Arrow columns, in C++)
        before the INSERT, in the same call: None, nothing written, when one repeats."""
        return await self._upsert_columns(
            conn,
            table,
            columns,
            by_column,
            conflict_on,
            update_columns,
            guard,
            distinct=varying or conflict_on,
        )

    async def _upsert_columns(
        self,
        conn: Connection,
        table: sa.Table,
        columns: Sequence[str],
        by_column: list[Any],
        conflict_on: Sequence[str],
        update_columns: Sequence[str],
        guard: Sequence[str],
        *,
        distinct: Sequence[str] = (),
    ) -> tuple[int, int] | None:
        action = self.on_conflict_sql(table, conflict_on, update_columns, guard)
        n = max((len(c) for c in by_column if not isinstance(c, Same)), default=1)
        data, select, params = arrow_source([table.c[c].type for c in columns], columns, by_column)
        cols = ", ".join(f'"{c}"' for c in columns)
        count = f'SELECT count(*) FROM "{table.name}"'
        repeats = _repeats_sql(distinct) if distinct else None  # the keys' columns in the Arrow table

        def load() -> int | None:
            _dataflow_bulk_rows = data  # noqa: F841 - read by DuckDB by its name (_ARROW_ROWS)
            if repeats is not None and self.con.execute(repeats).fetchall()[0][0]:
                return None
            before = self.con.execute(count).fetchall()[0][0]
            insert = (
                f'INSERT INTO "{table.name}" ({cols}) SELECT {", ".join(select)} FROM {_ARROW_ROWS} {action}'
            )
            self.con.execute(insert, params)
            return int(self.con.execute(count).fetchall()[0][0] - before)

        inserted = await cast(DuckDBConnection, conn).call(load)
        return None if inserted is None else (inserted, n - inserted)


def _repeats_sql(keys: Sequence[str]) -> str:
    """Whether a key is on two rows of the chunk's Arrow table; a key holding a NULL never is
    (NULL equals nothing: the unique constraint lets each such row in)."""
    quoted = [f'"{k}"' for k in keys]
    whole = " AND ".join(f"{q} IS NOT NULL" for q in quoted)
    key = quoted[0] if len(quoted) == 1 else f"({', '.join(quoted)})"
    return (
        f"SELECT count(*) FILTER (WHERE {whole}) > count(DISTINCT {key}) FILTER (WHERE {whole}) "
        f"FROM {_ARROW_ROWS}"
    )
