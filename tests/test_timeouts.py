"""Time limits: LocalRuntime(timeout=) for a run, node_timeout= and add_node(timeout=) for a node.

A run or node past its limit is cancelled; its transaction is rolled back or compensated as the
mode says, its connection goes back to the pool, and the error names the node and the limit.
Statements are stopped on the database: PostgreSQL's pg_sleep is cancelled server-side, SQLite's
and DuckDB's long queries are interrupted on their threads.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from test_faults import record

from dataflow_lab import (
    AsyncLocalRuntime,
    DataFlow,
    LocalRuntime,
    NodeExecutionError,
    NodeTimeoutError,
    RunTimeoutError,
    TransactionError,
    ValidationError,
    WorkflowBuilder,
)
from dataflow_lab.nodes.base import Node, Param

# runs alone under pytest -n: SHOW PROCESSLIST and pg_stat_activity are server-wide, and the limits are timed
pytestmark = pytest.mark.exclusive

asyncpg = pytest.importorskip("asyncpg")

MODES = ("workflow", "node", "saga", "auto")


def define(db: DataFlow) -> None:
    @db.model
    class Item:
        name: str


def names(db: DataFlow) -> list[str]:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemListNode", "list", {"limit": 100})
    records = LocalRuntime().execute(wf.build())[0]["list"]["records"]
    return sorted(r["name"] for r in records)


async def nap(name: str) -> dict:
    await asyncio.sleep(30)
    return {"name": name}


def create_then(db: DataFlow, node: object, **options: object) -> WorkflowBuilder:
    """A Create that commits (or not, as the mode says), then ``node``, which hangs."""
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCreateNode", "create", {"name": "kept?"})
    wf.add_node(node, "hang", **options)
    wf.add_connection("create", "name", "hang", "name")
    return wf


def checked_out(db: DataFlow) -> int:
    return db.pool_status()["checked_out"]


# --------------------------------------------------------------------------- a node's limit


@pytest.mark.parametrize("mode", MODES)
def test_a_hung_async_node_is_cancelled_and_the_database_is_left_as_the_mode_says(db, mode):
    define(db)
    db.create_tables()  # the Create's first use makes no table under the 0.3 s limit (MariaDB's DDL, at load 7)
    started = time.monotonic()
    with pytest.raises(NodeTimeoutError) as info:
        LocalRuntime(transaction=mode, node_timeout=0.3).execute(create_then(db, nap).build())
    assert time.monotonic() - started < 5
    error = info.value
    assert isinstance(error, NodeExecutionError) and not isinstance(error, TimeoutError)
    assert error.node_id == "hang" and error.limit == 0.3
    assert "Node 'hang'" in str(error) and "node_timeout of 0.3 s" in str(error)
    # workflow and auto roll the Create back, a saga compensates it, "node" keeps what committed
    assert names(db) == (["kept?"] if mode == "node" else [])
    assert checked_out(db) == 0
    record(
        f"an async Python node that hangs, transaction={mode!r} (SQLite, DuckDB, PostgreSQL)",
        injected="await asyncio.sleep(30) after a Create, under node_timeout=0.3",
        times=1,
        outcome="NodeTimeoutError naming node and limit; "
        + ("the committed Create kept" if mode == "node" else "the Create undone")
        + "; 0 connections checked out",
    )


def test_a_sync_node_cannot_be_stopped_the_run_ends_at_the_limit_and_its_result_is_dropped(db):
    define(db)
    finished = threading.Event()

    def block(name: str) -> dict:
        time.sleep(1.5)
        finished.set()
        return {"name": name}

    started = time.monotonic()
    with pytest.raises(NodeTimeoutError, match="node_timeout of 0.3 s"):
        LocalRuntime(node_timeout=0.3).execute(create_then(db, block).build())
    assert time.monotonic() - started < 1.4  # the run did not wait for the callable
    assert not finished.is_set()  # it runs on, on its daemon thread
    assert names(db) == [] and checked_out(db) == 0
    assert finished.wait(5)  # and ends on its own; its result goes nowhere
    record(
        "a sync Python node that hangs (SQLite, DuckDB, PostgreSQL)",
        injected="time.sleep(1.5) after a Create, under node_timeout=0.3",
        times=1,
        outcome="the run ends at the limit, Create rolled back; the thread runs to its end, result dropped",
    )


def test_what_a_sync_node_starts_after_its_run_ended_is_refused_not_written_outside_the_run(db):
    define(db)
    outcome: list[str] = []
    finished = threading.Event()

    def late(name: str) -> dict:
        time.sleep(0.6)  # past the limit: the run has rolled back and given its connection back
        nested = WorkflowBuilder(dataflow=db)
        nested.add_node("ItemCreateNode", "c", {"name": "late"})
        try:
            LocalRuntime().execute(nested.build())  # would join the ended run's transaction
            outcome.append("written")
        except TransactionError as exc:
            outcome.append(str(exc))
        finally:
            finished.set()
        return {"name": name}

    with pytest.raises(NodeTimeoutError):
        LocalRuntime(node_timeout=0.2).execute(create_then(db, late).build())
    assert finished.wait(5)
    assert len(outcome) == 1 and "has ended" in outcome[0]
    assert names(db) == [] and checked_out(db) == 0  # nothing leaked: no row, no connection


def test_add_node_timeout_sets_one_nodes_limit_and_none_lifts_it():
    db = DataFlow()
    define(db)

    async def short_nap(name: str) -> dict:
        await asyncio.sleep(0.4)
        return {"name": name}

    runtime = LocalRuntime(node_timeout=0.1)
    results, _ = runtime.execute(create_then(db, short_nap, timeout=None).build())
    assert results["hang"] == {"name": "kept?"}
    with pytest.raises(NodeTimeoutError) as info:
        LocalRuntime(node_timeout=None).execute(create_then(db, short_nap, timeout=0.2).build())
    assert info.value.limit == 0.2 and "node_timeout of 0.2 s" in str(info.value)
    assert names(db) == ["kept?"]


def test_bad_limits_are_refused_naming_the_option():
    with pytest.raises(ValidationError, match="timeout must be a positive number of seconds or None"):
        LocalRuntime(timeout=0)
    with pytest.raises(ValidationError, match="node_timeout must be"):
        AsyncLocalRuntime(node_timeout="30")
    db = DataFlow()
    define(db)
    wf = WorkflowBuilder(dataflow=db)
    with pytest.raises(ValidationError, match="'c': timeout must be"):
        wf.add_node("ItemCreateNode", "c", {"name": "a"}, timeout=-1)

    def wait(timeout: int) -> int:
        return timeout

    with pytest.raises(ValidationError, match="parameter named 'timeout'") as info:
        wf.add_node(wait, "w", timeout=3)
    assert "params" in info.value.hint
    wf.add_node(wait, "w", {"timeout": 3})  # the parameter itself
    assert LocalRuntime().execute(wf.build())[0]["w"] == 3


def test_a_nodes_own_timeout_error_is_not_taken_for_a_limit():
    def slow_service() -> None:
        raise TimeoutError("the service did not answer")

    wf = WorkflowBuilder()
    wf.add_node(slow_service, "call")
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime(retry=False).execute(wf.build())
    assert not isinstance(info.value, NodeTimeoutError)
    assert "the service did not answer" in str(info.value)


# --------------------------------------------------------------------------- the run's limit


@pytest.mark.parametrize("mode", ["workflow", "saga"])
def test_a_run_past_its_timeout_is_cancelled_and_names_the_running_node(db, mode):
    define(db)
    with pytest.raises(RunTimeoutError) as info:
        LocalRuntime(transaction=mode, timeout=0.4).execute(create_then(db, nap).build())
    error = info.value
    assert not isinstance(error, NodeTimeoutError) and not isinstance(error, TimeoutError)
    assert (error.node_id, error.limit) == ("hang", 0.4)
    assert "timeout of 0.4 s while node 'hang' ran" in str(error)
    assert ("compensated" if mode == "saga" else "rolled back") in str(error)
    assert names(db) == [] and checked_out(db) == 0


def test_an_async_runtime_has_the_same_limits(db):
    define(db)

    async def go() -> None:
        await AsyncLocalRuntime(timeout=0.3, max_concurrency=2).execute_async(create_then(db, nap).build())

    with pytest.raises(RunTimeoutError, match="while node 'hang' ran"):
        asyncio.run(go())
    assert names(db) == [] and checked_out(db) == 0


def test_the_spec_defaults_are_five_minutes_a_run_and_thirty_seconds_a_node():
    runtime = LocalRuntime()
    assert (runtime.timeout, runtime.node_timeout) == (300.0, 30.0)
    assert (LocalRuntime(timeout=None, node_timeout=None).timeout, runtime.transaction) == (None, "auto")


# --------------------------------------------------------------------------- a hung statement

# A statement that runs for (nearly) ever on each backend.
HANG = {
    "sqlite": "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r",
    "duckdb": "SELECT sum(a.range) FROM range(1000000000000) a",
    "postgres": "SELECT pg_sleep(60) /* dataflow-hang */",
    "mysql": "SELECT SLEEP(60) /* dataflow-hang */",
}


SAID = {
    "sqlite": "an endless recursive CTE",
    "duckdb": "a 10^12-row range scan",
    "postgres": "pg_sleep(60)",
    "mysql": "SLEEP(60)",
}


def hang_node(db: DataFlow, sql: str) -> type[Node]:
    class Hang(Node):
        type_name = "Hang"
        parameters = (Param("after", int, required=True),)  # the Create's id: it runs after the Create
        dataflow = db
        writes = True

        async def run(self, ctx) -> dict:
            conn = await ctx.connection(db)
            await conn.fetch(sql)
            return {}

    return Hang


def test_a_hung_statement_is_stopped_on_the_database_and_its_transaction_rolled_back(db, backend):
    define(db)
    workflow = WorkflowBuilder(dataflow=db)
    workflow.add_node("ItemCreateNode", "create", {"name": "kept?"})
    workflow.add_node(hang_node(db, HANG[backend]), "hang", timeout=0.5)
    workflow.add_connection("create", "id", "hang", "after")
    started = time.monotonic()
    with pytest.raises(NodeTimeoutError) as info:
        LocalRuntime().execute(workflow.build())
    assert info.value.node_id == "hang" and info.value.limit == 0.5
    took = time.monotonic() - started
    assert took < 10  # the ROLLBACK did not wait for the statement's end
    assert names(db) == [] and checked_out(db) == 0
    if backend == "postgres":
        assert running_statements(db.url, "dataflow-hang") == []
    if backend == "mysql":  # KILLed: its thread is gone (the statement would otherwise sleep 60 s)
        assert "dataflow-hang" not in str(db.sql("SHOW PROCESSLIST").to_dict("records"))
    record(
        f"a statement that never ends ({backend})",
        injected=f"{SAID[backend]} in a node, after a Create, under add_node(timeout=0.5)",
        times=1,
        outcome=f"stopped on the database after {took:.1f} s"
        + {"postgres": " (pg_stat_activity: gone)", "mysql": " (KILLed: not in SHOW PROCESSLIST)"}.get(
            backend, " (interrupted)"
        )
        + "; the run's Create rolled back; 0 connections checked out",
    )


def running_statements(url: str, marker: str) -> list[str]:
    """The statements still active on the server whose text holds ``marker``."""

    async def ask() -> list[str]:
        conn = await asyncpg.connect(url.split("?")[0])
        try:
            rows = await conn.fetch(
                "SELECT query FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 "
                "AND pid <> pg_backend_pid()",
                f"%{marker}%",
            )
            return [r[0] for r in rows]
        finally:
            await conn.close()

    return asyncio.run(ask())


def test_the_pooled_connection_of_a_cancelled_pg_sleep_serves_the_next_run(pg_url):
    db = DataFlow(pg_url, pool_size=1, max_overflow=0)
    define(db)
    workflow = WorkflowBuilder(dataflow=db)
    workflow.add_node("ItemCreateNode", "create", {"name": "gone"})
    workflow.add_node(hang_node(db, HANG["postgres"]), "hang")
    workflow.add_connection("create", "id", "hang", "after")
    for _ in range(3):  # one connection in all: each run gets it back, clean
        with pytest.raises(NodeTimeoutError):
            LocalRuntime(node_timeout=0.3).execute(workflow.build())
    assert running_statements(pg_url, "dataflow-hang") == []
    assert names(db) == [] and db.pool_status()["checked_out"] == 0
    db.close()


def test_concurrent_branches_a_timed_out_branch_is_cancelled_alone_and_the_saga_compensates(db):
    define(db)
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCreateNode", "create", {"name": "branch"})
    wf.add_node(nap, "hang", {"name": "other"}, timeout=0.3)  # no connection: a branch of its own

    async def go() -> None:
        runtime = AsyncLocalRuntime(transaction="saga", max_concurrency=2)
        await runtime.execute_async(wf.build())

    with pytest.raises(NodeTimeoutError) as info:
        asyncio.run(go())
    assert info.value.node_id == "hang"
    assert [(c["node_id"], c["status"]) for c in info.value.compensations] == [("create", "compensated")]
    assert names(db) == [] and checked_out(db) == 0
