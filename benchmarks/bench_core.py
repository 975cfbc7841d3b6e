"""Core benchmark: dataflow_lab against the raw driver and SQLAlchemy Core, in the same run.

Four workloads per backend (SQLite in memory, DuckDB in memory, PostgreSQL when
DATAFLOW_TEST_POSTGRES_URL or DATABASE_URL names one, MariaDB when DATAFLOW_TEST_MYSQL_URL does,
against asyncmy; `--backends mysql`):

- single-op: one transaction that inserts a row (RETURNING *) and reads it back by id;
  for dataflow_lab that is a two-node workflow (Create -> Read) run by LocalRuntime.
- list-1000: fetch 1,000 rows as dicts; for dataflow_lab a ListNode with limit=1000.
- create, read by id, update by id: one statement each (the writes in a transaction); for
  dataflow_lab a one-node workflow (CreateNode, ReadNode, UpdateNode) run by LocalRuntime.
- count: how many rows match a filter (qty >= 500 AND active); a CountNode.
- filtered list: the first 10 rows of a filter (qty < 10 AND active); a ListNode.
- cold start: a fresh interpreter that imports, opens the database, defines the table
  and runs Create -> Read once (the whole subprocess, wall clock, median of several).

"SQLAlchemy Core" is its sync engine (sqlite3, psycopg, duckdb_engine), which most
scripts use; the async engine (aiosqlite, asyncpg) is reported beside it. SQLAlchemy
statements are built per call, as a script writes them (SQLAlchemy caches their
compiled form itself).

We report ratios (ours / baseline), because absolute times drift 30-50% on shared
machines. Run: python benchmarks/bench_core.py [--backends sqlite duckdb postgres]
[--workloads single create read update list count filtered] [--no-cold | --cold-only] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _harness import fmt_ms, item_db, per_op, sa_item_table, table  # noqa: E402

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder  # noqa: E402

ROWS = 1000
COLUMNS = ("id", "name", "qty", "price", "active", "created_at", "updated_at")
WORKLOADS = {
    "single": "single-op (create + read)",
    "create": "create (1 node)",
    "read": "read by id (1 node)",
    "update": "update by id (1 node)",
    "list": f"list {ROWS} rows",
    "count": "count (filtered)",
    "filtered": "list 10 rows (filtered)",
}
COUNT_MIN, LIST_BELOW = 500, 10  # count: qty >= 500 AND active; filtered list: qty < 10 AND active


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def seed_rows() -> list[tuple]:
    """(name, qty, price, active) of the ROWS rows every path lists and counts."""
    return [(f"item {i}", i, i * 0.5, True) for i in range(ROWS)]


def timed(fns: dict, n: int, wanted: list[str]) -> dict[str, float]:
    """Seconds per call of each wanted workload (list-1000 gets fewer calls: it is 1,000 rows)."""
    return {w: per_op(fns[w], n=max(20, n // 10) if w == "list" else n) for w in wanted if w in fns}


WRITES = ("update", "create", "single")  # timed after the reads, on every path: they add rows


def timed_all(fns: dict, n: int, wanted: list[str]) -> dict[str, float]:
    """``timed`` of the reads, then of the writes."""
    reads = {w: f for w, f in fns.items() if w not in WRITES}
    writes = {w: fns[w] for w in WRITES if w in fns}
    return {**timed(reads, n, wanted), **timed(writes, n, wanted)}


# -- dataflow_lab ------------------------------------------------------------
def ours(url: str | None, n: int, wanted: list[str]) -> dict[str, float]:
    db, _ = item_db(url)
    runtime = LocalRuntime()

    def one(node_type: str, params: dict, *more: tuple) -> object:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node(node_type, "a", params)
        for node_type2, params2, connection in more:
            wf.add_node(node_type2, "b", params2)
            wf.add_connection("a", connection, "b", connection)
        return wf.build()

    single_wf = one("ItemCreateNode", {"name": "widget", "qty": 3, "price": 9.5}, ("ItemReadNode", {}, "id"))
    runtime.execute(one("ItemBulkDeleteNode", {"filter": {}, "confirmed": True}))  # a kept PostgreSQL table
    data = [dict(zip(("name", "qty", "price", "active"), r)) for r in seed_rows()]
    runtime.execute(one("ItemBulkCreateNode", {"data": data}))
    list_wf = one("ItemListNode", {"limit": ROWS})
    count_wf = one("ItemCountNode", {"filter": {"qty": {"$gte": COUNT_MIN}, "active": True}})
    filtered_wf = one("ItemListNode", {"filter": {"qty": {"$lt": LIST_BELOW}, "active": True}, "limit": 10})
    listed = runtime.execute(list_wf)[0]["a"]
    assert listed["count"] == ROWS
    assert runtime.execute(count_wf)[0]["a"]["count"] == ROWS - COUNT_MIN
    assert runtime.execute(filtered_wf)[0]["a"]["count"] == LIST_BELOW
    first = listed["records"][0]["id"]
    create_wf = one("ItemCreateNode", {"name": "widget", "qty": 3, "price": 9.5})
    read_wf = one("ItemReadNode", {"id": first})
    update_wf = one("ItemUpdateNode", {"id": first, "fields": {"qty": 7}})
    fns = {
        "list": lambda: runtime.execute(list_wf),
        "count": lambda: runtime.execute(count_wf),
        "filtered": lambda: runtime.execute(filtered_wf),
        "read": lambda: runtime.execute(read_wf),
        "update": lambda: runtime.execute(update_wf),
        "create": lambda: runtime.execute(create_wf),
        "single": lambda: runtime.execute(single_wf),
    }
    result = timed_all(fns, n, wanted)
    db.close()
    return result


# -- raw drivers ---------------------------------------------------------------
def raw_sqlite(n: int, wanted: list[str]) -> dict[str, float]:
    con = sqlite3.connect(":memory:", isolation_level=None)
    con.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, qty INTEGER NOT NULL,"
        " price REAL NOT NULL, active INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
        " STRICT"
    )
    stamp = now().isoformat()
    con.executemany(
        "INSERT INTO items (name, qty, price, active, created_at, updated_at) VALUES (?,?,?,?,?,?)",
        [(*r, stamp, stamp) for r in seed_rows()],
    )

    def single() -> None:
        con.execute("BEGIN")
        stamp = now().isoformat()
        row = con.execute(
            "INSERT INTO items (name, qty, price, active, created_at, updated_at) VALUES (?,?,?,?,?,?)"
            " RETURNING *",
            ("widget", 3, 9.5, 1, stamp, stamp),
        ).fetchone()
        con.execute("SELECT * FROM items WHERE id = ?", (row[0],)).fetchone()
        con.execute("COMMIT")

    def create() -> None:
        con.execute("BEGIN")
        stamp = now().isoformat()
        con.execute(
            "INSERT INTO items (name, qty, price, active, created_at, updated_at) VALUES (?,?,?,?,?,?)"
            " RETURNING *",
            ("widget", 3, 9.5, 1, stamp, stamp),
        ).fetchone()
        con.execute("COMMIT")

    def update() -> None:
        con.execute("BEGIN")
        con.execute(
            "UPDATE items SET qty = ?, updated_at = ? WHERE id = ? RETURNING *", (7, now().isoformat(), 1)
        ).fetchone()
        con.execute("COMMIT")

    def listing(sql: str, params: tuple) -> None:
        rows = con.execute(sql, params).fetchall()
        [dict(zip(COLUMNS, r)) for r in rows]

    fns = {
        "list": lambda: listing("SELECT * FROM items ORDER BY id LIMIT ?", (ROWS,)),
        "count": lambda: con.execute(
            "SELECT count(*) FROM items WHERE qty >= ? AND active = ?", (COUNT_MIN, 1)
        ).fetchone(),
        "filtered": lambda: listing(
            "SELECT * FROM items WHERE qty < ? AND active = ? ORDER BY id LIMIT ?", (LIST_BELOW, 1, 10)
        ),
    }
    fns["read"] = lambda: dict(zip(COLUMNS, con.execute("SELECT * FROM items WHERE id = ?", (1,)).fetchone()))
    return timed_all({**fns, "update": update, "create": create, "single": single}, n, wanted)


def raw_asyncpg(url: str, n: int, wanted: list[str]) -> dict[str, float]:
    import asyncpg

    loop = asyncio.new_event_loop()
    con = loop.run_until_complete(asyncpg.connect(url))
    loop.run_until_complete(
        con.execute(
            "DROP TABLE IF EXISTS raw_items; CREATE TABLE raw_items (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
            " name TEXT NOT NULL, qty BIGINT NOT NULL, price DOUBLE PRECISION NOT NULL, active BOOLEAN NOT NULL,"
            " created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
        )
    )
    stamp = now()
    loop.run_until_complete(
        con.executemany(
            "INSERT INTO raw_items (name, qty, price, active, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6)",
            [(*r, stamp, stamp) for r in seed_rows()],
        )
    )

    async def single() -> None:
        async with con.transaction():
            stamp = now()
            row = await con.fetchrow(
                "INSERT INTO raw_items (name, qty, price, active, created_at, updated_at) "
                "VALUES ($1,$2,$3,$4,$5,$6) RETURNING *",
                "widget",
                3,
                9.5,
                True,
                stamp,
                stamp,
            )
            await con.fetchrow("SELECT * FROM raw_items WHERE id = $1", row[0])

    async def create() -> None:
        async with con.transaction():
            stamp = now()
            await con.fetchrow(
                "INSERT INTO raw_items (name, qty, price, active, created_at, updated_at) "
                "VALUES ($1,$2,$3,$4,$5,$6) RETURNING *",
                "widget", 3, 9.5, True, stamp, stamp,
            )  # fmt: skip

    async def read() -> None:
        dict(zip(COLUMNS, await con.fetchrow("SELECT * FROM raw_items WHERE id = $1", first)))

    async def update() -> None:
        async with con.transaction():
            await con.fetchrow(
                "UPDATE raw_items SET qty = $1, updated_at = $2 WHERE id = $3 RETURNING *", 7, now(), first
            )

    async def listing(sql: str, *params: object) -> None:
        [dict(zip(COLUMNS, r)) for r in await con.fetch(sql, *params)]

    run = loop.run_until_complete
    first = run(con.fetchval("SELECT min(id) FROM raw_items"))
    fns = {
        "read": lambda: run(read()),
        "update": lambda: run(update()),
        "create": lambda: run(create()),
        "single": lambda: run(single()),
        "list": lambda: run(listing("SELECT * FROM raw_items ORDER BY id LIMIT $1", ROWS)),
        "count": lambda: run(
            con.fetchval("SELECT count(*) FROM raw_items WHERE qty >= $1 AND active = $2", COUNT_MIN, True)
        ),
        "filtered": lambda: run(
            listing(
                "SELECT * FROM raw_items WHERE qty < $1 AND active = $2 ORDER BY id LIMIT $3",
                LIST_BELOW,
                True,
                10,
            )
        ),
    }
    result = timed_all(fns, n, wanted)
    run(con.execute("DROP TABLE raw_items"))
    run(con.close())
    loop.close()
    return result


def raw_asyncmy(url: str, n: int, wanted: list[str]) -> dict[str, float]:
    """MariaDB through asyncmy itself: the same statements (MariaDB has INSERT ... RETURNING; an
    update is UPDATE then SELECT, as it has no UPDATE ... RETURNING), autocommit off only inside
    the write transactions."""
    import asyncmy
    import sqlalchemy as sa

    parts = sa.engine.make_url(url)
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    con = run(asyncmy.connect(host=parts.host, port=parts.port or 3306, user=parts.username,
                              password=parts.password or "", database=parts.database, autocommit=True,
                              charset="utf8mb4"))  # fmt: skip

    async def sql(statement: str, *params: object, many: list | None = None) -> list:
        async with con.cursor() as cur:
            if many is not None:
                await cur.executemany(statement, many)
                return []
            await cur.execute(statement, params or None)
            return list(await cur.fetchall())

    run(sql("DROP TABLE IF EXISTS raw_items"))
    run(sql("CREATE TABLE raw_items (id BIGINT AUTO_INCREMENT PRIMARY KEY, name LONGTEXT NOT NULL, "
            "qty BIGINT NOT NULL, price DOUBLE NOT NULL, active BOOL NOT NULL, created_at DATETIME(6) NOT NULL, "
            "updated_at DATETIME(6) NOT NULL)"))  # fmt: skip
    stamp = now().replace(tzinfo=None)
    insert = (
        "INSERT INTO raw_items (name, qty, price, active, created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s)"
    )
    run(sql(insert, many=[(*r, stamp, stamp) for r in seed_rows()]))

    async def create() -> list:
        stamp = now().replace(tzinfo=None)
        await sql("START TRANSACTION")
        row = await sql(insert + " RETURNING *", "widget", 3, 9.5, True, stamp, stamp)
        await sql("COMMIT")
        return row

    async def single() -> None:
        row = await create()
        dict(zip(COLUMNS, (await sql("SELECT * FROM raw_items WHERE id = %s", row[0][0]))[0]))

    async def update() -> None:
        await sql("START TRANSACTION")
        await sql(
            "UPDATE raw_items SET qty = %s, updated_at = %s WHERE id = %s",
            7,
            now().replace(tzinfo=None),
            first,
        )
        await sql("SELECT * FROM raw_items WHERE id = %s", first)
        await sql("COMMIT")

    async def listing(statement: str, *params: object) -> None:
        [dict(zip(COLUMNS, r)) for r in await sql(statement, *params)]

    first = run(sql("SELECT min(id) FROM raw_items"))[0][0]
    fns = {
        "read": lambda: run(listing("SELECT * FROM raw_items WHERE id = %s", first)),
        "update": lambda: run(update()),
        "create": lambda: run(create()),
        "single": lambda: run(single()),
        "list": lambda: run(listing("SELECT * FROM raw_items ORDER BY id LIMIT %s", ROWS)),
        "count": lambda: run(
            sql("SELECT count(*) FROM raw_items WHERE qty >= %s AND active = %s", COUNT_MIN, True)
        ),
        "filtered": lambda: run(
            listing(
                "SELECT * FROM raw_items WHERE qty < %s AND active = %s ORDER BY id LIMIT %s",
                LIST_BELOW,
                True,
                10,
            )
        ),
    }
    result = timed_all(fns, n, wanted)
    run(sql("DROP TABLE raw_items"))
    con.close()
    loop.close()
    return result


def raw_duckdb(n: int, wanted: list[str]) -> dict[str, float]:
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    con.execute(
        "CREATE SEQUENCE s START 1; CREATE TABLE items (id BIGINT DEFAULT nextval('s') PRIMARY KEY,"
        " name VARCHAR NOT NULL, qty BIGINT NOT NULL, price DOUBLE NOT NULL, active BOOLEAN NOT NULL,"
        " created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
    )
    con.execute(
        "INSERT INTO items (name, qty, price, active, created_at, updated_at) "
        "SELECT 'item ' || i, i, i * 0.5, true, now(), now() FROM range(?) t(i)",
        [ROWS],
    )

    def single() -> None:
        con.begin()
        stamp = now()
        row = con.execute(
            "INSERT INTO items (name, qty, price, active, created_at, updated_at) VALUES (?,?,?,?,?,?)"
            " RETURNING *",
            ["widget", 3, 9.5, True, stamp, stamp],
        ).fetchone()
        con.execute("SELECT * FROM items WHERE id = ?", [row[0]]).fetchone()
        con.commit()

    def create() -> None:
        con.begin()
        stamp = now()
        con.execute(
            "INSERT INTO items (name, qty, price, active, created_at, updated_at) VALUES (?,?,?,?,?,?)"
            " RETURNING *",
            ["widget", 3, 9.5, True, stamp, stamp],
        ).fetchone()
        con.commit()

    def update() -> None:
        con.begin()
        con.execute(
            "UPDATE items SET qty = ?, updated_at = ? WHERE id = ? RETURNING *", [7, now(), 1]
        ).fetchone()
        con.commit()

    def listing(sql: str, params: list) -> None:
        [dict(zip(COLUMNS, r)) for r in con.execute(sql, params).fetchall()]

    fns = {
        "list": lambda: listing("SELECT * FROM items ORDER BY id LIMIT ?", [ROWS]),
        "count": lambda: con.execute(
            "SELECT count(*) FROM items WHERE qty >= ? AND active = ?", [COUNT_MIN, True]
        ).fetchone(),
        "filtered": lambda: listing(
            "SELECT * FROM items WHERE qty < ? AND active = ? ORDER BY id LIMIT ?", [LIST_BELOW, True, 10]
        ),
    }
    fns["read"] = lambda: dict(zip(COLUMNS, con.execute("SELECT * FROM items WHERE id = ?", [1]).fetchone()))
    result = timed_all({**fns, "update": update, "create": create, "single": single}, n, wanted)
    con.close()
    return result


# -- SQLAlchemy Core -------------------------------------------------------------
def _sa_statements(items):
    """The statements of each workload, built per call as a script writes them."""
    import sqlalchemy as sa

    stamp = now()
    new_row = dict(name="widget", qty=3, price=9.5, active=True, created_at=stamp, updated_at=stamp)
    return {
        "insert": lambda: (items.insert().returning(*items.c), new_row),
        "read": lambda row_id: items.select().where(items.c.id == row_id),
        "update": lambda row_id: (
            items.update().where(items.c.id == row_id).values(qty=7, updated_at=now()).returning(*items.c)
        ),
        "list": lambda: items.select().order_by(items.c.id).limit(ROWS),
        "count": lambda: (
            sa.select(sa.func.count())
            .select_from(items)
            .where(items.c.qty >= COUNT_MIN, items.c.active.is_(True))
        ),
        "filtered": lambda: (
            items.select()
            .where(items.c.qty < LIST_BELOW, items.c.active.is_(True))
            .order_by(items.c.id)
            .limit(10)
        ),
        "seed": [
            dict(zip(("name", "qty", "price", "active"), r), created_at=stamp, updated_at=stamp)
            for r in seed_rows()
        ],
    }


def sqlalchemy_sync(url: str, n: int, wanted: list[str]) -> dict[str, float]:
    """SQLAlchemy Core's sync engine: sqlite3 (pysqlite), psycopg, duckdb_engine."""
    import sqlalchemy as sa
    from sqlalchemy.pool import StaticPool

    md, items = sa_item_table("sa_items", url)
    s = _sa_statements(items)
    if url.startswith("sqlite"):
        engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    elif url.startswith("duckdb"):
        engine = sa.create_engine(url)
    else:
        engine = sa.create_engine(sa.engine.make_url(url).set(drivername="postgresql+psycopg"))
    md.drop_all(engine)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(items.insert(), s["seed"])

    with engine.connect() as conn:
        first = conn.execute(sa.select(sa.func.min(items.c.id))).scalar()

    def single() -> None:
        with engine.begin() as conn:
            row = conn.execute(*s["insert"]()).one()
            conn.execute(s["read"](row.id)).one()

    def create() -> None:
        with engine.begin() as conn:
            conn.execute(*s["insert"]()).one()

    def read() -> None:
        with engine.connect() as conn:
            dict(conn.execute(s["read"](first)).mappings().one())

    def update() -> None:
        with engine.begin() as conn:
            conn.execute(s["update"](first)).one()

    def rows(stmt) -> None:
        with engine.connect() as conn:
            [dict(r) for r in conn.execute(stmt).mappings()]

    def count() -> None:
        with engine.connect() as conn:
            conn.execute(s["count"]()).scalar()

    fns = {"list": lambda: rows(s["list"]()), "count": count, "filtered": lambda: rows(s["filtered"]()),
           "read": read, "update": update, "create": create, "single": single}  # fmt: skip
    result = timed_all(fns, n, wanted)
    md.drop_all(engine)
    engine.dispose()
    return result


