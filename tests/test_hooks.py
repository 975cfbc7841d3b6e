"""Hooks: RunHooks defaults, refused misspellings, node records, and hooks per DataFlow."""

from __future__ import annotations

import pytest

from dataflow_lab import (
    DataFlow,
    LocalRuntime,
    NodeRecord,
    RunHooks,
    TransactionMode,
    ValidationError,
    WorkflowBuilder,
    hooks,
)


def define(db: DataFlow) -> None:
    @db.model
    class Note:
        text: str


def notes_workflow(db: DataFlow, text: str = "hello") -> WorkflowBuilder:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("NoteCreateNode", "create", {"text": text})
    wf.add_node("NoteReadNode", "read", {})
    wf.add_connection("create", "id", "read", "id")
    return wf


class Runs(RunHooks):
    """Overrides only after_workflow; every other event keeps RunHooks' no-op default."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def after_workflow(self, **fields) -> None:
        self.seen.append(fields)


# --------------------------------------------------------------------------- RunHooks and misspellings


def test_a_runhooks_subclass_is_called_only_for_the_events_it_overrides():
    registry = hooks.Hooks([Runs()])
    assert registry.wants("after_workflow")
    assert not any(registry.wants(e) for e in hooks.EVENTS if e != "after_workflow")


def test_a_runhooks_subclass_overriding_nothing_is_refused():
    class Nothing(RunHooks):
        pass

    with pytest.raises(ValidationError, match="none of the hook methods"):
        hooks.Hooks([Nothing()])


@pytest.mark.parametrize(
    ("misspelled", "meant"),
    [("after_nodes", "after_node"), ("befor_workflow", "before_workflow"), ("compensations", "compensation")],
)
def test_subscribe_refuses_a_misspelled_event_with_a_did_you_mean(misspelled, meant):
    subscriber = type(
        "Spy", (), {"after_workflow": lambda self, **f: None, misspelled: lambda self, **f: None}
    )()
    for subscribe in (hooks.Hooks().subscribe, hooks.subscribe, lambda s: LocalRuntime(hooks=[s])):
        with pytest.raises(ValidationError, match=f"'{misspelled}'.*Did you mean '{meant}'"):
            subscribe(subscriber)
    assert subscriber not in hooks.global_hooks


def test_a_subscriber_whose_only_method_is_misspelled_hears_the_did_you_mean():
    class Spy:
        def after_nodes(self, **fields):
            pass

    with pytest.raises(ValidationError, match="Did you mean 'after_node'"):
        hooks.Hooks([Spy()])


def test_other_public_methods_and_private_ones_are_accepted():
    class Spy(RunHooks):
        total = property(lambda self: 1 / 0)  # never evaluated by subscribe

        def after_node(self, **fields):
            pass

        def report(self) -> str:
            return "fine"

        def _after_nodes(self) -> None:  # private: not taken for an event
            pass

    spy = Spy()
    assert hooks.Hooks([spy]).wants("after_node")


# --------------------------------------------------------------------------- what after_workflow reports


def test_after_workflow_lists_node_records_as_named_tuples(db):
    define(db)
    runs = Runs()
    LocalRuntime(hooks=[runs]).execute(notes_workflow(db).build())
    records = runs.seen[0]["nodes"]
    assert all(isinstance(r, NodeRecord) for r in records)
    assert [r.node_id for r in records] == ["create", "read"]
    assert [r.rows for r in records] == [1, 1] and {r.error for r in records} == {None}
    assert records[0].node_class.type_name == "NoteCreateNode" and records[0].duration >= 0


def test_after_workflow_reports_the_mode_auto_resolved_to(tmp_path):
    first, second = DataFlow(), DataFlow(f"duckdb:///{tmp_path / 'second.duckdb'}")
    define(first)
    define(second)
    runs = Runs()
    runtime = LocalRuntime(transaction="auto", hooks=[runs])
    runtime.execute(notes_workflow(first).build())
    both = WorkflowBuilder()
    both.add_node(first.nodes["NoteCreateNode"], "one", {"text": "a"})
    both.add_node(second.nodes["NoteCreateNode"], "two", {"text": "b"})
    runtime.execute(both.build())
    # never "auto"; across a SQLite and a DuckDB (no 2PC): one transaction per database
    assert [r["mode"] for r in runs.seen] == ["workflow", "workflow"]
    assert [type(r["mode"]) for r in runs.seen] == [TransactionMode, TransactionMode]
    first.close()
    second.close()


def test_after_workflow_reports_the_joined_mode_for_a_run_inside_a_transaction_block(db):
    define(db)
    runs = Runs()
    with db.transaction():
        LocalRuntime(transaction="node", hooks=[runs]).execute(notes_workflow(db).build())
    assert runs.seen[0]["mode"] == "workflow"  # it joined the block's transaction


# --------------------------------------------------------------------------- hooks per DataFlow


def test_a_dataflows_hooks_hear_only_the_runs_that_touch_it(tmp_path):
    mine, other = DataFlow(), DataFlow(f"sqlite:///{tmp_path / 'other.db'}")
    define(mine)
    define(other)
    on_mine, everywhere = Runs(), Runs()
    mine.hooks.subscribe(on_mine)
    hooks.subscribe(everywhere)  # process-wide subscribers still hear every run
    try:
        LocalRuntime().execute(notes_workflow(mine, "mine").build())
        LocalRuntime().execute(notes_workflow(other, "other").build())
    finally:
        hooks.unsubscribe(everywhere)
    assert [r["results"]["read"]["text"] for r in on_mine.seen] == ["mine"]
    assert [r["results"]["read"]["text"] for r in everywhere.seen] == ["mine", "other"]
    mine.close()
    other.close()


def test_a_run_over_two_dataflows_reaches_both_their_hooks_and_each_subscriber_once(tmp_path):
    first, second = DataFlow(), DataFlow(f"sqlite:///{tmp_path / 'second.db'}")
    define(first)
    define(second)
    runs = Runs()
    first.hooks.subscribe(runs)
    second.hooks.subscribe(runs)
    both = WorkflowBuilder()
    both.add_node(first.nodes["NoteCreateNode"], "one", {"text": "a"})
    both.add_node(second.nodes["NoteCreateNode"], "two", {"text": "b"})
    LocalRuntime(transaction="saga").execute(both.build())
    assert len(runs.seen) == 2  # once through each DataFlow's hooks: two subscriptions
    first.close()
    second.close()


def test_a_monitored_dataflow_counts_only_its_runs_without_filtering_the_others(tmp_path):
    mine, other = DataFlow(monitoring=True), DataFlow(f"sqlite:///{tmp_path / 'other.db'}", monitoring=True)
    define(mine)
    define(other)
    for _ in range(2):
        LocalRuntime().execute(notes_workflow(mine).build())
    LocalRuntime().execute(notes_workflow(other).build())
    assert mine.metrics()["workflow_executions"]["total"] == 2
    assert other.metrics()["workflow_executions"]["total"] == 1
    assert mine.monitor in mine.hooks and mine.monitor not in hooks.global_hooks
    mine.close()
    other.close()
