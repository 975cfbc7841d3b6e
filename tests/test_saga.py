"""Compensation is the node's own: any node class says how to undo itself, and the saga applies it."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from dataflow_lab import DataFlow, LocalRuntime, NodeExecutionError, NotFoundError, WorkflowBuilder, _loop
from dataflow_lab.nodes.base import Node, Param, Undo
from dataflow_lab.transactions import Scope


def define(db: DataFlow) -> None:
    @db.model
    class Account:
        name: str
        balance: int = 0


def run(db: DataFlow, node: str, params: dict) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(node, "n", params)
    return LocalRuntime().execute(wf.build())[0]["n"]


def balances(db: DataFlow) -> list[tuple]:
    return [(r["name"], r["balance"]) for r in run(db, "AccountListNode", {})["records"]]


class SetBalance(Undo):
    """Put one account's balance back (idempotent: applying it twice changes nothing more)."""

    def __init__(self, db: DataFlow, account_id: int, balance: int):
        self.db, self.account_id, self.balance = db, account_id, balance
        self.applied = 0

    async def apply(self, conn) -> None:
        mt = self.db.table("Account")
        stmt = sa.update(mt.table).where(mt.table.c.id == self.account_id).values(balance=self.balance)
        await conn.execute(*mt.dialect.compile(stmt))
        self.applied += 1


def deposit_node(db: DataFlow) -> type[Node]:
    """A node class of the user's own, written against the Node interface only."""
    mt = db.table("Account")
    t = mt.table

    class Deposit(Node):
        type_name = "Deposit"
        parameters = (Param("id", int, required=True), Param("amount", int, required=True))
        dataflow = db
        writes = True
        undos: list[SetBalance] = []

        async def run(self, ctx) -> dict:
            conn = await ctx.connection(db)
            stmt = (
                sa.update(t)
                .where(t.c.id == self.params["id"])
                .values(balance=t.c.balance + self.params["amount"])
            )
            await conn.execute(*mt.dialect.compile(stmt))
            return {"id": self.params["id"]}

        async def before_image(self, conn) -> int:
            stmt = sa.select(t.c.balance).where(t.c.id == self.params["id"])
            return (await conn.fetch(*mt.dialect.compile(stmt)))[0][0]

        async def undo(self, conn, before: int, result: dict) -> SetBalance:
            undo = SetBalance(db, result["id"], before)
            Deposit.undos.append(undo)
            return undo

    return Deposit


def refuse(id: int) -> None:
    raise ValueError(f"account {id} may not take deposits today")


def deposit_then_fail(db: DataFlow) -> WorkflowBuilder:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(deposit_node(db), "deposit", {"id": 1, "amount": 10})
    wf.add_node(refuse, "refuse")
    wf.add_connection("deposit", "id", "refuse", "id")
    return wf


@pytest.fixture
def accounts(db):
    define(db)
    run(db, "AccountBulkCreateNode", {"data": [{"name": "a", "balance": 1}, {"name": "b", "balance": 2}]})
    return db


def test_a_saga_compensates_a_node_class_of_its_own_by_the_undo_it_returns(accounts):
    db = accounts
    wf = deposit_then_fail(db)
    with pytest.raises(NodeExecutionError, match="may not take deposits") as raised:
        LocalRuntime(transaction="saga").execute(wf.build())
    assert [(c["node_id"], c["node_type"], c["status"]) for c in raised.value.compensations] == [
        ("deposit", "Deposit", "compensated")
    ]
    assert balances(db) == [("a", 1), ("b", 2)]
    assert db.pending_compensations() == 0


def test_a_nested_block_that_fails_undoes_a_node_class_of_its_own_and_keeps_the_outer_work(accounts):
    db = accounts  # on DuckDB (no SAVEPOINT) by the node's own undo; elsewhere by a savepoint
    wf = deposit_then_fail(db)
    with db.transaction():
        run(db, "AccountUpdateNode", {"id": 2, "fields": {"balance": 20}})
        with pytest.raises(NodeExecutionError, match="may not take deposits"):
            LocalRuntime().execute(wf.build())
        assert balances(db) == [("a", 1), ("b", 20)]
    assert balances(db) == [("a", 1), ("b", 20)]
    undos = wf.build().nodes["deposit"].node_class.undos
    assert [u.applied for u in undos] == ([1] if db.dialect == "duckdb" else [])