def sqlalchemy_async(url: str, n: int, wanted: list[str]) -> dict[str, float]:
    """SQLAlchemy Core's async engine: aiosqlite, asyncpg (none for DuckDB: empty)."""
    if url.startswith("duckdb"):
        return {}
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import StaticPool

    md, items = sa_item_table("sa_items", url)
    s = _sa_statements(items)
    loop = asyncio.new_event_loop()
    if url.startswith("sqlite"):
        engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    else:
        engine = create_async_engine(sa.engine.make_url(url).set(drivername="postgresql+asyncpg"))

    async def setup() -> None:
        async with engine.begin() as conn:
            await conn.run_sync(md.drop_all)
            await conn.run_sync(md.create_all)
            await conn.execute(items.insert(), s["seed"])

    loop.run_until_complete(setup())

    async def single() -> None:
        async with engine.begin() as conn:
            row = (await conn.execute(*s["insert"]())).one()
            (await conn.execute(s["read"](row.id))).one()

    async def create() -> None:
        async with engine.begin() as conn:
            (await conn.execute(*s["insert"]())).one()

    async def first_id() -> int:
        async with engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.min(items.c.id)))).scalar()

    async def read() -> None:
        async with engine.connect() as conn:
            dict((await conn.execute(s["read"](first))).mappings().one())

    async def update() -> None:
        async with engine.begin() as conn:
            (await conn.execute(s["update"](first))).one()

    async def rows(stmt) -> None:
        async with engine.connect() as conn:
            [dict(r) for r in (await conn.execute(stmt)).mappings()]

    async def count() -> None:
        async with engine.connect() as conn:
            (await conn.execute(s["count"]())).scalar()

    run = loop.run_until_complete
    first = run(first_id())
    fns = {
        "list": lambda: run(rows(s["list"]())),
        "count": lambda: run(count()),
        "filtered": lambda: run(rows(s["filtered"]())),
        "read": lambda: run(read()),
        "update": lambda: run(update()),
        "create": lambda: run(create()),
        "single": lambda: run(single()),
    }
    result = timed_all(fns, n, wanted)

    async def teardown() -> None:
        async with engine.begin() as conn:
            await conn.run_sync(md.drop_all)
        await engine.dispose()

    run(teardown())
    loop.close()
    return result


