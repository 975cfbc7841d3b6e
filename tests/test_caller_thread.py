"""A SQLite or DuckDB run stays on its caller's thread (runtime._claimed_here), and stays correct there.

Their statements need nothing of the background loop (dialects/sqlite.py, dialects/duckdb.py), so a
sync ``execute()`` of a settled SQLite or DuckDB database runs the whole run on a loop of the caller's
thread. These tests check that it does,
when it must not (Jupyter's running loop, ``db.transaction()``, a Python node, PostgreSQL), and
that threads and the background loop sharing one database still serialize their transactions.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from dataflow_lab import AsyncLocalRuntime, DataFlow, LocalRuntime, WorkflowBuilder


def define(db: DataFlow) -> None:
    @db.model
    class Item:
        name: str
        qty: int = 0


def create(db: DataFlow, name: str, qty: int = 0):
    workflow = WorkflowBuilder(dataflow=db)
    workflow.add_node("ItemCreateNode", "create", {"name": name, "qty": qty})
    return workflow.build()


def count(db: DataFlow) -> int:
    workflow = WorkflowBuilder(dataflow=db)
    workflow.add_node("ItemCountNode", "count", {})
    return LocalRuntime().execute(workflow.build())[0]["count"]["count"]


class Threads:
    """A hook that records the thread each node ran on."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def before_node(self, **_: object) -> None:
        self.seen.append(threading.current_thread().name)


URLS = {
    "memory": lambda tmp: None,
    "file": lambda tmp: f"sqlite:///{tmp}/t.db",
    "duckdb": lambda tmp: f"duckdb:///{tmp}/t.duckdb",
}


@pytest.fixture(params=list(URLS))
def sqlite_db(request, tmp_path):
    db = DataFlow(URLS[request.param](tmp_path), echo=False)
    define(db)
    yield db
    db.close()


def test_a_settled_sqlite_run_stays_on_its_callers_thread(sqlite_db):
    threads = Threads()
    runtime = LocalRuntime(hooks=[threads])
    runtime.execute(create(sqlite_db, "first"))  # the first run opens the database on the loop
    runtime.execute(create(sqlite_db, "second"))
    assert threads.seen == ["dataflow-lab-loop", threading.current_thread().name]
    assert count(sqlite_db) == 2 and sqlite_db.pool_status()["checked_out"] == 0


def test_a_run_inside_a_transaction_block_joins_it_and_rolls_back_with_it(sqlite_db):
    runtime = LocalRuntime()
    runtime.execute(create(sqlite_db, "kept"))
    with pytest.raises(RuntimeError, match="undo"):
        with sqlite_db.transaction():
            runtime.execute(create(sqlite_db, "undone"))
            raise RuntimeError("undo")
    assert count(sqlite_db) == 1


def test_with_a_running_loop_in_the_thread_a_sync_run_goes_to_the_background_loop(sqlite_db):
    threads = Threads()
    runtime = LocalRuntime(hooks=[threads])
    runtime.execute(create(sqlite_db, "first"))

    async def in_a_notebook_cell() -> None:  # Jupyter's kernel thread runs a loop: no loop of our own there
        runtime.execute(create(sqlite_db, "from a cell"))

    asyncio.run(in_a_notebook_cell())
    assert threads.seen == ["dataflow-lab-loop", "dataflow-lab-loop"] and count(sqlite_db) == 2


def test_a_workflow_with_a_python_node_runs_on_the_background_loop(sqlite_db):
    threads = Threads()
    runtime = LocalRuntime(hooks=[threads])
    runtime.execute(create(sqlite_db, "first"))
    workflow = WorkflowBuilder(dataflow=sqlite_db)
    workflow.add_node("ItemCreateNode", "create", {"name": "x"})

    def double(id: int) -> int:  # noqa: A002 - the Create's output name
        return id * 2

    workflow.add_node(double, "double")
    workflow.add_connection("create", "id", "double", "id")
    results, _ = runtime.execute(workflow.build())
    assert results["double"] == 4
    assert threads.seen[1:] == ["dataflow-lab-loop", "dataflow-lab-loop"]


