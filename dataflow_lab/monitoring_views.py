"""The collector's read side: recent runs as records, the dashboard, and a DataFrame.

``MetricsCollector`` (monitoring.py) takes these methods from ``CollectorViews``;
its hook methods only append tuples and bump counters, and everything here turns
them into what people read, when they read it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .errors import DataFlowError
from .leaks import count as leak_count
from .process_memory import memory_figures

if TYPE_CHECKING:  # pragma: no cover
    from .anomaly import Anomaly
    from .interfaces import DataFlow
    from .transaction_monitor import TransactionMonitor

__all__ = ["CollectorViews", "NodeRun", "WorkflowRun"]

# What the collector's after_workflow appends per run (a plain tuple: the hot path builds nothing else).
# wall_offset: time.time() minus time.perf_counter() at the end of the run, for the records' ``started``.
LOG_ENTRY = (
    "run_id", "workflow", "user", "started", "duration_ms", "error", "nodes", "queries", "rows", "retries",
    "wall_offset", "records", "retries_by_node",
)  # fmt: skip

RECENT_FAILURE_SECONDS = 60.0  # a connection failure this recent makes the pool "degraded"
SLOW_SHOWN = 20  # slow statements the dashboard lists (db.slow_statements() has them all)


@dataclass(frozen=True, slots=True)
class NodeRun:
    """One node of one run, as the collector saw it."""

    run_id: str
    node_id: str
    node_type: str
    model: str | None
    operation: str
    started: dt.datetime
    duration_ms: float
    rows: int | None
    queries: int
    status: str  # "success" | "error"
    error: str | None
    retries: int
    sql: tuple[str, ...]
    connection_pool_usage: str | None = None  # its database's connections in use / capacity, "3/15"
    memory_usage_mb: float | None = None  # process memory it took (RSS change, or tracemalloc's peak)
    tags: dict[str, str | None] = field(default_factory=dict)  # model, operation, environment


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """One workflow run: its outcome and the totals of its nodes."""

    run_id: str
    workflow: str
    user: str | None
    started: dt.datetime
    duration_ms: float
    status: str
    error: str | None
    nodes: int
    queries: int
    rows: int
    retries: int


class CollectorViews:
    """Read-side methods of MetricsCollector (they read its logs, counters and monitors)."""

    # What MetricsCollector (monitoring.py) holds and these methods read.
    lock: threading.RLock
    _keep: int
    _log: deque[tuple]  # one LOG_ENTRY per run
    _failures_seen: int
    _failure_at: float | None
    anomalies: deque[Anomaly]
    transactions: TransactionMonitor
    # by_type, workflows, today, retries, compensations: MetricsCollector's properties, which count
    # the runs it has queued first (fold)
    by_type: Any
    workflows: Any
    today: Any
    retries: Any
    compensations: Any

    def fold(self) -> None:  # pragma: no cover - MetricsCollector's
        raise NotImplementedError

    @property
    def dataflow(self) -> DataFlow | None:  # pragma: no cover - MetricsCollector's
        raise NotImplementedError

    @property
    def node_runs(self) -> list[NodeRun]:
        """The recent node runs (at most ``keep``), oldest first."""
        with self.lock:
            self.fold()
            log = list(self._log)
            by_type = dict(self.by_type)
        db = self.dataflow
        environment = db.config.environment if db is not None else None
        runs: list[NodeRun] = []
        for run_id, *_, wall_offset, records, retries in log:
            last = {r.node_id: i for i, r in enumerate(records)} if retries else {}
            for i, record in enumerate(records):
                stats = by_type.get(record.node_class.type_name)
                model = stats.model if stats is not None else None
                operation = stats.operation if stats is not None else ""
                runs.append(
                    NodeRun(
                        run_id,
                        record.node_id,
                        record.node_class.type_name,
                        model,
                        operation,
                        dt.datetime.fromtimestamp(record.started + wall_offset, dt.UTC),
                        record.duration * 1000.0,
                        record.rows,
                        record.queries,
                        "success" if record.error is None else "error",
                        None if record.error is None else str(record.error),  # a message, in the log
                        retries.get(record.node_id, 0) if retries and last.get(record.node_id) == i else 0,
                        tuple(s.strip() for s in record.sql or ()),
                        record.pool_usage,
                        record.memory_mb,
                        {"model": model, "operation": operation, "environment": environment},
                    )
                )
        return runs[-self._keep :]

    @property
    def workflow_runs(self) -> list[WorkflowRun]:
        """The recent workflow runs, oldest first."""
        with self.lock:
            self.fold()
            log = list(self._log)
        return [
            WorkflowRun(
                run_id,
                name,
                user,
                dt.datetime.fromtimestamp(wall, dt.UTC),
                duration_ms,
                "success" if error is None else "error",
                error,
                nodes,
                queries,
                rows,
                retried,
            )  # fmt: skip
            for run_id, name, user, wall, duration_ms, error, nodes, queries, rows, retried, *_ in log
        ]

    def dashboard(self) -> dict[str, Any]:
        """The spec's dashboard: workflow_executions, database_operations, connection_pool, process
        (resident memory now and at peak; tracemalloc's when it runs), safety_events."""
        from .metrics_export import pool_health

        with self.lock:
            totals = dict(self.workflows)
            day, today, _ = self.today
            db_types = [s for s in list(self.by_type.values()) if s.model is not None]
            retries = self.retries
            anomalies = len(self.anomalies)
            compensations = sum(self.compensations.values())
        operations = sum(s.count for s in db_types)
        tx = self.transactions.counts()
        db = self.dataflow
        slow = db.database.dialect.statements if db is not None and not db.database.closed else None
        cache = db.database.cache.stats() if db is not None else None
        return {
            "workflow_executions": {
                "total": totals["total"],
                "total_today": today if day == int(time.time() // 86400) else 0,
                "successful": totals["successful"],
                "failed": totals["failed"],
                "average_duration_ms": _mean(totals["duration_ms"], totals["total"]),
            },
            "database_operations": {
                "total_operations": operations,
                "total_queries": sum(s.queries for s in db_types),
                "bulk_operations": sum(s.count for s in db_types if s.operation.startswith("bulk_")),
                "rows": sum(s.rows for s in db_types),
                "errors": sum(s.errors for s in db_types),
                "average_response_time_ms": _mean(sum(s.duration_ms for s in db_types), operations),
                "cache_hit_rate": cache["cache_hit_rate"] if cache is not None else None,
            },
            # DataFlow(cache=...): hits, misses, invalidations, entries, and whether it is on (why not)
            "result_cache": cache,
            "connection_pool": self._pool_view(pool_health),
            "process": memory_figures(),
            "safety_events": {
                "automatic_retries": retries,
                "transaction_rollbacks": tx["rollbacks"],
                "deadlock_resolutions": tx["deadlock_resolutions"],
                "anomalies_detected": anomalies,
                "deadlocks_detected": tx["deadlocks"],
                "long_running_transactions": tx["long_running"],
                "compensations": compensations,
                "pending_compensations": self._pending_compensations(),
                "leaks": leak_count(self.dataflow.database.token if self.dataflow is not None else None),
                "slow_statements": slow.total if slow is not None else 0,
                "lock_waits": tx["lock_waits"],
            },
            "slow_statements": [s.as_dict() for s in slow.entries()[-SLOW_SHOWN:]]
            if slow is not None
            else [],
        }

    def _pending_compensations(self) -> int | None:
        """Saga compensations still owed on the database (None: it could not be asked)."""
        db = self.dataflow
        if db is None or db.database.closed:
            return None
        if db.database.pending_count is None:
            try:
                db.pending_compensations()
            except Exception:
                return None
        return db.database.pending_count

    def _pool_view(self, pool_health: Any) -> dict[str, Any]:
        db = self.dataflow
        status = dict(db.pool_status()) if db is not None and not db.database.closed else {}
        failures = int(status.get("failures") or 0)
        now = time.monotonic()
        if failures > self._failures_seen:
            self._failures_seen, self._failure_at = failures, now
        recent = self._failure_at is not None and now - self._failure_at < RECENT_FAILURE_SECONDS
        overflow = db.config.max_overflow if db is not None else 0
        return pool_health(status, max_overflow=overflow, recent_failure=recent)

    def frame(self) -> Any:
        """Recent node runs as a pandas DataFrame (one row per node run, oldest first)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DataFlowError(
                "metrics_frame() needs pandas.", hint="pip install 'dataflow-lab[pandas]'"
            ) from exc
        runs = self.node_runs
        columns = [f.name for f in fields(NodeRun)]
        frame = pd.DataFrame.from_records([asdict(r) for r in runs], columns=columns)
        return frame.astype(
            {"duration_ms": "float64", "queries": "int64", "retries": "int64", "memory_usage_mb": "float64"}
        )


def _mean(total: float, count: int) -> float:
    return round(total / count, 3) if count else 0.0
