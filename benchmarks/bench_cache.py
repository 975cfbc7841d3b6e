"""The result cache: a repeated List of 1,000 rows (and a Read by id), cached against uncached.

Each path is a one-node workflow run by LocalRuntime on a DataFlow(cache=True): the same node
with ``cache=True`` (every call after the first is a hit: a key lookup and a copy of the rows)
and with ``cache=False`` (the database is asked every time), beside the raw driver reading the
same rows (sqlite3, duckdb, asyncpg). The paths alternate in short blocks within one process,
so a noisy neighbour slows all of them alike; each figure is the median block.

It also times what a miss costs once the cache is on: a List after a write to its table (so the
entry is gone), against the same with the cache off. And on PostgreSQL and a SQLite file, how
long another process's write takes to reach the cache: psql's UPDATE until the notification has
invalidated the table (PostgreSQL), and nothing to wait for on SQLite (data_version is asked
before a cached read is served). MySQL (``--backends mysql``, DATAFLOW_TEST_MYSQL_URL) caches only
as ``cache={"sole_writer": True}``: it cannot report other processes' writes.

Run: python benchmarks/bench_cache.py [--backends sqlite sqlite_file duckdb postgres mysql] [--blocks 9] [--calls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder

ROWS = 1000


def ours(
    url: str | None, *, cache: bool | dict, model: str = "Item"
) -> tuple[DataFlow, dict[str, Callable[[], object]]]:
    db = DataFlow(url, echo=False, cache=cache)
    fields = {"name": str, "qty": int, "price": float, "active": bool}
    db.model(type(model, (), {"__annotations__": fields, "active": True}))
    runtime = LocalRuntime()

    def one(node_type: str, params: dict) -> object:
        workflow = WorkflowBuilder(dataflow=db)
        workflow.add_node(node_type, "a", params)
        return workflow.build()

    runtime.execute(
        one(f"{model}BulkDeleteNode", {"filter": {}, "confirmed": True})
    )  # a kept PostgreSQL table
    data = [{"name": f"item {i}", "qty": i, "price": i * 0.5} for i in range(ROWS)]
    runtime.execute(one(f"{model}BulkCreateNode", {"data": data}))
    first = runtime.execute(one(f"{model}ListNode", {"limit": 1}))[0]["a"]["records"][0]["id"]
    workflows = {
        "list cached": one(f"{model}ListNode", {}),
        "list uncached": one(f"{model}ListNode", {"cache": False}),
        "read cached": one(f"{model}ReadNode", {"id": first}),
        "read uncached": one(f"{model}ReadNode", {"id": first, "cache": False}),
    }
    fns: dict[str, Callable[[], object]] = {
        op: (lambda wf=wf: runtime.execute(wf)) for op, wf in workflows.items()
    }
    touch = one(f"{model}UpdateNode", {"id": first, "fields": {"qty": 1}})
    listing = one(f"{model}ListNode", {})

    def write_then_list() -> None:
        runtime.execute(touch)
        runtime.execute(listing)

    fns["update + list"] = write_then_list
    assert len(fns["list cached"]()[0]["a"]["records"]) == ROWS  # type: ignore[index]
    return db, fns


def raw_list(backend: str, url: str | None) -> tuple[Callable[[], object], Callable[[], None]]:
    """The raw driver reading the same 1,000 rows (into dicts, as the nodes return them)."""
    sql = "SELECT id, name, qty, price, active, created_at, updated_at FROM items ORDER BY id"
    names = ("id", "name", "qty", "price", "active", "created_at", "updated_at")
    if backend == "postgres":
        import asyncpg

        loop = asyncio.new_event_loop()
        assert url is not None
        con = loop.run_until_complete(asyncpg.connect(url.split("?")[0]))
        run = loop.run_until_complete

        def close() -> None:
            run(con.close())
            loop.close()

        return (lambda: [dict(r) for r in run(con.fetch(sql))]), close
    if backend == "sqlite_file":
        assert url is not None
        lite = sqlite3.connect(url.removeprefix("sqlite:///"))
        return (lambda: [dict(zip(names, r)) for r in lite.execute(sql).fetchall()]), lite.close
    return (lambda: None), (lambda: None)  # in memory: another connection would see another database


def alternating(fns: dict[str, Callable[[], object]], blocks: int, calls: int) -> dict[str, float]:
    """Seconds per call of each path: the median of ``blocks`` blocks of ``calls`` calls, paths alternating."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(blocks):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def notify_latency(db: DataFlow, url: str, tries: int = 15) -> tuple[list[float], list[float]]:
    """Seconds until another connection's UPDATE has invalidated the table: from its COMMIT
    returning (asyncpg), and from starting psql (which includes psql's own start-up)."""
    import asyncpg

    cache, base = db.database.cache, url.split("?")[0]
    update = "UPDATE items SET qty = {} WHERE id = (SELECT min(id) FROM items)"
    loop = asyncio.new_event_loop()
    other = loop.run_until_complete(asyncpg.connect(base))

    def waited(before: int, started: float) -> float:
        while cache.generation("items") == before:
            time.sleep(0.0001)
        return time.perf_counter() - started

    after_commit, via_psql = [], []
    for n in range(tries):
        before = cache.generation("items")
        loop.run_until_complete(other.execute(update.format(n)))  # autocommit: returns after COMMIT
        after_commit.append(waited(before, time.perf_counter()))
        before, started = cache.generation("items"), time.perf_counter()
        proc = subprocess.Popen(["psql", base, "-q", "-c", update.format(n)])
        via_psql.append(waited(before, started))
        proc.wait()
    loop.run_until_complete(other.close())
    loop.close()
    return after_commit, via_psql


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", nargs="+", default=["sqlite", "sqlite_file", "duckdb", "postgres"])
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    pg = os.environ.get("DATAFLOW_TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    os.environ.pop("DATABASE_URL", None)
    folder = tempfile.mkdtemp(prefix="bench-cache-")
    urls = {"sqlite": None, "sqlite_file": f"sqlite:///{folder}/bench.db", "duckdb": "duckdb:///:memory:",
            "postgres": pg, "mysql": os.environ.get("DATAFLOW_TEST_MYSQL_URL")}  # fmt: skip
    print(f"Repeated List of {ROWS:,} rows and Read by id, one-node workflows; ms per call (median block)")
    for backend in args.backends:
        url = urls[backend]
        if backend in ("postgres", "mysql") and not url:
            print(f"{backend}: skipped (set DATAFLOW_TEST_{backend.upper()}_URL)")
            continue
        db, fns = ours(url, cache={"sole_writer": True} if backend == "mysql" else True)
        plain_db, plain = ours(url, cache=False, model="PlainItem")  # its own table, cache off
        raw, close_raw = raw_list(backend, url)
        paths = {**fns, "update + list, cache off": plain["update + list"]}
        if backend in ("postgres", "sqlite_file"):
            paths["raw driver list"] = raw
        figures = alternating(paths, args.blocks, args.calls)
        print(f"\n{backend}:")
        for name, seconds in figures.items():
            print(f"  {name:<26} {seconds * 1000:8.3f} ms")
        print(f"  List: uncached / cached = {figures['list uncached'] / figures['list cached']:.1f}x")
        print(f"  Read: uncached / cached = {figures['read uncached'] / figures['read cached']:.2f}x")
        miss = figures["update + list"] / figures["update + list, cache off"]
        print(f"  a miss after a write, cache on / off = {miss:.2f}x")
        if "raw driver list" in figures:
            print(
                f"  raw driver list / cached list = {figures['raw driver list'] / figures['list cached']:.1f}x"
            )
        if backend == "postgres":
            commit, psql = (sorted(x) for x in notify_latency(db, url))
            print(f"  another connection's COMMIT -> invalidated: median {statistics.median(commit) * 1000:.2f} ms, "
                  f"max {commit[-1] * 1000:.2f} ms")  # fmt: skip
            print(f"  psql started -> its UPDATE invalidated: median {statistics.median(psql) * 1000:.1f} ms, "
                  f"max {psql[-1] * 1000:.1f} ms (most of it psql starting)")  # fmt: skip
        close_raw()
        db.close()
        plain_db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
