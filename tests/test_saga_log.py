"""The saga log: compensations still owed outlive the run, and are resumed later."""

from __future__ import annotations

import logging

import pytest

from dataflow_lab import DataFlow, LocalRuntime, NotFoundError, WorkflowBuilder, _loop
from dataflow_lab.saga_log import ResumedCompensation
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


def snapshot(db: DataFlow) -> list[tuple]:
    return [
        (r["id"], r["name"], r["balance"])
        for r in run(db, "AccountListNode", {"order_by": ["id"]})["records"]
    ]


def commit_steps_then_die(db: DataFlow, run_id: str = "died") -> None:
    """Commit three saga steps as a saga run does, and never compensate: the process 'died'."""
    runtime, steps = LocalRuntime(transaction="saga"), []
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountUpdateNode", "update", {"id": 1, "fields": {"balance": 50}})
    wf.add_node("AccountCreateNode", "create", {"name": "new"})
    wf.add_node("AccountBulkDeleteNode", "delete", {"filter": {"name": "b"}})
    built = wf.build()

    async def go() -> None:
        run = runtime.open_run(built, run_id=run_id)
        for node_id in built.order:
            scope = Scope(run_id, None)
            await run.run_node(scope, node_id, saga_steps=steps)
            await scope.commit()

    _loop.run(go())


@pytest.fixture
def accounts(db):
    define(db)
    run(db, "AccountBulkCreateNode", {"data": [{"name": "a", "balance": 1}, {"name": "b", "balance": 2}]})
    return db


def test_steps_a_saga_never_compensated_are_resumed_and_undone(accounts):
    db = accounts
    before = snapshot(db)
    commit_steps_then_die(db)
    assert snapshot(db) != before
    assert db.pending_compensations() == 3
    done = db.resume_compensations(force=True)
    assert [(d.node_id, d.status) for d in done] == [("delete", "compensated"), ("create", "compensated"),
                                                     ("update", "compensated")]  # fmt: skip
    assert all(isinstance(d, ResumedCompensation) and d.run_id == "died" for d in done)
    assert snapshot(db) == before
    assert db.pending_compensations() == 0
    assert db.resume_compensations(force=True) == []  # nothing is undone twice


def test_the_grace_period_keeps_fresh_entries_for_their_own_process(accounts):
    commit_steps_then_die(accounts)
    assert accounts.resume_compensations() == []  # younger than in_doubt_grace: maybe another process's
    assert accounts.pending_compensations() == 3


def test_a_saga_run_that_succeeds_or_compensates_leaves_nothing_owed(accounts):
    db = accounts
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "create", {"name": "c"})
    LocalRuntime(transaction="saga").execute(wf.build())
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "create", {"name": "d"})
    wf.add_node("AccountReadNode", "fails", {"id": 999})
    with pytest.raises(NotFoundError):
        LocalRuntime(transaction="saga").execute(wf.build())
    assert db.pending_compensations() == 0
    assert [r[1] for r in snapshot(db)] == ["a", "b", "c"]


def test_a_dataflow_resumes_what_is_owed_at_its_first_use(tmp_path, backend, url):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'saga.db'}"
    elif backend == "duckdb":
        url = f"duckdb:///{tmp_path / 'saga.duckdb'}"
    db = DataFlow(url)
    define(db)
    run(db, "AccountBulkCreateNode", {"data": [{"name": "a", "balance": 1}, {"name": "b", "balance": 2}]})
    before = snapshot(db)
    commit_steps_then_die(db)
    db.close()
    again = DataFlow(url, in_doubt_grace=0)
    define(again)
    assert snapshot(again) == before  # its first run found the owed compensations and ran them
    assert again.pending_compensations() == 0
    again.close()


def test_the_dashboard_and_metrics_count_pending_compensations():
    db = DataFlow(monitoring=True)
    define(db)
    run(db, "AccountCreateNode", {"name": "a"})
    run(db, "AccountCreateNode", {"name": "b"})
    assert db.metrics()["safety_events"]["pending_compensations"] == 0
    commit_steps_then_die(db)
    db.database.pending_count = None  # another process wrote them: counted when asked
    assert db.metrics()["safety_events"]["pending_compensations"] == 3
    assert "dataflow_pending_compensations{database=" in db.metrics_text()
    assert db.metrics_text().count(" 3.0\n") >= 1
    db.resume_compensations(force=True)
    assert db.metrics()["safety_events"]["pending_compensations"] == 0
    db.close()


def test_an_entry_whose_model_is_not_defined_stays_pending_and_says_why(tmp_path):
    url = f"sqlite:///{tmp_path / 'saga.db'}"
    db = DataFlow(url)
    define(db)
    run(db, "AccountBulkCreateNode", {"data": [{"name": "a"}, {"name": "b"}]})
    commit_steps_then_die(db)
    db.close()
    bare = DataFlow(url)
    done = bare.resume_compensations(force=True)
    assert {d.status for d in done} == {"pending"}
    assert "model 'Account' is not defined" in done[0].error
    assert bare.pending_compensations() == 3
    bare.close()


def test_a_saga_on_an_existing_schema_database_gets_its_log_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'existing.db'}"
    first = DataFlow(url)
    define(first)
    run(first, "AccountCreateNode", {"name": "a"})
    first.close()
    db = DataFlow(url, existing_schema=True)  # the models are reflected; no DDL for them, ever
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountUpdateNode", "update", {"id": 1, "fields": {"balance": 5}})
    wf.add_node("AccountReadNode", "fails", {"id": 999})
    with pytest.raises(NotFoundError) as raised:
        LocalRuntime(transaction="saga").execute(wf.build())
    assert [c["status"] for c in raised.value.compensations] == ["compensated"]
    assert snapshot(db) == [(1, "a", 0)]
    assert db.pending_compensations() == 0
    db.close()


@pytest.mark.parametrize("url", [None, "duckdb:///:memory:"], ids=["sqlite", "duckdb"])
def test_a_fresh_in_memory_database_looks_for_no_owed_compensation(tmp_path, caplog, url):
    # A private in-memory database starts empty at every open: no earlier run left a saga log in
    # it, so its first use sends nothing to find one. A file database is looked into.
    kept = f"sqlite:///{tmp_path / 'kept.db'}" if url is None else f"duckdb:///{tmp_path / 'kept.duckdb'}"
    for target, looked in ((url, False), (kept, True)):
        db = DataFlow(target, echo=True)
        define(db)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dataflow_lab.sql"):
            run(db, "AccountCreateNode", {"name": "a"})
        assert any("dataflow_lab_saga_log" in r.getMessage() for r in caplog.records) is looked
        db.close()
