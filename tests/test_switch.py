"""SwitchNode: routes both ways, skips the branch not taken (and what only it feeds), merges, shows skips."""

from __future__ import annotations

import pytest

from dataflow_lab import (
    LocalRuntime,
    NodeExecutionError,
    Skipped,
    SwitchNode,
    ValidationError,
    WorkflowBuilder,
    WorkflowValidationError,
)
from dataflow_lab.hooks import subscribe, unsubscribe
from dataflow_lab.notebook.observer import RunObserver


def merge(message: str = "nothing") -> str:
    return f"merged: {message}"


def branching(total: int, condition=None) -> WorkflowBuilder:
    """order -> route -> big -> shout (only after big) ; small ; merge(message from big or small)."""
    wf = WorkflowBuilder(name="routing")
    wf.add_node(lambda total: {"total": total}, "order", total=total)
    wf.add_node(
        "SwitchNode",
        "route",
        condition=condition or (lambda o: "big" if o["total"] > 100 else "small"),
        cases=["big", "small"],
    )
    wf.add_node(lambda order: {"text": f"big order of {order['total']}"}, "big")
    wf.add_node(lambda order: {"text": f"small order of {order['total']}"}, "small")
    wf.add_node(lambda text: text.upper(), "shout")
    wf.add_node(merge, "merge")
    wf.add_connection("order", "total", "route", "value.total")
    wf.add_connection("route", "big", "big", "order")
    wf.add_connection("route", "small", "small", "order")
    wf.add_connection("big", "text", "shout", "text")
    wf.add_connection("big", "text", "merge", "message")
    wf.add_connection("small", "text", "merge", "message")
    return wf


def test_the_switch_routes_a_big_order_to_the_big_branch_and_skips_the_small_one():
    results, _ = LocalRuntime().execute(branching(250).build())
    assert results["route"] == {"case": "big", "big": {"total": 250}}
    assert results["big"] == {"text": "big order of 250"}
    assert results["shout"] == "BIG ORDER OF 250"
    assert isinstance(results["small"], Skipped)
    assert "'route' chose 'big', not 'small'" in results["small"].reason
    assert results["merge"] == "merged: big order of 250"
    assert results.skipped == ["small"]


def test_the_switch_routes_a_small_order_the_other_way_and_skips_the_big_branch_and_its_descendants():
    results, _ = LocalRuntime().execute(branching(20).build())
    assert results["route"]["case"] == "small"
    assert results["small"] == {"text": "small order of 20"}
    assert isinstance(results["big"], Skipped) and isinstance(results["shout"], Skipped)
    assert "'big' was skipped" in results["shout"].reason
    assert results["merge"] == "merged: small order of 20"  # the merge takes its live input
    assert results.skipped == ["big", "shout"]
    assert not results["big"]  # a Skipped is falsy, so `if results[n]:` reads naturally


def test_a_declarative_rule_routes_to_true_and_false():
    for total, taken, skipped in ((500, "true", "false"), (5, "false", "true")):
        wf = WorkflowBuilder()
        wf.add_node(lambda total: {"total": total}, "order", total=total)
        wf.add_node("SwitchNode", "route", condition={"field": "total", "operator": ">=", "value": 100})
        wf.add_node(lambda order: "yes", "yes")
        wf.add_node(lambda order: "no", "no")
        wf.add_connection("order", "total", "route", "value.total")
        wf.add_connection("route", "true", "yes", "order")
        wf.add_connection("route", "false", "no", "order")
        results, _ = LocalRuntime().execute(wf.build())
        assert results["route"]["case"] == taken
        by_case = {"true": "yes", "false": "no"}
        assert results[by_case[taken]] in ("yes", "no")
        assert isinstance(results[by_case[skipped]], Skipped)


def test_the_chosen_case_name_is_always_available_as_the_case_output():
    wf = branching(250)
    wf.add_node(lambda case: f"took {case}", "log")
    wf.add_connection("route", "case", "log", "case")
    results, _ = LocalRuntime().execute(wf.build())
    assert results["log"] == "took big"


