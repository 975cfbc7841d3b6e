"""Export: Prometheus text exposition (with an optional HTTP endpoint), a JSON snapshot, pool health.

Prometheus support stands on ``prometheus_client``: each monitored DataFlow
gets its own registry holding one custom collector, which reads the
MetricsCollector's figures at scrape time (nothing is counted twice, and the
global default registry is left alone). Every sample carries a ``database``
label: the DataFlow's URL with any password replaced by ***.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .errors import DataFlowError

if TYPE_CHECKING:  # pragma: no cover
    from .anomaly import Anomaly
    from .interfaces import DataFlow
    from .transaction_monitor import TransactionMonitor

__all__ = ["MetricsServer", "json_snapshot", "pool_health", "prometheus_registry", "prometheus_text", "serve"]


class MetricsCollector(Protocol):
    """What the exports read of a ``monitoring.MetricsCollector`` (monitoring_views imports this module)."""

    prometheus_registry: Any  # made at the first export, then reused

    @property
    def lock(self) -> threading.RLock: ...
    @property
    def by_type(self) -> dict[str, Any]: ...
    @property
    def workflows(self) -> dict[str, Any]: ...
    @property
    def anomalies(self) -> deque[Anomaly]: ...
    @property
    def transactions(self) -> TransactionMonitor: ...
    @property
    def dataflow(self) -> DataFlow | None: ...
    def dashboard(self) -> dict[str, Any]: ...


def pool_health(
    status: dict[str, Any], *, max_overflow: int = 0, recent_failure: bool = False
) -> dict[str, Any]:
    """The dashboard's ``connection_pool`` from ``db.pool_status()``: use, utilization, a health word.

    Health: "critical" when the latest health probe (health.py) found the database down, or
    connecting failed lately and nothing is connected; "degraded" when the probe discarded dead
    connections, connecting failed lately or callers wait on a full pool; "busy" from 80% use,
    "good" from 50%, else "excellent".
    """
    probe = status.get("health_status")
    active = int(status.get("checked_out") or 0)
    given = status.get("size")
    size = given if isinstance(given, int) else 1
    queue = "QueuePool" in str(status.get("pool") or "")
    capacity = max(1, size + (max(0, max_overflow) if queue else 0))
    waiting = int(status.get("waiting") or 0)
    utilization = round(active / capacity, 3)
    if probe == "down" or (recent_failure and active == 0):
        health = "critical"
    elif probe == "degraded" or recent_failure or (waiting and utilization >= 1.0):
        health = "degraded"
    elif utilization >= 0.8:
        health = "busy"
    elif utilization >= 0.5:
        health = "good"
    else:
        health = "excellent"
    return {
        "pool": status.get("pool"),
        "active_connections": active,
        "idle_connections": int(status.get("checkedin") or 0),
        "pool_size": size,
        "capacity": capacity,
        "pool_utilization": utilization,
        "waiting": waiting,
        "acquired_total": int(status.get("acquired_total") or 0),
        "failed_connections": int(status.get("failures") or 0),
        "health_status": health,
        "probe_status": probe or "unknown",
    }


def json_snapshot(collector: MetricsCollector, *, indent: int | None = 2) -> str:
    """Everything the collector knows, as JSON: the dashboard, per node type, alerts."""
    snapshot = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "database": collector.dataflow.url if collector.dataflow is not None else None,
        **collector.dashboard(),
        "node_types": _node_types(collector),
        "transactions": {
            **collector.transactions.counts(),
            "open_transactions": collector.transactions.open_transactions(),
            "alerts": [_alert_dict(a) for a in list(collector.transactions.alerts)],
        },
        "anomalies": [a.as_dict() for a in list(collector.anomalies)],
    }
    return json.dumps(snapshot, indent=indent, default=str)


def _alert_dict(alert: Any) -> dict[str, Any]:
    return {
        "kind": alert.kind,
        "run_id": alert.run_id,
        "node_id": alert.node_id,
        "at": alert.at.isoformat(),
        "seconds": alert.seconds,
        "message": alert.message,
    }


def _node_types(collector: MetricsCollector) -> dict[str, dict[str, Any]]:
    with collector.lock:
        return {
            name: {
                "model": s.model,
                "operation": s.operation,
                "runs": s.count,
                "errors": s.errors,
                "rows": s.rows,
                "queries": s.queries,
                "retries": s.retries,
                "average_duration_ms": round(s.duration_ms / s.count, 3) if s.count else 0.0,
            }
            for name, s in list(collector.by_type.items())
        }


# -- Prometheus ------------------------------------------------------------------------
def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DataFlowError(
            "Prometheus export needs prometheus_client.", hint="pip install 'dataflow-lab[monitoring]'"
        ) from exc
    return prometheus_client


class _Families:
    """A prometheus_client custom collector reading one MetricsCollector at scrape time."""

    def __init__(self, collector: MetricsCollector):
        self.collector = collector

    def describe(self) -> list:
        return []  # families depend on what ran; no up-front description

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        c = self.collector
        db = c.dataflow.url if c.dataflow is not None else ""
        dash = c.dashboard()
        with c.lock:
            totals = dict(c.workflows)
            types = [(name, s.operation, s.count, s.errors, s.duration_ms, s.queries, s.rows, s.retries)
                     for name, s in list(c.by_type.items())]  # fmt: skip
        runs = CounterMetricFamily(
            "dataflow_workflow_runs", "Workflow runs by outcome.", labels=["database", "status"]
        )
        runs.add_metric([db, "success"], totals["successful"])
        runs.add_metric([db, "error"], totals["failed"])
        yield runs
        wf_time = SummaryMetricFamily(
            "dataflow_workflow_duration_seconds", "Workflow run durations.", labels=["database"]
        )
        wf_time.add_metric([db], totals["total"], totals["duration_ms"] / 1000.0)
        yield wf_time
        labels = ["database", "node_type", "operation"]
        node_runs = CounterMetricFamily(
            "dataflow_node_runs", "Node runs by outcome.", labels=[*labels, "status"]
        )
        node_time = SummaryMetricFamily(
            "dataflow_node_duration_seconds", "Node run durations.", labels=labels
        )
        queries = CounterMetricFamily("dataflow_node_queries", "SQL statements run by nodes.", labels=labels)
        rows = CounterMetricFamily("dataflow_node_rows", "Rows nodes wrote or returned.", labels=labels)
        retries = CounterMetricFamily("dataflow_node_retries", "Node retries.", labels=labels)
        for name, operation, count, errors, duration_ms, n_queries, n_rows, n_retries in types:
            key = [db, name, operation]
            node_runs.add_metric([*key, "success"], count - errors)
            node_runs.add_metric([*key, "error"], errors)
            node_time.add_metric(key, count, duration_ms / 1000.0)
            queries.add_metric(key, n_queries)
            rows.add_metric(key, n_rows)
            retries.add_metric(key, n_retries)
        yield from (node_runs, node_time, queries, rows, retries)
        yield from _transaction_families(db, c.transactions.counts(), dash["safety_events"])
        yield from _pool_families(db, dash["connection_pool"], GaugeMetricFamily, CounterMetricFamily)
        yield from _process_families(db, dash["process"], GaugeMetricFamily)
        if dash.get("result_cache") is not None and dash["result_cache"]["enabled"]:
            yield from _cache_families(db, dash["result_cache"], GaugeMetricFamily, CounterMetricFamily)


def _cache_families(db: str, cache: dict[str, Any], gauge: Any, counter: Any) -> Iterator[Any]:
    """dataflow_cache_*: the result cache's hits, misses, invalidations, entries, hit rate, on/off."""
    for name, key, text in (
        ("dataflow_cache_hits", "hits", "Cached Read/List/Count results served."),
        ("dataflow_cache_misses", "misses", "Cacheable reads that asked the database."),
        ("dataflow_cache_invalidations", "invalidations", "Tables whose cached results a write dropped."),
        ("dataflow_cache_bypassed", "bypassed", "Reads that could not use the cache (in a transaction...)."),
    ):
        family = counter(name, text, labels=["database"])
        family.add_metric([db], cache[key])
        yield family
    entries = gauge("dataflow_cache_entries", "Results held in the cache now.", labels=["database"])
    entries.add_metric([db], cache["entries"])
    yield entries
    rate = gauge("dataflow_cache_hit_rate", "hits / (hits + misses); NaN before any.", labels=["database"])
    rate.add_metric([db], float("nan") if cache["cache_hit_rate"] is None else cache["cache_hit_rate"])
    yield rate
    on = gauge("dataflow_cache_on", "1 while the cache serves results; 0 when it turned itself off.",
               labels=["database"])  # fmt: skip
    on.add_metric([db], 1.0 if cache["on"] else 0.0)
    yield on


