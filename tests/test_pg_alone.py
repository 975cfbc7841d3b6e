"""A one-statement PostgreSQL run commits its statement on its own (dialects/pg_alone.py), on a real server.

The statements a run sends are read off its real asyncpg connection (a spy that forwards every
call); the races are made with real locks held by a second connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from dataflow_lab import (
    ConcurrencyError,
    DataFlow,
    LocalRuntime,
    NodeTimeoutError,
    NotFoundError,
    TransactionError,
    WorkflowBuilder,
)
from dataflow_lab.dialects import postgres
from dataflow_lab.dialects.postgres import PostgresConnection


def define(db: DataFlow, **options: Any) -> None:
    @db.model
    class Parcel:
        __dataflow__ = options
        name: str
        weight: int = 0


def create(db: DataFlow, runtime: LocalRuntime | None = None, **params: Any) -> Any:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ParcelCreateNode", "n", {"name": "p", **params})
    return (runtime or LocalRuntime()).execute(wf.build())[0]["n"]


def count(db: DataFlow) -> int:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ParcelCountNode", "n", {"cache": False})
    return LocalRuntime().execute(wf.build())[0]["n"]["count"]


@pytest.fixture
def sent(monkeypatch) -> list[str]:
    """Every statement the runs send, as the server receives them, transaction control included."""
    seen: list[str] = []
    for name in ("execute", "fetch"):
        real = getattr(asyncpg.Connection, name)

        async def spy(self: Any, query: str, *args: Any, _real: Any = real, **kw: Any) -> Any:
            seen.append(query.split()[0].upper())
            return await _real(self, query, *args, **kw)

        monkeypatch.setattr(asyncpg.Connection, name, spy)
    return seen


async def _connect(url: str) -> asyncpg.Connection:
    """A raw connection to the test's database, in its schema."""
    base, _, query = url.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&") if p).get("schema", "public")
    return await asyncpg.connect(base, server_settings={"search_path": schema})


class _Locker:
    """A second connection holding the table's lock until ``release()``: an INSERT waits for it."""

    def __init__(self, url: str):
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(_connect(url))
        self.loop.run_until_complete(self.conn.execute("BEGIN; LOCK TABLE parcels IN EXCLUSIVE MODE"))

    async def release(self) -> None:
        killer = await _connect(self.url)  # on the caller's loop: the locker's own is not running
        try:
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'relation' AND "
                "relation = 'parcels'::regclass AND mode = 'ExclusiveLock' AND granted"
            )
        finally:
            await killer.close()

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.conn.close())
        except Exception:  # terminated by release()
            pass
        self.loop.close()


def test_a_one_node_create_sends_its_insert_alone_and_it_is_committed(pg_url, sent):
    db = DataFlow(pg_url)
    define(db)
    create(db)
    sent.clear()
    row = create(db, name="alone")
    assert sent == ["INSERT"]
    assert row["name"] == "alone" and count(db) == 2
    assert db.pool_status()["checked_out"] == 0
    db.close()


def one(db: DataFlow, node: str, params: dict) -> Any:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(node, "n", params)
    return LocalRuntime().execute(wf.build())[0]["n"]


def test_an_update_and_a_delete_by_id_send_their_statement_alone(pg_url, sent):
    db = DataFlow(pg_url)
    define(db)
    row = create(db)
    sent.clear()
    assert one(db, "ParcelUpdateNode", {"id": row["id"], "fields": {"weight": 5}})["weight"] == 5
    assert sent == ["UPDATE"]
    sent.clear()
    assert one(db, "ParcelDeleteNode", {"id": row["id"]})["deleted"] is True
    assert sent == ["DELETE"] and count(db) == 0
    db.close()


def test_an_update_that_matches_no_row_reads_why_after_it_and_writes_nothing(pg_url, sent):
    db = DataFlow(pg_url)
    define(db, versioned=True)
    row = create(db)
    with pytest.raises(NotFoundError):
        one(db, "ParcelUpdateNode", {"id": row["id"] + 100, "version": 1, "fields": {"weight": 5}})
    sent.clear()
    with pytest.raises(ConcurrencyError, match="version"):  # the version read comes after the UPDATE
        one(db, "ParcelUpdateNode", {"id": row["id"], "version": 7, "fields": {"weight": 5}})
    assert sent == ["UPDATE", "SELECT"]
    assert one(db, "ParcelReadNode", {"id": row["id"]})["weight"] == 0
    assert db.pool_status()["checked_out"] == 0
    db.close()


def test_runs_that_write_more_than_one_statement_keep_begin_and_commit(pg_url, sent):
    db = DataFlow(pg_url)
    define(db, audit_log=True)  # the audit log's row is a second statement
    create(db)
    sent.clear()
    create(db)
    assert sent[0] == "BEGIN" and sent[-1] == "COMMIT"
    sent.clear()
    create(db, runtime=LocalRuntime(isolation="serializable"))  # an isolation level asked for
    assert sent[0] == "BEGIN" and sent[-1] == "COMMIT"
    sent.clear()
    with db.transaction():  # a run inside a block joins its transaction
        create(db)
    assert sent[0] == "BEGIN" and "SAVEPOINT" in sent and sent[-1] == "COMMIT"
    db.close()


