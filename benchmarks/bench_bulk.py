"""Bulk benchmark: BulkCreate / BulkUpsert against each database's raw fast path, same run.

Every case runs in its own subprocess, so its peak memory (``resource``'s
ru_maxrss, minus the process's size before the data was made) is its own.
Both sides start from the same list of dicts (name, qty, price) and write the
same columns (plus the created_at/updated_at that every model carries):

- SQLite (file, WAL): sqlite3 ``executemany`` in one transaction, STRICT table; tuples made
  with one ``itemgetter`` call per row.
- PostgreSQL: asyncpg ``copy_records_to_table`` (upsert: COPY into a temporary table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``, the fastest way asyncpg has).
- MySQL/MariaDB: asyncmy ``executemany`` of tuples in one transaction, which asyncmy sends as
  multi-row INSERTs (upsert: ``INSERT ... ON DUPLICATE KEY UPDATE``); ``BENCH_MYSQL_RAW=multirow``
  sends explicit multi-row INSERTs of up to 1 MB instead (bench_mysql_load.py measures LOAD DATA).
- DuckDB: a pyarrow table of typed columns (``pa.array(column, type)``: string, int64, float64,
  each column made from the dicts in one list comprehension), inserted with ``INSERT ... SELECT``
  with the timestamps as parameters, one value for every row (upsert: the same with ON CONFLICT).
  Its setup calls ``pa.array`` once, so pyarrow's import of pandas is not timed.

``--rounds N`` runs each case N times, raw and ours alternating, and keeps each side's best
(a shared machine's load moves single runs by 30-50%). "CPU vs raw" is the same ratio of this
process's CPU time (all its threads: ``time.process_time``), which the load moves far less; it
leaves out the server's work (PostgreSQL, MariaDB), so there it shows only the client's share.

The ``stream`` case feeds both sides the same generator of rows instead of a list, so both make
the dicts inside the timed part (the raw side takes it whole, as its fastest way; BulkCreate
writes it a chunk at a time, in flat memory). The ``wide`` case
streams rows of (name, body) whose body is ``--wide-kb`` KB of text (default 50 KB, 2,000 rows:
100 MB): BulkCreate sizes its chunks to ``bulk_memory_mb`` (64 MB), where the raw side loads the
whole stream at once, as one ``executemany`` / COPY / Arrow table.
``--upsert-memory`` measures BulkUpsert alone, streamed from a generator of new rows, with
tracemalloc: its peak must not grow with the input.
The ``encrypted`` row compares BulkCreate into a model whose ``name`` is ``Encrypted[str]``
(AES-256-GCM per value, encryption.py) with BulkCreate into the same model unencrypted (neither
has the unique key on name, which an encrypted field cannot carry): its "raw" columns are ours, plain.
On DuckDB the stored text's base64 is DuckDB's (``to_base64`` in the INSERT), as a user's would be.

Run: python benchmarks/bench_bulk.py [--sizes 10000 100000 1000000] [--ops create upsert stream wide]
     [--wide-rows 2000] [--wide-kb 50] [--rounds 3] [--write docs/performance.md]
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
from operator import itemgetter

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


WIDE_KB = 50


def gen_wide(n: int):
    """Rows made one at a time, as a big file is read: each body is its own string."""
    for i in range(n):
        yield {"name": f"doc {i}", "body": f"{i:06d}" + "x" * (WIDE_KB * 1024 - 6)}


def columns_of(op: str) -> list[str]:
    return ["name", "body"] if op == "wide" else ["name", "qty", "price"]


def table_of(op: str) -> str:
    return "bench_docs" if op == "wide" else "bench_items"


# -- one case, run inside a subprocess ------------------------------------------
def run_case(backend: str, path: str, op: str, n: int, url: str, wide_kb: int = WIDE_KB) -> dict:
    """Set up (connect, create the table, seed), then measure: make the data, write it."""
    global WIDE_KB
    WIDE_KB = wide_kb
    existing = n // 2 if op == "upsert" else 0
    go = (setup_ours if path == "ours" else SETUP_RAW[backend])(op, url, existing)
    start_rss = rss_now_kb()
    data = {"stream": gen_rows, "wide": gen_wide}.get(op, make_rows)(n)
    start, cpu = time.perf_counter(), time.process_time()
    written = go(data)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert written == n, (written, n)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": elapsed, "cpu": cpu, "peak_mb": (peak_kb - start_rss) / 1024}


def memory_case(backend: str, n: int, url: str) -> dict:
    """BulkUpsert of ``n`` new rows streamed from a generator: the peak of Python's allocations
    (tracemalloc) above what the process held before, and RSS growth. Flat in ``n`` is the target."""
    import tracemalloc

    go = setup_ours("upsert", url, 0)
    start_rss = rss_now_kb()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    written = go(gen_rows(n))
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert written == n, (written, n)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": elapsed, "traced_mb": peak / 2**20, "rss_mb": (peak_kb - start_rss) / 1024}


def upsert_memory(backends: list[str], sizes: list[int], pg: str | None) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for backend in backends:
            for n in sizes:
                url = fresh_url(backend, workdir, f"m{n}", pg)
                out = subprocess.run(
                    [sys.executable, __file__, "--memory-case", json.dumps([backend, n, url])],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if out.returncode != 0:
                    raise SystemExit(f"memory case {backend} {n} failed:\n{out.stderr[-3000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((backend, f"{n:,}", f"{r['traced_mb']:.1f} MB", f"{r['rss_mb']:.0f} MB",
                             f"{n / r['seconds']:,.0f}"))  # fmt: skip
                print(" | ".join(rows[-1]), file=sys.stderr)
    return table(rows, ("backend", "rows (generator, all new)", "peak traced (tracemalloc)", "RSS growth",
                        "rows/s (traced)"))  # fmt: skip


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

    @db.model
    class Doc:
        __tablename__ = "bench_docs"
        name: str
        body: str

    runtime = LocalRuntime()
    seed = WorkflowBuilder(dataflow=db)
    seed.add_node("ItemBulkCreateNode", "seed", {"data": make_rows(existing), "progress": False})
    runtime.execute(seed.build())  # also creates the table and opens the pool
    if url.startswith("duckdb"):  # as the raw side's setup does (the warm-up imports it in the background)
        import pyarrow  # noqa: F401

    def go(data) -> int:
        wf = WorkflowBuilder(dataflow=db)
        if op == "upsert":
            params = {"data": data, "conflict_on": ["name"], "progress": False}
            wf.add_node("ItemBulkUpsertNode", "op", params, timeout=None)  # 1M rows under tracemalloc: > 30 s
        elif op == "wide":
            wf.add_node("DocBulkCreateNode", "op", {"data": data, "progress": False})
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
    con.execute(
        "CREATE TABLE bench_docs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
        "body TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL) STRICT"
    )
    cols = columns_of(op)
    marks = ", ".join("?" * (len(cols) + 2))
    insert = f"INSERT INTO {table_of(op)} ({', '.join(cols)}, created_at, updated_at) VALUES ({marks})"
    sql = insert + (
        " ON CONFLICT (name) DO UPDATE SET qty = excluded.qty, price = excluded.price, "
        "updated_at = excluded.updated_at"
        if op == "upsert"
        else ""
    )

    get = itemgetter(*cols)

    def write(rows, statement: str) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat()
        con.execute("BEGIN")
        con.executemany(statement, [(*get(r), stamp, stamp) for r in rows])
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
            "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL); "
            "DROP TABLE IF EXISTS bench_docs; CREATE TABLE bench_docs (id BIGINT GENERATED BY DEFAULT AS IDENTITY "
            "PRIMARY KEY, name TEXT NOT NULL, body TEXT NOT NULL, "
            "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
        )
    )
    fields = columns_of(op)
    columns = [*fields, "created_at", "updated_at"]
    get = itemgetter(*fields)

    async def write(rows, upsert: bool) -> int:
        stamp = dt.datetime.now(dt.UTC)
        records = [(*get(r), stamp, stamp) for r in rows]
        async with con.transaction():
            if upsert:  # COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT
                await con.execute(
                    "CREATE TEMPORARY TABLE incoming (name TEXT, qty BIGINT, price DOUBLE PRECISION, "
                    "created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ) ON COMMIT DROP"
                )
                await con.copy_records_to_table("incoming", columns=columns, records=records)
                await con.execute(
                    "INSERT INTO bench_items (name, qty, price, created_at, updated_at) "
                    "SELECT name, qty, price, created_at, updated_at FROM incoming "
                    "ON CONFLICT (name) DO UPDATE SET qty = excluded.qty, price = excluded.price, "
                    "updated_at = excluded.updated_at"
                )
            else:
                await con.copy_records_to_table(table_of(op), columns=columns, records=records)
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
        "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL); "
        "CREATE SEQUENCE s2 START 1; CREATE TABLE bench_docs (id BIGINT DEFAULT nextval('s2') PRIMARY KEY, "
        "name VARCHAR NOT NULL, body VARCHAR NOT NULL, "
        "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
    )
    fields = columns_of(op)
    columns = [*fields, "created_at", "updated_at"]
    cols = ", ".join(columns)
    kinds = {"name": pa.string(), "body": pa.string(), "qty": pa.int64(), "price": pa.float64()}
    pa.array([0], pa.int64())  # pyarrow's first pa.array imports pandas: not in the timed part

    def write(rows, conflict: bool) -> int:
        stamp = dt.datetime.now(dt.UTC)  # the same on every row: one parameter, not a column
        if not isinstance(rows, list):
            rows = list(rows)
        arrow = pa.Table.from_arrays(  # typed columns, each made from the dicts in one pass
            [pa.array([r[c] for r in rows], kinds[c]) for c in fields], names=fields
        )
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
        con.execute(
            f"INSERT INTO {table_of(op)} ({cols}) SELECT {', '.join(fields)}, ?, ? FROM incoming{tail}",
            [stamp, stamp],
        )
        con.unregister("incoming")
        con.commit()
        return arrow.num_rows

    if existing:
        write(make_rows(existing), False)
    return lambda data: write(data, op == "upsert")


def setup_mysql(op: str, url: str, existing: int):
    """asyncmy, the fastest way it has: executemany of tuples in one transaction (asyncmy rewrites it
    into multi-row INSERTs of up to 1 MB each; upsert: the same with ON DUPLICATE KEY UPDATE), or,
    with BENCH_MYSQL_RAW=multirow, explicit multi-row INSERTs, each within 65,535 binds and 1 MB."""
    import asyncmy
    import sqlalchemy as sa

    parts = sa.engine.make_url(url)
    loop = asyncio.new_event_loop()
    con = loop.run_until_complete(
        asyncmy.connect(host=parts.host, port=parts.port or 3306, user=parts.username,
                        password=parts.password or "", database=parts.database, autocommit=True,
                        charset="utf8mb4")
    )  # fmt: skip
    fields = columns_of(op)
    columns = [*fields, "created_at", "updated_at"]
    multirow = os.environ.get("BENCH_MYSQL_RAW") == "multirow"

    async def run(*statements: str) -> None:
        async with con.cursor() as cur:
            for sql in statements:
                await cur.execute(sql)

    loop.run_until_complete(
        run(
            "DROP TABLE IF EXISTS bench_items",
            "CREATE TABLE bench_items (id BIGINT AUTO_INCREMENT PRIMARY KEY, name LONGTEXT NOT NULL UNIQUE, "
            "qty BIGINT NOT NULL, price DOUBLE NOT NULL, created_at DATETIME(6) NOT NULL, "
            "updated_at DATETIME(6) NOT NULL) CHARSET utf8mb4 COLLATE utf8mb4_nopad_bin",
            "DROP TABLE IF EXISTS bench_docs",
            "CREATE TABLE bench_docs (id BIGINT AUTO_INCREMENT PRIMARY KEY, name LONGTEXT NOT NULL, "
            "body LONGTEXT NOT NULL, created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL) "
            "CHARSET utf8mb4 COLLATE utf8mb4_nopad_bin",
        )
    )
    cols = ", ".join(columns)
    insert = f"INSERT INTO {table_of(op)} ({cols}) VALUES ({', '.join(['%s'] * len(columns))})"
    upsert = (
        insert
        + " ON DUPLICATE KEY UPDATE qty = VALUES(qty), price = VALUES(price), updated_at = VALUES(updated_at)"
    )

    async def write(rows, conflict: bool) -> int:
        stamp = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        records = [(*(r[c] for c in fields), stamp, stamp) for r in rows]
        per_row = (
            max(1, sum(len(v) * 2 + 4 if isinstance(v, str) else 28 for v in records[0])) if records else 1
        )
        per_statement = max(1, min(65535 // len(columns), 2**20 // per_row))
        async with con.cursor() as cur:
            await cur.execute("START TRANSACTION")
            if multirow and not conflict:
                one = "(" + ", ".join(["%s"] * len(columns)) + ")"
                for start in range(0, len(records), per_statement):
                    part = records[start : start + per_statement]
                    sql = f"INSERT INTO {table_of(op)} ({cols}) VALUES " + ", ".join([one] * len(part))
                    await cur.execute(sql, [v for r in part for v in r])
            else:
                await cur.executemany(upsert if conflict else insert, records)
            await cur.execute("COMMIT")
        return len(records)

    loop.run_until_complete(write(make_rows(existing), False))
    return lambda data: loop.run_until_complete(write(data, op == "upsert"))


SETUP_RAW = {"sqlite": setup_sqlite, "postgres": setup_postgres, "duckdb": setup_duckdb, "mysql": setup_mysql}


# -- the driver ------------------------------------------------------------------
def fresh_url(backend: str, workdir: str, tag: str, pg: str | None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir}/{tag}.db"
    if backend == "duckdb":
        return f"duckdb:///{workdir}/{tag}.duckdb"
    if backend == "mysql":
        return mysql_reset(os.environ["DATAFLOW_TEST_MYSQL_URL"])
    import asyncpg

    async def reset() -> None:
        con = await asyncpg.connect(pg)
        await con.execute("DROP TABLE IF EXISTS bench_items; DROP TABLE IF EXISTS bench_docs")
        await con.close()

    asyncio.run(reset())
    return pg


def mysql_reset(url: str) -> str:
    """Drop the benchmark's tables (and our history of them): each case starts on an empty database."""
    import asyncmy
    import sqlalchemy as sa

    parts = sa.engine.make_url(url)

    async def reset() -> None:
        con = await asyncmy.connect(host=parts.host, port=parts.port or 3306, user=parts.username,
                                    password=parts.password or "", database=parts.database)  # fmt: skip
        async with con.cursor() as cur:
            await cur.execute("DROP TABLE IF EXISTS bench_items, bench_docs, dataflow_migrations")
        con.close()

    asyncio.run(reset())
    return url


