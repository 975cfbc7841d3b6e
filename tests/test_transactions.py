"""db.transaction(), savepoints, isolation, saga compensation, two-phase commit and retries."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import pytest

from dataflow_lab import (
    AsyncLocalRuntime,
    DataFlow,
    LocalRuntime,
    NodeExecutionError,
    NotFoundError,
    TransactionError,
    ValidationError,
    WorkflowBuilder,
)
from dataflow_lab.saga import compensate_with
from dataflow_lab.transactions import ACTIVE_SCOPE


def define(db: DataFlow) -> None:
    @db.model
    class Account:
        name: str
        balance: int = 0


def run(db: DataFlow, node: str, params: dict, runtime: LocalRuntime | None = None) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(node, "n", params)
    return (runtime or LocalRuntime()).execute(wf.build())[0]["n"]


def names(db: DataFlow) -> list[str]:
    return [r["name"] for r in run(db, "AccountListNode", {})["records"]]


def snapshot(db: DataFlow) -> list[tuple]:
    return [(r["id"], r["name"], r["balance"]) for r in run(db, "AccountListNode", {})["records"]]


# --------------------------------------------------------------------------- db.transaction()


def test_workflows_inside_a_transaction_block_commit_together(db):
    define(db)
    with db.transaction():
        run(db, "AccountCreateNode", {"name": "a"})
        run(db, "AccountCreateNode", {"name": "b"})
    assert names(db) == ["a", "b"]


def test_an_exception_in_a_transaction_block_undoes_it_and_propagates_unchanged(db):
    define(db)
    run(db, "AccountCreateNode", {"name": "before"})
    original = KeyError("the caller's own error")
    with pytest.raises(KeyError) as raised:
        with db.transaction():
            run(db, "AccountCreateNode", {"name": "inside"})
            run(db, "AccountBulkDeleteNode", {"confirmed": True})
            raise original
    assert raised.value is original
    assert names(db) == ["before"]
    assert db.pool_status()["checked_out"] == 0


def test_a_nested_block_is_a_savepoint_whose_failure_keeps_the_outer_work(db):
    define(db)
    with db.transaction():
        run(db, "AccountCreateNode", {"name": "outer"})
        with pytest.raises(ValueError):
            with db.transaction():
                run(db, "AccountCreateNode", {"name": "inner"})
                raise ValueError("inner fails")
        run(db, "AccountCreateNode", {"name": "after"})
    assert names(db) == ["outer", "after"]


def test_a_failed_workflow_inside_a_block_undoes_only_its_own_writes(db):
    define(db)
    with db.transaction():
        run(db, "AccountCreateNode", {"name": "kept"})
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("AccountCreateNode", "c", {"name": "undone"})
        wf.add_node("AccountReadNode", "missing", {"id": 999})
        with pytest.raises(NotFoundError):
            LocalRuntime().execute(wf.build())
    assert names(db) == ["kept"]


# Every kind of write node, each as a failing workflow inside a block (on DuckDB, which has no
# SAVEPOINT, the undo is emulated from before-images; elsewhere it is a real savepoint).
WRITES_OF_EVERY_KIND = [
    ("AccountCreateNode", {"name": "new"}),
    ("AccountUpdateNode", {"id": 1, "fields": {"balance": 99, "name": "renamed"}}),
    ("AccountDeleteNode", {"id": 2}),
    ("AccountUpsertNode", {"where": {"name": "a"}, "update": {"balance": 50}}),
    ("AccountUpsertNode", {"where": {"name": "q"}, "create": {"balance": 3}}),
    ("AccountBulkCreateNode", {"data": [{"name": "x"}, {"name": "y"}]}),
    ("AccountBulkUpdateNode", {"filter": {"balance": {"$lt": 5}}, "fields": {"balance": 7}}),
    ("AccountBulkDeleteNode", {"filter": {"name": {"$in": ["b", "c"]}}}),
    ("AccountBulkUpsertNode", {"data": [{"id": 1, "name": "a2", "balance": 1}, {"id": 9, "name": "n"}]}),
]


@pytest.mark.parametrize(
    ("node", "params"), WRITES_OF_EVERY_KIND, ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_failed_workflow_inside_a_block_undoes_every_kind_of_write_and_keeps_the_block(db, node, params):
    define(db)
    run(
        db,
        "AccountBulkCreateNode",
        {"data": [{"name": n, "balance": b} for n, b in [("a", 10), ("b", 4), ("c", 1)]]},
    )
    with db.transaction():
        run(db, "AccountCreateNode", {"name": "kept"})
        in_block = snapshot(db)
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node(node, "write", params)
        wf.add_node("AccountReadNode", "fails", {"id": 12345})
        with pytest.raises(NotFoundError):
            LocalRuntime().execute(wf.build())
        assert snapshot(db) == in_block
    assert snapshot(db) == in_block


def test_an_inner_block_that_succeeded_is_undone_with_the_middle_block_that_fails(db):
    define(db)
    with db.transaction():
        run(db, "AccountCreateNode", {"name": "outer"})
        with pytest.raises(ValueError):
            with db.transaction():
                run(db, "AccountCreateNode", {"name": "middle"})
                with db.transaction():
                    run(db, "AccountCreateNode", {"name": "inner"})
                    run(db, "AccountUpdateNode", {"id": 1, "fields": {"balance": 5}})
                raise ValueError("the middle block fails after the inner one committed into it")
        assert snapshot(db) == [(1, "outer", 0)]
    assert snapshot(db) == [(1, "outer", 0)]


def test_on_duckdb_a_failed_undo_of_an_inner_run_makes_the_outer_block_refuse_to_commit():
    db = DataFlow("duckdb:///:memory:")
    define(db)
    run(db, "AccountCreateNode", {"name": "before"})
    table = db.database.tables["Account"].table.name

    async def sabotage(new_id: int) -> None:  # leaves the inner run's undo nothing to undo on
        conn = await ACTIVE_SCOPE.get().connection(db, write=True)
        await conn.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_elsewhere"', [])
        raise RuntimeError("the inner run fails")

    with pytest.raises(TransactionError, match="could not be undone") as raised:
        with db.transaction():
            run(db, "AccountCreateNode", {"name": "outer"})
            wf = WorkflowBuilder(dataflow=db)
            wf.add_node("AccountCreateNode", "create", {"name": "inner"})
            wf.add_node(sabotage, "sabotage")
            wf.add_connection("create", "id", "sabotage", "new_id")
            with pytest.raises(NodeExecutionError):
                LocalRuntime().execute(wf.build())
    assert "rolled back as a whole" in str(raised.value)
    assert names(db) == ["before"]  # nothing of the block was kept, the rename included


def test_an_async_transaction_block_commits_and_rolls_back(db):
    define(db)

    async def main() -> None:
        async with db.transaction():
            wf = WorkflowBuilder(dataflow=db)
            wf.add_node("AccountCreateNode", "c", {"name": "async"})
            await LocalRuntime().execute_async(wf.build())
        with pytest.raises(RuntimeError):
            async with db.transaction():
                wf = WorkflowBuilder(dataflow=db)
                wf.add_node("AccountCreateNode", "c", {"name": "gone"})
                await LocalRuntime().execute_async(wf.build())
                raise RuntimeError("undo")

    asyncio.run(main())
    assert names(db) == ["async"]


@pytest.mark.parametrize("level", ["read_committed", "repeatable_read", "serializable"])
def test_the_isolation_level_asked_for_is_the_one_postgresql_runs(pg_url, level):
    db = DataFlow(pg_url)
    define(db)
    seen = {}

    async def current_level(x: int) -> str:
        conn = await ACTIVE_SCOPE.get().connection(db, write=True)
        seen["level"] = (await conn.fetch("SHOW transaction_isolation"))[0][0]
        return seen["level"]

    with db.transaction(isolation=level.replace("_", " ").upper()):
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node(current_level, "level", {"x": 1})
        LocalRuntime().execute(wf.build())
    assert seen["level"] == level.replace("_", " ")

    runtime = LocalRuntime(isolation=level)
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "c", {"name": "x"})
    wf.add_node(current_level, "level", {})
    wf.add_connection("c", "id", "level", "x")
    assert runtime.execute(wf.build())[0]["level"] == level.replace("_", " ")


def test_an_unknown_isolation_level_is_refused_with_a_suggestion():
    db = DataFlow()
    with pytest.raises(ValidationError, match="Did you mean 'serializable'"):
        db.transaction(isolation="serialisable")
    with pytest.raises(ValidationError, match="isolation"):
        LocalRuntime(isolation="snapshot-ish")


# --------------------------------------------------------------------------- saga


def test_a_saga_compensates_committed_nodes_newest_first_when_a_later_node_fails(db):
    define(db)
    run(
        db,
        "AccountBulkCreateNode",
        {"data": [{"name": "a", "balance": 10}, {"name": "b", "balance": 5}, {"name": "c", "balance": 1}]},
    )
    before = snapshot(db)
    events = []

    class Spy:
        def compensation(self, *, node_id, status, **future):
            events.append((node_id, status))

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "create", {"name": "new"})
    wf.add_node("AccountUpdateNode", "update", {"id": 1, "fields": {"balance": 99}})
    wf.add_node("AccountDeleteNode", "delete", {"id": 2})
    wf.add_node("AccountBulkCreateNode", "bulk_create", {"data": [{"name": "x"}, {"name": "y"}]})
    wf.add_node(
        "AccountBulkUpdateNode", "bulk_update", {"filter": {"balance": {"$lt": 5}}, "fields": {"balance": 7}}
    )
    wf.add_node("AccountBulkDeleteNode", "bulk_delete", {"filter": {"name": "c"}})
    wf.add_node(
        "AccountBulkUpsertNode",
        "bulk_upsert",
        {"data": [{"id": 1, "name": "a2", "balance": 1}, {"name": "z"}][:1]},
    )
    wf.add_node("AccountUpsertNode", "upsert", {"where": {"name": "q"}, "create": {"balance": 3}})
    wf.add_node("AccountReadNode", "fails", {"id": 12345})
    with pytest.raises(NotFoundError) as raised:
        LocalRuntime(transaction="saga", hooks=[Spy()]).execute(wf.build())
    order = [
        "upsert",
        "bulk_upsert",
        "bulk_delete",
        "bulk_update",
        "bulk_create",
        "delete",
        "update",
        "create",
    ]
    assert [c["node_id"] for c in raised.value.compensations] == order
    assert all(c["status"] == "compensated" for c in raised.value.compensations)
    assert events == [(n, "compensated") for n in order]
    assert snapshot(db) == before


def test_a_saga_keeps_nothing_on_two_databases_when_the_last_node_fails(tmp_path):
    first, second = DataFlow(), DataFlow(f"duckdb:///{tmp_path / 'second.duckdb'}")
    define(first)
    define(second)
    wf = WorkflowBuilder()
    wf.add_node(first.nodes["AccountCreateNode"], "one", {"name": "one"})
    wf.add_node(second.nodes["AccountCreateNode"], "two", {"name": "two"})
    wf.add_node(first.nodes["AccountReadNode"], "fails", {"id": 999})
    with pytest.raises(NodeExecutionError):
        LocalRuntime(transaction="saga").execute(wf.build())
    assert names(first) == [] and names(second) == []


def test_a_python_node_can_declare_its_own_compensation():
    db = DataFlow()
    define(db)
    ledger: list[str] = []

    def undo_charge(*, result, amount):
        ledger.remove(result)

    @compensate_with(undo_charge)
    def charge(amount: int) -> str:
        ledger.append(f"charged {amount}")
        return f"charged {amount}"

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(charge, "charge", {"amount": 5})
    wf.add_node("AccountReadNode", "fails", {"id": 1})
    with pytest.raises(NotFoundError) as raised:
        LocalRuntime(transaction="saga").execute(wf.build())
    assert ledger == []
    assert [(c["node_id"], c["status"], c["error"]) for c in raised.value.compensations] == [
        ("charge", "compensated", None)
    ]


def saga_that_blocks(db: DataFlow, started: threading.Event) -> Any:
    """A saga whose first node commits a row and whose second node blocks until cancelled."""

    async def wait_forever(account_id: int) -> None:
        started.set()
        await asyncio.sleep(3600)

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "create", {"name": "committed, then cancelled"})
    wf.add_node(wait_forever, "blocks", {})
    wf.add_connection("create", "id", "blocks", "account_id")  # it runs once create committed
    return wf.build()


def test_a_saga_cancelled_by_a_timeout_compensates_and_the_timeout_reaches_the_caller(db):
    define(db)
    started, compensated = threading.Event(), []

    class Spy:
        def compensation(self, *, node_id, status, **future):
            compensated.append((node_id, status))

    workflow = saga_that_blocks(db, started)
    runtime = AsyncLocalRuntime(transaction="saga", hooks=[Spy()])

    async def go() -> None:
        async with asyncio.timeout(120) as deadline:
            run = asyncio.ensure_future(runtime.execute_async(workflow))
            await asyncio.to_thread(started.wait, 60)  # "create" committed; "blocks" is running
            deadline.reschedule(asyncio.get_running_loop().time())  # the timeout strikes now
            await run

    with pytest.raises(TimeoutError):
        asyncio.run(go())
    assert started.is_set()
    assert compensated == [("create", "compensated")]  # before the timeout reached the caller
    assert snapshot(db) == []


def test_a_saga_cancelled_with_wait_for_is_compensated_before_the_timeout_error(db):
    define(db)
    started = threading.Event()
    workflow = saga_that_blocks(db, started)

    async def go() -> None:
        await asyncio.wait_for(LocalRuntime(transaction="saga").execute_async(workflow), timeout=3)

    with pytest.raises(TimeoutError):
        asyncio.run(go())
    assert started.is_set()  # the timeout struck while the second node ran
    assert snapshot(db) == []


def test_a_cancelled_notebook_saga_run_is_compensated(db):
    from dataflow_lab.notebook.run import start_run

    define(db)
    started = threading.Event()
    handle = start_run(saga_that_blocks(db, started), transaction="saga", background=True)
    assert started.wait(60)
    assert handle.cancel() is True  # the notebook's Cancel: CancelledError inside the run
    assert handle.status == "cancelled"
    assert snapshot(db) == []


def test_a_saga_cancelled_after_a_node_committed_compensates_then_raises_cancelled_error(db):
    define(db)
    started = threading.Event()
    workflow = saga_that_blocks(db, started)

    async def go() -> None:
        run = asyncio.ensure_future(LocalRuntime(transaction="saga").execute_async(workflow))
        await asyncio.to_thread(started.wait, 60)
        run.cancel()
        await run

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(go())
    assert snapshot(db) == []


def test_compensating_twice_changes_nothing_more(db):
    from dataflow_lab import saga

    define(db)
    run(db, "AccountCreateNode", {"name": "a", "balance": 1})
    runtime = LocalRuntime(transaction="saga")
    steps: list = []
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountUpdateNode", "u", {"id": 1, "fields": {"balance": 50}})
    wf.add_node("AccountCreateNode", "c", {"name": "b"})
    built = wf.build()

    async def go() -> list:
        from dataflow_lab.transactions import Scope

        run = runtime.open_run(built, run_id="test")
        for node_id in built.order:
            scope = Scope("test", None)
            await run.run_node(scope, node_id, saga_steps=steps)
            await scope.commit()
        for _ in range(2):  # idempotent: the second pass finds nothing left to undo
            await run.compensate(steps)
        return steps

    from dataflow_lab import _loop

    _loop.run(go())
    assert snapshot(db) == [(1, "a", 1)]
    assert saga.needs_compensation(steps[0].node)


# --------------------------------------------------------------------------- two-phase commit


def two_databases(pg_url: str, pg_url2: str) -> tuple[DataFlow, DataFlow]:
    first, second = DataFlow(pg_url), DataFlow(pg_url2)
    define(first)

    @second.model
    class Ledger:
        note: str

    return first, second


def both_counts(first: DataFlow, second: DataFlow) -> tuple[int, int]:
    wf = WorkflowBuilder()
    wf.add_node(first.nodes["AccountCountNode"], "a", {})
    wf.add_node(second.nodes["LedgerCountNode"], "b", {})
    results = LocalRuntime().execute(wf.build())[0]
    return results["a"]["count"], results["b"]["count"]


def cross_workflow(first: DataFlow, second: DataFlow, *, fail: bool = False):
    wf = WorkflowBuilder()
    wf.add_node(first.nodes["AccountCreateNode"], "a", {"name": "x"})
    wf.add_node(second.nodes["LedgerCreateNode"], "b", {"note": "y"})
    if fail:
        wf.add_node(first.nodes["AccountReadNode"], "fails", {"id": 999})
    return wf.build()


@pytest.mark.exclusive  # every prepared transaction of the server, and a forced recovery
def test_auto_picks_two_phase_commit_across_postgres_databases_and_commits_both(pg_url, pg_url2):
    first, second = two_databases(pg_url, pg_url2)
    runtime = LocalRuntime(transaction="auto")
    events = []

    class Spy:
        def transaction(self, *, event, **future):
            events.append(event)

    runtime.hooks.subscribe(Spy())
    runtime.execute(cross_workflow(first, second))
    assert both_counts(first, second) == (1, 1)
    assert events.count("prepare") == 2 and events.count("commit") == 2
    with pytest.raises(NotFoundError):
        runtime.execute(cross_workflow(first, second, fail=True))
    assert both_counts(first, second) == (1, 1)


def pending_prepared(url: str) -> list[str]:
    async def query() -> list[str]:
        conn = await asyncpg.connect(url.split("?")[0])
        try:
            rows = await conn.fetch("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'dataflow_lab:%'")
            return [r[0] for r in rows]
        finally:
            await conn.close()

    return asyncio.run(query())


def crash_during_commit(monkeypatch, first, second, *, after_decision: bool) -> None:
    from dataflow_lab import transactions, two_phase

    if after_decision:
        real = transactions.Scope.commit

        async def commit(self, *, two_phase=False):
            self._crash_after_decision = True
            return await real(self, two_phase=two_phase)

        monkeypatch.setattr(transactions.Scope, "commit", commit)
    else:

        async def no_decision(*args):
            raise two_phase._SimulatedCrash("simulated crash after PREPARE, before the decision")

        async def dead(scope, begun, gids, gid, exc, committed):  # the process died: nothing resolves
            raise exc

        monkeypatch.setattr(two_phase, "_record_decision", no_decision)
        monkeypatch.setattr(two_phase, "_resolve_after_prepare", dead)
    with pytest.raises(TransactionError, match="simulated crash"):
        LocalRuntime(transaction="2pc").execute(cross_workflow(first, second))
    monkeypatch.undo()


@pytest.mark.exclusive  # every prepared transaction of the server, and a forced recovery
def test_in_doubt_transactions_with_a_recorded_decision_are_committed_at_recovery(
    pg_url, pg_url2, monkeypatch
):
    first, second = two_databases(pg_url, pg_url2)
    crash_during_commit(monkeypatch, first, second, after_decision=True)
    assert len(pending_prepared(pg_url)) == 2
    outcome = first.recover_in_doubt(second, force=True)
    assert sorted(outcome.values()) == ["committed", "committed"]
    assert pending_prepared(pg_url) == []
    assert both_counts(first, second) == (1, 1)


@pytest.mark.exclusive  # every prepared transaction of the server, and a forced recovery
def test_in_doubt_transactions_without_a_decision_are_rolled_back_at_start_up(pg_url, pg_url2, monkeypatch):
    first, second = two_databases(pg_url, pg_url2)
    crash_during_commit(monkeypatch, first, second, after_decision=False)
    assert len(pending_prepared(pg_url)) == 2
    first.close()
    second.close()
    # a new process starts: its first workflow resolves what the crash left behind
    restarted, restarted2 = DataFlow(pg_url, in_doubt_grace=0), DataFlow(pg_url2, in_doubt_grace=0)
    define(restarted)

    @restarted2.model
    class Ledger:
        note: str

    assert both_counts(restarted, restarted2) == (0, 0)
    assert pending_prepared(pg_url) == []


def test_two_phase_commit_refuses_databases_that_cannot_prepare(tmp_path):
    first, second = DataFlow(), DataFlow(f"sqlite:///{tmp_path / 'b.db'}")
    define(first)
    define(second)
    wf = WorkflowBuilder()
    wf.add_node(first.nodes["AccountCreateNode"], "a", {"name": "x"})
    wf.add_node(second.nodes["AccountCreateNode"], "b", {"name": "y"})
    with pytest.raises(TransactionError, match="needs PostgreSQL"):
        LocalRuntime(transaction="2pc").execute(wf.build())
    assert names(first) == [] and names(second) == []


def test_auto_uses_one_transaction_for_one_database(db):
    define(db)
    runtime = LocalRuntime(transaction="auto")
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "c", {"name": "x"})
    wf.add_node("AccountReadNode", "fails", {"id": 999})
    with pytest.raises(NotFoundError) as raised:
        runtime.execute(wf.build())
    assert not hasattr(raised.value, "compensations")  # rolled back, not compensated
    assert names(db) == []


# --------------------------------------------------------------------------- retries


def test_a_lost_connection_is_retried_and_the_write_is_applied_once(pg_url):
    db = DataFlow(pg_url)
    define(db)
    attempts = []

    async def kill_my_connection_once(x: int) -> int:
        conn = await ACTIVE_SCOPE.get().connection(db)
        attempts.append(x)
        if len(attempts) == 1:
            killer = await asyncpg.connect(pg_url.split("?")[0])
            await killer.execute("SELECT pg_terminate_backend($1)", conn.raw.get_server_pid())
            await killer.close()
            for _ in range(200):  # let the client notice, as it would a network failure
                if conn.raw.is_closed():
                    break
                await asyncio.sleep(0.01)
        return x

    retries = []

    class Spy:
        def retry(self, *, attempt, reason, **future):
            retries.append((attempt, reason))

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "create", {"name": "once"})
    wf.add_node(kill_my_connection_once, "kill", {})
    wf.add_connection("create", "id", "kill", "x")
    LocalRuntime(hooks=[Spy()]).execute(wf.build())
    assert len(attempts) == 2
    assert retries and retries[0][0] == 1
    assert names(db) == ["once"]
    assert db.pool_status()["checked_out"] == 0


def test_retries_can_be_turned_off(pg_url):
    db = DataFlow(pg_url)
    define(db)

    async def kill_my_connection(x: int) -> int:
        conn = await ACTIVE_SCOPE.get().connection(db)
        killer = await asyncpg.connect(pg_url.split("?")[0])
        await killer.execute("SELECT pg_terminate_backend($1)", conn.raw.get_server_pid())
        await killer.close()
        return x

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "create", {"name": "x"})
    wf.add_node(kill_my_connection, "kill", {})
    wf.add_connection("create", "id", "kill", "x")
    wf.add_node("AccountCreateNode", "after", {"name": "y"})
    with pytest.raises(NodeExecutionError):
        LocalRuntime(retry=False).execute(wf.build())
    assert names(db) == []
