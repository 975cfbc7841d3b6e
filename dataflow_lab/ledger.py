"""Each database's own account of its transactions: begun, committed, rolled back, open now.

Kept by the transaction scopes themselves, like the pool's counters: a dict
insert and pop per transaction, whether or not anyone is monitoring. The
transaction monitor reads it (counts, open transactions, ones that ran long)
instead of subscribing to two hook calls per transaction; the ``transaction``
hook still fires for any subscriber that wants each event.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["TransactionLedger"]


class TransactionLedger:
    __slots__ = ("begun", "commits", "rollbacks", "open", "on_open", "long_seconds", "overdue")

    def __init__(self) -> None:
        self.begun = self.commits = self.rollbacks = 0
        self.open: dict[Any, tuple[str, str, float]] = {}  # key -> (run_id, node_id, monotonic start)
        # set by a watcher: called (once) by the next begin, so an idle watcher needs no timer
        self.on_open: Callable[[], None] | None = None
        # transactions that ended after running at least long_seconds (None: nobody is watching)
        self.long_seconds: float | None = None
        self.overdue: deque[tuple[Any, tuple[str, str, float], float]] = deque(maxlen=1000)

    def begin(self, key: Any, run_id: str, node_id: str) -> None:
        self.open[key] = (run_id, node_id, time.monotonic())
        self.begun += 1
        if self.on_open is not None:
            wake, self.on_open = self.on_open, None
            wake()

    def end(self, key: Any, committed: bool) -> None:
        if committed:
            self.commits += 1
        else:
            self.rollbacks += 1
        entry = self.open.pop(key, None)
        if entry is not None and self.long_seconds is not None:
            seconds = time.monotonic() - entry[2]
            if seconds >= self.long_seconds:
                self.overdue.append((key, entry, seconds))

    def __repr__(self) -> str:
        return (
            f"<TransactionLedger begun={self.begun} commits={self.commits} "
            f"rollbacks={self.rollbacks} open={len(self.open)}>"
        )