def subprocess_case(backend: str, path: str, op: str, n: int, url: str, wide_kb: int = WIDE_KB) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps([backend, path, op, n, url, wide_kb])],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"case {backend} {path} {op} {n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


ENCRYPTED_ROUNDS = 3  # plain and encrypted alternate; each keeps its best round (a shared, loaded machine)


def encrypted_row(
    backend: str, n: int, workdir: str, pg: str | None, rounds: int = ENCRYPTED_ROUNDS
) -> tuple[str, ...]:
    """BulkCreate with ``name`` encrypted, against the same model plain (in the "raw" columns).

    The label adds the ratio of this process's CPU time (each side's least over the rounds;
    DuckDB's threads included, a database server's work not), steadier than wall time on a
    loaded machine."""
    plains, sealed = [], []
    for i in range(rounds):
        plains.append(
            subprocess_case(backend, "ours", "plain", n, fresh_url(backend, workdir, f"p{n}_{i}", pg))
        )
        sealed.append(
            subprocess_case(backend, "ours", "encrypted", n, fresh_url(backend, workdir, f"e{n}_{i}", pg))
        )
    p, e = min(plains, key=lambda r: r["seconds"]), min(sealed, key=lambda r: r["seconds"])
    return (backend, f"{n:,}", "BulkCreate, name encrypted (vs plain)", f"{n / e['seconds']:,.0f}",
            f"{n / p['seconds']:,.0f}", f"{p['seconds'] / e['seconds']:.2f}x",
            f"{min(x['cpu'] for x in plains) / min(x['cpu'] for x in sealed):.2f}x", f"{e['peak_mb']:.0f} MB",
            f"{p['peak_mb']:.0f} MB", f"{e['peak_mb'] / max(p['peak_mb'], 1):.2f}x")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres", "duckdb"])
    parser.add_argument("--ops", nargs="+", default=["create", "upsert", "stream", "wide", "encrypted"],
                        help="cases: create, upsert, stream, wide, encrypted")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="runs of each case, alternating; best kept")
    parser.add_argument("--wide-rows", type=int, default=2_000, help="rows of the wide case")
    parser.add_argument("--wide-kb", type=int, default=WIDE_KB, help="KB of text per wide row")
    parser.add_argument("--write", metavar="PATH")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    parser.add_argument(
        "--upsert-memory",
        action="store_true",
        help="only BulkUpsert's memory, streamed (default sizes 100k, 1M)",
    )
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*json.loads(args.case))))
        return 0
    if args.memory_case:
        print(json.dumps(memory_case(*json.loads(args.memory_case))))
        return 0
    pg = os.environ.get("DATAFLOW_TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    backends = [b for b in args.backends if (b != "postgres" or pg)]
    backends = [b for b in backends if b != "mysql" or os.environ.get("DATAFLOW_TEST_MYSQL_URL")]
    if args.upsert_memory:
        sizes = args.sizes if "--sizes" in sys.argv else [100_000, 1_000_000]
        print(upsert_memory(backends, sizes, pg))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for backend in backends:
            cases = [(n, op) for n in args.sizes for op in args.ops if op not in ("wide", "encrypted")]
            cases += [(args.wide_rows, "wide")] if "wide" in args.ops else []
            for n, op in cases:
                kb = args.wide_kb
                raws, ours = [], []
                for i in range(args.rounds):  # alternating, so a change of load hits both sides
                    raw_url = fresh_url(backend, workdir, f"r{n}{op}{i}", pg)
                    raws.append(subprocess_case(backend, "raw", op, n, raw_url, kb))
                    our_url = fresh_url(backend, workdir, f"o{n}{op}{i}", pg)
                    ours.append(subprocess_case(backend, "ours", op, n, our_url, kb))
                r, o = min(raws, key=lambda x: x["seconds"]), min(ours, key=lambda x: x["seconds"])
                cpu = min(x["cpu"] for x in raws) / min(x["cpu"] for x in ours)
                label = {
                    "create": "BulkCreate (list)",
                    "upsert": "BulkUpsert (half new)",
                    "stream": "BulkCreate (generator)",
                    "wide": f"BulkCreate ({kb} KB rows, generator)",
                }[op]
                rows.append(
                    (
                        backend,
                        f"{n:,}",
                        label,
                        f"{n / o['seconds']:,.0f}",
                        f"{n / r['seconds']:,.0f}",
                        f"{r['seconds'] / o['seconds']:.2f}x",
                        f"{cpu:.2f}x",
                        f"{o['peak_mb']:.0f} MB",
                        f"{r['peak_mb']:.0f} MB",
                        f"{o['peak_mb'] / max(r['peak_mb'], 1):.2f}x",
                    )
                )
                print(" | ".join(rows[-1]), file=sys.stderr)
            if "encrypted" in args.ops:
                for n in args.sizes:
                    rows.append(encrypted_row(backend, n, workdir, pg, max(args.rounds, ENCRYPTED_ROUNDS)))
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
            "CPU vs raw",
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
