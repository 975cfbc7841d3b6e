"""The transaction monitor: long-running transactions, deadlocks and rollbacks.

Counts come from the database's transaction ledger (``ledger.py``), which the
transaction scopes keep themselves; a standalone collector, which watches every
database, feeds a ledger of its own from the ``transaction`` hook. Deadlocks
come from the errors that reach ``after_node`` and ``retry``. A transaction
still open after ``long_seconds`` is flagged while it is still open (a watchdog
timer on the runtime's loop checks every quarter of the threshold while any
transaction is open; the first begin after an idle spell wakes it), or when it
ends if it ended between two checks; a warning goes to the log.

Lock waits (PostgreSQL): while a transaction has been open ``lock_wait_seconds``
(``lock_wait_threshold``, 5 s), the same watchdog asks the database, on a pooled
connection of its own and one question at a time, whether that transaction's
connection waits on a lock (``pg_locks.waitstart``) that long; each wait is
flagged once, naming the run, the node, the lock and who holds it.

A deadlock is an error whose chain holds PostgreSQL's SQLSTATE ``40P01``
(asyncpg's ``DeadlockDetectedError``) or the text "deadlock detected". The
server resolves one by aborting a victim; we count a resolution when the
victim's transaction was then rolled back cleanly or the node was retried.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import _loop
from .ledger import TransactionLedger

# (connections, threshold) -> (index of the connection, seconds waited, when the wait began, what it waits on)
FindLockWaits = Callable[[Sequence[Any], float], Awaitable[list[tuple[int, float, float, str]]]]

__all__ = ["TransactionAlert", "TransactionMonitor", "is_deadlock"]

log = logging.getLogger("dataflow_lab.monitoring")

DEADLOCK_SQLSTATE = "40P01"


def is_deadlock(error: BaseException | None) -> bool:
    """True when ``error`` or anything in its cause/context chain is a database deadlock."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "sqlstate", None) == DEADLOCK_SQLSTATE or getattr(error, "pgcode", None) == (
            DEADLOCK_SQLSTATE
        ):
            return True
        if "deadlock detected" in str(error).lower():
            return True
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return False


@dataclass(frozen=True)
class TransactionAlert:
    """Something the monitor flagged: a long-running transaction or a deadlock."""

    kind: str  # "long_transaction" | "deadlock" | "lock_wait"
    run_id: str
    node_id: str
    at: dt.datetime
    seconds: float | None = None  # how long the transaction had been open
    message: str = ""


