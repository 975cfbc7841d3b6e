"""Run tracking: db.runs() and runtime.runs() in every environment, bounded, with .run_id on errors."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from dataflow_lab import (
    AsyncLocalRuntime,
    DataFlow,
    LocalRuntime,
    NodeExecutionError,
    ValidationError,
    WorkflowBuilder,
)
from dataflow_lab.tracking import RunRecord, RunTracker


def define(db: DataFlow) -> None:
    @db.model
    class Note:
        text: str


def create_and_read(db: DataFlow, name: str = "notes") -> WorkflowBuilder:
    wf = WorkflowBuilder(db, name=name)
    wf.add_node("NoteCreateNode", "create", {"text": "hello"})
    wf.add_node("NoteReadNode", "read", {})
    wf.add_connection("create", "id", "read", "id")
    return wf


def explode(id: int) -> None:
    raise RuntimeError(f"no luck with note {id}")


def failing(db: DataFlow) -> WorkflowBuilder:
    wf = create_and_read(db, name="failing")
    wf.add_node(explode, "explode", {})
    wf.add_node("NoteListNode", "after", {})
    wf.add_connection("read", "id", "explode", "id")
    wf.add_connection("explode", "result", "after", "limit")
    return wf


@pytest.fixture
def notes(db):
    define(db)
    return db


def test_a_run_is_recorded_with_its_id_workflow_status_node_statuses_and_duration(notes):
    runtime = LocalRuntime()
    _, run_id = runtime.execute(create_and_read(notes).build())
    (record,) = notes.runs()
    assert isinstance(record, RunRecord)
    assert record.run_id == run_id and record.workflow == "notes" and record.status == "success"
    assert record.nodes == {"create": "success", "read": "success"}
    assert record.duration_ms > 0 and record.error is None and record.failed_node is None
    assert record.mode == "workflow"
    assert runtime.runs() == [record]


def test_a_failed_run_is_recorded_and_its_error_carries_the_run_id(notes):
    runtime = LocalRuntime()
    runtime.execute(create_and_read(notes).build())
    with pytest.raises(NodeExecutionError) as info:
        runtime.execute(failing(notes).build())
    failed = notes.runs()[-1]
    assert info.value.run_id == failed.run_id
    assert failed.status == "error" and failed.workflow == "failing"
    assert failed.error_type == type(info.value).__name__
    assert "no luck with note" in failed.error and "\n" not in failed.error
    assert failed.failed_node == "explode"
    assert failed.nodes == {"create": "success", "read": "success", "explode": "error", "after": "not run"}
    assert [r.status for r in runtime.runs()] == ["success", "error"]
    assert runtime.runs(status="error") == [failed]
    assert notes.runs(workflow="notes", limit=1)[0].status == "success"


def test_an_error_before_any_node_also_carries_the_run_id(notes, monkeypatch):
    async def refuse(*args, **kwargs):
        raise RuntimeError("the table could not be made")

    monkeypatch.setattr(notes.database, "ensure_table", refuse)
    with pytest.raises(RuntimeError, match="could not be made") as info:
        LocalRuntime().execute(create_and_read(notes).build())
    (record,) = notes.runs()
    assert info.value.run_id == record.run_id
    assert record.status == "error" and record.failed_node is None
    assert record.nodes == {"create": "not run", "read": "not run"}


def test_a_cancelled_run_is_recorded_as_cancelled(notes):
    async def wait_forever(id: int) -> None:
        await asyncio.sleep(30)

    wf = create_and_read(notes)
    wf.add_node(wait_forever, "wait", {})
    wf.add_connection("read", "id", "wait", "id")
    workflow = wf.build()
    runtime = AsyncLocalRuntime()

    async def cancel_it() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(runtime.execute_async(workflow), 0.5)

    asyncio.run(cancel_it())
    (record,) = runtime.runs()
    assert record.status == "cancelled"
    assert record.nodes == {"create": "success", "read": "success", "wait": "cancelled"}
    assert notes.runs() == [record]


def test_tracking_is_on_in_development_with_monitoring_off(notes):
    assert notes.config.environment == "development" and notes.monitor is None
    LocalRuntime().execute(create_and_read(notes).build())
    assert len(notes.runs()) == 1


def test_the_record_is_bounded_by_run_history_and_keeps_the_newest(tmp_path):
    db = DataFlow(f"sqlite:///{tmp_path / 'bounded.db'}", run_history=3)
    define(db)
    runtime = LocalRuntime()
    ids = [runtime.execute(create_and_read(db).build())[1] for _ in range(5)]
    assert [r.run_id for r in db.runs()] == ids[-3:]
    assert len(runtime.runs()) == 5
    db.close()


@pytest.mark.parametrize("keep", [0, -1, "10", True])
def test_a_run_history_that_is_no_positive_int_is_refused(keep):
    with pytest.raises(ValidationError, match="run_history must be a positive number"):
        DataFlow(run_history=keep)


def test_a_run_over_two_dataflows_is_in_both_records(tmp_path):
    first, second = DataFlow(), DataFlow(f"sqlite:///{tmp_path / 'second.db'}")
    define(first)
    define(second)
    both = WorkflowBuilder(name="both")
    both.add_node(first.nodes["NoteCreateNode"], "one", {"text": "a"})
    both.add_node(second.nodes["NoteCreateNode"], "two", {"text": "b"})
    _, run_id = LocalRuntime(transaction="saga").execute(both.build())
    assert [r.run_id for r in first.runs()] == [run_id] == [r.run_id for r in second.runs()]
    assert first.runs()[0].nodes == {"one": "success", "two": "success"}
    first.close()
    second.close()


def test_a_skipped_branch_is_recorded_as_skipped():
    wf = WorkflowBuilder(name="routing")
    wf.add_node(lambda: {"total": 5}, "order")
    wf.add_node(
        "SwitchNode", "route", condition=lambda o: "big" if o > 100 else "small", cases=["big", "small"]
    )
    wf.add_node(lambda order: "big", "big")
    wf.add_node(lambda order: "small", "small")
    wf.add_connection("order", "total", "route", "value")
    wf.add_connection("route", "big", "big", "order")
    wf.add_connection("route", "small", "small", "order")
    runtime = LocalRuntime()
    runtime.execute(wf.build())
    assert runtime.runs()[0].nodes == {
        "order": "success",
        "route": "success",
        "big": "skipped",
        "small": "success",
    }


def test_runs_have_a_dataframe_form(notes):
    pytest.importorskip("pandas")
    runtime = LocalRuntime()
    runtime.execute(create_and_read(notes).build())
    with pytest.raises(NodeExecutionError):
        runtime.execute(failing(notes).build())
    frame = notes.runs().frame()
    assert list(frame["status"]) == ["success", "error"]
    assert list(frame.columns[:3]) == ["run_id", "workflow", "status"]
    assert frame["duration_ms"].dtype == "float64"
    assert frame["nodes"].iloc[1]["explode"] == "error"
    assert list(runtime.runs().frame()["run_id"]) == list(frame["run_id"])


def test_a_runtimes_record_keeps_no_dataflow_alive(tmp_path):
    db = DataFlow(f"sqlite:///{tmp_path / 'gone.db'}")
    define(db)
    runtime = LocalRuntime()
    runtime.execute(create_and_read(db).build())
    with pytest.raises(NodeExecutionError):
        runtime.execute(failing(db).build())
    gone = weakref.ref(db)
    db.close()
    del db
    gc.collect()
    assert gone() is None
    assert [r.status for r in runtime.runs()] == ["success", "error"]


def test_the_tracker_asks_for_no_node_records():
    """So that tracking alone makes the runtime build no NodeRecord per node (its cost stays per run)."""
    from dataflow_lab.hooks import Fanout, Hooks

    assert RunTracker.node_records is False
    tracked = Fanout(Hooks([RunTracker()]), process_wide=False)
    assert tracked.wants("after_workflow") and not tracked.wants_records()
    assert Fanout(Hooks([RunTracker()]), Hooks([NodeRecordsWanted()]), process_wide=False).wants_records()


class NodeRecordsWanted:
    def after_workflow(self, **fields) -> None:
        pass
