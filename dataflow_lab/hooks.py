"""Hooks: the one link from the runtime to metrics, progress bars and widgets.

A subscriber is any object with some of these methods; each takes keyword-only
arguments and must accept ``**future`` so that new fields never break it::

    before_workflow(*, run_id, workflow, runtime, **future)
    after_workflow(*, run_id, workflow, results, error, duration, runtime, nodes, **future)
    before_node(*, run_id, node_id, node_type, params, **future)
    after_node(*, run_id, node_id, node_type, result, error, duration, rows,
               queries, sql, **future)                   # always runs; queries/sql: when monitored
    transaction(*, run_id, dataflow, event, **future)    # event: "begin" | "commit" | "rollback"
    progress(*, run_id, node_id, done, total, **future)  # bulk chunks
    retry(*, run_id, node_id, attempt, error, delay, **future)
    compensation(*, run_id, node_id, status, error, **future)
    anomaly(*, run_id, node_id, anomaly, **future)      # monitoring: a run far off its baseline
    node_skipped(*, run_id, node_id, node_type, reason, **future)  # a route not taken (routing.py)
    cycle_iteration(*, run_id, nodes, iteration, output, converged, **future)  # after each pass of a cycle

``after_workflow``'s ``nodes`` lists every node run of the run, in the order they
ended (failed attempts included), as tuples in NODE_RECORD's order: a subscriber
that only needs totals (the MetricsCollector) takes them there, in one call per
run, instead of subscribing to ``after_node``. ``started`` is a
``time.perf_counter()`` reading; ``queries`` and ``sql`` are counted only on a
monitored database (``query_count.py``).

Hooks run on the runtime's loop thread, in the order subscribed. They must be
quick (a widget throttles itself); an exception in a subscriber is logged and
never breaks a run.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from .errors import ValidationError

__all__ = ["EVENTS", "NODE_RECORD", "Hooks", "global_hooks", "subscribe", "subscribe_weakly", "unsubscribe"]

log = logging.getLogger("dataflow_lab.hooks")

NODE_RECORD = ("node_id", "node_class", "started", "duration", "rows", "queries", "sql", "error")

EVENTS = (
    "before_workflow", "after_workflow", "before_node", "after_node",
    "transaction", "progress", "retry", "compensation", "anomaly", "node_skipped", "cycle_iteration",
)  # fmt: skip


class Hooks:
    """An ordered set of subscribers, and the calls that reach them."""

    def __init__(self, subscribers: Iterable[Any] = ()):
        # Reentrant: a finalizer (``weakref.finalize(db, unsubscribe, ...)``) may run during a garbage
        # collection inside subscribe(), and unsubscribe on the same thread.
        self._lock = threading.RLock()
        self._subscribers: tuple[Any, ...] = ()
        self._by_event: dict[str, tuple[Any, ...]] = {e: () for e in EVENTS}
        for subscriber in subscribers:
            self.subscribe(subscriber)

    def subscribe(self, subscriber: Any) -> Any:
        """Add a subscriber (returned, so this works as a decorator for classes' instances)."""
        if not any(callable(getattr(subscriber, e, None)) for e in EVENTS):
            raise ValidationError(
                f"{subscriber!r} has none of the hook methods.",
                hint=f"define one or more of: {', '.join(EVENTS)}.",
            )
        with self._lock:
            if subscriber not in self._subscribers:
                self._subscribers = (*self._subscribers, subscriber)
                self._reindex()
        return subscriber

    def unsubscribe(self, subscriber: Any) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)
            self._reindex()

    def _reindex(self) -> None:
        while True:  # again if a finalizer changed the subscribers meanwhile
            subscribers = self._subscribers
            by_event = {
                e: tuple(getattr(s, e) for s in subscribers if callable(getattr(s, e, None))) for e in EVENTS
            }
            if subscribers is self._subscribers:
                self._by_event = by_event
                return

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def __len__(self) -> int:
        return len(self._subscribers)

    def wants(self, event: str) -> bool:
        return bool(self._by_event[event])

    def emit(self, hook: str, /, **fields: Any) -> None:
        """Call every subscriber's ``hook`` method; log (never raise) their errors."""
        for method in self._by_event[hook]:
            try:
                method(**fields)
            except Exception:
                log.exception("hook %s of %r failed", hook, getattr(method, "__self__", method))


global_hooks = Hooks()


def subscribe(subscriber: Any) -> Any:
    """Subscribe to every runtime's events."""
    return global_hooks.subscribe(subscriber)


def unsubscribe(subscriber: Any) -> None:
    global_hooks.unsubscribe(subscriber)


class _Weakly:
    """Forwards the hooks ``subscriber`` has to it while it lives; unsubscribes itself when it dies.

    The global hooks live as long as the process: holding a DataFlow's collector strongly there
    kept every DataFlow (and its pool) alive, closed or not.
    """

    def __init__(self, subscriber: Any, hooks: Hooks):
        self.target = weakref.ref(subscriber, lambda _: hooks.unsubscribe(self))
        for event in EVENTS:
            if callable(getattr(subscriber, event, None)):
                setattr(self, event, self._forwarder(event))

    def _forwarder(self, event: str) -> Any:
        target = self.target

        def forward(**fields: Any) -> None:
            subscriber = target()
            if subscriber is not None:
                getattr(subscriber, event)(**fields)

        return forward

    def __repr__(self) -> str:
        return f"<weakly {self.target()!r}>"


def subscribe_weakly(subscriber: Any) -> Any:
    """Subscribe to every runtime's events without keeping ``subscriber`` alive; returns the handle
    to pass to ``unsubscribe``."""
    return global_hooks.subscribe(_Weakly(subscriber, global_hooks))


class _Fanout:
    """The runtime's own hooks followed by the global ones."""

    __slots__ = ("local",)

    def __init__(self, local: Hooks):
        self.local = local

    def wants(self, event: str) -> bool:
        return bool(self.local._by_event[event] or global_hooks._by_event[event])

    def emit(self, hook: str, /, **fields: Any) -> None:
        # one loop over both lists, calling each method directly: this runs several times per
        # node whenever monitoring is on, so it avoids re-packing the fields per Hooks object
        for method in self.local._by_event[hook] + global_hooks._by_event[hook]:
            try:
                method(**fields)
            except Exception:
                log.exception("hook %s of %r failed", hook, getattr(method, "__self__", method))