def test_threads_and_the_background_loop_share_one_database_without_losing_a_write(sqlite_db):
    runtime, errors = LocalRuntime(), []
    runtime.execute(create(sqlite_db, "first"))

    def writer(n: int) -> None:
        try:
            for i in range(40):
                runtime.execute(create(sqlite_db, f"t{n}-{i}", i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    async def on_the_loop() -> None:
        for i in range(40):
            await AsyncLocalRuntime().execute_async(create(sqlite_db, f"async-{i}", i))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=lambda: asyncio.run(on_the_loop())))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert count(sqlite_db) == 1 + 4 * 40
    assert sqlite_db.pool_status()["checked_out"] == 0


def test_a_failed_run_on_the_callers_thread_rolls_back_and_gives_the_database_back(sqlite_db):
    runtime = LocalRuntime()
    runtime.execute(create(sqlite_db, "first"))
    workflow = WorkflowBuilder(dataflow=sqlite_db)
    workflow.add_node("ItemCreateNode", "create", {"name": "undone"})
    workflow.add_node("ItemUpdateNode", "update", {"id": 999, "fields": {"qty": 1}})
    workflow.add_connection("create", "name", "update", "fields.name")
    with pytest.raises(Exception, match="999"):
        runtime.execute(workflow.build())
    assert count(sqlite_db) == 1
    assert sqlite_db.database.dialect.claim()  # nobody kept the claim
    sqlite_db.database.dialect.unclaim()


HANG = {
    "sqlite": "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r",
    "duckdb": "SELECT sum(a.range) FROM range(1000000000000) a",
}


def test_a_hung_statement_on_the_callers_thread_is_interrupted_at_its_time_limit(sqlite_db):
    from dataflow_lab import NodeTimeoutError
    from dataflow_lab.nodes.base import Node, Param

    class Hang(Node):
        type_name = "Hang"
        parameters = (Param("after", int, required=True),)
        dataflow = sqlite_db
        writes = True

        async def run(self, ctx) -> dict:
            conn = await ctx.connection(sqlite_db)
            await conn.fetch(
                "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
            )
            return {}

    threads = Threads()
    runtime = LocalRuntime(hooks=[threads])
    runtime.execute(create(sqlite_db, "first"))
    workflow = WorkflowBuilder(dataflow=sqlite_db)
    workflow.add_node("ItemCreateNode", "create", {"name": "undone"})
    workflow.add_node(Hang, "hang", timeout=0.3)
    workflow.add_connection("create", "id", "hang", "after")
    with pytest.raises(NodeTimeoutError, match="0.3 s"):
        runtime.execute(workflow.build())
    assert threads.seen[-1] == threading.current_thread().name  # it ran here, and was stopped here
    assert count(sqlite_db) == 1 and sqlite_db.pool_status()["checked_out"] == 0


def test_a_slow_statement_of_a_run_on_the_callers_thread_is_explained_on_the_background_loop(tmp_path):
    import time

    db = DataFlow(f"duckdb:///{tmp_path}/slow.duckdb", slow_query_threshold=1e-9, echo=False)
    define(db)
    threads = Threads()
    runtime = LocalRuntime(hooks=[threads])

    def explained(run_id: str | None = None) -> list:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            s.plan for s in db.slow_statements(run_id) if s.node_id
        ):
            time.sleep(0.05)
        return [s.plan for s in db.slow_statements(run_id)]

    runtime.execute(create(db, "first"))
    explained()  # (an EXPLAIN under way holds the database: the next run would go to the background loop)
    workflow = WorkflowBuilder(dataflow=db)
    workflow.add_node("ItemListNode", "find", {"filter": {"name": "first"}})
    _, run_id = runtime.execute(workflow.build())
    assert threads.seen[-1] == threading.current_thread().name
    plans = explained(run_id)
    assert plans and all(p and "not explained" not in p for p in plans), plans
    db.close()
