"""Declared cycles: build() accepts them and rejects undeclared ones; runs stop on convergence or the limit."""

from __future__ import annotations

import pytest

from dataflow_lab import (
    CycleNotConvergedError,
    LocalRuntime,
    ValidationError,
    WorkflowBuilder,
    WorkflowValidationError,
)
from dataflow_lab.cycles import Cycle
from dataflow_lab.hooks import subscribe, unsubscribe


def halve(x: float = 64.0) -> dict:
    return {"x": x / 2, "small": x / 2 < 1.5}


def grow(x: int = 1) -> dict:
    return {"x": x + 1}


def start() -> dict:
    return {"x": 100}


def double(x: int) -> dict:
    return {"x": x * 2}


def minus_three(x: int) -> dict:
    return {"x": x - 3}


def report(x: int) -> str:
    return f"ended at {x}"


def halving_loop(**cycle) -> WorkflowBuilder:
    wf = WorkflowBuilder()
    wf.add_node(halve, "halve")
    wf.add_connection("halve", "x", "halve", "x", cycle=True, **cycle)
    return wf


# --------------------------------------------------------------------------- build


def test_an_undeclared_cycle_is_still_rejected_by_build_with_how_to_declare_it():
    wf = WorkflowBuilder()
    wf.add_node(double, "a", x=1)
    wf.add_node(minus_three, "b")
    wf.add_connection("a", "x", "b", "x").add_connection("b", "x", "a", "x")
    with pytest.raises(WorkflowValidationError) as caught:
        wf.build()
    assert "cycle that was not declared" in str(caught.value)
    assert "cycle=True" in str(caught.value)


def test_a_cycle_connection_needs_a_positive_max_iterations():
    wf = WorkflowBuilder()
    wf.add_node(halve, "halve")
    with pytest.raises(ValidationError, match="max_iterations"):
        wf.add_connection("halve", "x", "halve", "x", cycle=True)
    with pytest.raises(ValidationError, match="max_iterations"):
        wf.add_connection("halve", "x", "halve", "x", cycle=True, max_iterations=0)


def test_cycle_options_on_an_ordinary_connection_are_refused():
    wf = WorkflowBuilder()
    wf.add_node(double, "a", x=1)
    wf.add_node(minus_three, "b")
    with pytest.raises(ValidationError, match="cycle=True"):
        wf.add_connection("a", "x", "b", "x", max_iterations=3)


def test_a_cycle_connection_that_closes_no_loop_is_a_build_problem():
    wf = WorkflowBuilder()
    wf.add_node(double, "a", x=1)
    wf.add_node(minus_three, "b", x=1)
    wf.add_connection("a", "x", "b", "x", cycle=True, max_iterations=3)
    with pytest.raises(WorkflowValidationError, match="does not lead back"):
        wf.build()


def test_the_cycle_target_still_needs_a_starting_value():
    wf = WorkflowBuilder()
    wf.add_node(double, "a")  # x has no default and nothing feeds the first iteration
    wf.add_connection("a", "x", "a", "x", cycle=True, max_iterations=3)
    workflow = wf.build()
    assert [str(i) for i in workflow.workflow_inputs] == ["a.x"]  # the run must pass the start
    with pytest.raises(ValidationError, match="a.x"):
        LocalRuntime().execute(workflow)
    results, _ = LocalRuntime().execute(workflow, parameters={"a": {"x": 1}})
    assert [r["x"] for r in results.iterations["a"]] == [2, 4, 8]


def test_build_orders_a_cycle_as_one_step_between_its_upstream_and_downstream():
    wf = WorkflowBuilder()
    wf.add_node(report, "report")
    wf.add_node(start, "start")
    wf.add_node(double, "double")
    wf.add_node(minus_three, "minus")
    wf.add_connection("start", "x", "double", "x")
    wf.add_connection("double", "x", "minus", "x")
    wf.add_connection("minus", "x", "double", "x", cycle=True, max_iterations=5)
    wf.add_connection("minus", "x", "report", "x")
    workflow = wf.build()
    cycle = workflow.cycles[0]
    assert isinstance(cycle, Cycle) and cycle.body == ("double", "minus")
    assert workflow.steps == ("start", cycle, "report")
    assert workflow.order == ("start", "double", "minus", "report")


# --------------------------------------------------------------------------- runs


def test_a_converging_cycle_stops_at_the_first_iteration_whose_output_converges():
    wf = halving_loop(max_iterations=50, converge_when=lambda out: out["small"])
    results, _ = LocalRuntime().execute(wf.build())
    # 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1: the sixth output is the first below 1.5
    assert results["halve"] == {"x": 1.0, "small": True}
    assert [out["x"] for out in results.iterations["halve"]] == [32, 16, 8, 4, 2, 1]


def test_a_non_converging_cycle_stops_at_max_iterations_and_raises_with_its_last_outputs():
    wf = halving_loop(max_iterations=3, converge_when=lambda out: out["x"] < 0)
    with pytest.raises(CycleNotConvergedError) as caught:
        LocalRuntime().execute(wf.build())
    error = caught.value
    assert error.iterations == 3 and error.nodes == ("halve",)
    assert error.last_outputs == {"halve": {"x": 8.0, "small": False}}
    assert [out["x"] for out in error.results.iterations["halve"]] == [32, 16, 8]
    assert "did not converge in 3 iteration(s)" in str(error) and "max_iterations" in str(error)


