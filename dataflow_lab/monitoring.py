"""MetricsCollector: the hooks subscriber behind ``db.metrics()``.

Every DataFlow whose ``monitoring`` setting is on (the testing and production
presets; pass ``monitoring=True`` in development) gets one collector,
subscribed to that DataFlow's own hooks (``db.hooks``: the runs that touch its
models), that keeps:

- per node run: duration, rows, queries, the SQL text (in development), the
  error, the retries, the memory it took (``memory_tracking``: "rss" or
  "tracemalloc"), its pool's use ("3/15") and tags (model, operation,
  environment); ``metrics_frame()`` shows the recent ones;
- per workflow run: duration, status, and the totals of its nodes;
- pool snapshots (at most one a second), and the live pool in ``metrics()``;
- a transaction monitor (``transaction_monitor.py``) and an anomaly detector
  (``anomaly.py``), whose alerts go to the log and to the ``anomaly`` hook.

Queries are counted by the database's own connections while monitoring is on
(``query_count.py``); the runtime reports each node's count in its record (``hooks.NodeRecord``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from .anomaly import Anomaly, AnomalyDetector
from .hooks import Fanout, NodeRecord
from .monitoring_views import CollectorViews, NodeRun, WorkflowRun
from .transaction_monitor import TransactionMonitor

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow

__all__ = ["MetricsCollector", "NodeRun", "WorkflowRun"]

log = logging.getLogger("dataflow_lab.monitoring")

POOL_SNAPSHOT_EVERY = 1.0  # seconds


# -- the collector -------------------------------------------------------------------------
class _TypeStats:
    __slots__ = ("model", "operation", "count", "errors", "duration_ms", "rows", "queries", "retries")

    def __init__(self, node_class: Any):
        model = getattr(node_class, "model", None)
        self.model: str | None = model.name if model is not None else None
        self.operation: str = getattr(node_class, "operation", "") or "python"
        self.count = self.errors = self.rows = self.queries = self.retries = 0
        self.duration_ms = 0.0


class MetricsCollector(CollectorViews):
    """Subscribe it to hooks (``db`` does this itself, to ``db.hooks``, when monitoring is on).

    ``dataflow``: count only that database's nodes (subscribe it to that DataFlow's hooks, which
    see only the runs that touch it). None: every run of the hooks it is subscribed to.
    """

    _subscription: Any  # what attach() subscribed (hooks.subscribe_weakly)
    _prometheus_registry: Any  # made at the first export (metrics_export.prometheus_registry)

    def __init__(
        self,
        dataflow: DataFlow | None = None,
        *,
        capture_sql: bool = False,
        keep: int = 1000,
        detector: AnomalyDetector | None = None,
        long_transaction_seconds: float = 5.0,
        node_figures: str | None = "rss",
    ):
        self._dataflow = weakref.ref(dataflow) if dataflow is not None else None
        self.capture_sql = capture_sql
        # each node's memory ("rss" or "tracemalloc"; process_memory.py) and pool use, measured by the runtime
        self.node_figures = node_figures
        self.detector = detector or AnomalyDetector()
        # None: a standalone collector feeds its own ledger from the hooks
        self._ledger = dataflow.database.ledger if dataflow is not None else None
        if dataflow is None:
            self.transaction = self._transaction_event  # only a standalone collector needs each event
        # lock waits: asked of the database where it can tell (PostgreSQL)
        dialect = dataflow.database.dialect if dataflow is not None else None
        self._lock_waits: dict[str, Any] = {
            "lock_wait_seconds": dataflow.config.lock_wait_threshold if dataflow is not None else None,
            "find_lock_waits": dialect.lock_waits
            if dialect is not None and dialect.finds_lock_waits
            else None,
        }
        self.transactions = TransactionMonitor(
            long_seconds=long_transaction_seconds, keep=keep, ledger=self._ledger, **self._lock_waits
        )
        self.lock = threading.Lock()  # held while the logs are read or changed (metrics_export.py too)
        self._keep = keep
        # retries and compensations reported during a run, kept until its after_workflow says whose it is
        self._pending: dict[str, dict[str, Any]] = {}
        self.servers: list[Any] = []  # /metrics endpoints serving this collector (stopped at detach)
        self.prometheus_registry: Any = None  # made by metrics_export at the first scrape, then reused
        self.reset()

    def reset(self) -> None:
        """Forget every figure (baselines and transaction counts included)."""
        with self.lock:
            # the hot path appends plain tuples; node_runs / workflow_runs build the dataclasses.
            # _node_log: per run (run_id, wall clock minus perf_counter, node records, retries by node)
            self._node_log: deque[tuple] = deque(maxlen=self._keep)
            self._workflow_log: deque[tuple] = deque(maxlen=self._keep)
            self.anomalies: deque[Anomaly] = deque(maxlen=self._keep)
            self.pool_snapshots: deque[dict[str, Any]] = deque(maxlen=self._keep)
            self.by_type: dict[str, _TypeStats] = {}
            self.workflows = {"total": 0, "successful": 0, "failed": 0, "duration_ms": 0.0}
            self.today = (0, 0)  # (UTC day number, runs that day)
            self.retries = 0
            self.compensations: dict[str, int] = {}
            self._last_pool = 0.0
            self._failures_seen = 0
            self._failure_at: float | None = None
            self.detector.reset()
            self.transactions.close()
            self.transactions = TransactionMonitor(
                long_seconds=self.transactions.long_seconds, keep=self._keep, ledger=self._ledger,
                **self._lock_waits,
            )  # fmt: skip

    def __repr__(self) -> str:
        db = self._dataflow() if self._dataflow is not None else None
        return f"<MetricsCollector for {db!r}: {self.workflows['total']} run(s), {len(self._workflow_log)} in the log>"

    @property
    def dataflow(self) -> DataFlow | None:
        return self._dataflow() if self._dataflow is not None else None

    # -- hooks ---------------------------------------------------------------------
    def after_workflow(
        self,
        *,
        run_id: str,
        error: BaseException | None,
        duration: float,
        workflow: Any = None,
        runtime: Any = None,
        nodes: list[NodeRecord] | None = None,
        **future: Any,
    ) -> None:
        """Everything about a run arrives here, once: its node records (``hooks.NodeRecord``) and outcome."""
        pending = self._pending.pop(run_id, None) if self._pending else None
        retries = pending["retries"] if pending else None
        mine = self._dataflow() if self._dataflow is not None else None
        now = time.time()
        run_queries = run_rows = run_nodes = 0
        by_type, detector = self.by_type, self.detector
        nodes = nodes or []
        foreign = failed = False
        for record in nodes:
            cls, rows, queries = record.node_class, record.rows, record.queries
            owner = cls.dataflow
            if owner is not mine and owner is not None and mine is not None:
                foreign = True
                continue  # another database's node in a workflow that also uses ours
            type_name = cls.type_name
            stats = by_type.get(type_name)
            if stats is None:
                stats = by_type[type_name] = _TypeStats(cls)
            duration_ms = record.duration * 1000.0
            run_nodes += 1
            run_queries += queries
            stats.count += 1
            stats.duration_ms += duration_ms
            stats.queries += queries
            if rows:
                run_rows += rows
                stats.rows += rows
            if record.error is not None:
                failed = True
                stats.errors += 1
                self.transactions.error(run_id, record.node_id, record.error)
                continue  # a failed run's duration says nothing about speed
            anomaly = detector.observe(
                type_name, duration_ms, record.node_id, run_id, stats.model is not None
            )
            if anomaly is not None:
                self._alert(anomaly, runtime)
        kept = nodes  # the runtime's own list, kept as it is unless a record must change
        if foreign:
            kept = [r for r in kept if r.node_class.dataflow is None or r.node_class.dataflow is mine]
        if failed:  # keep the message, never the exception and the frames it holds
            kept = [r.with_message() if r.error is not None else r for r in kept]
        retried = 0
        if retries:
            for node_id, count in retries.items():  # a node's retries belong to its last run
                retried += count
                cls = next((r.node_class for r in reversed(kept) if r.node_id == node_id), None)
                if cls is not None:
                    by_type[cls.type_name].retries += count
        # Hooks run on the runtime's one loop thread, so writers never race each other; readers
        # copy with list() and dict(), single C-level calls that the GIL keeps whole.
        self._node_log.append((run_id, now - time.perf_counter(), kept, retries))
        if pending:
            with self.lock:
                self.retries += retried
                for status, count in pending["compensations"].items():
                    self.compensations[status] = self.compensations.get(status, 0) + count
        self.transactions.workflow_ended(run_id)
        duration_ms = duration * 1000.0
        name = workflow.name if workflow is not None else ""
        run = (
            run_id, name, getattr(runtime, "user", None), now - duration, duration_ms,
            None if error is None else _first_line(error), run_nodes, run_queries, run_rows, retried,
        )  # fmt: skip
        day = int(now // 86400)
        self._workflow_log.append(run)  # the loop thread is the only writer
        totals = self.workflows
        totals["total"] += 1
        totals["successful" if error is None else "failed"] += 1
        totals["duration_ms"] += duration_ms
        self.today = (day, self.today[1] + 1 if self.today[0] == day else 1)
        if now - self._last_pool >= POOL_SNAPSHOT_EVERY:
            self._last_pool = now
            self.snapshot_pool()

    def _transaction_event(
        self, *, run_id: str, dataflow: Any, event: str, node_id: str = "", **future: Any
    ) -> None:
        """The ``transaction`` hook, for a standalone collector (a bound one reads its database's ledger)."""
        key = (run_id, id(dataflow))
        if event == "begin":
            self.transactions.begin(key, run_id, node_id)
        elif event in ("commit", "rollback"):
            self.transactions.end(key, event)

    def _pending_for(self, run_id: str) -> dict[str, Any]:
        pending = self._pending.get(run_id)
        if pending is None:
            pending = self._pending[run_id] = {"retries": {}, "compensations": {}}
        return pending

    def retry(self, *, run_id: str, node_id: str, error: BaseException | None = None, **future: Any) -> None:
        retries = self._pending_for(run_id)["retries"]
        retries[node_id] = retries.get(node_id, 0) + 1
        self.transactions.error(run_id, node_id, error, retried=True)

    def compensation(self, *, run_id: str, status: str = "done", **future: Any) -> None:
        compensations = self._pending_for(run_id)["compensations"]
        compensations[status] = compensations.get(status, 0) + 1

    # -- alerts and snapshots ------------------------------------------------------------
    def _alert(self, anomaly: Anomaly, runtime: Any) -> None:
        with self.lock:
            self.anomalies.append(anomaly)
        log.warning(
            "anomaly: %s '%s' took %.1f ms against a baseline of %.1f ms (%.1f standard deviations). %s",
            anomaly.node_type, anomaly.node_id, anomaly.current_response_time_ms,
            anomaly.baseline_response_time_ms, anomaly.deviation, anomaly.recommended_action,
        )  # fmt: skip
        db = self.dataflow  # the runtime's own hooks, our database's, then the process-wide ones
        emit = Fanout(getattr(runtime, "hooks", None), db.hooks if db is not None else None)
        if emit.wants("anomaly"):
            emit.emit("anomaly", anomaly=anomaly, **anomaly.as_dict())  # as_dict names run_id and node_id

    def snapshot_pool(self) -> dict[str, Any]:
        """Record (and return) the pool's figures now."""
        db = self.dataflow
        status = dict(db.pool_status()) if db is not None and not db.database.closed else {}
        status["at"] = dt.datetime.now(dt.UTC).isoformat()
        with self.lock:
            self.pool_snapshots.append(status)
        return status


def _first_line(error: BaseException | str | None) -> str | None:
    if error is None:
        return None
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:500]


# -- wiring to a DataFlow ---------------------------------------------------------------
def attach(dataflow: DataFlow) -> MetricsCollector:
    """Give ``dataflow`` a collector: subscribed to its hooks, counting its connections' queries."""
    config = dataflow.config
    collector = MetricsCollector(
        dataflow, capture_sql=config.environment == "development", node_figures=config.memory_tracking
    )
    dataflow.hooks.subscribe(collector)  # the DataFlow holds it: it lives and goes with the DataFlow
    dataflow.database.dialect.observe = 2 if collector.capture_sql else 1
    return collector


def detach(dataflow: DataFlow, collector: MetricsCollector) -> None:
    dataflow.hooks.unsubscribe(collector)
    for server in collector.servers:
        server.close()
    collector.servers.clear()
    collector.transactions.close()
    dataflow.database.dialect.observe = 0
