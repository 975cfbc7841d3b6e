"""Fault tests against a real PostgreSQL: server crashes, pool pressure, deadlock storms.

The crash test stops the server that ``.ci/run`` started (``pg_ctl stop -m immediate``)
and starts it again, so it needs DATAFLOW_TEST_PG_CTL / _DATA / _USER / _LOG, which
``.ci/run`` (and ``eval "$(bash .ci/pg.sh start)"``) export.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import threading
import time

import pytest

from dataflow_lab import (
    AsyncLocalRuntime,
    DataFlow,
    DataFlowError,
    LocalRuntime,
    NodeExecutionError,
    WorkflowBuilder,
)
from dataflow_lab.retry import RetryPolicy

# runs alone under pytest -n: it stops and restarts the suite's own PostgreSQL server
pytestmark = pytest.mark.exclusive

FIGURES = os.environ.get("DATAFLOW_RELIABILITY_FIGURES")  # a JSON-lines file for docs/reliability.md


def record(test: str, **figures: object) -> None:
    if FIGURES:
        with open(FIGURES, "a") as out:
            out.write(json.dumps({"test": test, **figures}) + "\n")


def define(db: DataFlow) -> None:
    @db.model
    class Item:
        name: str
        qty: int = 0


def count(db: DataFlow, runtime: LocalRuntime | None = None) -> int:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCountNode", "n", {})
    return (runtime or LocalRuntime()).execute(wf.build())[0]["n"]["count"]


# --------------------------------------------------------------------------- a. crashes


def pg_control(*args: str) -> None:
    ctl, data, user = (
        os.environ.get(k) for k in ("DATAFLOW_TEST_PG_CTL", "DATAFLOW_TEST_PG_DATA", "DATAFLOW_TEST_PG_USER")
    )
    log = os.environ.get("DATAFLOW_TEST_PG_LOG", os.path.join(os.path.dirname(data), "log"))
    command = [ctl, "-D", data, "-l", log, *args]
    if os.geteuid() == 0 and user and user != "root":
        command = ["su", user, "-s", "/bin/sh", "-c", " ".join(command)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def synchronous_commit(url: str, value: str) -> None:
    """The throwaway server runs synchronous_commit=off; a crash test needs commits that are durable."""
    import asyncpg

    async def alter() -> None:
        conn = await asyncpg.connect(url.split("?")[0])
        try:
            database = await conn.fetchval("SELECT current_database()")
            await conn.execute(f'ALTER DATABASE "{database}" SET synchronous_commit TO {value}')
        finally:
            await conn.close()

    asyncio.run(alter())


@pytest.fixture
def crashable_pg(pg_url):
    if not all(os.environ.get(k) for k in ("DATAFLOW_TEST_PG_CTL", "DATAFLOW_TEST_PG_DATA")):
        pytest.skip(
            "needs a PostgreSQL this test may stop: DATAFLOW_TEST_PG_CTL/_DATA (bash .ci/run sets them)"
        )
    synchronous_commit(pg_url, "on")
    yield pg_url
    try:  # whatever happened, leave the server running for the tests after this one
        pg_control("-w", "start")
    except subprocess.CalledProcessError:
        pass  # already running
    synchronous_commit(pg_url, "off")


def slow_rows(n: int, *, pause_every: int = 500):
    for i in range(n):
        if i and i % pause_every == 0:
            time.sleep(0.002)
        yield {"name": f"row {i}", "qty": i}


def test_an_immediate_server_stop_during_bulk_create_leaves_no_partial_batch(crashable_pg):
    db = DataFlow(crashable_pg)
    define(db)
    assert count(db) == 0
    kills = runs = completed = 0
    rng = random.Random(7)
    while kills < 10 and runs < 40:
        runs += 1
        outcome: dict[str, BaseException | None] = {"error": None}

        def load(outcome: dict = outcome) -> None:
            wf = WorkflowBuilder(dataflow=db)
            wf.add_node(
                "ItemBulkCreateNode",
                "load",
                {"data": slow_rows(20_000), "batch_size": 500, "progress": False},
            )
            try:
                LocalRuntime(retry=False).execute(wf.build())
            except BaseException as exc:  # noqa: BLE001 - examined below
                outcome["error"] = exc

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(rng.uniform(0.02, 0.12))
        pg_control("-m", "immediate", "stop")
        worker.join(60)
        assert not worker.is_alive(), "the workflow hung after the server stopped"
        pg_control("-w", "start")
        if outcome["error"] is None:
            completed += 1
        else:
            kills += 1
            error = outcome["error"]
            assert isinstance(error, DataFlowError)
            if isinstance(error, NodeExecutionError):
                assert error.node_id == "load" and "load" in str(error)
        # the next workflow succeeds with no user action (stale pooled connections are retried)
        assert count(db) == 20_000 * completed  # never a partial batch
    assert kills >= 10
    assert db.pool_status()["checked_out"] == 0
    record(
        "server stopped during a 20k-row BulkCreate",
        kills=kills,
        runs=runs,
        completed_before_kill=completed,
        partial_batches=0,
    )
    db.close()


# --------------------------------------------------------------------------- b. pool pressure


def test_two_hundred_concurrent_workflows_share_a_pool_of_ten_without_leaks(pg_url):
    db = DataFlow(pg_url, pool_size=10, max_overflow=0, pool_timeout=120)
    define(db)
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCreateNode", "c", {"name": "x"})
    wf.add_node("ItemReadNode", "r", {})
    wf.add_connection("c", "id", "r", "id")
    built = wf.build()
    runtime = AsyncLocalRuntime()

    async def storm() -> list:
        return await asyncio.gather(*[runtime.execute_async(built) for _ in range(200)])

    outcomes = asyncio.run(storm())
    assert len({run_id for _, run_id in outcomes}) == 200
    assert all(results["r"]["name"] == "x" for results, _ in outcomes)
    status = db.pool_status()
    assert status["checked_out"] == 0 and status["waiting"] == 0
    assert status["size"] <= 10 and status["acquired_total"] >= 200
    assert count(db) == 200
    record(
        "200 concurrent workflows on a pool of 10",
        workflows=200,
        pool_size=10,
        failures=0,
        leaked_connections=status["checked_out"],
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_thousand_workflows_leave_no_connection_checked_out(db):
    define(db)
    runtime = LocalRuntime()
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCreateNode", "c", {"name": "x"})
    wf.add_node("ItemCountNode", "n", {})
    built = wf.build()
    failing = WorkflowBuilder(dataflow=db)
    failing.add_node("ItemReadNode", "missing", {"id": 10**9})
    failing_built = failing.build()
    for i in range(1000):
        if i % 10 == 9:
            with pytest.raises(NodeExecutionError):
                runtime.execute(failing_built)
        else:
            runtime.execute(built)
    status = db.pool_status()
    assert status["checked_out"] == 0
    assert count(db) == 900
    record(f"1,000 workflows ({db.dialect})", workflows=1000, failed_on_purpose=100, leaked_connections=0)


# --------------------------------------------------------------------------- d. deadlock storm


def test_a_storm_of_concurrent_transfers_keeps_the_total_balance(pg_url):
    db = DataFlow(pg_url, pool_size=8)

    @db.model
    class Account:
        owner: str
        balance: int

    accounts = 6
    setup = WorkflowBuilder(dataflow=db)
    setup.add_node(
        "AccountBulkCreateNode",
        "open",
        {"data": [{"owner": f"o{i}", "balance": 100} for i in range(accounts)]},
    )
    LocalRuntime().execute(setup.build())
    retries: list[str] = []

    class Spy:
        def retry(self, *, reason, **future):
            retries.append(reason)

    runtime = LocalRuntime(
        isolation="serializable",
        retry=RetryPolicy(attempts=50, base_delay=0.005, max_delay=0.1),
        hooks=[Spy()],
    )

    def move(a: dict, b: dict, amount: int) -> dict:
        return {"a": a["balance"] - amount, "b": b["balance"] + amount}

    def transfer(rng: random.Random) -> None:
        a, b = rng.sample(range(1, accounts + 1), 2)
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("AccountReadNode", "ra", {"id": a})
        wf.add_node("AccountReadNode", "rb", {"id": b})
        wf.add_node(move, "move", {"amount": rng.randint(1, 20)})
        first, second = (("ua", a, "a"), ("ub", b, "b")) if a < b else (("ub", b, "b"), ("ua", a, "a"))
        for node_id, account, side in (first, second):  # opposite lock orders across transfers
            wf.add_node("AccountUpdateNode", node_id, {"id": account})
            wf.add_connection("move", side, node_id, "fields.balance")
        wf.add_connection("ra", "balance", "move", "a.balance")
        wf.add_connection("rb", "balance", "move", "b.balance")
        runtime.execute(wf.build())

    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            try:
                transfer(rng)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    final = WorkflowBuilder(dataflow=db)
    final.add_node("AccountListNode", "all", {})
    balances = [r["balance"] for r in LocalRuntime().execute(final.build())[0]["all"]["records"]]
    assert sum(balances) == 100 * accounts
    assert retries, "a storm of crossing transfers should have met deadlocks or serialization failures"
    record(
        "deadlock storm of concurrent transfers",
        transfers=90,
        retries=len(retries),
        deadlocks=retries.count("deadlock"),
        serialization_failures=retries.count("serialization failure"),
        total_invariant=True,
    )


def test_a_deadlock_is_retried_as_a_whole_transaction_and_both_workflows_succeed(pg_url):
    db = DataFlow(pg_url)

    @db.model
    class Account:
        owner: str
        balance: int

    setup = WorkflowBuilder(dataflow=db)
    setup.add_node(
        "AccountBulkCreateNode",
        "open",
        {"data": [{"owner": "a", "balance": 0}, {"owner": "b", "balance": 0}]},
    )
    LocalRuntime().execute(setup.build())
    reasons: list[str] = []

    class Spy:
        def retry(self, *, reason, **future):
            reasons.append(reason)

    runtime = LocalRuntime(hooks=[Spy()], retry=RetryPolicy(attempts=5, base_delay=0.01))
    barrier = threading.Barrier(2)

    def hold(x: int) -> int:
        if barrier.n_waiting < 2:
            try:
                barrier.wait(timeout=2)  # both first updates are done: each holds one row
            except threading.BrokenBarrierError:
                pass
        return x

    def crossing(first: int, second: int, value: int) -> None:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("AccountUpdateNode", "first", {"id": first, "fields": {"balance": value}})
        wf.add_node(hold, "hold", {})
        wf.add_connection("first", "balance", "hold", "x")
        wf.add_node("AccountUpdateNode", "second", {"id": second, "fields": {"balance": value}})
        runtime.execute(wf.build(), parameters=None)

    errors: list[BaseException] = []

    def run(first: int, second: int, value: int) -> None:
        try:
            crossing(first, second, value)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(1, 2, 1)), threading.Thread(target=run, args=(2, 1, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert "deadlock" in reasons
    final = WorkflowBuilder(dataflow=db)
    final.add_node("AccountListNode", "all", {})
    balances = [r["balance"] for r in LocalRuntime().execute(final.build())[0]["all"]["records"]]
    assert balances in ([1, 1], [2, 2])  # one whole transfer won; nothing was half-applied
    record("crossing updates (deadlock)", workflows=2, deadlocks_retried=reasons.count("deadlock"))
