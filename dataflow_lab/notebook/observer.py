"""RunObserver: a hooks subscriber that keeps one run's state and feeds live views.

The runtime calls the hooks on its background loop thread. Each event updates
the state under a lock; a view attached with ``attach`` gets an immutable
RunSnapshot at most every ``interval`` seconds (about 10 Hz), plus a final one
when the run ends, so the last frame is always the true end state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

from .. import _loop
from .display import duration, rows

if TYPE_CHECKING:  # pragma: no cover
    from ..dataflow import DataFlow
    from ..workflow import Workflow

__all__ = ["NodeStatus", "RunObserver", "RunSnapshot"]

COMPENSATED = ("compensated", "done", "ok", "success", "succeeded")
TICK = 0.4  # seconds between refreshes of a live view while nothing else changes (≥ 2 a second)


@dataclass(frozen=True)
class NodeStatus:
    """What one node of a run is doing, or did."""

    node_id: str
    node_type: str
    state: str = "pending"  # one of viz.STATES
    duration: float | None = None
    rows: int | None = None
    error: str | None = None
    done: int | None = None  # bulk progress: rows done so far ...
    total: int | None = None  # ... of this many, when known
    retries: int = 0
    writes: bool = False
    started: float | None = None  # perf_counter() when it began running (a snapshot's duration runs on)
    sql: tuple[str, ...] = ()  # the statements it sent, when its DataFlow keeps them (echo)

    def label(self) -> str:
        """The status line drawn under the node: rows and duration, or progress and time so far."""
        if self.state == "running":
            parts = (
                [f"{self.done:,}/{self.total:,} rows" if self.total else f"{self.done:,} rows"]
                if (self.done is not None)
                else ["running"]
            )
            if self.retries:
                parts.append(f"retry {self.retries}")
            if self.duration is not None:
                parts.append(duration(self.duration))
            return " · ".join(parts)
        if self.state == "pending":
            return self.state
        parts = [p for p in (rows(self.rows), duration(self.duration)) if p]
        if self.state != "done":
            parts.insert(0, self.state)
        return " · ".join(parts)


@dataclass(frozen=True)
class RunSnapshot:
    """An immutable picture of a run, handed to views."""

    name: str
    run_id: str | None
    status: str  # "starting" | "running" | "done" | "failed" | "cancelled"
    nodes: Mapping[str, NodeStatus]
    events: tuple[str, ...] = ()  # transaction and compensation events, in order
    retries: tuple[str, ...] = ()
    pool: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cache: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # result caches, by database URL
    elapsed: float = 0.0
    error: str | None = None
    slow: tuple[Any, ...] = ()  # this run's slow statements (statement_log.SlowStatement), oldest first

    @property
    def total_rows(self) -> int:
        done = sum(s.rows or 0 for s in self.nodes.values() if s.state != "running")
        return done + sum(s.done or 0 for s in self.nodes.values() if s.state == "running")

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    def states(self) -> dict[str, str]:
        return {n: s.state for n, s in self.nodes.items()}

    def labels(self) -> dict[str, str]:
        return {n: s.label() for n, s in self.nodes.items()}


class RunObserver:
    """Subscribe it to a runtime (``LocalRuntime(hooks=[observer])``); it follows one run."""

    def __init__(self, workflow: Workflow, *, name: str | None = None, interval: float = 0.1):
        self.workflow = workflow
        self.name = name or workflow.name
        self.interval = interval
        self.run_id: str | None = None
        self.status = "starting"
        self.error: str | None = None
        self.flushes = 0  # how many snapshots reached the view (for tests and benchmarks)
        self._lock = threading.Lock()
        self._nodes = {
            n: NodeStatus(n, s.type_name, writes=bool(s.node_class.writes)) for n, s in workflow.nodes.items()
        }
        self._uncommitted: dict[int, list[str]] = {}  # id(dataflow) -> done writers in an open transaction
        self._events: list[str] = []
        self._retries: list[str] = []
        self._started = time.perf_counter()
        self._ended: float | None = None
        self._sink: Callable[[RunSnapshot], None] | None = None
        self._last_flush = 0.0
        self._scheduled = False

    # -- hooks (called on the runtime's loop thread) ------------------------
    def before_workflow(self, *, run_id: str, **future: Any) -> None:
        with self._lock:
            self.run_id, self.status, self._started = run_id, "running", time.perf_counter()
        self._changed()

    def after_workflow(
        self, *, run_id: str, error: BaseException | None, duration: float, **future: Any
    ) -> None:
        if run_id != self.run_id:
            return
        with self._lock:
            self._ended = self._started + duration
            if error is None:
                self.status = "done"
            else:
                self.status = "cancelled" if isinstance(error, asyncio.CancelledError) else "failed"
                self.error = _one_line(error)
                self._end_unfinished()
        self.flush()

    def _end_unfinished(self) -> None:
        """Under the lock: a failed run's running node failed; a cancelled run's unfinished nodes
        are drawn cancelled (its finished writers turn "rolled back" at the rollback event)."""
        for node_id, s in self._nodes.items():
            if self.status == "cancelled" and s.state in ("pending", "running"):
                self._nodes[node_id] = dataclasses.replace(s, state="cancelled", error="cancelled")
            elif s.state == "running":
                self._nodes[node_id] = dataclasses.replace(s, state="failed", error=self.status)

    def settle(self, status: str, error: BaseException | None = None) -> None:
        """The run's task ended; record it if the runtime never could (cancelled before it began)."""
        with self._lock:
            if self.status not in ("starting", "running"):
                return
            self.status, self._ended = status, time.perf_counter()
            self.error = _one_line(error) if error is not None else None
            self._end_unfinished()
        self.flush()

    def before_node(self, *, run_id: str, node_id: str, **future: Any) -> None:
        self._update(run_id, node_id, state="running", started=time.perf_counter())

    def after_node(
        self,
        *,
        run_id: str,
        node_id: str,
        error: BaseException | None,
        duration: float,
        rows: int | None,
        **future: Any,
    ) -> None:
        sql = tuple(" ".join(s.split()) for s in future.get("sql") or ())  # kept when echo is on
        if error is None:
            self._update(run_id, node_id, state="done", duration=duration, rows=rows, sql=sql)
            db = getattr(self.workflow.nodes[node_id].node_class, "dataflow", None)
            if db is not None and self._nodes[node_id].writes:
                with self._lock:
                    self._uncommitted.setdefault(id(db), []).append(node_id)
        elif isinstance(error, asyncio.CancelledError):  # stopped, not broken
            self._update(run_id, node_id, state="cancelled", duration=duration, error="cancelled", sql=sql)
        else:
            self._update(run_id, node_id, state="failed", duration=duration, error=_one_line(error), sql=sql)

    def node_skipped(self, *, run_id: str, node_id: str, reason: str = "", **future: Any) -> None:
        """A route not taken: the node did not run and never will in this run."""
        self._update(run_id, node_id, state="skipped", error=reason or None)

    def cycle_iteration(
        self, *, run_id: str, nodes: tuple, iteration: int, converged: bool, **future: Any
    ) -> None:
        if run_id != self.run_id:
            return
        with self._lock:
            ending = " (converged)" if converged else ""
            self._events.append(f"CYCLE {' -> '.join(nodes)}: iteration {iteration}{ending}")
        self._changed()

    def transaction(self, *, run_id: str, dataflow: Any, event: str, **future: Any) -> None:
        if run_id != self.run_id:
            return
        with self._lock:
            self._events.append(f"{event.upper()} on {dataflow.dialect}")  # the DAG shows where
            writers = self._uncommitted.pop(id(dataflow), []) if event in ("commit", "rollback") else []
            if event == "rollback":
                for node_id in writers:
                    self._nodes[node_id] = dataclasses.replace(self._nodes[node_id], state="rolled back")
        self._changed()

    def progress(self, *, run_id: str, node_id: str, done: int, total: int | None, **future: Any) -> None:
        self._update(run_id, node_id, done=done, total=total)

    def retry(
        self, *, run_id: str, node_id: str | None, attempt: int, error: Any, delay: float, **future: Any
    ) -> None:
        if run_id != self.run_id:
            return
        with self._lock:
            status = self._nodes.get(node_id or "")
            if status is not None:
                self._nodes[status.node_id] = dataclasses.replace(status, retries=status.retries + 1)
            self._retries.append(
                f"{node_id or 'the run'}: attempt {attempt} after {_one_line(error)}; next in {delay:g} s"
            )
        self._changed()

    def anomaly(self, *, run_id: str, node_id: str | None = None, anomaly: Any = None, **future: Any) -> None:
        if run_id != self.run_id:
            return
        with self._lock:
            self._events.append(f"ANOMALY {node_id or 'run'}: {_one_line(anomaly)}")
        self._changed()

    def compensation(
        self, *, run_id: str, node_id: str, status: str, error: Any = None, **future: Any
    ) -> None:
        if run_id != self.run_id:
            return
        with self._lock:
            self._events.append(
                f"COMPENSATE {node_id}: {status}" + (f" ({_one_line(error)})" if error else "")
            )
            if node_id in self._nodes and str(status).lower() in COMPENSATED:
                self._nodes[node_id] = dataclasses.replace(self._nodes[node_id], state="compensated")
        self._changed()

    def _update(self, run_id: str, node_id: str, **changes: Any) -> None:
        if run_id != self.run_id or node_id not in self._nodes:
            return
        with self._lock:
            self._nodes[node_id] = dataclasses.replace(self._nodes[node_id], **changes)
        self._changed()

    # -- snapshots and the throttle ------------------------------------------
    def snapshot(self, *, pool: bool = False) -> RunSnapshot:
        with self._lock:
            now = time.perf_counter()
            end = self._ended if self._ended is not None else now
            nodes = {
                n: dataclasses.replace(s, duration=now - s.started)
                if s.state == "running" and s.started is not None
                else s
                for n, s in self._nodes.items()
            }  # a running node's duration is its time so far
            return RunSnapshot(
                name=self.name,
                run_id=self.run_id,
                status=self.status,
                nodes=MappingProxyType(nodes),
                events=tuple(self._events),
                retries=tuple(self._retries),
                pool=self._pool() if pool else {},
                cache=self._cache() if pool else {},
                elapsed=end - self._started,
                error=self.error,
                slow=self._slow(),
            )

    def _slow(self) -> tuple[Any, ...]:
        if self.run_id is None:
            return ()
        slow: list[Any] = []
        for db in self.workflow.dataflows():
            try:
                slow += cast("DataFlow", db).slow_statements(self.run_id)  # the facade, as every DataFlow is
            except Exception:  # a closed database: nothing to show, and a view must never break a run
                continue
        return tuple(sorted(slow, key=lambda s: s.at))

    def _pool(self) -> dict[str, Mapping[str, Any]]:
        status: dict[str, Mapping[str, Any]] = {}
        for db in self.workflow.dataflows():
            try:
                status[db.url] = db.pool_status()
            except Exception as exc:  # a gauge must never break a run
                status[db.url] = {"error": _one_line(exc)}
        return status

    def _cache(self) -> dict[str, Mapping[str, Any]]:
        """The result cache of each database the run touches that has one (DataFlow(cache=...))."""
        return {
            db.url: db.database.cache.stats() for db in self.workflow.dataflows() if db.database.cache.enabled
        }

    def attach(self, sink: Callable[[RunSnapshot], None]) -> None:
        """Send snapshots to ``sink`` from now on: one right away, one per change (throttled),
        and one every ``TICK`` seconds while the run goes on, so a long step's clock moves."""
        with self._lock:
            self._sink = sink
        self.flush()
        loop = _loop.loop()
        if _loop.in_loop_thread():
            loop.call_later(TICK, self._tick)
        else:
            loop.call_soon_threadsafe(loop.call_later, TICK, self._tick)

    def _tick(self) -> None:
        if self._sink is None or self.status not in ("starting", "running"):
            return  # the end flush already showed the final state
        if time.perf_counter() - self._last_flush >= TICK * 0.9:
            self.flush()
        _loop.loop().call_later(TICK, self._tick)

    def flush(self) -> None:
        """Send the current snapshot to the attached view now."""
        sink = self._sink
        self._scheduled = False
        if sink is None:
            return
        self._last_flush = time.perf_counter()
        self.flushes += 1
        sink(self.snapshot(pool=True))

    def _changed(self) -> None:
        if self._sink is None or self._scheduled:
            return
        wait = self.interval - (time.perf_counter() - self._last_flush)
        if wait <= 0:
            self.flush()
            return
        self._scheduled = True
        loop = _loop.loop()
        if _loop.in_loop_thread():
            loop.call_later(wait, self._flush_if_scheduled)
        else:
            loop.call_soon_threadsafe(loop.call_later, wait, self._flush_if_scheduled)

    def _flush_if_scheduled(self) -> None:
        if self._scheduled:
            self.flush()


def _one_line(error: Any) -> str:
    if isinstance(error, BaseException):
        text = str(error).strip() or type(error).__name__
    else:
        text = str(error)
    return " ".join(text.split())
