"""Reads of db.audit, db.migrations and db.reflect inside ``with db.transaction()``.

SQLite and DuckDB have one writer, so a second connection waits for the block's forever:
these reads must use the block's connection (and see its uncommitted writes). Each call
runs in a worker thread bounded by a timeout, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import concurrent.futures
import contextvars

import pytest

from dataflow_lab import DataFlow, LocalRuntime, MigrationError, WorkflowBuilder

BOUND = 20  # seconds: a hang, not a slow call (these take milliseconds)


def bounded(call):
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        # the worker runs in this thread's context, so it is inside the same transaction block
        return pool.submit(contextvars.copy_context().run, call).result(timeout=BOUND)
    finally:
        pool.shutdown(wait=False)


def define(db: DataFlow) -> None:
    @db.model
    class Note:
        text: str
        __dataflow__ = {"audit_log": True}


def create(db: DataFlow, text: str) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("NoteCreateNode", "n", {"text": text})
    return LocalRuntime(user="alice").execute(wf.build())[0]["n"]


def test_audit_inside_a_transaction_reads_the_blocks_own_writes(db):
    define(db)
    create(db, "before")
    with db.transaction():
        row = create(db, "inside")
        entries = bounded(lambda: db.audit("Note", row["id"]))
    assert [e.after["text"] for e in entries] == ["inside"]


def test_migration_history_and_plan_inside_a_transaction_answer(db):
    define(db)
    create(db, "x")
    with db.transaction():
        create(db, "y")
        plan = bounded(db.migrations.plan)
        history = bounded(db.migrations.history)
    assert not plan
    assert isinstance(history, list)


def test_applying_a_migration_inside_a_transaction_is_refused_at_once(db):
    define(db)
    create(db, "x")
    with db.transaction():
        with pytest.raises(MigrationError, match="inside db.transaction"):
            bounded(db.migrations.apply)


def test_reflect_inside_a_transaction_reads_the_tables(db):
    define(db)
    create(db, "x")
    with db.transaction():
        create(db, "y")
        added = bounded(lambda: db.reflect([db.models["Note"].table_name]))
    assert added == ["Note"]