# -- cold start: a fresh process to its first result -----------------------------
COLD_OURS = """
import os, sys
sys.path.insert(0, os.environ["COLD_BENCHMARKS"])
from _harness import item_db
from dataflow_lab import LocalRuntime, WorkflowBuilder
db, _ = item_db(os.environ["COLD_URL"] or None)
wf = WorkflowBuilder(dataflow=db)
wf.add_node("ItemCreateNode", "create", {"name": "widget", "qty": 3, "price": 9.5})
wf.add_node("ItemReadNode", "read", {})
wf.add_connection("create", "id", "read", "id")
assert LocalRuntime().execute(wf.build())[0]["read"]["name"] == "widget"
"""

COLD_SQLALCHEMY = """
import datetime as dt, os
import sqlalchemy as sa
url = os.environ["COLD_URL"]
md = sa.MetaData()
items = sa.Table(
    "sa_cold_items", md,
    sa.Column("id", sa.Integer if url.startswith("sqlite") else sa.BigInteger,
              sa.Sequence("sa_cold_seq") if url.startswith("duckdb") else sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False), sa.Column("qty", sa.BigInteger, nullable=False),
    sa.Column("price", sa.Double, nullable=False), sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
now = dt.datetime.now(dt.UTC)
row = dict(name="widget", qty=3, price=9.5, active=True, created_at=now, updated_at=now)
if url.startswith("sqlite"):
    engine = sa.create_engine("sqlite://")
elif url.startswith("duckdb"):
    engine = sa.create_engine(url)
else:
    engine = sa.create_engine(sa.engine.make_url(url).set(drivername="postgresql+psycopg"))
md.create_all(engine)
with engine.begin() as conn:
    new = conn.execute(items.insert().returning(*items.c), row).one()
    assert conn.execute(items.select().where(items.c.id == new.id)).one().name == "widget"
"""