def test_a_two_node_run_keeps_one_transaction(pg_url, sent):
    db = DataFlow(pg_url)
    define(db)
    create(db)
    sent.clear()
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ParcelCreateNode", "a", {"name": "a"})
    wf.add_node("ParcelCreateNode", "b", {"name": "b"})
    LocalRuntime().execute(wf.build())
    assert sent == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    db.close()


def test_a_statement_the_server_refuses_leaves_nothing_and_the_connection_serves_on(pg_url):
    db = DataFlow(pg_url)
    define(db)
    create(db)
    with pytest.raises(Exception) as raised:
        create(db, weight=2**63)  # out of BIGINT's range: the server refuses the INSERT
    assert not isinstance(raised.value, TransactionError)
    assert count(db) == 1
    create(db)
    assert count(db) == 2 and db.pool_status()["checked_out"] == 0
    db.close()


def test_a_time_limit_that_finds_the_insert_waiting_cancels_it_on_the_server_and_nothing_stays(pg_url, sent):
    db = DataFlow(pg_url)
    define(db)
    create(db)
    locker = _Locker(pg_url)
    sent.clear()
    try:
        with pytest.raises(NodeTimeoutError, match="cancelled"):
            create(db, runtime=LocalRuntime(node_timeout=0.3, retry=False), name="late")
        assert sent == ["INSERT"]
    finally:
        locker.loop.run_until_complete(locker.conn.execute("ROLLBACK"))
        locker.close()
    assert count(db) == 1  # the server cancelled the INSERT: no row
    assert db.pool_status()["checked_out"] == 0
    create(db)  # the cancelled connection was discarded; the next run gets a clean one
    assert count(db) == 2
    db.close()


def test_a_statement_that_completes_as_its_time_limit_passes_is_reported_as_committed(pg_url, monkeypatch):
    db = DataFlow(pg_url)
    define(db)
    create(db)
    locker = _Locker(pg_url)
    real_cancel = PostgresConnection._cancel_on_server
    raced = []

    async def late_cancel(self: PostgresConnection) -> None:
        # the race, made certain: the lock goes and the INSERT commits before the cancel is sent
        raced.append(True)
        await locker.release()
        for _ in range(200):
            if await _inserted(pg_url, "raced"):
                break
            await asyncio.sleep(0.01)
        await real_cancel(self)

    monkeypatch.setattr(PostgresConnection, "_cancel_on_server", late_cancel)
    try:
        row = create(db, runtime=LocalRuntime(node_timeout=0.3, retry=False), name="raced")
    finally:
        locker.close()
    assert raced and row["name"] == "raced"  # never reported as rolled back: the row stands
    assert count(db) == 2
    assert db.pool_status()["checked_out"] == 0
    db.close()


def test_a_connection_that_breaks_under_the_statement_is_an_unknown_outcome_never_retried(
    pg_url, monkeypatch, sent
):
    db = DataFlow(pg_url)
    define(db)
    create(db)
    locker = _Locker(pg_url)
    retries = []

    class Spy:
        def retry(self, **fields: Any) -> None:
            retries.append(fields)

    async def terminate_mine(self: PostgresConnection) -> None:  # the "cancel" ends the backend instead
        killer = await asyncpg.connect(pg_url.split("?")[0])
        try:
            await killer.execute("SELECT pg_terminate_backend($1)", self.raw.get_server_pid())
        finally:
            await killer.close()

    monkeypatch.setattr(PostgresConnection, "_cancel_on_server", terminate_mine)
    sent.clear()
    try:
        with pytest.raises(Exception) as raised:
            create(db, runtime=LocalRuntime(node_timeout=0.3, hooks=[Spy()]), name="lost")
    finally:
        locker.loop.run_until_complete(locker.conn.execute("ROLLBACK"))
        locker.close()
    assert "unknown" in str(raised.value) and isinstance(raised.value.__cause__, TransactionError)
    assert sent.count("INSERT") == 1 and retries == []  # an unknown outcome is never tried again
    assert count(db) == 1  # (the server aborted it; the run could not know that)
    assert db.pool_status()["checked_out"] == 0
    db.close()


def test_a_second_write_on_a_connection_whose_statement_committed_alone_is_refused_unsent():
    from dataflow_lab.dialects.pg_alone import Alone

    alone, sent_sql = Alone(), []

    async def go() -> None:
        async def send() -> str:
            return "done"

        async def cancel() -> None: ...

        options = {"cancel": cancel, "never_sent": lambda e: False, "where": "PostgreSQL"}
        assert await alone.run("INSERT INTO t VALUES (1)", send, **options) == "done"
        assert await alone.run("SELECT 1", send, **options) == "done"  # a read after it
        with pytest.raises(TransactionError, match="cannot take"):
            await alone.run("UPDATE t SET x = 1", lambda: sent_sql.append(1), **options)

    asyncio.run(go())
    assert sent_sql == [] and alone.committed


def test_the_never_sent_check_is_the_dialects(pg_url):
    assert postgres.never_sent(asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"))
    assert not postgres.never_sent(asyncpg.PostgresError("boom"))


async def _inserted(url: str, name: str) -> bool:
    conn = await _connect(url)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM parcels WHERE name = $1", name))
    finally:
        await conn.close()
