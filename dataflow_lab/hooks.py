"""Hooks: the one link from the runtime to metrics, progress bars and widgets.

A subscriber is any object with some of these methods (or a ``RunHooks``
subclass, whose defaults do nothing); each takes keyword-only arguments and
must accept ``**future`` so that new fields never break it::

    before_workflow(*, run_id, workflow, runtime, **future)
    after_workflow(*, run_id, workflow, results, error, duration, mode, runtime, nodes, **future)
                                                         # mode: the TransactionMode used ("auto" resolved)
    before_node(*, run_id, node_id, node_type, params, **future)
    after_node(*, run_id, node_id, node_type, result, error, duration, rows,
               queries, sql, memory_mb, pool_usage, **future)  # always runs; the last four: when monitored
    transaction(*, run_id, dataflow, event, **future)    # event: "begin" | "commit" | "rollback"
    progress(*, run_id, node_id, done, total, **future)  # bulk chunks
    retry(*, run_id, node_id, attempt, error, delay, **future)
    compensation(*, run_id, node_id, status, error, **future)
    anomaly(*, run_id, node_id, anomaly, **future)      # monitoring: a run far off its baseline
    node_skipped(*, run_id, node_id, node_type, reason, **future)  # a route not taken (routing.py)
    cycle_iteration(*, run_id, nodes, iteration, output, converged, **future)  # after each pass of a cycle

``after_workflow``'s ``nodes`` lists every node run of the run, in the order they
ended (failed attempts included), as ``NodeRecord`` named tuples: a subscriber
that only needs totals (the MetricsCollector) takes them there, in one call per
run, instead of subscribing to ``after_node``. A subscriber whose class sets
``node_records = False`` (the run tracker, ``tracking.py``) does without them:
when no other subscriber wants them, the runtime builds none and passes ``nodes=None``.
A subscriber with ``node_figures = "rss"`` (or ``"tracemalloc"``: the MetricsCollector sets
its database's ``memory_tracking``) gets each node's ``memory_mb`` and ``pool_usage`` ("3/15")
in its records and in ``after_node``; otherwise they are None and cost nothing. ``started`` is a
``time.perf_counter()`` reading; ``queries`` and ``sql`` are counted only on a
monitored database (``query_count.py``).

Where subscribers live: a runtime's own (``LocalRuntime(hooks=[...])``), a
DataFlow's (``db.hooks.subscribe(...)``: every run that touches one of its
models), and the process-wide ones (``hooks.subscribe``, for global tools). A
run reaches all three, in that order, through one ``Fanout``. ``subscribe``
refuses a public method that looks like a misspelled event (``after_nodes``).

Hooks run on the runtime's loop thread, in the order subscribed. They must be
quick (a widget throttles itself); an exception in a subscriber is logged and
never breaks a run.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Iterable
from typing import Any, NamedTuple

from .errors import ValidationError, closest

__all__ = [
    "EVENTS",
    "NODE_RECORD",
    "Fanout",
    "Hooks",
    "NodeRecord",
    "RunHooks",
    "global_hooks",
    "subscribe",
    "subscribe_weakly",
    "unsubscribe",
]

log = logging.getLogger("dataflow_lab.hooks")

EVENTS = (
    "before_workflow", "after_workflow", "before_node", "after_node",
    "transaction", "progress", "retry", "compensation", "anomaly", "node_skipped", "cycle_iteration",
)  # fmt: skip


class NodeRecord(NamedTuple):
    """One node run, as ``after_workflow`` lists them in ``nodes``."""

    node_id: str
    node_class: Any  # the generated Node class (its ``type_name``, ``dataflow``, ``model``)
    started: float  # a time.perf_counter() reading
    duration: float  # seconds
    rows: int | None
    queries: int  # counted on a monitored database only
    sql: list[str] | None  # the statements' text, when the collector captures SQL
    error: BaseException | str | None  # a collector keeps only the message
    memory_mb: float | None = None  # what the node did to the process's memory (process_memory.py)
    pool_usage: str | None = None  # its database's connections in use / capacity at its end, "3/15"

    def with_message(self) -> NodeRecord:
        """This record with its error as its first line (keeping neither the exception nor its frames)."""
        if not isinstance(self.error, BaseException):
            return self
        text = str(self.error) or type(self.error).__name__
        return self._replace(error=text.splitlines()[0][:500])


NODE_RECORD = NodeRecord._fields


class RunHooks:
    """A base class for subscribers: every event, doing nothing. Override the ones you need.

    Only the overridden methods are called (the runtime skips the work of events nobody wants).
    """

    node_records = True  # False: after_workflow may get nodes=None (no NodeRecord is built for it)
    node_figures: str | None = None  # "rss" or "tracemalloc": measure each node's memory and pool use

    def before_workflow(self, *, run_id: str, workflow: Any, runtime: Any, **future: Any) -> None:
        """A run starts."""

    def after_workflow(
        self,
        *,
        run_id: str,
        workflow: Any,
        results: Any,
        error: BaseException | None,
        duration: float,
        mode: str,
        runtime: Any,
        nodes: list[NodeRecord],
        **future: Any,
    ) -> None:
        """A run ended (always called); ``mode``: the TransactionMode it used ("auto" resolved)."""

    def before_node(self, *, run_id: str, node_id: str, node_type: str, params: Any, **future: Any) -> None:
        """A node starts."""

    def after_node(
        self, *, run_id: str, node_id: str, node_type: str, result: Any, error: BaseException | None,
        duration: float, rows: int | None, **future: Any,
    ) -> None:  # fmt: skip
        """A node ended (always called, failed or not)."""

    def transaction(self, *, run_id: str, dataflow: Any, event: str, **future: Any) -> None:
        """A transaction began, committed or rolled back."""

    def progress(self, *, run_id: str, node_id: str, done: int, total: int | None, **future: Any) -> None:
        """A bulk node wrote another chunk."""

    def retry(self, *, run_id: str, node_id: str | None, attempt: int, error: BaseException, delay: float,
              **future: Any) -> None:  # fmt: skip
        """A transient failure is retried after ``delay`` seconds."""

    def compensation(
        self, *, run_id: str, node_id: str, status: str, error: str | None, **future: Any
    ) -> None:
        """A saga compensation ran (``status``: "compensated" or "failed")."""

    def anomaly(self, *, run_id: str, node_id: str, anomaly: Any, **future: Any) -> None:
        """A node ran far off its baseline (monitoring)."""

    def node_skipped(self, *, run_id: str, node_id: str, node_type: str, reason: str, **future: Any) -> None:
        """A route not taken: the node will not run in this run."""

    def cycle_iteration(self, *, run_id: str, nodes: Any, iteration: int, output: Any, converged: bool,
                        **future: Any) -> None:  # fmt: skip
        """A declared cycle finished one pass."""


def _handles(subscriber: Any, event: str) -> bool:
    """Whether ``subscriber`` has its own ``event`` method (a RunHooks default does not count)."""
    if getattr(type(subscriber), event, None) is getattr(RunHooks, event):
        return event in getattr(subscriber, "__dict__", {})  # set on the instance, over the default
    return callable(getattr(subscriber, event, None))


# The events each class has its own methods for, found once per class (a LocalRuntime subscribes
# its run tracker when it is made); an instance adds the events set on it.
_CLASS_EVENTS: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()


def _events_of(subscriber: Any) -> frozenset[str]:
    """The events ``subscriber`` handles (``_handles``, for every event at once)."""
    cls = type(subscriber)
    events = _CLASS_EVENTS.get(cls)
    if events is None:
        own_class = frozenset(e for e in EVENTS if getattr(cls, e, None) is not getattr(RunHooks, e))
        methods = frozenset(e for e in own_class if callable(getattr(cls, e, None)))
        if own_class != methods:  # a property or another attribute that is no method: ask the instance
            return frozenset(e for e in EVENTS if _handles(subscriber, e))
        events = methods
        try:
            _CLASS_EVENTS[cls] = events
        except TypeError:  # pragma: no cover - a class that takes no weak reference
            pass
    own = getattr(subscriber, "__dict__", None)
    if own and not own.keys().isdisjoint(EVENTS):
        events = frozenset(e for e in EVENTS if _handles(subscriber, e))
    return events


# Classes whose methods passed the check: each new instance checks only its own attributes (a
# LocalRuntime subscribes its run tracker when it is made, and the check's difflib is not cheap).
_CHECKED_CLASSES: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _refuse_misspelled(subscriber: Any) -> None:
    """Refuse a public method named like an event but not one (``after_nodes``): it would never run."""
    cls = type(subscriber)
    names = set(getattr(subscriber, "__dict__", ()))
    checked = _CHECKED_CLASSES.get(cls, False)
    if not checked:
        names |= set(dir(cls))
    own = getattr(subscriber, "__dict__", {})
    for name in sorted(names - set(EVENTS)):
        if name.startswith("_"):
            continue
        try:  # never runs a property
            method = own[name] if name in own else inspect.getattr_static(subscriber, name)
        except AttributeError:  # pragma: no cover - dir() listed it
            continue
        if not callable(method) and not isinstance(method, staticmethod | classmethod):
            continue
        match = closest(name, EVENTS)
        if match is not None:
            raise ValidationError(
                f"{subscriber!r} has a method '{name}', which is no hook event. Did you mean '{match}'?",
                hint=f"rename it (the events are: {', '.join(EVENTS)}), or make it private ('_{name}').",
            )
    if not checked:
        try:
            _CHECKED_CLASSES[cls] = True
        except TypeError:  # pragma: no cover - a class that takes no weak reference: checked each time
            pass


class Hooks:
    """An ordered set of subscribers, and the calls that reach them."""

    def __init__(self, subscribers: Iterable[Any] = ()):
        # Reentrant: a finalizer (``weakref.finalize(db, unsubscribe, ...)``) may run during a garbage
        # collection inside subscribe(), and unsubscribe on the same thread.
        self._lock = threading.RLock()
        self._subscribers: tuple[Any, ...] = ()
        self._by_event: dict[str, tuple[Any, ...]] = {e: () for e in EVENTS}
        self._records = False  # whether an after_workflow subscriber wants its ``nodes``
        self._figures: str | None = None  # the first subscriber's node_figures
        self._events: dict[int, frozenset[str]] = {}  # id(subscriber) -> the events it handles
        for subscriber in subscribers:
            self.subscribe(subscriber)

    def subscribe(self, subscriber: Any) -> Any:
        """Add a subscriber (returned, so this works as a decorator for classes' instances)."""
        _refuse_misspelled(subscriber)
        events = _events_of(subscriber)
        if not events:
            raise ValidationError(
                f"{subscriber!r} has none of the hook methods.",
                hint=f"define one or more of: {', '.join(EVENTS)}.",
            )
        with self._lock:
            if subscriber not in self._subscribers:
                self._events[id(subscriber)] = events
                self._subscribers = (*self._subscribers, subscriber)
                self._reindex()
        return subscriber

    def unsubscribe(self, subscriber: Any) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)
            if not any(s is subscriber for s in self._subscribers):
                self._events.pop(id(subscriber), None)
            self._reindex()

    def _reindex(self) -> None:
        while True:  # again if a finalizer changed the subscribers meanwhile
            subscribers = self._subscribers
            handled = [(s, self._events.get(id(s)) or _events_of(s)) for s in subscribers]
            by_event = {e: tuple(getattr(s, e) for s, events in handled if e in events) for e in EVENTS}
            records = any(
                getattr(s, "node_records", True) for s, events in handled if "after_workflow" in events
            )
            figures = next((f for s in subscribers if (f := getattr(s, "node_figures", None))), None)
            if subscribers is self._subscribers:
                self._by_event, self._records, self._figures = by_event, records, figures
                return

    def __contains__(self, subscriber: Any) -> bool:
        return any(s is subscriber for s in self._subscribers)

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def __len__(self) -> int:
        return len(self._subscribers)

    def __repr__(self) -> str:
        return f"<Hooks: {len(self._subscribers)} subscriber(s)>"

    def wants(self, event: str) -> bool:
        return bool(self._by_event[event])

    def emit(self, hook: str, /, **fields: Any) -> None:
        """Call every subscriber's ``hook`` method; log (never raise) their errors."""
        Fanout(self, process_wide=False).emit(hook, **fields)