def test_a_cycle_without_converge_when_runs_exactly_max_iterations():
    wf = WorkflowBuilder()
    wf.add_node(grow, "grow")
    wf.add_connection("grow", "x", "grow", "x", cycle=True, max_iterations=4)
    results, _ = LocalRuntime().execute(wf.build())
    assert results["grow"] == {"x": 5}
    assert len(results.iterations["grow"]) == 4


def test_a_two_node_cycle_feeds_its_closing_output_into_the_next_iteration_and_downstream():
    wf = WorkflowBuilder()
    wf.add_node(start, "start")
    wf.add_node(double, "double")
    wf.add_node(minus_three, "minus")
    wf.add_node(report, "report")
    wf.add_connection("start", "x", "double", "x")
    wf.add_connection("double", "x", "minus", "x")
    wf.add_connection(
        "minus", "x", "double", "x", cycle=True, max_iterations=10, converge_when=lambda o: o["x"] > 500
    )
    wf.add_connection("minus", "x", "report", "x")
    results, _ = LocalRuntime().execute(wf.build())
    # 100 -> 197 -> 391 -> 779: the third pass converges
    assert [o["x"] for o in results.iterations["minus"]] == [197, 391, 779]
    assert [o["x"] for o in results.iterations["double"]] == [200, 394, 782]
    assert results["report"] == "ended at 779"
    assert "start" not in results.iterations and list(results) == ["start", "double", "minus", "report"]


def test_a_failing_convergence_condition_is_a_clear_error():
    wf = halving_loop(max_iterations=3, converge_when=lambda out: out["missing"])
    with pytest.raises(Exception, match="converge_when of the cycle halve -> halve raised KeyError"):
        LocalRuntime().execute(wf.build())


class Recorder:
    def __init__(self):
        self.iterations: list[tuple[int, bool]] = []
        self.node_runs: list[str] = []

    def cycle_iteration(self, *, iteration, converged, nodes, **future):
        self.iterations.append((iteration, converged))

    def after_node(self, *, node_id, **future):
        self.node_runs.append(node_id)


def test_each_iteration_emits_a_cycle_iteration_hook_and_node_hooks():
    recorder = Recorder()
    subscribe(recorder)
    try:
        wf = halving_loop(max_iterations=10, converge_when=lambda out: out["x"] <= 8)
        LocalRuntime().execute(wf.build())
    finally:
        unsubscribe(recorder)
    assert recorder.iterations == [(1, False), (2, False), (3, True)]
    assert recorder.node_runs == ["halve"] * 3


def test_a_cycle_writing_to_the_database_rolls_back_every_iteration_when_it_fails(db):
    @db.model
    class Tick:
        n: int

    def fail_at_three(x: int = 0) -> dict:
        if x == 3:
            raise RuntimeError("boom at 3")
        return {"x": x + 1}

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(fail_at_three, "count")
    wf.add_node("TickCreateNode", "write")
    wf.add_connection("count", "x", "write", "n")
    wf.add_connection("write", "n", "count", "x", cycle=True, max_iterations=5)
    with pytest.raises(Exception, match="boom at 3"):
        LocalRuntime().execute(wf.build())
    listing = WorkflowBuilder(dataflow=db)
    listing.add_node("TickCountNode", "n")
    assert LocalRuntime().execute(listing.build())[0]["n"]["count"] == 0


def test_a_cycle_writing_to_the_database_writes_once_per_iteration(db):
    @db.model
    class Tick:
        n: int

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(grow, "count", x=0)
    wf.add_node("TickCreateNode", "write")
    wf.add_connection("count", "x", "write", "n")
    wf.add_connection(
        "write", "n", "count", "x", cycle=True, max_iterations=10, converge_when=lambda row: row["n"] == 4
    )
    results, _ = LocalRuntime().execute(wf.build())
    assert [r["n"] for r in results.iterations["write"]] == [1, 2, 3, 4]
    listing = WorkflowBuilder(dataflow=db)
    listing.add_node("TickListNode", "all", order_by=["n"])
    rows = LocalRuntime().execute(listing.build())[0]["all"]["records"]
    assert [r["n"] for r in rows] == [1, 2, 3, 4]


def test_declared_cycles_may_not_share_nodes():
    wf = WorkflowBuilder()
    wf.add_node(double, "a", x=1)
    wf.add_node(minus_three, "b")
    wf.add_connection("a", "x", "b", "x")
    wf.add_connection("b", "x", "a", "x", cycle=True, max_iterations=3)
    wf.add_connection("b", "x", "b", "x", cycle=True, max_iterations=3)
    with pytest.raises(WorkflowValidationError, match="may not overlap or nest"):
        wf.build()


def test_the_run_observer_logs_each_cycle_iteration():
    from dataflow_lab.notebook.observer import RunObserver

    workflow = halving_loop(max_iterations=10, converge_when=lambda out: out["x"] <= 16).build()
    observer = RunObserver(workflow)
    LocalRuntime(hooks=[observer]).execute(workflow)
    snapshot = observer.snapshot()
    assert "CYCLE halve: iteration 2 (converged)" in snapshot.events
    assert snapshot.states()["halve"] == "done"
