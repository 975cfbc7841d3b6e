"""Deadlines: what ``asyncio.timeout`` does, for many short scopes, on one shared timer per loop.

``asyncio.timeout`` arms and cancels a timer per scope (about 8 µs with its bookkeeping), and
every run enters one for itself and one per node, nearly all of which end long before their
limit. Here entering a deadline is a dict insert: one timer per loop fires at the earliest
deadline, cancels the tasks whose deadline passed, and arms itself again for the next one.

``with Deadline(seconds):`` inside a task: when the time passes, the task is cancelled where it
waits, and the ``CancelledError`` leaving the block becomes a ``TimeoutError`` (``.expired``
says whether it was this deadline's), as with ``asyncio.timeout``. ``None``: no limit.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Deadline", "earliest", "interrupting", "passed", "watching"]


class _Watch:
    """The deadlines of one loop, and the one timer that serves them."""

    __slots__ = ("loop", "pending", "timer", "timer_at", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending: dict[int, Deadline] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf

    def add(self, deadline: Deadline) -> None:
        self.pending[id(deadline)] = deadline
        if deadline.when < self.timer_at:
            self._arm(deadline.when)

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        # In a context of its own: armed from inside a run, the timer would keep that run's context
        # (its transaction scope, hooks, collector, and so its DataFlow) alive until it fires.
        self.timer = self.loop.call_at(when, self._fire, context=contextvars.Context())
        self.timer_at = when

    def _fire(self) -> None:
        self.timer, self.timer_at = None, math.inf
        now, after = self.loop.time(), math.inf
        for key, deadline in list(self.pending.items()):
            if deadline.when <= now:
                del self.pending[key]
                deadline.expired = True
                deadline.task.cancel()
            else:
                after = min(after, deadline.when)
        if after < math.inf:
            self._arm(after)


_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = weakref.WeakKeyDictionary()


def watching() -> tuple[int, float]:
    """(deadlines pending on the running loop, the loop time its shared timer fires next: inf if none)."""
    watch = _WATCHES.get(asyncio.get_running_loop())
    return (0, math.inf) if watch is None else (len(watch.pending), watch.timer_at)


def passed(loop: asyncio.AbstractEventLoop, task: asyncio.Task | None) -> bool:
    """Whether a deadline of ``task`` on ``loop`` has passed while its timer could not fire yet.

    Work that runs on the loop thread without awaiting (SQLite's statements, dialects/sqlite.py)
    asks it now and then: the timer fires only once that work gives the loop back.
    """
    watch = _WATCHES.get(loop)
    if watch is None or watch.timer_at > loop.time():
        return False
    now = loop.time()
    return any(d.task is task and d.when <= now for d in list(watch.pending.values()))


def earliest(task: asyncio.Task) -> float | None:
    """The loop time (``time.monotonic()``) of ``task``'s nearest pending deadline; None: it has none."""
    watch = _WATCHES.get(task.get_loop())
    if watch is None:
        return None
    whens = [d.when for d in list(watch.pending.values()) if d.task is task]
    return min(whens) if whens else None


class _Watchdog:
    """One daemon thread that calls ``interrupt`` of work blocking a loop's thread once its time passes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # add and remove take it directly (a Condition's `with` is Python)
        self.cond = threading.Condition(self.lock)
        self.waiting: dict[int, tuple[float, Callable[[], Any]]] = {}
        self.keys = itertools.count()
        self.thread: threading.Thread | None = None
        self.wakes_at = math.inf  # when the thread wakes next: only an earlier deadline wakes it sooner

    def add(self, when: float, interrupt: Callable[[], Any]) -> int:
        with self.lock:
            key = next(self.keys)
            self.waiting[key] = (when, interrupt)
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="dataflow-lab-watchdog", daemon=True)
                self.thread.start()
            elif when < self.wakes_at:
                self.wakes_at = when
                self.cond.notify()
        return key

    def remove(self, key: int) -> None:
        with self.lock:
            self.waiting.pop(key, None)

    def _watch(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                for key, (when, interrupt) in list(self.waiting.items()):
                    if when <= now:
                        del self.waiting[key]
                        try:
                            interrupt()
                        except Exception:  # the work ended meanwhile: nothing to stop
                            pass
                nearest = min((w for w, _ in self.waiting.values()), default=math.inf)
                self.wakes_at = nearest
                self.cond.wait(None if nearest == math.inf else max(0.0, nearest - now))


_WATCHDOG = _Watchdog()


class interrupting:  # noqa: N801 - used as a function: `with interrupting(when, interrupt):`
    """Around a call that blocks this thread's loop: ``interrupt()`` from another thread at ``when``
    (``time.monotonic()``; None: never), so that a deadline still stops it (see ``earliest``).
    A class, not a generator: it is entered around every inline statement."""

    __slots__ = ("when", "interrupt", "key")

    def __init__(self, when: float | None, interrupt: Callable[[], Any]):
        self.when, self.interrupt = when, interrupt
        self.key: int | None = None

    def __enter__(self) -> None:
        if self.when is not None:
            self.key = _WATCHDOG.add(self.when, self.interrupt)

    def __exit__(self, *exc: object) -> None:
        if self.key is not None:
            _WATCHDOG.remove(self.key)


class Deadline:
    """``with Deadline(seconds):`` in a task: a ``TimeoutError`` once ``seconds`` pass (None: never)."""

    __slots__ = ("seconds", "when", "task", "expired", "_watch", "_cancelling")

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.expired = False

    def __enter__(self) -> Deadline:
        if self.seconds is None:
            return self
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None, "a deadline is entered inside a task"
        watch = _WATCHES.get(loop)
        if watch is None:
            watch = _WATCHES[loop] = _Watch(loop)
        self.when, self.task, self._watch = loop.time() + self.seconds, task, watch
        self._cancelling = task.cancelling()
        watch.add(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.seconds is None:
            return
        self._watch.pending.pop(id(self), None)  # the timer may still fire for it: it finds nothing
        if self.expired and self.task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