global_hooks = Hooks()


def subscribe(subscriber: Any) -> Any:
    """Subscribe to every runtime's events, process-wide (a DataFlow's own: ``db.hooks.subscribe``)."""
    return global_hooks.subscribe(subscriber)


def unsubscribe(subscriber: Any) -> None:
    global_hooks.unsubscribe(subscriber)


class _Weakly:
    """Forwards the hooks ``subscriber`` has to it while it lives; unsubscribes itself when it dies.

    The global hooks live as long as the process: holding a subscriber strongly there keeps it
    (and whatever it reaches, e.g. a DataFlow and its pool) alive.
    """

    def __init__(self, subscriber: Any, hooks: Hooks):
        self.target = weakref.ref(subscriber, lambda _: hooks.unsubscribe(self))
        self.node_records = getattr(subscriber, "node_records", True)
        self.node_figures = getattr(subscriber, "node_figures", None)
        for event in EVENTS:
            if _handles(subscriber, event):
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


class Fanout:
    """The hooks one run reaches: ``hooks`` in order (the runtime's own, then those of the DataFlows
    it touches), then the process-wide ones. Each ``Hooks`` is called once, however often given."""

    __slots__ = ("hooks",)

    def __init__(self, *hooks: Hooks | None, process_wide: bool = True):
        chosen = [h for h in hooks if h is not None]
        if process_wide:
            chosen.append(global_hooks)
        self.hooks: tuple[Hooks, ...] = tuple({id(h): h for h in chosen}.values())

    def wants(self, event: str) -> bool:
        for hooks in self.hooks:  # a loop, not any(): this is asked several times per node
            if hooks._by_event[event]:
                return True
        return False

    def wants_records(self) -> bool:
        """Whether a subscriber wants after_workflow's ``nodes`` (NodeRecords, built per node)."""
        for hooks in self.hooks:
            if hooks._records:
                return True
        return False

    def node_figures(self) -> str | None:
        """How the first subscriber that asks wants node memory measured ("rss", "tracemalloc"), or None."""
        for hooks in self.hooks:
            if hooks._figures:
                return hooks._figures
        return None

    def emit(self, hook: str, /, **fields: Any) -> None:
        # calls each method directly: this runs several times per node whenever monitoring is on,
        # so it avoids re-packing the fields per Hooks object
        for hooks in self.hooks:
            for method in hooks._by_event[hook]:
                try:
                    method(**fields)
                except Exception:
                    log.exception("hook %s of %r failed", hook, getattr(method, "__self__", method))
