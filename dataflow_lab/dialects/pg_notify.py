"""PostgreSQL tells result caches of every write: a trigger per table, NOTIFY, and one LISTEN connection.

A table's migration (``Database.ensure_table`` with the cache on) installs a statement-level
trigger, ``AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE``, whose function sends
``pg_notify('dataflow_cache', <table name>)``. PostgreSQL delivers a notification when, and only
if, the writing transaction commits, whoever wrote: this process, another one, psql. Each caching
DataFlow holds one connection of its own (out of its pool) that LISTENs on the channel and drops
the named table's cached results as each notification arrives. A transaction that may be
PREPAREd cannot NOTIFY: a two-phase run turns the trigger's notice off (``QUIET``) and announces
the tables it wrote after its commit (``announce``); a recovered commit announces ``*``. If that
connection closes, the cache turns itself off (``ResultCache.turn_off``) rather than serve what
it can no longer check. ``NotifyFeed`` is PostgreSQL's ``ChangeFeed`` (change_feed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

from . import change_feed as feed
from .change_feed import ChangeFeed

if TYPE_CHECKING:  # pragma: no cover
    from ..result_cache import ResultCache
    from .connection import Connection
    from .pooled import PooledDialect

__all__ = ["CHANNEL", "QUIET", "TRIGGER", "Listener", "NotifyFeed"]

log = logging.getLogger("dataflow_lab.cache")

CHANNEL = "dataflow_cache"
PING_SECONDS = 5.0  # how often the LISTEN connection is asked whether it still answers (a silent drop)
TRIGGER = "dataflow_cache_notify"  # the trigger's name on every table, and its function's

# A transaction that may be PREPAREd (two-phase commit) must not NOTIFY (PostgreSQL refuses to
# prepare it): it sets QUIET, and the committer announces its tables once it has committed.
QUIET = "SET LOCAL dataflow.cache_notify = 'off'"
_FUNCTION = f"""CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('dataflow.cache_notify', true), '') <> 'off' THEN
        PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END $$"""

_HAS_TRIGGER = "SELECT 1 FROM pg_trigger WHERE tgname = $1 AND tgrelid = to_regclass($2)"
_HAS_FUNCTION = "SELECT 1 FROM pg_proc WHERE proname = $1 AND pronamespace = current_schema()::regnamespace"


class NotifyFeed(ChangeFeed):
    """PostgreSQL's feed: a LISTEN connection of the cache's own; a trigger on each migrated table."""

    quiet_sql = QUIET  # a transaction that may be PREPAREd must not NOTIFY

    def shared_name(self) -> None:
        return None  # the triggers notify every DataFlow's LISTEN connection, this process's too

    async def watch_others(self, cache: ResultCache) -> Listener:
        from sqlalchemy.util import greenlet_spawn

        dialect = cast("PooledDialect", self.dialect)
        dialect.prepare()
        assert dialect.engine is not None, "prepare() made the engine"
        handle = await greenlet_spawn(dialect.engine.raw_connection)
        raw = handle.driver_connection
        handle.detach()  # the pool lets it go: it is the cache's for as long as the database is open
        return await Listener.start(raw, cache)

    async def install(self, conn: feed.Connection, table_name: str, *, install: bool) -> bool:
        quoted = self.dialect.sa_dialect.identifier_preparer.quote(table_name)
        return await _install_trigger(cast("Connection", conn), table_name, quoted, install=install)

    async def announce(self, conn: feed.Connection, tables: list[str]) -> None:
        """Tell every cache that ``tables`` changed (after a commit made quietly: QUIET); ``*``: all."""
        for table in tables:
            await conn.execute("SELECT pg_notify($1, $2)", [CHANNEL, table])


async def _install_trigger(conn: Connection, table: str, quoted: str, *, install: bool) -> bool:
    """Whether ``table`` notifies its writes; installs its trigger (and the function) when ``install``.

    Runs in the migration's transaction. It also notifies once itself, so other processes'
    caches forget what they hold of the table, which the migration may have changed.
    """
    if not await conn.fetch(_HAS_TRIGGER, [TRIGGER, quoted]):
        if not install:
            return False
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", [TRIGGER])  # one installer at a time
        if not await conn.fetch(_HAS_FUNCTION, [TRIGGER]):
            await conn.execute(_FUNCTION)
        if not await conn.fetch(_HAS_TRIGGER, [TRIGGER, quoted]):
            await conn.execute(
                f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {quoted} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER}()"
            )
    await conn.execute("SELECT pg_notify($1, $2)", [CHANNEL, table])
    return True


class Listener:
    """The LISTEN connection of one caching DataFlow (an asyncpg connection taken out of its pool)."""

    def __init__(self, raw: Any, cache: ResultCache):
        self.raw = raw
        self.cache = cache
        self._pinger: asyncio.Task | None = None

    @classmethod
    async def start(cls, raw: Any, cache: ResultCache) -> Listener:
        listener = cls(raw, cache)
        await raw.add_listener(CHANNEL, listener._notified)
        raw.add_termination_listener(listener._closed)
        listener._pinger = asyncio.ensure_future(listener._ping())
        cache.watching(listener.alive, tables=True)
        return listener

    async def _ping(self) -> None:
        """A connection that died without closing (a network cut) hears nothing: ask it now and then."""
        while not self.raw.is_closed():
            await asyncio.sleep(PING_SECONDS)
            try:
                await self.raw.fetchval("SELECT 1", timeout=PING_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.cache.turn_off("the LISTEN connection to PostgreSQL stopped answering")
                self.raw.terminate()
                return

    def _notified(self, _conn: Any, _pid: int, _channel: str, table: str) -> None:
        self.cache.invalidate([table])  # ("*", after a recovered two-phase commit: every table)

    def _closed(self, _conn: Any) -> None:
        self.cache.turn_off("the LISTEN connection to PostgreSQL closed")

    def alive(self) -> bool:
        """Asked before each cached read is served: a closed connection hears no more writes."""
        return not self.raw.is_closed()

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(BaseException):
                await self._pinger
        if not self.raw.is_closed():
            try:
                await self.raw.close(timeout=5)
            except Exception:  # the server went away: nothing left to close
                log.debug("closing the LISTEN connection failed", exc_info=True)
