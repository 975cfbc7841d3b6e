"""The transaction monitor: long-running transactions, deadlocks and rollbacks.

Fed by the runtime's ``transaction`` hook (begin, commit, rollback) and by the
errors that reach ``after_node`` and ``retry``. A transaction still open after
``long_seconds`` is flagged while it is still open (a watchdog timer on the
runtime's loop checks every quarter of the threshold while any transaction is
open), and a warning goes to the log.

A deadlock is an error whose chain holds PostgreSQL's SQLSTATE ``40P01``
(asyncpg's ``DeadlockDetectedError``) or the text "deadlock detected". The
server resolves one by aborting a victim; we count a resolution when the
victim's transaction was then rolled back cleanly or the node was retried.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

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

    kind: str  # "long_transaction" | "deadlock"
    run_id: str
    node_id: str
    at: dt.datetime
    seconds: float | None = None  # how long the transaction had been open
    message: str = ""


class _Open:
    __slots__ = ("run_id", "node_id", "started", "flagged")

    def __init__(self, run_id: str, node_id: str, started: float):
        self.run_id = run_id
        self.node_id = node_id
        self.started = started
        self.flagged = False


class TransactionMonitor:
    """Counts and flags transactions of one database (or of all, in a standalone collector)."""

    def __init__(self, *, long_seconds: float = 5.0, keep: int = 200):
        self.long_seconds = long_seconds
        self.begun = self.commits = self.rollbacks = 0
        self.long_running = self.deadlocks = self.deadlock_resolutions = 0
        self.alerts: deque[TransactionAlert] = deque(maxlen=keep)
        self._open: dict[str, _Open] = {}
        self._deadlocked_runs: set[str] = set()
        self._seen: deque[int] = deque(maxlen=256)  # ids of deadlock errors already counted
        self._watchdog: asyncio.TimerHandle | None = None

    # -- events ------------------------------------------------------------------------
    def begin(self, key: Any, run_id: str, node_id: str) -> None:
        """A transaction began; ``key`` tells it apart (one run may hold one per database)."""
        self._open[key] = _Open(run_id, node_id, time.monotonic())
        self.begun += 1
        if self._watchdog is None:
            self._watch()

    def _watch(self) -> None:
        """Check open transactions every quarter threshold while any are open (one timer, not one each)."""
        self._watchdog = None
        now = time.monotonic()
        for entry in list(self._open.values()):
            if not entry.flagged and now - entry.started >= self.long_seconds:
                self._flag_long(entry)
        if not self._open:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven by hand, outside a loop: flagged when it ends instead
            return
        self._watchdog = loop.call_later(max(self.long_seconds / 4, 0.01), self._watch)

    def end(self, key: Any, event: str) -> None:
        entry = self._open.pop(key, None)
        if event == "commit":
            self.commits += 1
        else:
            self.rollbacks += 1
        if entry is None:
            return
        if not entry.flagged and time.monotonic() - entry.started >= self.long_seconds:
            self._flag_long(entry)
        if event == "rollback" and entry.run_id in self._deadlocked_runs:
            self.deadlock_resolutions += 1
        self._deadlocked_runs.discard(entry.run_id)

    def error(self, run_id: str, node_id: str, error: BaseException | None, *, retried: bool = False) -> None:
        """An error reached a node (or a retry): count it when it is a deadlock."""
        if error is None or not is_deadlock(error) or self._seen_before(error):
            return  # after_node and then retry report the same deadlock: count it once
        self.deadlocks += 1
        if retried:
            self.deadlock_resolutions += 1
        else:
            self._deadlocked_runs.add(run_id)
        message = f"deadlock in node '{node_id}' of run {run_id}: {str(error).splitlines()[0][:200]}"
        self.alerts.append(
            TransactionAlert("deadlock", run_id, node_id, dt.datetime.now(dt.UTC), None, message)
        )
        log.warning("%s", message)

    def _seen_before(self, error: BaseException) -> bool:
        chain, node = [], error
        while node is not None and len(chain) < 20:
            chain.append(id(node))
            node = getattr(node, "cause", None) or node.__cause__ or node.__context__
        if any(i in self._seen for i in chain):
            return True
        self._seen.extend(chain)
        return False

    def workflow_ended(self, run_id: str) -> None:
        """Forget a finished run (a read-only run never begins a transaction, so nothing else would)."""
        self._deadlocked_runs.discard(run_id)

    # -- views -------------------------------------------------------------------------
    def open_transactions(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {"run_id": e.run_id, "node_id": e.node_id, "seconds": round(now - e.started, 3)}
            for e in list(self._open.values())
        ]

    def counts(self) -> dict[str, int]:
        return {
            "begun": self.begun,
            "commits": self.commits,
            "rollbacks": self.rollbacks,
            "open": len(self._open),
            "long_running": self.long_running,
            "deadlocks": self.deadlocks,
            "deadlock_resolutions": self.deadlock_resolutions,
        }

    def _flag_long(self, entry: _Open) -> None:
        if entry.flagged:
            return
        entry.flagged = True
        self.long_running += 1
        seconds = time.monotonic() - entry.started
        message = (
            f"transaction of run {entry.run_id} (begun in node '{entry.node_id}') has been open "
            f"{seconds:.1f}s, over the {self.long_seconds:g}s threshold"
        )
        self.alerts.append(
            TransactionAlert(
                "long_transaction", entry.run_id, entry.node_id, dt.datetime.now(dt.UTC), seconds, message
            )
        )
        log.warning("%s", message)
