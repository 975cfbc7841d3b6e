"""Health that probes: ping the pool's idle connections, discard dead ones, record the outcome.

``db.health()`` runs a probe now; with ``health_check_interval`` (seconds, preset 60, ``None``
turns it off) a task on the runtime's background loop probes on its own, so a connection the
server killed (``pg_terminate_backend``, a restart, an idle timeout) is discarded before a run
meets it. ``pool_status()["health_status"]`` and the dashboard read the latest probe.

The same task opens ``min_connections`` (presets 1 / 5 / 25, capped by ``pool_size``) at the
database's first use, in the background, and tops them up after each probe, so concurrent runs
find connections already made.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

from .errors import DataFlowError

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow
    from .records import HealthReport

__all__ = ["HealthMonitor", "HealthReport"]

log = logging.getLogger("dataflow_lab.health")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _ping_through_dialect(dialect: Any) -> None:
    conn = await dialect.acquire()
    try:
        await conn.fetch("SELECT 1")
    finally:
        await dialect.release(conn)


async def _ping_engine_connection(engine: Any) -> bool:
    """True if a pooled connection answered; a dead one is invalidated (discarded) instead."""
    from sqlalchemy.util import greenlet_spawn  # the pool's connections are the async driver's, adapted

    handle = await greenlet_spawn(engine.raw_connection)
    try:
        await greenlet_spawn(_select_one, handle)
        return True
    except Exception:
        log.info("health probe: a pooled connection is dead; discarding it", exc_info=True)
        try:
            await greenlet_spawn(handle.invalidate)
        except Exception:  # noqa: BLE001 - the connection is gone either way
            log.debug("invalidating a dead connection failed", exc_info=True)
        return False
    finally:
        await greenlet_spawn(handle.close)  # back to the pool (an invalidated one is let go)


def _select_one(handle: Any) -> None:
    cursor = handle.cursor()
    try:
        cursor.execute("SELECT 1")
        cursor.fetchall()
    finally:
        cursor.close()


async def _ping_idle(dialect: Any) -> tuple[int, int]:
    """Ping every idle pooled connection (then one more, so the database itself is tried).

    The idle ones are checked out together (the pool hands out the most recently used first,
    so one at a time would ping the same one again). Returns (pinged, discarded); raises when no
    connection could be made at all.
    """
    engine = dialect.engine
    idle = engine.pool.checkedin() if callable(getattr(engine.pool, "checkedin", None)) else 0
    answered = await asyncio.gather(*(_ping_engine_connection(engine) for _ in range(max(1, idle))))
    pinged, discarded = len(answered), answered.count(False)
    if discarded and discarded == pinged:  # every one was dead: does a fresh connection work?
        pinged += 1
        if not await _ping_engine_connection(engine):
            raise ConnectionError("a fresh connection did not answer SELECT 1")
    if discarded:
        dialect.stats["invalidated"] = dialect.stats.get("invalidated", 0) + discarded
    return pinged, discarded


async def probe(dialect: Any, timeout: float) -> HealthReport:
    from .records import HealthReport

    start = time.perf_counter()
    try:
        if getattr(dialect, "engine", None) is not None and not dialect.serialized:
            pinged, discarded = await asyncio.wait_for(_ping_idle(dialect), timeout)
        else:
            await asyncio.wait_for(_ping_through_dialect(dialect), timeout)
            pinged, discarded = 1, 0
    except Exception as exc:  # noqa: BLE001 - the probe's job is to report it
        message = dialect.scrub(str(exc) or type(exc).__name__)
        return HealthReport("down", None, message, _now())
    latency = (time.perf_counter() - start) * 1000
    status = "degraded" if discarded else "ok"
    error = f"discarded {discarded} dead connection(s)" if discarded else None
    return HealthReport(status, round(latency, 3), error, _now(), pinged, discarded)


class HealthMonitor:
    """The latest probe of one DataFlow and the background task that refreshes it."""

    def __init__(self, dataflow: DataFlow):
        self._dataflow = weakref.ref(dataflow)
        self.last: HealthReport | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None
        self.warming: asyncio.Future | None = None  # connections being opened (min_connections)

    @property
    def interval(self) -> float | None:
        db = self._dataflow()
        return None if db is None else db.config.health_check_interval

    async def check(self) -> HealthReport:
        db = self._dataflow()
        if db is None:  # pragma: no cover - the DataFlow itself asks, so it is alive
            raise DataFlowError("The DataFlow this health monitor probes was closed and collected.")
        timeout = min(10.0, db.config.pool_timeout or 10.0)
        try:
            dialect = await db.database.open()
        except Exception as exc:  # noqa: BLE001 - could not even open: the database is down
            from .records import HealthReport

            report = HealthReport("down", None, str(exc), _now())
        else:
            report = await probe(dialect, timeout)
        return self._record(report)

    def _record(self, report: HealthReport) -> HealthReport:
        """Keep the report; log a change of status (a WARNING when it gets worse than before).

        The first probe runs at the first use, beside the run that opened the database: when it
        finds the database down, that run says so itself, so the probe logs it at INFO only.
        """
        if report.error:
            self.last_error = report.error
        report = dataclasses.replace(report, last_error=self.last_error)
        previous, self.last = self.last, report
        if previous is None:
            if report.status != "ok":
                log.info("health check: %r", report)
        elif report.status != previous.status:
            level = logging.INFO if report.status == "ok" else logging.WARNING
            log.log(level, "health check: %r (was %s)", report, previous.status)
        return report

    def start(self) -> None:
        """Open ``min_connections`` and begin periodic probing, on the running loop (once)."""
        db = self._dataflow()
        if db is None or self._task is not None:
            return
        if self.interval is None and db.config.min_connections <= 1:
            return  # the first use opens the one connection itself
        # in a context of its own: the run whose first use started it must not live on in the task
        # (its transaction scope reaches the DataFlow's hooks, and so the DataFlow)
        keep = _maintain(self._dataflow, self.interval)
        self._task = asyncio.get_running_loop().create_task(keep, context=contextvars.Context())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def settle(self) -> None:
        """Wait for connections being opened to reach the pool (before it is disposed of)."""
        warming, self.warming = self.warming, None
        if warming is not None and not warming.done():
            await asyncio.wait([warming])

    def status_word(self) -> str:
        return self.last.status if self.last is not None else "unknown"


async def _warm(db: DataFlow) -> None:
    """Open connections until ``min_connections`` are open (at first use, and after each probe)."""
    if db.config.min_connections <= 1:
        return  # the run that opened the database made that one (warming beside it would add one)
    monitor = db.database.health
    # shielded: a close() meanwhile waits for these connections (settle), then closes them with the pool
    monitor.warming = warming = asyncio.ensure_future(db.database.dialect.warm(db.config.min_connections))
    warming.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if abandoned
    try:
        opened = await asyncio.shield(warming)
    except Exception:  # noqa: BLE001 - warming is an optimisation: the next acquire connects anyway
        log.debug("opening warm connections failed", exc_info=True)
        return
    if opened:
        log.debug("opened %d warm connection(s) for %r", opened, db)


async def _maintain(ref: weakref.ref, interval: float | None) -> None:
    """Warm the pool at once, then probe (and warm again) every ``interval`` seconds (None: never).

    No probe at the first use: with the first run holding the one connection, pinging would open
    another beside it.
    """
    first = True
    while True:
        db = ref()
        if db is None or db.database.closed:
            return
        try:
            report = None if first else await db.database.health.check()
            if report is None or report.status != "down":
                await _warm(db)  # and replace the connections the probe discarded
        except Exception:  # noqa: BLE001 - a probe must never kill the loop's task
            log.debug("health probe failed", exc_info=True)
        del db  # hold no strong reference while sleeping
        if interval is None:
            return
        first = False
        await asyncio.sleep(interval)


def __getattr__(name: str) -> Any:
    if name == "HealthReport":  # made at the first read, in records.py
        from .records import HealthReport

        return HealthReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
