"""Bulk benchmark: BulkCreate / BulkUpsert against each database's raw fast path, same run.

Every case runs in its own subprocess, so its peak memory (``resource``'s
ru_maxrss, minus the process's size before the data was made) is its own.
Both sides start from the same list of dicts (name, qty, price) and write the
same columns (plus the created_at/updated_at that every model carries):

- SQLite (file, WAL): sqlite3 ``executemany`` in one transaction, STRICT table.
- PostgreSQL: asyncpg ``copy_records_to_table`` (upsert: ``INSERT ... ON CONFLICT`` via executemany).
- DuckDB: a pyarrow table inserted with ``INSERT ... SELECT`` (upsert: the same with ON CONFLICT).

The ``stream`` case feeds BulkCreate a generator of rows instead of a list. The ``encrypted``
row compares BulkCreate into a model whose ``name`` is ``Encrypted[str]`` (AES-256-GCM per value,
encryption.py) with BulkCreate into the same model unencrypted (neither has the unique key on
name, which an encrypted field cannot carry): its "raw" columns are ours, plain.

Run: python benchmarks/bench_bulk.py [--sizes 10000 100000 1000000] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _harness import table  # noqa: E402


def rss_now_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def make_rows(n: int) -> list[dict]:
    return [{"name": f"item {i}", "qty": i, "price": i * 0.25} for i in range(n)]


def gen_rows(n: int):
    for i in range(n):
        yield {"name": f"item {i}", "qty": i, "price": i * 0.25}


# -- one case, run inside a subprocess ------------------------------------------
def run_case(backend: str, path: str, op: str, n: int, url: str) -> dict:
    """Set up (connect, create the table, seed), then measure: make the data, write it."""
    existing = n // 2 if op == "upsert" else 0
    go = (setup_ours if path == "ours" else SETUP_RAW[backend])(op, url, existing)
    start_rss = rss_now_kb()
    data = gen_rows(n) if op == "stream" else make_rows(n)
    start = time.perf_counter()
    written = go(data)
    elapsed = time.perf_counter() - start
    assert written == n, (written, n)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": elapsed, "peak_mb": (peak_kb - start_rss) / 1024}


def setup_ours(op: str, url: str, existing: int):
    from dataflow_lab import DataFlow, Encrypted, LocalRuntime, WorkflowBuilder
    from dataflow_lab.encryption import keygen

    db = DataFlow(url, echo=False, encryption_keys=keygen())  # echo off: the engine, not SQL on stderr
    if op in ("plain", "encrypted"):  # encrypted against plain: no unique key (an encrypted field has none)

        class Item:
            __tablename__ = "bench_items"
            __annotations__ = {
                "name": Encrypted[str] if op == "encrypted" else str,
                "qty": int,
                "price": float,
            }

        db.model(Item)
    else:

        @db.model
        class Item:
            __tablename__ = "bench_items"
            __dataflow__ = {"unique": ["name"]}
            name: str
            qty: int
            price: float

    runtime = LocalRuntime()
    seed = WorkflowBuilder(dataflow=db)
    seed.add_node("ItemBulkCreateNode", "seed", {"data": make_rows(existing), "progress": False})
    runtime.execute(seed.build())  # also creates the table and opens the pool

    def go(data) -> int:
        wf = WorkflowBuilder(dataflow=db)
        if op == "upsert":
            wf.add_node(
                "ItemBulkUpsertNode", "op", {"data": data, "conflict_on": ["name"], "progress": False}
            )
        else:
            wf.add_node("ItemBulkCreateNode", "op", {"data": data, "progress": False})
        got = runtime.execute(wf.build())[0]["op"]
        return got.get("inserted", 0) + got.get("updated", 0)

    return go


def setup_sqlite(op: str, url: str, existing: int):
    import sqlite3

    con = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE bench_items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, "
        "qty INTEGER NOT NULL, price REAL NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL) STRICT"
    )
    insert = "INSERT INTO bench_items (name, qty, price, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
    sql = insert + (
        " ON CONFLICT (name) DO UPDATE SET qty = excluded.qty, price = excluded.price, "
        "updated_at = excluded.updated_at"
        if op == "upsert"
        else ""
    )

    def write(rows, statement: str) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat()
        con.execute("BEGIN")
        con.executemany(statement, [(r["name"], r["qty"], r["price"], stamp, stamp) for r in rows])
        con.execute("COMMIT")

    write(make_rows(existing), insert)

    def go(data) -> int:
        rows = list(data)
        write(rows, sql)
        return len(rows)

    return go


def setup_postgres(op: str, url: str, existing: int):
    import asyncpg

    loop = asyncio.new_event_loop()
    con = loop.run_until_complete(asyncpg.connect(url))
    loop.run_until_complete(
        con.execute(
            "DROP TABLE IF EXISTS bench_items; CREATE TABLE bench_items (id BIGINT GENERATED BY DEFAULT AS IDENTITY "
            "PRIMARY KEY, name TEXT NOT NULL UNIQUE, qty BIGINT NOT NULL, price DOUBLE PRECISION NOT NULL, "
            "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
        )
    )
    columns = ["name", "qty", "price", "created_at", "updated_at"]

    async def write(rows, upsert: bool) -> int:
        stamp = dt.datetime.now(dt.UTC)
        records = [(r["name"], r["qty"], r["price"], stamp, stamp) for r in rows]
        async with con.transaction():
            if upsert:
                await con.executemany(
                    "INSERT INTO bench_items (name, qty, price, created_at, updated_at) VALUES ($1,$2,$3,$4,$5) "
                    "ON CONFLICT (name) DO UPDATE SET qty = excluded.qty, price = excluded.price, "
                    "updated_at = excluded.updated_at",
                    records,
                )
            else:
                await con.copy_records_to_table("bench_items", columns=columns, records=records)
        return len(records)

    loop.run_until_complete(write(make_rows(existing), False))
    return lambda data: loop.run_until_complete(write(data, op == "upsert"))


def setup_duckdb(op: str, url: str, existing: int):
    import duckdb
    import pyarrow as pa

    con = duckdb.connect(url.split("///", 1)[1])
    con.execute(
        "CREATE SEQUENCE s START 1; CREATE TABLE bench_items (id BIGINT DEFAULT nextval('s') PRIMARY KEY, "
        "name VARCHAR NOT NULL UNIQUE, qty BIGINT NOT NULL, price DOUBLE NOT NULL, "
        "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
    )
    cols = "name, qty, price, created_at, updated_at"

    def write(rows, conflict: bool) -> int:
        stamp = dt.datetime.now(dt.UTC)
        arrow = pa.Table.from_pylist([{**r, "created_at": stamp, "updated_at": stamp} for r in rows])
        tail = (
            (
                " ON CONFLICT (name) DO UPDATE SET qty = excluded.qty, price = excluded.price, "
                "updated_at = excluded.updated_at"
            )
            if conflict
            else ""
        )
        con.begin()
        con.register("incoming", arrow)
        con.execute(f"INSERT INTO bench_items ({cols}) SELECT {cols} FROM incoming{tail}")
        con.unregister("incoming")
        con.commit()
        return arrow.num_rows

    if existing:
        write(make_rows(existing), False)
    return lambda data: write(data, op == "upsert")


SETUP_RAW = {"sqlite": setup_sqlite, "postgres": setup_postgres, "duckdb": setup_duckdb}


# -- the driver ------------------------------------------------------------------
def fresh_url(backend: str, workdir: str, tag: str, pg: str | None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir}/{tag}.db"
    if backend == "duckdb":
        return f"duckdb:///{workdir}/{tag}.duckdb"
    import asyncpg

    async def reset() -> None:
        con = await asyncpg.connect(pg)
        await con.execute("DROP TABLE IF EXISTS bench_items")
        await con.close()

    asyncio.run(reset())
    return pg


def subprocess_case(backend: str, path: str, op: str, n: int, url: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps([backend, path, op, n, url])],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"case {backend} {path} {op} {n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def encrypted_row(backend: str, n: int, workdir: str, pg: str | None) -> tuple[str, ...]:
    """BulkCreate with ``name`` encrypted, against the same model plain (in the "raw" columns)."""
    p = subprocess_case(backend, "ours", "plain", n, fresh_url(backend, workdir, f"p{n}", pg))
    e = subprocess_case(backend, "ours", "encrypted", n, fresh_url(backend, workdir, f"e{n}", pg))
    return (backend, f"{n:,}", "BulkCreate, name encrypted (vs plain)", f"{n / e['seconds']:,.0f}",
            f"{n / p['seconds']:,.0f}", f"{p['seconds'] / e['seconds']:.2f}x", f"{e['peak_mb']:.0f} MB",
            f"{p['peak_mb']:.0f} MB", f"{e['peak_mb'] / max(p['peak_mb'], 1):.2f}x")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres", "duckdb"])
    parser.add_argument("--write", metavar="PATH")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*json.loads(args.case))))
        return 0
    pg = os.environ.get("DATAFLOW_TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    backends = [b for b in args.backends if b != "postgres" or pg]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for backend in backends:
            for n in args.sizes:
                for op in ("create", "upsert", "stream"):
                    raw_path = "create" if op == "stream" else op
                    r = subprocess_case(
                        backend, "raw", raw_path, n, fresh_url(backend, workdir, f"r{n}{op}", pg)
                    )
                    o = subprocess_case(backend, "ours", op, n, fresh_url(backend, workdir, f"o{n}{op}", pg))
                    label = {
                        "create": "BulkCreate (list)",
                        "upsert": "BulkUpsert (half new)",
                        "stream": "BulkCreate (generator)",
                    }[op]
                    rows.append(
                        (
                            backend,
                            f"{n:,}",
                            label,
                            f"{n / o['seconds']:,.0f}",
                            f"{n / r['seconds']:,.0f}",
                            f"{r['seconds'] / o['seconds']:.2f}x",
                            f"{o['peak_mb']:.0f} MB",
                            f"{r['peak_mb']:.0f} MB",
                            f"{o['peak_mb'] / max(r['peak_mb'], 1):.2f}x",
                        )
                    )
                    print(" | ".join(rows[-1]), file=sys.stderr)
                rows.append(encrypted_row(backend, n, workdir, pg))
                print(" | ".join(rows[-1]), file=sys.stderr)
    report = table(
        rows,
        (
            "backend",
            "rows",
            "operation",
            "ours rows/s",
            "raw rows/s",
            "speed vs raw",
            "ours peak",
            "raw peak",
            "memory vs raw",
        ),
    )
    print(report)
    if args.write:
        from bench_core import write

        write(args.write, report, key="bench_bulk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