def _process_families(db: str, process: dict[str, Any], gauge: Any) -> Iterator[Any]:
    memory = gauge(
        "dataflow_process_memory_bytes",
        "The process's memory: resident now (rss), at its peak (peak_rss), traced by tracemalloc.",
        labels=["database", "kind"],
    )
    for kind, key in (("rss", "memory_rss_mb"), ("peak_rss", "memory_peak_rss_mb"),
                      ("tracemalloc", "tracemalloc_mb"), ("tracemalloc_peak", "tracemalloc_peak_mb")):  # fmt: skip
        if process.get(key) is not None:
            memory.add_metric([db, kind], round(process[key] * 1024 * 1024))
    yield memory


def _transaction_families(db: str, tx: dict[str, int], safety: dict[str, int]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    events = CounterMetricFamily(
        "dataflow_transactions", "Transactions by event.", labels=["database", "event"]
    )
    for event in ("begun", "commits", "rollbacks"):
        events.add_metric(
            [db, {"begun": "begin", "commits": "commit", "rollbacks": "rollback"}[event]], tx[event]
        )
    yield events
    open_now = GaugeMetricFamily("dataflow_transactions_open", "Transactions open now.", labels=["database"])
    open_now.add_metric([db], tx["open"])
    yield open_now
    for name, value, text in (
        ("dataflow_long_running_transactions", tx["long_running"], "Transactions flagged as long-running."),
        ("dataflow_deadlocks", tx["deadlocks"], "Deadlocks detected."),
        (
            "dataflow_deadlock_resolutions",
            tx["deadlock_resolutions"],
            "Deadlocks resolved (rolled back or retried).",
        ),
        ("dataflow_anomalies", safety["anomalies_detected"], "Runs slower than their baseline."),
        ("dataflow_retries", safety["automatic_retries"], "Automatic retries."),
        ("dataflow_leaks", safety.get("leaks", 0), "Connection and transaction leaks (leaks.py)."),
    ):
        family = CounterMetricFamily(name, text, labels=["database"])
        family.add_metric([db], value)
        yield family
    if safety.get("pending_compensations") is not None:
        owed = GaugeMetricFamily(
            "dataflow_pending_compensations", "Saga compensations still owed (see db.resume_compensations()).",
            labels=["database"],
        )  # fmt: skip
        owed.add_metric([db], safety["pending_compensations"])
        yield owed


def _pool_families(db: str, pool: dict[str, Any], gauge: Any, counter: Any) -> Iterator[Any]:
    connections = gauge(
        "dataflow_pool_connections", "Pooled connections by state.", labels=["database", "state"]
    )
    connections.add_metric([db, "active"], pool["active_connections"])
    connections.add_metric([db, "idle"], pool["idle_connections"])
    yield connections
    for name, key, text in (
        ("dataflow_pool_capacity", "capacity", "Most connections the pool will open."),
        ("dataflow_pool_utilization", "pool_utilization", "Active connections / capacity."),
        ("dataflow_pool_waiting", "waiting", "Callers waiting for a connection."),
    ):
        family = gauge(name, text, labels=["database"])
        family.add_metric([db], pool[key])
        yield family
    for name, key, text in (
        ("dataflow_pool_acquired", "acquired_total", "Connections handed out."),
        ("dataflow_pool_failures", "failed_connections", "Connection attempts that failed."),
    ):
        family = counter(name, text, labels=["database"])
        family.add_metric([db], pool[key])
        yield family


def prometheus_registry(collector: MetricsCollector) -> Any:
    """A prometheus_client CollectorRegistry holding this collector's figures (made once, then reused)."""
    registry = collector.prometheus_registry
    if registry is None:
        prometheus_client = _prometheus()
        registry = prometheus_client.CollectorRegistry(auto_describe=False)
        registry.register(_Families(collector))
        collector.prometheus_registry = registry
    return registry


def prometheus_text(collector: MetricsCollector) -> str:
    """The Prometheus text exposition format (what a scrape of ``/metrics`` returns)."""
    return _prometheus().generate_latest(prometheus_registry(collector)).decode()


class MetricsServer:
    """A running ``/metrics`` endpoint; ``close()`` stops it."""

    def __init__(self, server: Any, thread: Any):
        self._server = server
        self._thread = thread
        self.host, self.port = server.server_address[:2]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def __repr__(self) -> str:
        state = "running" if self._thread.is_alive() else "stopped"
        return f"<MetricsServer {self.url} {state}>"

    def close(self) -> None:
        """Stop serving (idempotent); the stopped endpoint no longer holds the collector."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(timeout=2.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(collector: MetricsCollector, port: int, *, host: str = "127.0.0.1") -> MetricsServer:
    """Serve the Prometheus text on http://host:port/metrics from a daemon thread (port 0: any free port)."""
    prometheus_client = _prometheus()
    try:
        server, thread = prometheus_client.start_http_server(
            port, addr=host, registry=prometheus_registry(collector)
        )
    except OSError as exc:
        raise DataFlowError(
            f"Could not serve metrics on {host}:{port}: {exc.strerror or exc}.",
            hint="pick another port (or 0 for any free one).",
        ) from None
    return MetricsServer(server, thread)
