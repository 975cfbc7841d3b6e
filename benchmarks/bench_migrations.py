"""Migration benchmark: what a schema check and a migration cost on a table of N rows.

For each database (SQLite file, DuckDB file, PostgreSQL when DATAFLOW_TEST_POSTGRES_URL is set):
- check: a new DataFlow's first use of an unchanged table (the diff against the live schema);
- add: an additive migration (a defaulted column);
- drop: a destructive one (a column dropped, its values saved to a backup table);
- rollback: the drop undone (values restored from the backup).

Run: python benchmarks/bench_migrations.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(__file__))
from _harness import table  # noqa: E402

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder  # noqa: E402


def run(db: DataFlow, node: str, params: dict) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(node, "n", params)
    return LocalRuntime().execute(wf.build())[0]["n"]


def define(db: DataFlow, *, extra: bool = False, without_label: bool = False) -> None:
    namespace: dict = {"__annotations__": {"qty": int}}
    if not without_label:
        namespace["__annotations__"]["label"] = str
    if extra:
        namespace["__annotations__"]["flag"] = bool
        namespace["flag"] = False
    db.model(type("Item", (), namespace))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(url: str, n: int) -> tuple:
    db = DataFlow(url, echo=False)
    define(db)
    run(db, "ItemBulkCreateNode", {"data": [{"label": f"item {i}", "qty": i} for i in range(n)]})
    db.close()
    fresh = DataFlow(url, echo=False)
    define(fresh)
    check = timed(lambda: run(fresh, "ItemListNode", {"limit": 1}))
    define(fresh, extra=True)
    add = timed(lambda: run(fresh, "ItemListNode", {"limit": 1}))
    define(fresh, extra=True, without_label=True)
    drop = timed(lambda: fresh.migrations.apply(confirm_destructive=True))
    back = timed(lambda: fresh.migrations.rollback(confirm_destructive=True))
    define(fresh, extra=True)
    assert run(fresh, "ItemCountNode", {"filter": {"label": "item 7"}})["count"] == 1  # values back
    fresh.close()
    return check, add, drop, back


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    folder = tempfile.mkdtemp()
    urls = {"SQLite (file)": f"sqlite:///{folder}/m.db", "DuckDB (file)": f"duckdb:///{folder}/m.duckdb"}
    if os.environ.get("DATAFLOW_TEST_POSTGRES_URL"):
        urls["PostgreSQL"] = os.environ["DATAFLOW_TEST_POSTGRES_URL"] + "?schema=bench_migrations"
        import asyncio

        import asyncpg

        async def reset() -> None:
            conn = await asyncpg.connect(os.environ["DATAFLOW_TEST_POSTGRES_URL"])
            await conn.execute(
                "DROP SCHEMA IF EXISTS bench_migrations CASCADE; CREATE SCHEMA bench_migrations"
            )
            await conn.close()

        asyncio.run(reset())
    rows = []
    for name, url in urls.items():
        check, add, drop, back = bench(url, args.rows)
        rows.append(
            (name, f"{check * 1000:.1f} ms", f"{add * 1000:.1f} ms", f"{drop:.2f} s", f"{back:.2f} s")
        )
    print(f"{args.rows:,} rows")
    print(table(rows, ("database", "check (first use)", "add column", "drop column", "rollback")))


if __name__ == "__main__":
    main()
