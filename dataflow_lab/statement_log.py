"""The slow-statement log: statements that took ``slow_query_threshold`` seconds or more.

Every connection times the statements it sends (two ``perf_counter`` calls) and
hands one that ran long to its database's ``StatementLog``, which keeps the last
``keep`` of them: the SQL as sent, which binds its values as parameters, so no
value is kept; how long it took; the run and node it ran for (``ACTIVE_SCOPE``);
the error, if it failed (a statement timeout, a lock it gave up on). On databases
that can explain (PostgreSQL, DuckDB) the statement's plan is added afterwards,
off the run, by one task on the runtime's loop that takes a connection of its
own: PostgreSQL's generic plan (parameters shown as ``$1``); DuckDB's plan
with the statement's values written back as their placeholders. A plan is
asked for once per distinct statement. ``db.slow_statements()`` and
``db.metrics()`` show the log; a warning goes to the ``dataflow_lab.monitoring`` logger.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import re
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import _loop
from .query_count import ACTIVE_SCOPE

if TYPE_CHECKING:  # pragma: no cover
    from .records import SlowStatement

__all__ = ["SlowStatement", "StatementLog", "explainable", "placeholder_count", "without_values"]

log = logging.getLogger("dataflow_lab.monitoring")

KEEP = 100  # slow statements kept per database
PLANS = 100  # plans kept per database, by statement text
_EXPLAINABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "MERGE")

Explain = Callable[[str, Sequence[Any] | None], Awaitable[str]]


def explainable(sql: str) -> bool:
    """Whether ``sql`` is a statement EXPLAIN takes (not DDL, COPY, BEGIN...)."""
    return sql.lstrip().split(None, 1)[0].upper() in _EXPLAINABLE if sql.strip() else False


def placeholder_count(sql: str) -> int:
    """How many numbered parameters ($1, $2...) a statement takes."""
    return max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)


def without_values(plan: str, params: Sequence[Any] | None) -> str:
    """A plan with each parameter's value (as a whole token, quoted or not) replaced by ``?``."""
    for value in sorted({str(v) for v in params or () if v is not None and not isinstance(v, bool)}, key=len,
                        reverse=True):  # fmt: skip
        if value:
            plan = re.sub(rf"(?<![\w.])'?{re.escape(value)}'?(?![\w.])", "?", plan)
    return plan


class StatementLog:
    """The slow statements of one database (``threshold`` seconds; ``explain``: the dialect's, or None)."""

    def __init__(self, threshold: float, *, explain: Explain | None = None, keep: int = KEEP):
        self.threshold = threshold
        self.explain = explain
        self.total = 0  # slow statements seen since the start (the log keeps the last ``keep``)
        self._entries: deque[list[Any]] = deque(maxlen=keep)  # [sql, seconds, at, run, node, error, plan]
        self._plans: OrderedDict[str, str] = OrderedDict()
        self._queue: deque[tuple[list[Any], Sequence[Any] | None]] = deque(maxlen=10)
        self._worker: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"<StatementLog: {self.total} statement(s) over {self.threshold:g}s>"

    def took(
        self, sql: str, seconds: float, params: Sequence[Any] | None, error: BaseException | None
    ) -> None:
        """A connection's statement took ``seconds`` (called for those over the threshold only)."""
        scope = ACTIVE_SCOPE.get()
        text = " ".join(sql.split())
        message = None if error is None else (str(error) or type(error).__name__).splitlines()[0][:300]
        entry = [text, round(seconds, 6), dt.datetime.now(dt.UTC), getattr(scope, "run_id", None),
                 getattr(scope, "node_id", None) or None, message, self._plans.get(text)]  # fmt: skip
        self._entries.append(entry)
        self.total += 1
        where = f" in node '{entry[4]}' of run {entry[3]}" if entry[3] else ""
        log.warning("slow statement (%.3f s, over %gs)%s: %s", seconds, self.threshold, where, text[:500])
        if entry[6] is None and self.explain is not None and explainable(text):
            self._queue.append((entry, params))
            self._start_worker()

    def entries(self, run_id: str | None = None) -> list[SlowStatement]:
        """The slow statements kept, oldest first (only ``run_id``'s when given)."""
        from .records import SlowStatement

        return [SlowStatement(*e) for e in list(self._entries) if run_id is None or e[3] == run_id]

    def close(self) -> None:
        """Explain nothing more (the database is closing); an EXPLAIN under way finishes."""
        self.explain = None
        self._queue.clear()

    async def aclose(self) -> None:
        """``close()``, then wait for an EXPLAIN under way to give its connection back (cancelling
        it could leave the connection checked out of a pool that is about to be disposed of)."""
        self.close()
        worker = self._worker
        if worker is not None and worker.get_loop() is asyncio.get_running_loop():
            await asyncio.gather(worker, return_exceptions=True)

    # -- plans, off the run ------------------------------------------------------------
    def _start_worker(self) -> None:
        if self._worker is not None and not self._worker.done():
            return
        if _loop.elsewhere():  # a run on its caller's thread (runtime.py): explain on the background loop
            _loop.loop().call_soon_threadsafe(self._start_worker, context=contextvars.Context())
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a statement sent outside any loop: no plan
            return
        # a context of its own: never the run's scope (its query counts, its transaction)
        self._worker = loop.create_task(self._explain_queued(), context=contextvars.Context())

    async def _explain_queued(self) -> None:
        while self._queue and self.explain is not None:
            entry, params = self._queue.popleft()
            text = entry[0]
            plan = self._plans.get(text)
            if plan is None:
                try:
                    plan = await self.explain(text, params)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    plan = f"(not explained: {(str(exc) or type(exc).__name__).splitlines()[0][:200]})"
                self._plans[text] = plan
                while len(self._plans) > PLANS:
                    self._plans.popitem(last=False)
            for other in list(self._entries):
                if other[0] == text and other[6] is None:
                    other[6] = plan


def __getattr__(name: str) -> Any:
    if name == "SlowStatement":  # made at the first read, in records.py
        from .records import SlowStatement

        return SlowStatement
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