def method_vs_hand(url: str | None, n: int) -> tuple[float, float]:
    """(Item.create(...), the same one-node workflow built and run by hand), seconds per call.

    The two alternate round by round, so a noisy neighbour slows both alike.
    """
    db, Item = item_db(url)  # noqa: N806 - a model class
    runtime = LocalRuntime()

    def by_hand() -> None:
        workflow = WorkflowBuilder(dataflow=db)
        workflow.add_node("ItemCreateNode", "create", {"name": "widget", "qty": 3, "price": 9.5})
        runtime.execute(workflow.build())

    def method() -> None:
        Item.create(name="widget", qty=3, price=9.5)

    method_t, hand_t = alternating(method, by_hand, blocks=25, calls=max(4, n // 5))
    db.close()
    return method_t, hand_t


def alternating(ours: Any, theirs: Any, *, blocks: int, calls: int) -> tuple[float, float]:
    """Seconds per call of each, medians over ``blocks`` short blocks that alternate (after a warm-up).

    On a shared machine the load moves within seconds: short alternating blocks meet the same load.
    Which side goes first swaps from block to block: the second side of a pair finds DuckDB's
    worker threads (and the caches) just woken by the first.
    """
    for fn in (ours, theirs):
        fn()
    times: tuple[list[float], list[float]] = ([], [])
    pair = ((ours, times[0]), (theirs, times[1]))
    for block in range(blocks):
        for fn, out in pair if block % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            out.append((time.perf_counter() - start) / calls)
    return statistics.median(times[0]), statistics.median(times[1])


# -- Aggregate over many rows against the same GROUP BY through the raw driver ----------
AGG_SQL = (
    "SELECT station, count(*) AS trips, sum(km) AS km, CAST(avg(minutes) AS DOUBLE{}) AS avg_min "
    "FROM bench_agg_trips GROUP BY station ORDER BY station"
)
AGG_COLUMNS = ("station", "trips", "km", "avg_min")


def _agg_model(db: DataFlow) -> type:
    @db.model
    class AggTrip:
        station: str
        km: float
        minutes: int

        __tablename__ = "bench_agg_trips"

    return AggTrip


def _agg_rows(rows: int) -> list[dict]:
    return [{"station": f"s{i % 100:03d}", "km": (i % 97) * 0.25, "minutes": i % 61} for i in range(rows)]


def aggregate_vs_raw(label: str, url: str, rows: int) -> tuple[float, float, float]:
    """(AggTrip.aggregate over ``rows`` rows, the same GROUP BY on the raw driver), seconds per query,
    and the raw driver's ratio to itself in the same harness: what the ratio moves by with no change.

    The raw connection is open beside ours, on the same table, and the two alternate query by query
    (a page cache or a noisy neighbour then favours neither); medians of 31 queries each.
    """
    db = DataFlow(url, echo=False)  # as the core rows: no SQL on stderr
    AggTrip = _agg_model(db)
    AggTrip.bulk_delete({}, confirmed=True)
    for start in range(0, rows, 200_000):
        AggTrip.bulk_create(_agg_rows(min(200_000, rows - start)), progress=False)
    metrics = {"trips": "count", "km": ("sum", "km"), "avg_min": ("avg", "minutes")}

    def ours_once() -> None:
        assert len(AggTrip.aggregate(["station"], metrics)) == 100

    raw_once, close = {"SQLite": _raw_sqlite_agg, "DuckDB": _raw_duckdb_agg, "PostgreSQL": _raw_asyncpg_agg}[
        label.split()[0]
    ](url)
    try:
        ours_t, raw_t = alternating(ours_once, raw_once, blocks=31, calls=1)
        first, second = alternating(raw_once, raw_once, blocks=31, calls=1)
        return ours_t, raw_t, first / second
    finally:
        close()
        AggTrip.bulk_delete({}, confirmed=True)
        db.close()


def _dicts(rows: list) -> None:
    assert len([dict(zip(AGG_COLUMNS, r)) for r in rows]) == 100


def _raw_sqlite_agg(url: str) -> tuple:
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    return (lambda: _dicts(con.execute(AGG_SQL.format("")).fetchall())), con.close


def _raw_duckdb_agg(url: str) -> tuple:
    import duckdb

    con = duckdb.connect(url.removeprefix("duckdb:///"))  # the same database instance as ours (one process)
    return (lambda: _dicts(con.execute(AGG_SQL.format("")).fetchall())), con.close


def _raw_asyncpg_agg(url: str) -> tuple:
    import asyncpg

    loop = asyncio.new_event_loop()
    con = loop.run_until_complete(asyncpg.connect(url))

    async def once() -> None:
        _dicts(await con.fetch(AGG_SQL.format(" PRECISION")))

    def close() -> None:
        loop.run_until_complete(con.close())
        loop.close()

    return (lambda: loop.run_until_complete(once())), close


# -- db.sql(engine="duckdb") over a SQLite file against plain SQLite (issue 18) -------------
def duckdb_over_sqlite(path: str, rows: int) -> tuple[float, float] | str:
    """(the GROUP BY through ``db.sql(..., engine="duckdb")`` on a SQLite file, the same in plain
    sqlite3), seconds per query; or, when DuckDB's sqlite scanner cannot be loaded here, why not.

    Asked before any row is loaded: without the scanner the row says so and costs nothing.
    """
    from dataflow_lab import DataFlowError

    db = DataFlow(f"sqlite:///{path}", echo=False)
    AggTrip = _agg_model(db)
    try:
        db.sql("SELECT 1 AS one", engine="duckdb")
    except DataFlowError as exc:
        db.close()
        return exc.message.splitlines()[0].split(", and could not")[0]  # (not DuckDB's download address)
    for start in range(0, rows, 200_000):
        AggTrip.bulk_create(_agg_rows(min(200_000, rows - start)), progress=False)
    sql = AGG_SQL.format("")
    con = sqlite3.connect(path)
    try:
        assert len(db.sql(sql, engine="duckdb")) == 100
        return alternating(lambda: db.sql(sql, engine="duckdb"), lambda: _dicts(con.execute(sql).fetchall()),
                           blocks=7, calls=1)  # fmt: skip
    finally:
        con.close()
        db.close()


# -- cold start: a fresh process to its first result -----------------------------
def cold_start(url: str | None, sa_url: str, runs: int = 7) -> dict[str, float]:
    """A fresh process to its first result, ours and SQLAlchemy Core's, median of ``runs`` each:
    wall seconds ("ours", "sa") and the CPU seconds the process used ("ours_cpu", "sa_cpu").

    The two alternate, so a noisy neighbour slows both alike; CPU time moves less than wall time
    on a loaded machine (a process waiting for a core is not charged). Both start from
    bytecode: pip compiles SQLAlchemy's modules when it installs them, and so it
    would ours from a wheel, but an editable checkout run with
    ``PYTHONDONTWRITEBYTECODE=1`` (as on the CI machines) recompiles our 16k lines
    in every fresh process, which measured 1.39x instead of 0.97-1.15x. So ours
    are compiled once first, as an installed package is, and so is ``_harness``, the
    benchmarks' module whose ``item_db`` our process imports (the SQLAlchemy process
    imports no module of the benchmarks; compiling it was 2 ms of ours, ~1%).
    """
    import compileall

    import dataflow_lab

    compileall.compile_dir(os.path.dirname(dataflow_lab.__file__), quiet=1)
    compileall.compile_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_harness.py"), quiet=1)
    env = {**os.environ, "COLD_BENCHMARKS": os.path.dirname(os.path.abspath(__file__))}

    def one(code: str, target: str) -> tuple[float, float]:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**env, "COLD_URL": target},
        )
        _, stderr = process.communicate()
        wall = time.perf_counter() - start
        if process.returncode:
            raise RuntimeError(f"the cold-start process failed:\n{stderr.decode()}")
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # summed over the children so far
        return wall, usage.ru_utime + usage.ru_stime

    times: dict[str, list[float]] = {"ours": [], "sa": [], "ours_cpu": [], "sa_cpu": []}
    cpu_before = one("pass", "")[1]
    for _ in range(runs):
        for name, code, target in (("ours", COLD_OURS, url or ""), ("sa", COLD_SQLALCHEMY, sa_url)):
            wall, cpu_after = one(code, target)
            times[name].append(wall)
            times[f"{name}_cpu"].append(cpu_after - cpu_before)
            cpu_before = cpu_after
    return {name: statistics.median(t) for name, t in times.items()}


