"""MetricsCollector, the transaction monitor and anomaly detection, on real databases.

Exact figures for known workloads: runs, node runs, rows, queries, rollbacks.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from dataflow_lab import DataFlow, DataFlowError, LocalRuntime, WorkflowBuilder, hooks
from dataflow_lab.anomaly import AnomalyDetector
from dataflow_lab.monitoring import MetricsCollector

# runs alone under pytest -n: its anomaly detectors time a steady load
pytestmark = pytest.mark.exclusive

EXACT_QUERIES = ("sqlite", "postgres")  # DuckDB's Arrow bulk path bypasses the counted connection


@pytest.fixture
def mdb(url):
    """A monitored DataFlow (monitoring is off in the development preset tests run in)."""
    db = DataFlow(url, monitoring=True)
    define_user(db)
    yield db
    db.close()


def define_user(db: DataFlow) -> type:
    @db.model
    class User:
        name: str
        age: int = 0

    return User


def run(db: DataFlow, build, runtime: LocalRuntime | None = None) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    build(wf)
    return (runtime or LocalRuntime()).execute(wf.build())[0]


def create_and_read(wf: WorkflowBuilder, name: str = "Ann") -> None:
    wf.add_node("UserCreateNode", "create", {"name": name, "age": 30})
    wf.add_node("UserReadNode", "read", {})
    wf.add_connection("create", "id", "read", "id")


def boom(x: int = 0) -> None:
    raise ValueError("injected failure")


# --------------------------------------------------------------------------- environments


def test_monitoring_is_off_in_development_and_metrics_says_how_to_turn_it_on():
    db = DataFlow()
    assert db.monitor is None
    with pytest.raises(DataFlowError, match="Monitoring is off") as info:
        db.metrics()
    assert "monitoring=True" in info.value.hint
    db.close()


@pytest.mark.parametrize("environment", ["testing", "production"])
def test_monitoring_is_on_by_default_in_testing_and_production(monkeypatch, environment, tmp_path):
    monkeypatch.setenv("DATAFLOW_ENV", environment)
    db = DataFlow(f"sqlite:///{tmp_path / 'm.db'}", auto_migrate=True)
    assert isinstance(db.monitor, MetricsCollector)
    assert db.metrics()["workflow_executions"]["total"] == 0
    db.close()


def test_closing_a_dataflow_unsubscribes_its_collector():
    before = len(hooks.global_hooks)
    db = DataFlow(monitoring=True)
    # its own hooks (beside its run tracker, always there): nothing process-wide
    assert db.monitor in db.hooks and len(db.hooks) == 2 and db.tracker in db.hooks
    assert len(hooks.global_hooks) == before
    db.close()
    assert db.monitor not in db.hooks and len(db.hooks) == 1
    assert len(hooks.global_hooks) == before


# --------------------------------------------------------------------------- exact figures


def test_a_known_workload_gives_exact_counts_rows_and_queries(mdb, backend):
    for i in range(3):
        run(mdb, lambda wf, i=i: create_and_read(wf, f"user {i}"))
    run(
        mdb,
        lambda wf: wf.add_node(
            "UserBulkCreateNode", "load", {"data": [{"name": f"b{i}"} for i in range(10)]}
        ),
    )
    listed = run(mdb, lambda wf: wf.add_node("UserListNode", "list", {"filter": {"name": {"$like": "b%"}}}))
    assert listed["list"]["count"] == 10

    m = mdb.metrics()
    assert m["workflow_executions"] | {"average_duration_ms": 0} == {
        "total": 5,
        "total_today": 5,
        "successful": 5,
        "failed": 0,
        "average_duration_ms": 0,
    }
    ops = m["database_operations"]
    assert ops["total_operations"] == 3 * 2 + 1 + 1
    assert ops["bulk_operations"] == 1
    assert ops["rows"] == 3 * 2 + 10 + 10
    assert ops["errors"] == 0
    assert ops["average_response_time_ms"] > 0
    if backend in EXACT_QUERIES:
        assert (
            ops["total_queries"] == 3 * 2 + 1 + 1
        )  # one statement each; the bulk load is one executemany / COPY
    assert m["safety_events"]["transaction_rollbacks"] == 0
    assert mdb.monitor.transactions.counts()["commits"] == 4  # the List run only reads: no transaction

    by_type = {r.node_type: r for r in mdb.monitor.node_runs}
    assert by_type["UserBulkCreateNode"].rows == 10
    assert by_type["UserListNode"].rows == 10
    runs = list(mdb.monitor.workflow_runs)
    assert [r.nodes for r in runs] == [2, 2, 2, 1, 1]
    assert [r.rows for r in runs] == [2, 2, 2, 10, 10]


def test_a_failed_run_counts_one_failure_its_node_error_and_one_rollback(mdb, backend):
    run(mdb, create_and_read)

    def failing(wf: WorkflowBuilder) -> None:
        wf.add_node("UserCreateNode", "create", {"name": "Bob"})
        wf.add_node(boom, "boom", {})
        wf.add_connection("create", "id", "boom", "x")

    with pytest.raises(DataFlowError, match="injected failure"):
        run(mdb, failing)

    m = mdb.metrics()
    assert (m["workflow_executions"]["successful"], m["workflow_executions"]["failed"]) == (1, 1)
    assert m["safety_events"]["transaction_rollbacks"] == 1
    assert m["database_operations"]["total_operations"] == 3  # create, read, create (boom is Python)
    counts = mdb.monitor.transactions.counts()
    assert (counts["begun"], counts["commits"], counts["rollbacks"], counts["open"]) == (2, 1, 1, 0)
    last = list(mdb.monitor.node_runs)[-1]
    assert (last.node_id, last.status, last.queries) == ("boom", "error", 0)
    assert "injected failure" in last.error
    failed_run = list(mdb.monitor.workflow_runs)[-1]
    assert (failed_run.status, failed_run.nodes) == ("error", 2)


def test_metrics_frame_has_one_row_per_node_run(mdb):
    pd = pytest.importorskip("pandas")
    run(mdb, create_and_read)
    frame = mdb.metrics_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["node_id"]) == ["create", "read"]
    assert list(frame["operation"]) == ["create", "read"]
    assert list(frame["rows"]) == [1, 1]
    assert list(frame["queries"]) == [1, 1]
    assert set(frame.columns) >= {
        "run_id",
        "node_type",
        "model",
        "duration_ms",
        "status",
        "error",
        "retries",
        "sql",
    }
    assert (frame["duration_ms"] > 0).all()


def test_sql_text_is_kept_per_node_in_development_only(monkeypatch):
    dev = DataFlow(monitoring=True)
    define_user(dev)
    run(dev, lambda wf: wf.add_node("UserCreateNode", "create", {"name": "A"}))
    (node_run,) = dev.monitor.node_runs
    assert len(node_run.sql) == 1 and node_run.sql[0].startswith("INSERT INTO users")
    dev.close()

    monkeypatch.setenv("DATAFLOW_ENV", "production")
    prod = DataFlow("sqlite:///:memory:", auto_migrate=True)
    define_user(prod)
    run(prod, lambda wf: wf.add_node("UserCreateNode", "create", {"name": "A"}))
    (node_run,) = prod.monitor.node_runs
    assert (node_run.sql, node_run.queries) == ((), 1)
    prod.close()


def test_each_collector_counts_only_its_own_database():
    first, second = DataFlow(monitoring=True), DataFlow(monitoring=True)
    for db in (first, second):
        define_user(db)
    run(first, lambda wf: wf.add_node("UserCreateNode", "create", {"name": "A"}))
    assert first.metrics()["workflow_executions"]["total"] == 1
    assert second.metrics()["workflow_executions"]["total"] == 0
    assert second.metrics()["database_operations"]["total_operations"] == 0
    first.close()
    second.close()


def test_concurrent_runs_never_mix_their_query_counts(url, backend):
    if backend not in EXACT_QUERIES:
        pytest.skip("query counts are exact on SQLite and PostgreSQL")
    db = DataFlow(url, monitoring=True)
    define_user(db)
    runtime = LocalRuntime()
    wf = WorkflowBuilder(dataflow=db)
    create_and_read(wf)
    workflow = wf.build()

    def work() -> None:
        for _ in range(5):
            runtime.execute(workflow)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = list(db.monitor.node_runs)
    assert len(runs) == 8 * 5 * 2
    assert {r.queries for r in runs} == {1}
    assert db.metrics()["database_operations"]["total_queries"] == 80
    db.close()


def test_a_standalone_collector_on_a_runtime_sees_every_run(db):
    define_user(db)
    collector = MetricsCollector()
    run(db, create_and_read, LocalRuntime(hooks=[collector]))
    assert collector.workflows["total"] == 1
    assert [r.node_id for r in collector.node_runs] == ["create", "read"]
    assert collector.dashboard()["database_operations"]["rows"] == 2


# --------------------------------------------------------------------------- pool, retries


def needs_pool_statistics(db: DataFlow) -> None:
    if "acquired_total" not in db.pool_status():
        pytest.skip("this tree's dialects do not count acquisitions and failures yet")


def test_connection_pool_figures_follow_the_pool(mdb, backend):
    run(mdb, create_and_read)
    needs_pool_statistics(mdb)
    pool = mdb.metrics()["connection_pool"]
    assert pool["acquired_total"] >= 2  # the table's creation, then the run
    assert (pool["active_connections"], pool["waiting"], pool["failed_connections"]) == (0, 0, 0)
    assert pool["health_status"] == "excellent"
    if backend == "postgres":
        assert pool["pool_size"] == mdb.config.pool_size
        assert pool["capacity"] == mdb.config.pool_size + mdb.config.max_overflow
    snapshot = mdb.monitor.snapshot_pool()
    # metrics() itself reads the saga log (pending compensations): one checkout after its pool figures
    assert snapshot["acquired_total"] == mdb.pool_status()["acquired_total"] >= pool["acquired_total"]
    assert "at" in snapshot and mdb.monitor.pool_snapshots[-1] == snapshot


def test_a_connection_failure_makes_the_pool_critical():
    db = DataFlow("postgresql://nobody@127.0.0.1:1/none", monitoring=True, pool_timeout=1)
    define_user(db)
    with pytest.raises(DataFlowError):
        run(db, create_and_read)
    needs_pool_statistics(db)
    pool = db.metrics()["connection_pool"]
    assert pool["failed_connections"] >= 1
    assert pool["health_status"] == "critical"
    db.close()


def test_retry_and_compensation_events_are_counted_per_node_and_in_safety_events():
    collector = MetricsCollector()

    class Node:  # only the fields the collector reads
        type_name = "T"
        dataflow = None
        model = None
        operation = ""

    class FakeWorkflow:
        name = "wf"
        nodes = {}

    # the runtime reports retries (and compensations) as they happen, and the node runs at the end
    collector.retry(run_id="r1", node_id="n", attempt=1, error=TimeoutError("slow"), delay=0.0)
    collector.retry(run_id="r1", node_id="n", attempt=2, error=TimeoutError("slow"), delay=0.0)
    collector.compensation(run_id="r1", node_id="n", status="compensated", error=None)
    t = time.perf_counter()
    nodes = [
        hooks.NodeRecord("n", Node, t, 0.01, None, 0, None, TimeoutError("slow")),
        hooks.NodeRecord("n", Node, t, 0.01, None, 0, None, TimeoutError("slow")),
        hooks.NodeRecord("n", Node, t, 0.01, 1, 1, None, None),
    ]
    collector.after_workflow(
        run_id="r1", workflow=FakeWorkflow(), results={}, error=None, duration=0.02, nodes=nodes
    )
    assert collector.dashboard()["safety_events"]["automatic_retries"] == 2
    assert collector.dashboard()["safety_events"]["compensations"] == 1
    assert [r.retries for r in collector.node_runs] == [0, 0, 2]
    assert [r.status for r in collector.node_runs] == ["error", "error", "success"]
    assert list(collector.workflow_runs)[0].retries == 2


# --------------------------------------------------------------------------- transaction monitor


def test_a_long_running_transaction_is_flagged_while_it_is_still_open(mdb, caplog):
    mdb.monitor.transactions.long_seconds = 0.2
    seen_inside: list[int] = []

    def slow(x: int) -> int:
        time.sleep(0.5)
        seen_inside.append(mdb.monitor.transactions.long_running)
        return x

    def build(wf: WorkflowBuilder) -> None:
        wf.add_node("UserCreateNode", "create", {"name": "Slow"})
        wf.add_node(slow, "slow", {})
        wf.add_connection("create", "id", "slow", "x")

    with caplog.at_level(logging.WARNING, logger="dataflow_lab.monitoring"):
        run(mdb, build)
    assert seen_inside == [1]  # flagged by the timer, before the run ended
    assert mdb.metrics()["safety_events"]["long_running_transactions"] == 1
    (alert,) = mdb.monitor.transactions.alerts
    assert (alert.kind, alert.node_id) == ("long_transaction", "create")
    assert "over the 0.2s threshold" in caplog.text


def test_a_long_transaction_that_ends_between_two_checks_is_flagged_when_it_ends(mdb):
    monitor = mdb.monitor.transactions
    monitor.long_seconds = 0.15  # checks every 0.0375 s would catch it: push the next check far away
    if monitor._watchdog is not None:
        monitor._watchdog.cancel()
    monitor._watchdog, mdb.database.ledger.on_open = None, None  # no timer: only the end can flag it

    def slow(x: int) -> int:
        time.sleep(0.3)
        return x

    def build(wf: WorkflowBuilder) -> None:
        wf.add_node("UserCreateNode", "create", {"name": "Slow"})
        wf.add_node(slow, "slow", {})
        wf.add_connection("create", "id", "slow", "x")

    run(mdb, build)
    counts = monitor.counts()
    assert (counts["long_running"], counts["open"], counts["commits"]) == (1, 0, 1)
    (alert,) = monitor.alerts
    assert alert.node_id == "create" and alert.seconds >= 0.3


def test_a_standalone_collector_counts_every_databases_transactions_from_the_hook(tmp_path):
    collector = hooks.subscribe(MetricsCollector())
    try:
        dbs = [DataFlow(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db")]
        for db in dbs:
            define_user(db)
            run(db, create_and_read)
            with pytest.raises(DataFlowError):
                run(
                    db,
                    lambda wf: (
                        wf.add_node("UserCreateNode", "c", {"name": "x"}),
                        wf.add_node(boom, "b", {}),
                    ),
                )
        counts = collector.transactions.counts()
        assert (counts["begun"], counts["commits"], counts["rollbacks"], counts["open"]) == (4, 2, 2, 0)
        assert collector.dashboard()["safety_events"]["transaction_rollbacks"] == 2
    finally:
        hooks.unsubscribe(collector)
        for db in dbs:
            db.close()


def test_transaction_counts_start_at_zero_when_monitoring_starts(url):
    db = DataFlow(url)
    define_user(db)
    run(db, create_and_read)  # counted by the database's ledger, before anyone monitors
    from dataflow_lab.monitoring import attach, detach

    collector = attach(db)
    try:
        run(db, create_and_read)
        assert collector.transactions.counts()["commits"] == 1
        assert db.database.ledger.commits == 2
    finally:
        detach(db, collector)
        db.close()


def test_short_transactions_are_not_flagged(mdb):
    for _ in range(5):
        run(mdb, create_and_read)
    assert mdb.monitor.transactions.long_running == 0
    assert mdb.monitor.transactions.open_transactions() == []


@pytest.mark.postgres
def test_a_postgres_deadlock_is_detected_and_counted_as_resolved(pg_url):
    db = DataFlow(pg_url, monitoring=True)
    db.model(type("Account", (), {"__annotations__": {"balance": int}}))
    run(db, lambda wf: wf.add_node("AccountBulkCreateNode", "seed", {"data": [{"balance": 0}] * 2}))
    barrier = threading.Barrier(2, timeout=10)
    waited: set[str] = set()

    def meet(who: str, then: int, x: object = None) -> dict:
        if who not in waited:  # only the first attempt waits; a retried run goes straight on
            waited.add(who)
            barrier.wait()
        return {"id": then}

    def transfer(first: int, second: int) -> None:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("AccountUpdateNode", "a", {"id": first, "fields": {"balance": 1}})
        wf.add_node(meet, "meet", {"who": f"{first}->{second}", "then": second})
        wf.add_node("AccountUpdateNode", "b", {"fields": {"balance": 2}})
        wf.add_connection("a", "id", "meet", "x")
        wf.add_connection("meet", "id", "b", "id")
        outcomes.append(_outcome(lambda: LocalRuntime().execute(wf.build())))

    outcomes: list[str] = []
    threads = [threading.Thread(target=transfer, args=p) for p in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    m = db.metrics()
    assert m["safety_events"]["deadlocks_detected"] == 1
    assert m["safety_events"]["deadlock_resolutions"] == 1
    assert m["safety_events"]["transaction_rollbacks"] >= 1
    # the victim either failed (no retry) or was retried and then succeeded
    assert (m["workflow_executions"]["failed"], m["safety_events"]["automatic_retries"]) in ((1, 0), (0, 1))
    assert sorted(outcomes) in (["deadlock", "ok"], ["ok", "ok"])
    (alert,) = [a for a in db.monitor.transactions.alerts if a.kind == "deadlock"]
    assert "deadlock" in alert.message
    db.close()


def _outcome(fn) -> str:
    try:
        fn()
        return "ok"
    except DataFlowError as exc:
        return "deadlock" if "deadlock" in str(exc).lower() else f"error: {exc}"


# --------------------------------------------------------------------------- anomalies


def test_the_detector_stays_quiet_on_steady_noise_and_fires_on_a_spike():
    rng = random.Random(7)
    detector = AnomalyDetector()
    steady = [detector.observe("T", rng.lognormvariate(0.0, 0.3)) for _ in range(2000)]  # ~1 ms, long tail
    assert [a for a in steady if a is not None] == []
    anomaly = detector.observe("T", 300.0, node_id="n", run_id="r")
    assert anomaly is not None
    assert anomaly.deviation > 2 and anomaly.current_response_time_ms == 300.0
    shape = anomaly.as_dict()
    assert shape["alert_triggered"] is True
    assert shape["deviation"].endswith("standard deviations")
    assert "Check database load" in shape["recommended_action"]


def test_the_detector_needs_a_baseline_before_judging():
    detector = AnomalyDetector(min_samples=20)
    for _ in range(19):
        detector.observe("T", 1.0)
    assert detector.observe("T", 500.0) is None  # 19 samples: no baseline yet
    assert detector.baseline("T")["samples"] == 20
    assert AnomalyDetector(sigma=2.0).sigma == 2.0


def test_anomaly_is_a_hook_event():
    assert "anomaly" in hooks.EVENTS


class AnomalySpy:
    def __init__(self):
        self.events: list[dict] = []

    def anomaly(self, **fields):
        self.events.append(fields)


@pytest.mark.postgres
def test_an_injected_pg_sleep_fires_the_detector_after_a_quiet_steady_load(pg_url, caplog):
    import asyncio

    import asyncpg

    db = DataFlow(pg_url, monitoring=True)
    db.model(type("Item", (), {"__annotations__": {"name": str}}))
    spy = AnomalySpy()
    runtime = LocalRuntime(hooks=[spy])

    def create(name: str) -> None:
        run(db, lambda wf: wf.add_node("ItemCreateNode", "create", {"name": name}), runtime)

    create("first")  # creates the table
    base, schema = pg_url.split("?schema=")

    async def add_slow_trigger() -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(
                f"""
                CREATE FUNCTION "{schema}".slow_items() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.name = 'slow' THEN PERFORM pg_sleep(0.3); END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER slow_items BEFORE INSERT ON "{schema}".items
                    FOR EACH ROW EXECUTE FUNCTION "{schema}".slow_items();
                """
            )
        finally:
            await conn.close()

    asyncio.run(add_slow_trigger())
    for i in range(30):
        create(f"steady {i}")
    assert db.metrics()["safety_events"]["anomalies_detected"] == 0
    assert spy.events == []

    with caplog.at_level(logging.WARNING, logger="dataflow_lab.monitoring"):
        create("slow")
    assert db.metrics()["safety_events"]["anomalies_detected"] == 1
    (anomaly,) = db.monitor.anomalies
    assert anomaly.node_type == "ItemCreateNode"
    assert anomaly.current_response_time_ms >= 300
    assert anomaly.deviation >= 2
    (event,) = spy.events
    assert event["node_id"] == "create" and event["anomaly"] is anomaly
    assert event["alert_triggered"] is True
    assert "anomaly: ItemCreateNode 'create'" in caplog.text
    db.close()


def test_a_slow_python_step_fires_the_detector_on_every_backend(mdb):
    spy = AnomalySpy()
    runtime = LocalRuntime(hooks=[spy])

    def step(n: int, pause: float = 0.0) -> int:
        time.sleep(pause)
        return n

    def build(wf: WorkflowBuilder, pause: float) -> None:
        wf.add_node("UserCountNode", "count", {})
        wf.add_node(step, "step", {"pause": pause})
        wf.add_connection("count", "count", "step", "n")

    for _ in range(25):
        run(mdb, lambda wf: build(wf, 0.0), runtime)
    assert spy.events == []
    run(mdb, lambda wf: build(wf, 0.3), runtime)
    assert [e["node_id"] for e in spy.events] == ["step"]
    assert "Check the code" in spy.events[0]["recommended_action"]


def test_the_specs_example_fires_when_the_floor_is_lowered_for_fast_operations():
    rng = random.Random(3)
    detector = AnomalyDetector(min_delta_ms=10)
    for _ in range(100):
        assert detector.observe("UserCreateNode", rng.gauss(15.0, 1.0)) is None
    anomaly = detector.observe("UserCreateNode", 45.2)
    assert anomaly is not None and round(anomaly.baseline_response_time_ms) == 15
    assert AnomalyDetector().observe("T", 45.2) is None  # no baseline yet


# --------------------------------------------------------------------------- export


def test_metrics_text_is_prometheus_exposition_with_the_exact_figures(mdb, backend):
    from prometheus_client.parser import text_string_to_metric_families

    for _ in range(2):
        run(mdb, create_and_read)
    families = {f.name: f for f in text_string_to_metric_families(mdb.metrics_text())}

    def value(family: str, sample: str, **labels: str) -> float:
        (found,) = [
            s.value
            for s in families[family].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return found

    assert value("dataflow_workflow_runs", "dataflow_workflow_runs_total", status="success") == 2
    assert value("dataflow_workflow_runs", "dataflow_workflow_runs_total", status="error") == 0
    node = {"node_type": "UserCreateNode", "operation": "create"}
    assert value("dataflow_node_runs", "dataflow_node_runs_total", status="success", **node) == 2
    assert value("dataflow_node_rows", "dataflow_node_rows_total", **node) == 2
    assert value("dataflow_node_duration_seconds", "dataflow_node_duration_seconds_count", **node) == 2
    if backend in EXACT_QUERIES:
        assert value("dataflow_node_queries", "dataflow_node_queries_total", **node) == 2
    assert value("dataflow_transactions", "dataflow_transactions_total", event="commit") == 2
    assert value("dataflow_pool_connections", "dataflow_pool_connections", state="active") == 0
    databases = {s.labels["database"] for f in families.values() for s in f.samples}
    assert databases == {mdb.url}


def test_the_database_label_never_shows_a_password():
    db = DataFlow("postgresql://app:s3cret@127.0.0.1:1/none", monitoring=True)
    text = db.metrics_text()
    assert "s3cret" not in text and "app:***@" in text
    db.close()


def test_serve_metrics_answers_scrapes_on_localhost_until_closed(mdb):
    import urllib.request

    run(mdb, create_and_read)
    server = mdb.serve_metrics(0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        body = urllib.request.urlopen(server.url, timeout=10).read().decode()
        assert 'dataflow_workflow_runs_total{database="' in body
    finally:
        server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)


def test_serve_metrics_on_a_taken_port_says_so(mdb):
    server = mdb.serve_metrics(0)
    try:
        with pytest.raises(DataFlowError, match="Could not serve metrics") as info:
            mdb.serve_metrics(server.port)
        assert "another port" in info.value.hint
    finally:
        server.close()


def test_metrics_json_is_the_dashboard_plus_detail(mdb):
    import json

    run(mdb, create_and_read)
    snapshot = json.loads(mdb.metrics_json())
    dashboard = mdb.metrics()
    for key in ("workflow_executions", "database_operations", "safety_events"):
        assert snapshot[key] == dashboard[key]
    assert snapshot["node_types"]["UserCreateNode"]["runs"] == 1
    assert snapshot["transactions"]["commits"] == 1
    assert snapshot["anomalies"] == [] and snapshot["database"] == mdb.url


def test_a_subscriber_removed_while_the_hooks_reindex_does_not_deadlock_or_linger():
    # What a garbage collection inside subscribe() does: a DataFlow's finalizer unsubscribes its collector.
    registry = hooks.Hooks()

    class Gone:
        def after_node(self, **fields):
            pass

    gone = Gone()
    registry.subscribe(gone)

    class Collecting:
        looked_up = 0

        @property
        def before_node(self):
            Collecting.looked_up += 1
            if Collecting.looked_up == 2:  # subscribe() checks the methods, then indexes them under its lock
                registry.unsubscribe(gone)  # as a finalizer would, on this thread
            return lambda **fields: None

    done = threading.Event()
    worker = threading.Thread(target=lambda: (registry.subscribe(Collecting()), done.set()), daemon=True)
    worker.start()
    worker.join(30)
    assert done.is_set(), "subscribe() deadlocked on its own lock"
    assert not registry.wants("after_node") and registry.wants("before_node")
