"""Single operations, interleaved: dataflow_lab against SQLAlchemy Core (sync) and the raw driver.

Create, Read by id, Update by id and a filtered Count, each a one-node workflow run by
LocalRuntime, against the same statement through SQLAlchemy Core's sync engine (sqlite3,
psycopg, duckdb_engine) and through the raw driver (sqlite3, asyncpg, duckdb). The paths
alternate in short blocks within one process, so a noisy neighbour slows all of them alike
(``bench_core.py`` runs them one after another); each figure is the median block. The CPU
columns compare the process's CPU time per call, which a loaded machine distorts less than wall
time (a process waiting for a core is not charged for it).

Targets (issue 17): ours <= 1.5x SQLAlchemy Core on SQLite and PostgreSQL, <= 1.3x raw on DuckDB.
Run: python benchmarks/bench_single.py [--backends sqlite duckdb postgres] [--blocks 15] [--calls 40]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable

import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(__file__))
from _harness import item_db, sa_item_table  # noqa: E402

from dataflow_lab import LocalRuntime, WorkflowBuilder  # noqa: E402

OPS = ("create", "read", "update", "count")
COLUMNS = ("id", "name", "qty", "price", "active", "created_at", "updated_at")
ROWS = 1000


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ours(url: str | None) -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    db, _ = item_db(url)
    runtime = LocalRuntime()

    def one(node_type: str, params: dict) -> object:
        workflow = WorkflowBuilder(dataflow=db)
        workflow.add_node(node_type, "a", params)
        return workflow.build()

    runtime.execute(one("ItemBulkDeleteNode", {"filter": {}, "confirmed": True}))  # a kept PostgreSQL table
    data = [{"name": f"item {i}", "qty": i, "price": i * 0.5} for i in range(ROWS)]
    runtime.execute(one("ItemBulkCreateNode", {"data": data}))
    first = runtime.execute(one("ItemListNode", {"limit": 1}))[0]["a"]["records"][0]["id"]
    workflows = {
        "create": one("ItemCreateNode", {"name": "widget", "qty": 3, "price": 9.5}),
        "read": one("ItemReadNode", {"id": first}),
        "update": one("ItemUpdateNode", {"id": first, "fields": {"qty": 7}}),
        "count": one("ItemCountNode", {"filter": {"qty": {"$gte": 500}, "active": True}}),
    }
    return {op: (lambda wf=wf: runtime.execute(wf)) for op, wf in workflows.items()}, db.close


def sqlalchemy_sync(
    backend: str, pg: str | None
) -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    from sqlalchemy.pool import StaticPool

    md, items = sa_item_table(
        "sa_single_items", {"sqlite": "sqlite://", "duckdb": "duckdb://"}.get(backend, "pg")
    )
    if backend == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    elif backend == "duckdb":
        engine = sa.create_engine("duckdb:///:memory:")
    else:
        assert pg is not None
        engine = sa.create_engine(sa.engine.make_url(pg).set(drivername="postgresql+psycopg"))
    md.drop_all(engine)
    md.create_all(engine)
    stamp = now()
    with engine.begin() as conn:
        conn.execute(items.insert(), [dict(name=f"item {i}", qty=i, price=i * 0.5, active=True, created_at=stamp,
                                           updated_at=stamp) for i in range(ROWS)])  # fmt: skip
        first = conn.execute(sa.select(sa.func.min(items.c.id))).scalar()

    def create() -> None:
        stamp = now()
        row = dict(name="widget", qty=3, price=9.5, active=True, created_at=stamp, updated_at=stamp)
        with engine.begin() as conn:
            conn.execute(items.insert().returning(*items.c), row).one()

    def read() -> None:
        with engine.connect() as conn:
            dict(conn.execute(items.select().where(items.c.id == first)).mappings().one())

    def update() -> None:
        stmt = items.update().where(items.c.id == first).values(qty=7, updated_at=now()).returning(*items.c)
        with engine.begin() as conn:
            conn.execute(stmt).one()

    def count() -> None:
        stmt = (
            sa.select(sa.func.count()).select_from(items).where(items.c.qty >= 500, items.c.active.is_(True))
        )
        with engine.connect() as conn:
            conn.execute(stmt).scalar()

    def close() -> None:
        md.drop_all(engine)
        engine.dispose()

    return {"create": create, "read": read, "update": update, "count": count}, close


INSERT = "INSERT INTO raw_single (name, qty, price, active, created_at, updated_at) VALUES ({}) RETURNING *"
UPDATE = "UPDATE raw_single SET qty = {}, updated_at = {} WHERE id = {} RETURNING *"
READ = "SELECT * FROM raw_single WHERE id = {}"
COUNT = "SELECT count(*) FROM raw_single WHERE qty >= {} AND active = {}"


def raw(backend: str, pg: str | None) -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    if backend == "postgres":
        return raw_asyncpg(pg)
    if backend == "sqlite":
        con: object = sqlite3.connect(":memory:", isolation_level=None)
        ddl = ("CREATE TABLE raw_single (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, qty INTEGER "
               "NOT NULL, price REAL NOT NULL, active INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT "
               "NOT NULL) STRICT")  # fmt: skip
        stamp: Callable[[], object] = lambda: now().isoformat()  # noqa: E731
        begin, commit = (lambda: con.execute("BEGIN")), (lambda: con.execute("COMMIT"))  # type: ignore[attr-defined]
    else:
        import duckdb

        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone='UTC'")
        ddl = ("CREATE SEQUENCE raw_single_seq START 1; CREATE TABLE raw_single (id BIGINT DEFAULT "
               "nextval('raw_single_seq') PRIMARY KEY, name VARCHAR NOT NULL, qty BIGINT NOT NULL, price DOUBLE "
               "NOT NULL, active BOOLEAN NOT NULL, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT "
               "NULL)")  # fmt: skip
        stamp = now
        begin, commit = con.begin, con.commit
    run = con.execute  # type: ignore[attr-defined]
    run(ddl)
    s = stamp()
    for i in range(ROWS):
        run(INSERT.format("?, ?, ?, ?, ?, ?"), (f"item {i}", i, i * 0.5, True, s, s))

    def create() -> None:
        begin()
        s = stamp()
        run(INSERT.format("?, ?, ?, ?, ?, ?"), ("widget", 3, 9.5, True, s, s)).fetchone()
        commit()

    def update() -> None:
        begin()
        run(UPDATE.format("?", "?", "?"), (7, stamp(), 1)).fetchone()
        commit()

    fns = {
        "create": create,
        "read": lambda: dict(zip(COLUMNS, run(READ.format("?"), (1,)).fetchone())),
        "update": update,
        "count": lambda: run(COUNT.format("?", "?"), (500, True)).fetchone(),
    }
    return fns, con.close  # type: ignore[attr-defined]


def raw_asyncpg(pg: str | None) -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    import asyncpg

    loop = asyncio.new_event_loop()
    go = loop.run_until_complete
    con = go(asyncpg.connect(pg))
    go(con.execute(
        "DROP TABLE IF EXISTS raw_single; CREATE TABLE raw_single (id BIGINT GENERATED BY DEFAULT AS IDENTITY "
        "PRIMARY KEY, name TEXT NOT NULL, qty BIGINT NOT NULL, price DOUBLE PRECISION NOT NULL, active BOOLEAN "
        "NOT NULL, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
    ))  # fmt: skip
    s = now()
    go(con.executemany(INSERT.format("$1, $2, $3, $4, $5, $6"), [(f"item {i}", i, i * 0.5, True, s, s)
                                                                   for i in range(ROWS)]))  # fmt: skip
    first = go(con.fetchval("SELECT min(id) FROM raw_single"))

    async def create() -> None:
        async with con.transaction():
            s = now()
            await con.fetchrow(INSERT.format("$1, $2, $3, $4, $5, $6"), "widget", 3, 9.5, True, s, s)

    async def update() -> None:
        async with con.transaction():
            await con.fetchrow(UPDATE.format("$1", "$2", "$3"), 7, now(), first)

    async def read() -> None:
        dict(zip(COLUMNS, await con.fetchrow(READ.format("$1"), first)))

    def close() -> None:
        go(con.execute("DROP TABLE raw_single"))
        go(con.close())
        loop.close()

    fns = {
        "create": lambda: go(create()),
        "read": lambda: go(read()),
        "update": lambda: go(update()),
        "count": lambda: go(con.fetchval(COUNT.format("$1", "$2"), 500, True)),
    }
    return fns, close


def alternating(fns: dict[str, Callable[[], object]], blocks: int, calls: int) -> dict[str, float]:
    """Seconds per call of each path: the median of ``blocks`` blocks of ``calls`` calls, paths
    alternating; wall time under the path's name, the process's CPU time under ``<name>_cpu``
    (all its threads: PostgreSQL runs go to the runtime's loop thread). A loaded machine keeps a
    process waiting for a core, which its wall time counts and its CPU time does not."""
    for fn in fns.values():
        for _ in range(calls):
            fn()
    times: dict[str, list[float]] = {key: [] for name in fns for key in (name, f"{name}_cpu")}
    for _ in range(blocks):
        for name, fn in fns.items():
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fn()
            times[f"{name}_cpu"].append((time.process_time() - cpu) / calls)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", nargs="+", default=["sqlite", "duckdb", "postgres"])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    pg = os.environ.get("DATAFLOW_TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    os.environ.pop("DATABASE_URL", None)
    urls = {"sqlite": None, "duckdb": "duckdb:///:memory:", "postgres": pg}
    print(
        "| backend | op | dataflow_lab | SQLAlchemy Core (sync) | raw driver | ours / SQLAlchemy | ours / raw "
        "| CPU: ours / SQLAlchemy | CPU: ours / raw |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for backend in args.backends:
        if backend == "postgres" and not pg:
            continue
        paths = {"ours": ours(urls[backend]), "sa": sqlalchemy_sync(backend, pg), "raw": raw(backend, pg)}
        for op in OPS:
            t = alternating({name: fns[op] for name, (fns, _) in paths.items()}, args.blocks, args.calls)
            print(f"| {backend} | {op} | {t['ours'] * 1e3:.3f} ms | {t['sa'] * 1e3:.3f} ms | {t['raw'] * 1e3:.3f} ms "
                  f"| {t['ours'] / t['sa']:.2f}x | {t['ours'] / t['raw']:.2f}x | {t['ours_cpu'] / t['sa_cpu']:.2f}x "
                  f"| {t['ours_cpu'] / t['raw_cpu']:.2f}x |")  # fmt: skip
        for _, close in paths.values():
            close()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nLoad average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} cores.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