def cold_rows(label: str, cold: dict[str, float]) -> list[tuple]:
    """The cold-start rows of the core table: wall clock, and the CPU time the process used."""
    return [
        (label, "cold start to first result", fmt_ms(cold["ours"]), "", fmt_ms(cold["sa"]), "", "",
         f"{cold['ours'] / cold['sa']:.2f}x", ""),
        (label, "cold start, CPU time", fmt_ms(cold["ours_cpu"]), "", fmt_ms(cold["sa_cpu"]), "", "",
         f"{cold['ours_cpu'] / cold['sa_cpu']:.2f}x", ""),
    ]  # fmt: skip


def print_cold(args: argparse.Namespace, backends: list) -> int:
    """``--cold-only``: the cold-start rows alone, with the load average."""
    rows = [
        row
        for label, url, _raw, sa_url in backends
        for row in cold_rows(label, cold_start(url, sa_url, args.cold_runs))
    ]
    print(
        table(
            [(r[0], r[1], r[2], r[4], r[7]) for r in rows],
            ("backend", "workload", "dataflow_lab", "SQLAlchemy Core (sync)", "ours / SQLAlchemy"),
        )
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{args.cold_runs} alternating runs each. Load average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} cores."
    )
    return 0


def import_time() -> float:
    """Seconds for `import dataflow_lab` in a fresh interpreter (minus bare startup), best of 5."""

    def run(code: str) -> float:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import time; t=time.perf_counter(); {code}; print(time.perf_counter()-t)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout.strip())

    return min(run("import dataflow_lab") for _ in range(5))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=500, help="single-op iterations per round")
    parser.add_argument("--write", metavar="PATH", help="also write the figures as markdown to PATH")
    parser.add_argument("--cold-runs", type=int, default=7, help="fresh processes per cold-start figure")
    parser.add_argument("--no-cold", action="store_true", help="leave out the cold-start rows")
    parser.add_argument("--cold-only", action="store_true", help="only the cold-start rows (no --write)")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "duckdb", "postgres"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument(
        "--extra",
        default="method,aggregate,duckdb",
        help="further tables: method (Item.create vs by hand), aggregate, duckdb (db.sql(engine='duckdb') "
        "over a SQLite file vs plain SQLite); '' for none",
    )
    parser.add_argument("--agg-rows", type=int, default=1_000_000, help="rows of the aggregate workload")
    args = parser.parse_args()
    pg = os.environ.get("DATAFLOW_TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    my = os.environ.get("DATAFLOW_TEST_MYSQL_URL")
    os.environ.pop("DATABASE_URL", None)
    n, wanted = args.n, args.workloads
    backends = {
        "sqlite": ("SQLite (memory)", None, lambda: raw_sqlite(n, wanted), "sqlite://"),
        "duckdb": ("DuckDB (memory)", "duckdb:///:memory:", lambda: raw_duckdb(n, wanted), "duckdb:///:memory:"),
        "postgres": ("PostgreSQL", pg, lambda: raw_asyncpg(pg, n, wanted), pg),
        "mysql": ("MariaDB", my, lambda: raw_asyncmy(my, n, wanted), None),  # no SQLAlchemy Core rows: no pymysql
    }  # fmt: skip
    if args.cold_only:
        return print_cold(args, [backends[name] for name in args.backends if name != "postgres" or pg])
    rows = []
    for name in args.backends:
        label, url, raw, sa_url = backends[name]
        if (name == "postgres" and not pg) or (name == "mysql" and not my):
            continue
        times = {
            "ours": ours(url, n, wanted),
            "raw": raw(),
            "sync": sqlalchemy_sync(sa_url, n, wanted) if sa_url else {},
            "async": sqlalchemy_async(sa_url, n, wanted) if sa_url else {},
        }
        for w in wanted:
            t = {path: got.get(w) for path, got in times.items()}
            rows.append((label, WORKLOADS[w], *(fmt_ms(v) if v else "-" for v in t.values()),
                         *(f"{t['ours'] / t[k]:.2f}x" if t[k] else "-" for k in ("raw", "sync", "async"))))  # fmt: skip
        if not args.no_cold and sa_url:
            rows += cold_rows(label, cold_start(url, sa_url, args.cold_runs))
        print(f"done: {label}", file=sys.stderr)
    report = table(
        rows,
        ("backend", "workload", "dataflow_lab", "raw driver", "SQLAlchemy Core (sync)", "SQLAlchemy (async)",
         "ours / raw", "ours / SQLAlchemy", "ours / SA async"),
    )  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report += f"\n\nLoad average (1, 5, 15 min) at the end of the run: {load} on {os.cpu_count()} cores.\n"
    if not args.no_cold:
        imp = import_time()
        report += (
            f"\n`import dataflow_lab`: {imp * 1000:.0f} ms (fresh interpreter, best of 5; target <= 300 ms)\n"
            "\nCold start: a fresh process (interpreter start included) that imports, opens the database,\n"
            "defines the table and runs Create -> Read once, wall clock, median of "
            f"{args.cold_runs} alternating runs; target <= 1.20x SQLAlchemy Core (its sync engine).\n"
        )
    chosen = [backends[name] for name in args.backends if (name != "postgres" or pg) and name != "mysql"]
    extra = extra_rows(chosen, set(filter(None, args.extra.split(","))), args, pg)
    if extra:
        report += "\n" + table(
            extra, ("backend", "workload", "dataflow_lab", "baseline", "ours / baseline", "target")
        )
        report += (
            "\nMethod: `Item.create(...)` against building and running the same one-node workflow by hand "
            "(the method caches the built workflow per node class). Aggregate: `AggTrip.aggregate(['station'], "
            "{trips: count, km: sum, avg_min: avg})` over the rows, against the same GROUP BY on the raw driver "
            "(rows made into dicts), on a file database (SQLite, DuckDB) or the server; 'raw vs itself' is the raw "
            "query against itself in the same harness, what the ratio moves by with nothing changed. DuckDB over SQLite: the "
            "same GROUP BY through `db.sql(..., engine='duckdb')` (DuckDB's sqlite scanner reads the file) against "
            "sqlite3 on the file; skipped, with the reason, where the scanner cannot be loaded (DuckDB downloads "
            "it, or a `duckdb-extension-sqlite-scanner` wheel for the exact DuckDB version brings it).\n"
        )
    print(report)
    if args.write:
        write(args.write, report)
    return 0


def extra_rows(backends: list, workloads: set[str], args: argparse.Namespace, pg: str | None) -> list[tuple]:
    """The method and aggregate tables' rows."""
    import tempfile

    rows = []
    for label, url, _raw, _sa in backends:
        if "method" in workloads:
            method_t, hand_t = method_vs_hand(url, args.n)
            rows.append((label, "Item.create(...) vs the workflow by hand", fmt_ms(method_t), fmt_ms(hand_t),
                         f"{method_t / hand_t:.2f}x", "<= 1.00x"))  # fmt: skip
    if "duckdb" in workloads:
        with tempfile.TemporaryDirectory() as tmp:
            got = duckdb_over_sqlite(os.path.join(tmp, "scan.db"), args.agg_rows)
            workload = f"db.sql(engine='duckdb') GROUP BY over {args.agg_rows:,} rows vs plain SQLite"
            if isinstance(got, str):
                rows.append(("SQLite (file)", workload, "skipped", "-", f"skipped: {got}", "> 1.00x"))
            else:
                rows.append(("SQLite (file)", workload, fmt_ms(got[0]), fmt_ms(got[1]),
                             f"{got[1] / got[0]:.2f}x of plain SQLite's speed", "> 1.00x"))  # fmt: skip
            print("done: duckdb over sqlite", file=sys.stderr)
    if "aggregate" in workloads:
        with tempfile.TemporaryDirectory() as tmp:
            targets = [
                ("SQLite (file)", f"sqlite:///{tmp}/agg.db"),
                ("DuckDB (file)", f"duckdb:///{tmp}/agg.duckdb"),
            ]
            targets += [("PostgreSQL", pg)] if pg else []
            for label, url in targets:
                ours_t, raw_t, itself = aggregate_vs_raw(label, url, args.agg_rows)
                rows.append((label, f"aggregate {args.agg_rows:,} rows (GROUP BY) vs the raw driver", fmt_ms(ours_t),
                             fmt_ms(raw_t), f"{raw_t / ours_t:.2f}x of raw speed (raw vs itself: {itself:.2f}x)",
                             ">= 0.90x"))  # fmt: skip
                print(f"done: aggregate on {label}", file=sys.stderr)
    return rows


def write(path: str, report: str, key: str = "bench_core") -> None:
    """Replace (or append) this benchmark's block in a markdown file."""
    marker_start, marker_end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{marker_start}\n{report}\n{marker_end}"
    if marker_start in text:
        head, rest = text.split(marker_start, 1)
        text = head + block + rest.split(marker_end, 1)[1]
    else:
        text += ("\n" if text else "") + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