def test_a_workflow_committed_inside_a_block_leaves_nothing_owed(accounts):
    db = accounts  # on DuckDB its nodes keep an undo log for the block: it must never reach the saga log
    with db.transaction():
        run(db, "AccountCreateNode", {"name": "kept", "balance": 3})
        with db.transaction():
            run(db, "AccountUpdateNode", {"id": 1, "fields": {"balance": 5}})
    assert db.pending_compensations() == 0
    assert db.resume_compensations(force=True) == []
    assert balances(db) == [("a", 5), ("b", 2), ("kept", 3)]


def test_compensating_under_a_shield_finishes_while_the_run_is_cancelled(accounts):
    db, runtime, steps = accounts, LocalRuntime(transaction="saga"), []
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "create", {"name": "new"})
    wf.add_node("AccountUpdateNode", "update", {"id": 1, "fields": {"balance": 50}})
    built = wf.build()

    async def go() -> list:
        run = runtime.open_run(built, run_id="cancelled")
        for node_id in built.order:
            scope = Scope("cancelled", None)
            await run.run_node(scope, node_id, saga_steps=steps)
            await scope.commit()
        compensation = asyncio.ensure_future(run.compensate(steps))
        waiter = asyncio.ensure_future(asyncio.shield(compensation))
        await asyncio.sleep(0)
        waiter.cancel()  # the run is cancelled while its compensation is under way
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return await compensation

    record = _loop.run(go())
    assert [(e["node_id"], e["status"]) for e in record] == [
        ("update", "compensated"),
        ("create", "compensated"),
    ]
    assert balances(db) == [("a", 1), ("b", 2)]
    assert db.pending_compensations() == 0


def test_a_saga_does_not_undo_rows_a_bulk_upsert_found_and_left_alone(accounts):
    db = accounts
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(
        "AccountBulkUpsertNode",
        "upsert",
        {"data": iter([{"id": 1, "name": "a", "balance": 7}, {"id": 5, "name": "e", "balance": 9}])},
    )
    wf.add_node("AccountReadNode", "fails", {"id": 12345})
    with pytest.raises(NotFoundError):
        LocalRuntime(transaction="saga").execute(wf.build())
    assert balances(db) == [("a", 1), ("b", 2)]
    assert db.pending_compensations() == 0


def test_a_saga_undoes_the_rows_a_bulk_upsert_inserted_without_ids(accounts):
    db = accounts
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountBulkUpsertNode", "upsert", {"data": [{"name": "new1"}, {"name": "new2"}]})
    wf.add_node("AccountReadNode", "fails", {"id": 12345})
    with pytest.raises(NotFoundError):
        LocalRuntime(transaction="saga").execute(wf.build())
    assert balances(db) == [("a", 1), ("b", 2)]


def test_a_saga_compensates_a_bulk_upsert_of_a_dataframe_and_of_rows_it_skipped(accounts):
    pd = pytest.importorskip("pandas")
    db = accounts
    frame = pd.DataFrame([{"id": 1, "name": "a2", "balance": 5}, {"id": 7, "name": "n", "balance": 2}])
    rows = [{"id": "x", "name": "bad"}, {"id": 2, "name": "b2", "balance": 9}]
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountBulkUpsertNode", "frame", {"data": frame})
    wf.add_node("AccountBulkUpsertNode", "skipping", {"data": rows, "on_error": "skip"})
    wf.add_node("AccountReadNode", "fails", {"id": 12345})
    with pytest.raises(NotFoundError) as raised:
        LocalRuntime(transaction="saga").execute(wf.build())
    assert [(c["node_id"], c["status"]) for c in raised.value.compensations] == [
        ("skipping", "compensated"),
        ("frame", "compensated"),
    ]
    assert balances(db) == [("a", 1), ("b", 2)]
