"""The connection source of the databases whose driver SQLAlchemy pools (SQLite, PostgreSQL, MySQL).

``PooledDialect`` checks connections out of a SQLAlchemy engine's pool and back: it serializes
them where the database has one writer, lets one thread claim the database for a run on its own
loop, counts what monitoring shows (``pool_status``, ``pool_usage``), and turns a failed connect
into a ``ConnectionError`` that says what was wrong.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import sqlalchemy as sa

from ..config import DataFlowConfig
from ..errors import ConnectionError, PoolExhaustedError
from ..leaks import owner
from .base import Dialect
from .connection import Connection, statement_note

log = logging.getLogger("dataflow_lab.sql")


class PooledDialect(Dialect):
    """A dialect whose connections come from a SQLAlchemy engine's pool (the asyncio driver's)."""

    def __init__(self, config: DataFlowConfig, url: str):
        super().__init__(config, url)
        self.engine: sa.engine.Engine | None = None  # its pool gives the driver's async connections
        self._serial_lock: asyncio.Lock | None = None
        # held by the thread running a run on its own loop, or by the connection out on the background loop
        self._claim = threading.Lock() if self.runs_on_any_thread else None
        self._claimed_by: int | None = None  # the thread that claimed it (runtime.py)
        self._checkouts: dict[int, Any] = {}
        self._owners: dict[int, tuple[str, str]] = {}  # (run id, node id) a connection is out for
        self._usages: tuple[str, ...] = ()  # "0/15" ... "15/15", made at the first pool_usage()
        self.stats = {"waiting": 0, "acquired_total": 0, "failures": 0, "invalidated": 0}

    @property
    def single_connection(self) -> bool:
        return False

    def engine_url(self) -> str:
        raise NotImplementedError

    def engine_options(self) -> dict[str, Any]:
        return {}

    def wrap(self, driver_connection: Any) -> Connection:
        raise NotImplementedError

    def prepare(self) -> None:
        """Create the engine (no connection yet; the first one is made at the first acquire)."""
        if self.engine is None:
            engine = self._create_engine()
            self._install_events(engine)
            self.engine = engine

    def _create_engine(self) -> Any:
        """The engine that owns the pool, with the driver's asyncio dialect (SQLite overrides it).

        What ``create_async_engine`` makes, without the ``AsyncEngine`` around it: its sync engine,
        whose pool hands out the async driver's connections inside a greenlet (``_pool_connect``).
        We never used the wrapper's API, and ``sqlalchemy.ext.asyncio`` imports the ORM: about
        60 ms of a process's first run (cold start).
        """
        return sa.create_engine(self.engine_url(), _is_async=True, **self.engine_options())

    async def open(self) -> None:
        self.prepare()

    def _install_events(self, sync_engine: sa.engine.Engine) -> None:
        pass

    async def acquire(self) -> Connection:
        if self._claimed_by == threading.get_ident():  # a run on this thread holds the database
            conn = await self._checkout()
            self.stats["acquired_total"] += 1
            return conn
        self.stats["waiting"] += 1
        try:
            if self.serialized:
                if self._serial_lock is None:
                    self._serial_lock = asyncio.Lock()
                await self._serial_lock.acquire()
            try:
                if self._claim is not None:  # a run on another thread may hold the database: wait
                    delay = 0.0002
                    while not self._claim.acquire(blocking=False):
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 0.01)
                try:
                    conn = await self._checkout()
                except BaseException:
                    if self._claim is not None:
                        self._claim.release()
                    raise
            except BaseException:
                if self._serial_lock is not None and self.serialized:
                    self._serial_lock.release()
                raise
        finally:
            self.stats["waiting"] -= 1
        self.stats["acquired_total"] += 1
        return conn

    def claim(self) -> bool:
        if self._claim is None or not self._claim.acquire(blocking=False):
            return False
        self._claimed_by = threading.get_ident()
        return True

    def unclaim(self) -> None:
        assert self._claim is not None
        self._claimed_by = None
        self._claim.release()

    async def _connect(self) -> Any:
        """A pooled connection; a connect that found the database busy (busy_at_connect) is tried again."""
        delay, deadline = 0.005, time.monotonic() + (self.config.pool_timeout or 30.0)
        while True:
            try:
                return await self._pool_connect()
            except Exception as exc:
                if not self.busy_at_connect(exc) or time.monotonic() + delay > deadline:
                    raise
                log.debug("database busy while connecting; trying again in %.3f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _pool_connect(self) -> Any:
        """A connection out of the pool: the handle ``_pool_return`` gives back.

        The pool's own connection record, taken in one greenlet switch: an ``AsyncConnection``
        (``engine.connect()``) cost three switches and a SQLAlchemy Connection per run, unused.
        A failed connect is wrapped as ``engine.connect()`` wraps it (``sa.exc.DBAPIError``).
        """
        from sqlalchemy.util import greenlet_spawn

        assert self.engine is not None, "prepare() made the engine"
        sync_engine = self.engine
        try:
            return await greenlet_spawn(sync_engine.raw_connection)
        except sa.exc.TimeoutError:
            raise
        except Exception as exc:
            dbapi = sync_engine.dialect.loaded_dbapi
            if isinstance(exc, sa.exc.StatementError) or not isinstance(exc, dbapi.Error):
                raise
            raise sa.exc.DBAPIError.instance(None, None, exc, dbapi.Error) from exc

    async def _driver_connection(self, handle: Any) -> Any:
        """The driver's own connection under a pool handle."""
        return handle.driver_connection

    async def _pool_return(self, handle: Any, *, invalidate: bool = False) -> None:
        """Give a handle back to the pool (``invalidate``: the connection is dead or unsure, drop it)."""
        from sqlalchemy.util import greenlet_spawn

        await greenlet_spawn(handle.invalidate if invalidate else handle.close)

    async def _checkout(self) -> Connection:
        try:
            handle = await self._connect()
            try:
                conn = self.wrap(await self._driver_connection(handle))
                conn.note = statement_note(self.config.echo, self.observe)
                conn.statements = self.statements
            except BaseException:
                await self._pool_return(handle)
                raise
        except Exception as exc:
            if isinstance(exc, sa.exc.TimeoutError):  # the pool is full, the database may be fine
                raise self.pool_exhausted() from None
            self.stats["failures"] += 1
            if isinstance(exc, asyncio.CancelledError):
                raise
            message, hint = self.connect_failure(exc)
            raise ConnectionError(self.scrub(message), hint=self.scrub(hint)) from None
        self._checkouts[id(conn)] = handle
        run = owner()
        if run is not None:
            self._owners[id(conn)] = run
        return conn

    def pool_exhausted(self) -> PoolExhaustedError:
        """The error for a checkout that waited ``pool_timeout`` for a free connection in vain."""
        config, status = self.config, self.pool_status()
        size, overflow, timeout = status["size"], config.max_overflow, config.pool_timeout
        return PoolExhaustedError(
            f"No connection to {self.scrub(self.url)} came free within pool_timeout={timeout:g} s: "
            f"{status['checked_out']} are checked out, of pool_size={size} + max_overflow={overflow}.",
            size=size,
            overflow=overflow,
            checked_out=status["checked_out"],
            timeout=timeout,
            hint="the database answers; the pool is full. Run fewer workflows at once, raise "
            "DataFlow(pool_size=..., max_overflow=...), or look for runs that hold connections "
            "(db.pool_status()).",
        )

    async def release(self, conn: Connection) -> None:
        handle = self._checkouts.pop(id(conn))
        self._owners.pop(id(conn), None)
        try:
            invalidate = False
            if conn.usable and conn.in_transaction:  # left open by a failure: the pool never resets it
                try:
                    await conn.rollback()
                except Exception:  # a connection that cannot roll back is not handed out again
                    log.warning("rolling back a returned connection failed; discarding it", exc_info=True)
                    invalidate = True
            if not conn.usable:  # the server went away: never hand this connection out again
                self.stats["invalidated"] += 1
                invalidate = True
            await self._pool_return(handle, invalidate=invalidate)
        except Exception:  # closing a dead connection can fail; the pool has already let it go
            log.debug("closing a connection failed", exc_info=True)
        finally:
            if self._claimed_by != threading.get_ident():  # (a run on this thread ends its claim itself)
                if self._claim is not None:
                    self._claim.release()
                if self._serial_lock is not None and self.serialized:
                    self._serial_lock.release()

    async def dispose(self) -> None:
        from sqlalchemy.util import greenlet_spawn

        if self.engine is not None:
            await greenlet_spawn(self.engine.dispose)  # closing the async driver's connections awaits

    def _idle(self) -> int | None:
        """Idle pooled connections; None for a pool that keeps no count (one static connection)."""
        checkedin = getattr(self.engine.pool, "checkedin", None) if self.engine is not None else None
        return checkedin() if callable(checkedin) else None

    def held_connections(self) -> int:
        return len(self._checkouts) + (self._idle() or 0)

    def checked_out_for(self, run_id: str) -> list[str]:
        return [node for run, node in list(self._owners.values()) if run == run_id]

    async def warm(self, n: int) -> int:
        # A checkout takes an idle connection first, so all of the wanted ones are held at once:
        # the pool makes the missing ones, concurrently, and gets every one back idle.
        idle = self._idle()
        wanted = n - len(self._checkouts)
        if idle is None or idle >= wanted or self.engine is None:
            return 0
        held = await asyncio.gather(*(self._pool_connect() for _ in range(wanted)), return_exceptions=True)
        for handle in held:
            if isinstance(handle, BaseException):
                log.debug("opening a warm connection failed: %s", handle)
            else:
                await self._pool_return(handle)  # back to the pool, idle and connected
        return max(0, (self._idle() or 0) - idle)

    def pool_usage(self) -> str:
        """Connections in use / capacity, "3/15": asked per node while monitored, so the texts are
        made once (single_connection may parse the URL)."""
        usages, in_use = self._usages, len(self._checkouts)
        if not usages:
            config = self.config
            capacity = 1 if self.single_connection else config.pool_size + max(0, config.max_overflow)
            usages = self._usages = tuple(f"{n}/{capacity}" for n in range(capacity + 1))
        return usages[in_use] if in_use < len(usages) else f"{in_use}/{len(usages) - 1}"

    def pool_status(self) -> dict[str, Any]:
        """size, checked_out, overflow, waiting, acquired_total, failures (and the pool's kind)."""
        pool = self.engine.pool if self.engine is not None else None
        status: dict[str, Any] = {
            "pool": type(pool).__name__ if pool is not None else "not opened",
            "size": self.config.pool_size if not self.single_connection else 1,
            "checked_out": len(self._checkouts),
            "overflow": 0,
            **self.stats,
        }
        if pool is not None:
            for key in ("size", "overflow", "checkedin"):
                method = getattr(pool, key, None)
                if callable(method):
                    status[key] = method()
            status["overflow"] = max(0, status["overflow"])
        return status