class TransactionMonitor:
    """Counts and flags the transactions of one ledger: one database's, or a standalone collector's own."""

    def __init__(
        self,
        *,
        long_seconds: float = 5.0,
        keep: int = 200,
        ledger: TransactionLedger | None = None,
        lock_wait_seconds: float | None = None,
        find_lock_waits: FindLockWaits | None = None,
    ):
        self.ledger = ledger if ledger is not None else TransactionLedger()
        # lock waits: the database's open transactions whose connection waits on a lock this long
        # (PostgreSQL's pg_locks, asked by find_lock_waits only while a transaction is that old)
        self.lock_wait_seconds = lock_wait_seconds if find_lock_waits is not None else None
        self.find_lock_waits = find_lock_waits
        self.lock_waits = 0
        self._lock_task: asyncio.Task | None = None
        self._waits_seen: set[tuple[int, float]] = set()  # (id of the transaction, when its wait began)
        # counts start from zero here, whatever the ledger had counted before
        self._base = (self.ledger.begun, self.ledger.commits, self.ledger.rollbacks)
        self.long_running = self.deadlocks = self.deadlock_resolutions = 0
        self.alerts: deque[TransactionAlert] = deque(maxlen=keep)
        self._flagged: set[Any] = set()  # keys of open transactions already flagged
        self.deadlocked_runs: set[str] = set()  # runs that met a deadlock (the collector reads it)
        self._seen: deque[int] = deque(maxlen=256)  # ids of deadlock errors already counted
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self.long_seconds = long_seconds
        self.ledger.overdue.clear()
        self.ledger.on_open = self._watch

    @property
    def long_seconds(self) -> float:
        return self._long_seconds

    @long_seconds.setter
    def long_seconds(self, seconds: float) -> None:
        self._long_seconds = seconds
        self.ledger.long_seconds = seconds

    @property
    def begun(self) -> int:
        return self.ledger.begun - self._base[0]

    @property
    def commits(self) -> int:
        return self.ledger.commits - self._base[1]

    @property
    def rollbacks(self) -> int:
        return self.ledger.rollbacks - self._base[2]

    def close(self) -> None:
        """Stop watching (the collector was detached or reset)."""
        self._closed = True
        if self.ledger.on_open == self._watch:
            self.ledger.on_open = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._lock_task is not None:
            self._lock_task.cancel()

    # -- events ------------------------------------------------------------------------
    def begin(self, key: Any, run_id: str, node_id: str) -> None:
        """A transaction began (standalone collectors, from the hook); ``key`` tells it apart."""
        self.ledger.begin(key, run_id, node_id)

    def end(self, key: Any, event: str) -> None:
        self.ledger.end(key, event == "commit")

    def _watch(self) -> None:
        """Check open transactions every quarter threshold while any are open (one timer, not one each)."""
        if (
            _loop.elsewhere()
        ):  # woken by a run on its caller's thread (runtime.py): watch from the background loop
            _loop.loop().call_soon_threadsafe(self._watch, context=contextvars.Context())
            return
        self._watchdog = None
        if self._closed:
            return
        self._check()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven by hand, outside a loop: flagged when it ends instead
            loop = None
        if loop is None or not self.ledger.open:
            self.ledger.on_open = self._watch  # idle: the next begin wakes us
            return
        # in a context of its own: never keep the scope of the run that woke it (and what it reaches)
        every = min(self.long_seconds, self.lock_wait_seconds or self.long_seconds) / 4
        self._watchdog = loop.call_later(max(every, 0.01), self._watch, context=contextvars.Context())
        if self.lock_wait_seconds is not None:
            self._check_lock_waits(loop)

    def _check(self) -> None:
        ledger, now = self.ledger, time.monotonic()
        while ledger.overdue:
            key, (run_id, node_id, _), seconds = ledger.overdue.popleft()
            if key not in self._flagged:
                self._flag_long(run_id, node_id, seconds)
            self._flagged.discard(key)
        for key, (run_id, node_id, started) in list(ledger.open.items()):
            if key not in self._flagged and now - started >= self.long_seconds:
                self._flagged.add(key)
                self._flag_long(run_id, node_id, now - started)
        if self._flagged:
            self._flagged &= ledger.open.keys()

    def _check_lock_waits(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ask the database about the connections of transactions open past the lock-wait threshold."""
        assert self.lock_wait_seconds is not None and self.find_lock_waits is not None
        if self._lock_task is not None and not self._lock_task.done():
            return  # one question at a time
        now, threshold = time.monotonic(), self.lock_wait_seconds
        old = [(key, entry) for key, entry in list(self.ledger.open.items())
               if now - entry[2] >= threshold and getattr(key, "conn", None) is not None]  # fmt: skip
        if old:
            self._lock_task = loop.create_task(self._ask_lock_waits(old), context=contextvars.Context())

    async def _ask_lock_waits(self, old: list[tuple[Any, tuple[str, str, float]]]) -> None:
        assert self.lock_wait_seconds is not None and self.find_lock_waits is not None
        try:
            waits = await self.find_lock_waits([key.conn for key, _ in old], self.lock_wait_seconds)
        except Exception:  # the monitor must never disturb a run
            log.debug("looking for lock waits failed", exc_info=True)
            return
        for index, seconds, began, detail in waits:
            key, (run_id, node_id, _) = old[index]
            if self._closed or (id(key), began) in self._waits_seen:
                continue
            self._waits_seen.add((id(key), began))
            if len(self._waits_seen) > 1000:
                self._waits_seen.clear()
            self._flag_lock_wait(run_id, node_id, seconds, detail)

    def _flag_lock_wait(self, run_id: str, node_id: str, seconds: float, detail: str) -> None:
        self.lock_waits += 1
        self._alert("lock_wait", run_id, node_id, seconds,
                    f"run {run_id} (node '{node_id}') has waited {seconds:.1f}s for a lock, over the "
                    f"{self.lock_wait_seconds:g}s threshold: {detail}")  # fmt: skip

    def _alert(self, kind: str, run_id: str, node_id: str, seconds: float, message: str) -> None:
        self.alerts.append(TransactionAlert(kind, run_id, node_id, dt.datetime.now(dt.UTC), seconds, message))
        log.warning("%s", message)

    def error(
        self, run_id: str, node_id: str, error: BaseException | str | None, *, retried: bool = False
    ) -> None:
        """An error reached a node (or a retry): count it when it is a deadlock (a message alone: never)."""
        if not isinstance(error, BaseException) or not is_deadlock(error) or self._seen_before(error):
            return  # after_node and then retry report the same deadlock: count it once
        self.deadlocks += 1
        if retried:
            self.deadlock_resolutions += 1
        else:
            self.deadlocked_runs.add(run_id)
        message = f"deadlock in node '{node_id}' of run {run_id}: {str(error).splitlines()[0][:200]}"
        self.alerts.append(
            TransactionAlert("deadlock", run_id, node_id, dt.datetime.now(dt.UTC), None, message)
        )
        log.warning("%s", message)

    def _seen_before(self, error: BaseException) -> bool:
        chain: list[int] = []
        node: BaseException | None = error
        while node is not None and len(chain) < 20:
            chain.append(id(node))
            node = getattr(node, "cause", None) or node.__cause__ or node.__context__
        if any(i in self._seen for i in chain):
            return True
        self._seen.extend(chain)
        return False

    def workflow_ended(self, run_id: str) -> None:
        """A run ended: a deadlock victim's run was rolled back by then, so its deadlock is resolved."""
        if run_id in self.deadlocked_runs:
            self.deadlocked_runs.discard(run_id)
            self.deadlock_resolutions += 1

    # -- views -------------------------------------------------------------------------
    def open_transactions(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {"run_id": run_id, "node_id": node_id, "seconds": round(now - started, 3)}
            for run_id, node_id, started in list(self.ledger.open.values())
        ]

    def counts(self) -> dict[str, int]:
        self._check()
        return {
            "begun": self.begun,
            "commits": self.commits,
            "rollbacks": self.rollbacks,
            "open": len(self.ledger.open),
            "long_running": self.long_running,
            "deadlocks": self.deadlocks,
            "deadlock_resolutions": self.deadlock_resolutions,
            "lock_waits": self.lock_waits,
        }

    def _flag_long(self, run_id: str, node_id: str, seconds: float) -> None:
        self.long_running += 1
        self._alert("long_transaction", run_id, node_id, seconds,
                    f"transaction of run {run_id} (begun in node '{node_id}') has been open "
                    f"{seconds:.1f}s, over the {self.long_seconds:g}s threshold")  # fmt: skip
