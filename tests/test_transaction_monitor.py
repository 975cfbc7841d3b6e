"""The transaction monitor's lock-wait alert (PostgreSQL): two connections, one holding a row lock."""

from __future__ import annotations

import asyncio
import threading
import time

import asyncpg
import pytest

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder

# runs alone under pytest -n: its alerts time held locks
pytestmark = pytest.mark.exclusive


def define(db: DataFlow) -> None:
    @db.model
    class Account:
        owner: str
        balance: int = 0


def seed(db: DataFlow) -> None:
    wf = WorkflowBuilder(db)
    wf.add_node("AccountCreateNode", "open", {"owner": "ann"})
    LocalRuntime().execute(wf.build())


class RowLock:
    """Another connection that holds ``accounts`` row 1 FOR UPDATE for ``seconds``, on a thread of its own."""

    def __init__(self, url: str, schema: str, seconds: float):
        self.url, self.schema, self.seconds = url, schema, seconds
        self.held = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._hold()))

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self.url, server_settings={"search_path": self.schema})
        try:
            await conn.execute("BEGIN")
            await conn.execute("SELECT * FROM accounts WHERE id = 1 FOR UPDATE")
            self.held.set()
            await asyncio.sleep(self.seconds)
            await conn.execute("COMMIT")
        finally:
            await conn.close()

    def __enter__(self) -> RowLock:
        self.thread.start()
        assert self.held.wait(10), "the other connection never took the row lock"
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join()


@pytest.fixture
def pg_db(pg_url):
    db = DataFlow(pg_url, monitoring=True, lock_wait_threshold=0.2)
    define(db)
    seed(db)
    yield db
    db.close()


def test_a_run_waiting_on_a_row_lock_past_the_threshold_is_an_alert_naming_it(pg_db, pg_url):
    from conftest import PG_URL, SCHEMA

    update = WorkflowBuilder(pg_db)
    update.add_node("AccountUpdateNode", "debit", {"id": 1, "fields": {"balance": 90}})
    with RowLock(PG_URL, SCHEMA, seconds=1.0):
        _, run_id = LocalRuntime().execute(update.build())  # waits until the other one commits
    (alert,) = [a for a in pg_db.monitor.transactions.alerts if a.kind == "lock_wait"]
    assert alert.run_id == run_id and alert.node_id == "debit"
    assert 0.2 <= alert.seconds < 1.5
    assert "ShareLock on transactionid" in alert.message and "UPDATE accounts" in alert.message
    assert "held by backend" in alert.message and "90" not in alert.message.split("in: ", 1)[1]
    assert pg_db.metrics()["safety_events"]["lock_waits"] == 1
    slow = [s for s in pg_db.slow_statements(run_id) if s.sql.startswith("UPDATE")]
    assert slow == [] or slow[0].node_id == "debit"  # 1 s is under the default slow_query_threshold


def test_a_long_transaction_that_waits_on_nothing_is_no_lock_wait(pg_db):
    def think(id: int) -> int:
        time.sleep(0.6)  # the transaction stays open, past the lock-wait threshold, waiting on no lock
        return id

    wf = WorkflowBuilder(pg_db)
    wf.add_node("AccountUpdateNode", "debit", {"id": 1, "fields": {"balance": 80}})
    wf.add_node(think, "think", {})
    wf.add_connection("debit", "id", "think", "id")
    LocalRuntime().execute(wf.build())
    assert pg_db.metrics()["safety_events"]["lock_waits"] == 0


def test_the_slow_statement_log_keeps_the_lock_wait_with_its_plan(pg_url):
    from conftest import PG_URL, SCHEMA

    db = DataFlow(pg_url, monitoring=True, slow_query_threshold=0.3)
    define(db)
    seed(db)
    update = WorkflowBuilder(db)
    update.add_node("AccountUpdateNode", "debit", {"id": 1, "fields": {"balance": 70}})
    with RowLock(PG_URL, SCHEMA, seconds=0.8):
        _, run_id = LocalRuntime().execute(update.build())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(s.plan for s in db.slow_statements(run_id)):
        time.sleep(0.05)
    (slow,) = db.slow_statements(run_id)
    assert slow.node_id == "debit" and slow.seconds >= 0.3 and slow.sql.startswith("UPDATE accounts")
    assert "Index Cond: (id = $" in slow.plan  # the generic plan: no value of the run
    db.close()


def test_a_database_that_cannot_tell_has_no_lock_wait_watch():
    db = DataFlow(monitoring=True)
    assert db.monitor.transactions.lock_wait_seconds is None
    assert db.metrics()["safety_events"]["lock_waits"] == 0
    db.close()
