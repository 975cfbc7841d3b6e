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

from .anomaly import Anomaly, AnomalyDetector, Window
from .hooks import Fanout, NodeRecord
from .monitoring_views import CollectorViews, NodeRun, WorkflowRun
from .transaction_monitor import TransactionMonitor

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow

__all__ = ["MetricsCollector", "NodeRun", "WorkflowRun"]

log = logging.getLogger("dataflow_lab.monitoring")

POOL_SNAPSHOT_EVERY = 1.0  # seconds
FOLD_EVERY = 64  # runs queued before the collector counts them (readers count them at once)


# -- the collector -------------------------------------------------------------------------
class _TypeStats:
    __slots__ = (
        "model",
        "operation",
        "count",
        "errors",
        "duration_ms",
        "rows",
        "queries",
        "retries",
        "baseline",
    )

    def __init__(self, node_class: Any, baseline: Window):
        model = getattr(node_class, "model", None)
        self.model: str | None = model.name if model is not None else None
        self.operation: str = getattr(node_class, "operation", "") or "python"
        self.count = self.errors = self.rows = self.queries = self.retries = 0
        self.duration_ms = 0.0
        self.baseline = baseline  # the anomaly detector's rolling window of this type's durations


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
        # held while the logs are read or changed (metrics_export.py too); reentrant: reading a
        # figure under it counts the queued runs first (``fold``)
        self.lock = threading.RLock()
        self._keep = keep
        # retries and compensations reported during a run, kept until its after_workflow says whose it is
        self._pending: dict[str, dict[str, Any]] = {}
        self.servers: list[Any] = []  # /metrics endpoints serving this collector (stopped at detach)
        self.prometheus_registry: Any = None  # made by metrics_export at the first scrape, then reused
        self.reset()

    def reset(self) -> None:
        """Forget every figure (baselines and transaction counts included)."""
        with self.lock:
            # the hot path appends one plain tuple per run (monitoring_views.LOG_ENTRY); node_runs
            # and workflow_runs build the dataclasses
            self._log: deque[tuple] = deque(maxlen=self._keep)
            # runs not counted yet (after_workflow): (run_id, workflow name, user, time.time() at the
            # end, seconds, error, records, retries and compensations, wall clock minus perf_counter)
            self._queue: deque[tuple] = deque()
            self.anomalies: deque[Anomaly] = deque(maxlen=self._keep)
            self.pool_snapshots: deque[dict[str, Any]] = deque(maxlen=self._keep)
            self._by_type: dict[str, _TypeStats] = {}
            self._workflows = {"total": 0, "successful": 0, "failed": 0, "duration_ms": 0.0}
            self._today = [0, 0, 0.0]  # UTC day number, runs that day, when it ends (time.time())
            self._retries = 0
            self._compensations: dict[str, int] = {}
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
        return f"<MetricsCollector for {db!r}: {self.workflows['total']} run(s), {len(self._log)} in the log>"

    @property
    def dataflow(self) -> DataFlow | None:
        return self._dataflow() if self._dataflow is not None else None

    # -- the figures (each counts the queued runs first) --------------------------------
    @property
    def by_type(self) -> dict[str, _TypeStats]:
        """Figures per node type: runs, errors, duration_ms, rows, queries, retries."""
        self.fold()
        return self._by_type

    @property
    def workflows(self) -> dict[str, Any]:
        """Runs: total, successful, failed, duration_ms."""
        self.fold()
        return self._workflows

    @property
    def today(self) -> list[Any]:
        """[UTC day number, runs that day, when that day ends]."""
        self.fold()
        return self._today

    @property
    def retries(self) -> int:
        self.fold()
        return self._retries

    @property
    def compensations(self) -> dict[str, int]:
        """Saga compensations by status."""
        self.fold()
        return self._compensations

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
        """Everything about a run arrives here, once: its node records (``hooks.NodeRecord``) and outcome.

        This runs after every monitored run, inside its time, so a plain run is only queued
        (``_queue``, one tuple); ``fold`` counts the queued runs in a batch, every FOLD_EVERY runs
        and before anything reads the figures. A run that failed, retried or has a node slow
        enough to be an anomaly is counted at once, so alerts and hooks are never late and no
        queued record holds an exception (and its frames).
        """
        now = time.time()
        pending = self._pending.pop(run_id, None) if self._pending else None
        records = nodes or []
        entry = (
            run_id, workflow.name if workflow is not None else "", getattr(runtime, "user", None), now,
            duration, error, records, pending, now - time.perf_counter(),
        )  # fmt: skip
        plain = error is None and pending is None
        if plain:
            quick = self.detector.min_delta_ms / 1000.0  # a node quicker than this is never an anomaly
            for record in records:
                if record.error is not None or record.duration >= quick:
                    plain = False
                    break
        if plain:
            queue = self._queue
            queue.append(entry)
            if len(queue) >= FOLD_EVERY:
                self.fold()
        else:
            with self.lock:
                self._fold_queue()
                anomalies = self._count(entry, judge=True)
            for anomaly in anomalies:
                self._alert(anomaly, runtime)
        if now - self._last_pool >= POOL_SNAPSHOT_EVERY:
            self._last_pool = now
            self.snapshot_pool()

    def fold(self) -> None:
        """Count the queued runs (readers call this first: the figures are then up to date)."""
        if self._queue:
            with self.lock:
                self._fold_queue()

    def _fold_queue(self) -> None:  # with the lock held
        queue = self._queue
        while queue:  # popleft, not a swap: the loop thread may append meanwhile
            self._count(queue.popleft(), judge=False)

    def _count(self, entry: tuple, *, judge: bool) -> list[Anomaly]:
        """Count one run (with the lock held); ``judge``: ask the detector about its slow nodes."""
        run_id, name, user, now, duration, error, records, pending, wall_offset = entry
        mine = self._dataflow() if self._dataflow is not None else None
        by_type, detector, quick = self._by_type, self.detector, self.detector.min_delta_ms
        run_queries = run_rows = run_nodes = 0
        foreign = failed = False
        anomalies: list[Anomaly] = []
        for record in records:
            cls = record.node_class
            if not _ours(cls, mine):
                foreign = True
                continue  # another database's node in a workflow that also uses ours
            type_name = cls.type_name
            stats = by_type.get(type_name)
            if stats is None:
                stats = by_type[type_name] = _TypeStats(cls, detector.window_of(type_name))
            duration_ms = record.duration * 1000.0
            rows, queries = record.rows, record.queries
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
            elif duration_ms < quick or not judge:  # a failed run's duration says nothing about speed
                stats.baseline.add(duration_ms)
            else:
                anomaly = detector.observe(
                    type_name, duration_ms, record.node_id, run_id, stats.model is not None
                )
                if anomaly is not None:
                    anomalies.append(anomaly)
        kept = records  # the runtime's own list, kept as it is unless a record must change
        if foreign or failed:  # keep a failure's message, never the exception and its frames
            kept = [
                r.with_message() if r.error is not None else r for r in records if _ours(r.node_class, mine)
            ]
        retried = self._settle(pending, kept) if pending else 0
        duration_ms = duration * 1000.0
        self._log.append(
            (
                run_id, name, user, now - duration, duration_ms, None if error is None else _first_line(error),
                run_nodes, run_queries, run_rows, retried, wall_offset, kept, pending["retries"] if pending else None,
            )
        )  # fmt: skip
        totals = self._workflows
        totals["total"] += 1
        totals["successful" if error is None else "failed"] += 1
        totals["duration_ms"] += duration_ms
        today = self._today
        if now < today[2]:
            today[1] += 1
        else:
            day = int(now // 86400)
            today[:] = [day, 1, (day + 1) * 86400.0]
        self.transactions.workflow_ended(run_id)
        return anomalies

    def _settle(self, pending: dict[str, Any], kept: list[NodeRecord]) -> int:
        """Count the retries and compensations reported during a run; returns its retries."""
        retried = 0
        for node_id, count in pending["retries"].items():  # a node's retries belong to its last run
            retried += count
            cls = next((r.node_class for r in reversed(kept) if r.node_id == node_id), None)
            if cls is not None:
                self._by_type[cls.type_name].retries += count
        self._retries += retried
        compensations = self._compensations
        for status, count in pending["compensations"].items():
            compensations[status] = compensations.get(status, 0) + count
        return retried

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


def _ours(node_class: Any, mine: Any) -> bool:
    """Whether a collector bound to ``mine`` (None: standalone) counts a node of ``node_class``."""
    owner = node_class.dataflow
    return mine is None or owner is None or owner is mine


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