def test_a_connection_from_an_output_the_switch_does_not_have_is_a_build_problem():
    wf = branching(1)
    wf.add_node(lambda order: order, "medium")
    wf.add_connection("route", "medium", "medium", "order")
    with pytest.raises(WorkflowValidationError, match="SwitchNode has no output 'medium'"):
        wf.build()


def test_a_condition_choosing_an_unknown_case_fails_the_node_with_the_cases_named():
    wf = branching(1, condition=lambda o: "huge")
    with pytest.raises(
        NodeExecutionError, match=r"chose 'huge', which is not one of the cases \['big', 'small'\]"
    ):
        LocalRuntime().execute(wf.build())


@pytest.mark.parametrize(
    "params, message",
    [
        ({"condition": 42}, "must be a callable or a rule dict"),
        ({"condition": {"field": "x", "operator": "~"}}, "unknown operator"),
        ({"condition": bool, "cases": []}, "non-empty list"),
        ({"condition": bool, "cases": ["a", "a"]}, "repeat"),
        ({"condition": bool, "cases": ["case"]}, "reserved"),
    ],
)
def test_bad_switch_parameters_are_refused_at_build(params, message):
    builder = WorkflowBuilder()
    builder.add_node(SwitchNode, "route", **params)
    with pytest.raises(ValidationError, match=message):
        builder.build()


def test_a_switch_writes_only_on_the_taken_branch(db):
    @db.model
    class Order:
        total: int
        kind: str

    def run(total: int) -> list[str]:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("SwitchNode", "route", value={"total": total}, condition=lambda o: o["total"] > 100)
        wf.add_node("OrderCreateNode", "big", kind="big")
        wf.add_node("OrderCreateNode", "small", kind="small")
        wf.add_connection("route", "true.total", "big", "total")
        wf.add_connection("route", "false.total", "small", "total")
        results, _ = LocalRuntime().execute(wf.build())
        return results.skipped

    assert run(500) == ["small"]
    assert run(5) == ["big"]
    listing = WorkflowBuilder(dataflow=db)
    listing.add_node("OrderListNode", "all", order_by=["total"])
    rows = LocalRuntime().execute(listing.build())[0]["all"]["records"]
    assert [(r["total"], r["kind"]) for r in rows] == [(5, "small"), (500, "big")]


class Skips:
    def __init__(self):
        self.skipped: list[tuple[str, str]] = []
        self.ran: list[str] = []

    def node_skipped(self, *, node_id, reason, **future):
        self.skipped.append((node_id, reason))

    def after_node(self, *, node_id, **future):
        self.ran.append(node_id)


def test_skipped_nodes_fire_node_skipped_and_never_before_or_after_node():
    spy = Skips()
    subscribe(spy)
    try:
        LocalRuntime().execute(branching(20).build())
    finally:
        unsubscribe(spy)
    assert [n for n, _ in spy.skipped] == ["big", "shout"]
    assert spy.ran == ["order", "route", "small", "merge"]


def test_the_dag_view_shows_skipped_nodes_as_skipped():
    workflow = branching(20).build()
    observer = RunObserver(workflow)
    LocalRuntime(hooks=[observer]).execute(workflow)
    states = observer.snapshot().states()
    assert states["big"] == "skipped" and states["shout"] == "skipped"
    assert states["small"] == "done" and states["merge"] == "done"
    from dataflow_lab.viz import STATE_COLOURS

    assert "skipped" in STATE_COLOURS


def test_the_live_panel_shows_a_skipped_node_with_an_empty_bar_and_says_skipped():
    from dataflow_lab.notebook.monitor import node_fraction

    workflow = branching(20).build()
    observer = RunObserver(workflow)
    LocalRuntime(hooks=[observer]).execute(workflow)
    skipped = observer.snapshot().nodes["big"]
    assert node_fraction(skipped) == 0.0 and skipped.label() == "skipped"
    assert "'route' chose 'small', not 'big'" in skipped.error
