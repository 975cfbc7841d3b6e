"""The slow-statement log: SQL without values, the run and node, the error, and EXPLAIN plans where there are."""

from __future__ import annotations

import time

import pytest

from dataflow_lab import DataFlow, LocalRuntime, NodeExecutionError, ValidationError, WorkflowBuilder
from dataflow_lab.statement_log import StatementLog, explainable, without_values

SECRET = "do-not-log-me@example.com"


def define(db: DataFlow) -> None:
    @db.model
    class Person:
        name: str
        email: str


def create_and_find(db: DataFlow) -> WorkflowBuilder:
    wf = WorkflowBuilder(db)
    wf.add_node("PersonCreateNode", "create", {"name": "Ann", "email": SECRET})
    wf.add_node("PersonListNode", "find", {"filter": {"email": SECRET}})
    wf.add_connection("create", "id", "find", "limit")
    return wf


def wait_for_plans(db: DataFlow, seconds: float = 5.0) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        slow = db.slow_statements()
        if all(s.plan is not None for s in slow if explainable(s.sql)):
            return slow
        time.sleep(0.05)
    return db.slow_statements()


@pytest.fixture
def logged(url):
    """Every statement counts as slow: a threshold of a nanosecond."""
    db = DataFlow(url, slow_query_threshold=1e-9, monitoring=True)
    define(db)
    yield db
    db.close()


def test_a_slow_statement_is_logged_with_its_run_and_node_and_no_values(logged):
    _, run_id = LocalRuntime().execute(create_and_find(logged).build())
    mine = logged.slow_statements(run_id)
    assert {s.node_id for s in mine} >= {"create", "find"}
    assert all(s.run_id == run_id and s.seconds > 0 and s.error is None for s in mine)
    inserts = [s for s in mine if s.sql.upper().startswith("INSERT")]
    assert inserts and all(SECRET not in s.sql for s in logged.slow_statements())


def test_postgresql_and_duckdb_add_the_plan_and_sqlite_none(logged, backend):
    LocalRuntime().execute(create_and_find(logged).build())
    selects = [
        s for s in wait_for_plans(logged) if s.node_id == "find" and s.sql.upper().startswith("SELECT")
    ]
    assert selects
    if backend == "sqlite":
        assert all(s.plan is None for s in selects)
    else:
        plan = selects[-1].plan
        assert plan and "not explained" not in plan, plan
        assert SECRET not in plan
        assert ("$" in plan or "?" in plan) if backend == "postgres" else True


def test_the_explain_is_no_query_of_the_run(logged):
    LocalRuntime().execute(create_and_find(logged).build())
    wait_for_plans(logged)
    queries = {r.node_id: r.queries for r in logged.monitor.node_runs}
    LocalRuntime().execute(create_and_find(logged).build())
    wait_for_plans(logged)
    assert {r.node_id: r.queries for r in logged.monitor.node_runs[-2:]} == queries


def test_a_failed_statement_that_ran_slow_keeps_its_error(logged):
    wf = WorkflowBuilder(logged)
    wf.add_node("PersonReadNode", "missing", {"id": 12345})
    with pytest.raises(NodeExecutionError, match="12345"):
        LocalRuntime().execute(wf.build())
    assert any(s.node_id == "missing" for s in logged.slow_statements())
    log = StatementLog(0.0)
    log.took("SELECT 1", 2.0, None, TimeoutError("canceling statement due to statement timeout"))
    (entry,) = log.entries()
    assert entry.error == "canceling statement due to statement timeout" and entry.seconds == 2.0


def test_the_dashboard_lists_the_slow_statements(logged):
    LocalRuntime().execute(create_and_find(logged).build())
    dashboard = logged.metrics()
    assert dashboard["safety_events"]["slow_statements"] >= 2
    listed = dashboard["slow_statements"]
    assert listed and {"sql", "seconds", "run_id", "node_id", "plan", "error", "at"} <= set(listed[-1])
    assert SECRET not in logged.metrics_json()


def test_fast_statements_are_not_logged_and_none_turns_the_log_off(url):
    for threshold in (30.0, None):
        db = DataFlow(url, slow_query_threshold=threshold)
        define(db)
        LocalRuntime().execute(create_and_find(db).build())
        assert db.slow_statements() == []
        db.close()


@pytest.mark.parametrize("threshold", [0, -1, "1", True])
def test_a_threshold_that_is_no_positive_number_is_refused(threshold):
    with pytest.raises(ValidationError, match="slow_query_threshold must be a positive number"):
        DataFlow(slow_query_threshold=threshold)


def test_a_plan_keeps_no_value_of_the_statement():
    plan = "FILTER (email='ann@example.com' AND id=42) ~42000 rows"
    assert without_values(plan, ["ann@example.com", 42]) == "FILTER (email=? AND id=?) ~42000 rows"
    assert explainable("  select 1") and not explainable("CREATE TABLE t (id int)") and not explainable("")


def test_the_notebook_monitor_panel_shows_the_runs_slow_statements(logged, backend):
    from dataflow_lab.notebook.monitor import MonitorPanel
    from dataflow_lab.notebook.observer import RunObserver

    workflow = create_and_find(logged).build()
    observer = RunObserver(workflow)
    LocalRuntime(hooks=[observer]).execute(workflow)
    wait_for_plans(logged)
    snapshot = observer.snapshot()
    assert snapshot.slow and all(s.run_id == observer.run_id for s in snapshot.slow)
    panel = MonitorPanel(snapshot)
    assert "slow " in panel.text() and " in find: SELECT" in panel.text()
    page = panel.html()
    assert 'class="df-slow"' in page and SECRET not in page
    assert ("<details><summary>slow" in page) == (backend != "sqlite")  # the plan, one click away
