"""What a DataFlow shows of itself: metrics, their export, and the audit log.

``DataFlow`` takes these methods from ``Observability``; each hands off to its
module (monitoring.py, metrics_export.py, audit.py), imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from .errors import DataFlowError
from .tracking import Runs, RunTracker

if TYPE_CHECKING:  # pragma: no cover
    from .config import DataFlowConfig
    from .interfaces import DataFlow

__all__ = ["Observability"]


class Observability:
    """Monitoring and audit methods of DataFlow (it sets ``_monitor`` and ``config``)."""

    _monitor: Any
    tracker: RunTracker  # the recent runs (tracking.py), subscribed to its hooks
    config: DataFlowConfig

    def runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int | None = None
    ) -> Runs:
        """The recent runs that touched this database, oldest first, in every environment (at most
        ``run_history``); ``.frame()`` gives a DataFrame. ``status``: "success", "error" or "cancelled"."""
        return self.tracker.runs(status=status, workflow=workflow, limit=limit)

    @property
    def monitor(self) -> Any:
        """This database's MetricsCollector (None when monitoring is off)."""
        return self._monitor

    def slow_statements(self, run_id: str | None = None) -> list[Any]:
        """The statements that took ``slow_query_threshold`` seconds or more (the last 100), oldest first,
        as ``SlowStatement``s: SQL without values, seconds, run and node, error, and the plan on
        PostgreSQL and DuckDB (statement_log.py). Kept in every environment."""
        log = cast("DataFlow", self).database.dialect.statements
        return [] if log is None else log.entries(run_id)

    def cache_stats(self) -> dict[str, Any]:
        """The result cache's figures, monitored or not (README: Caching): on, off_reason, hits, misses,
        cache_hit_rate, invalidations, entries, bypassed; ``enabled`` False without DataFlow(cache=...)."""
        return cast("DataFlow", self).database.cache.stats()

    def metrics(self) -> dict[str, Any]:
        """The dashboard: workflow_executions, database_operations, connection_pool, safety_events."""
        return self._collector().dashboard()

    def metrics_frame(self) -> Any:
        """Recent node runs (duration, rows, queries, errors...) as a pandas DataFrame."""
        return self._collector().frame()

    def metrics_json(self) -> str:
        """A JSON snapshot: the dashboard, figures per node type, transaction alerts, anomalies."""
        from .metrics_export import json_snapshot

        return json_snapshot(self._collector())

    def metrics_text(self) -> str:
        """The metrics in Prometheus text exposition format."""
        from .metrics_export import prometheus_text

        return prometheus_text(self._collector())

    def serve_metrics(self, port: int = 0, *, host: str = "127.0.0.1") -> Any:
        """Serve Prometheus metrics on http://host:port/metrics (0: any free port); ``.close()`` stops it,
        and so does closing this DataFlow."""
        from .metrics_export import serve

        server = serve(self._collector(), port, host=host)
        self._collector().servers.append(server)  # its thread holds the collector: stopped at close()
        return server

    def audit(self, model: type | str, id: Any = None, *, tenant: str | None = None) -> list[Any]:
        """The audit history of one row (or, without ``id``, of every row) of an audited model.

        On a multi_tenant model, only the tenant's rows: ``tenant=`` or ``with db.tenant(...)``.
        """
        from .audit import history

        return history(cast("DataFlow", self), model, id, tenant=tenant)

    def _collector(self) -> Any:
        if self._monitor is None:
            raise DataFlowError(
                f"Monitoring is off for {self!r} (the {self.config.environment} preset).",
                hint="pass monitoring=True to DataFlow(...), or set DATAFLOW_ENV=testing, staging or production.",
            )
        return self._monitor

    def _stop_monitoring(self) -> None:
        if self._monitor is not None:
            from .monitoring import detach

            detach(cast("DataFlow", self), self._monitor)
