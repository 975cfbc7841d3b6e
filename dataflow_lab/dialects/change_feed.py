"""ChangeFeed: how a database tells its result cache of writes made by other processes.

Each dialect names its feed (``Dialect.change_feed``; ``Dialect.changes`` is the one in use).
``Database`` asks it to ``watch`` when a caching DataFlow opens the database; migrations ask it
to ``install`` what makes a table report its writes; a two-phase run asks its ``quiet_sql`` and
``announce``s after the commit (``scope_writes.py``). Writes through this DataFlow need none of
this: their scope invalidates what it wrote when it commits.

- A database only this process can reach (an in-memory SQLite, DuckDB) needs no feed; DataFlows
  of this process that share one (a DuckDB file) invalidate each other (``shared_name``).
- A SQLite file: ``PRAGMA data_version`` (``DataVersionFeed``), asked before each cached read.
- PostgreSQL: a trigger per table and LISTEN/NOTIFY (``pg_notify.NotifyFeed``).
- Anything else (MySQL and MariaDB) has no way to hear of another process's commit, so the base
  feed turns the cache off, unless ``DataFlow(cache={"sole_writer": True})`` says no other
  process writes to the database: then only this process's writes invalidate (README: "Caching").
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:  # pragma: no cover
    import sqlalchemy as sa

    from ..result_cache import ResultCache

__all__ = ["ChangeFeed", "DataVersionFeed", "OneProcessFeed", "Watch"]

NO_FEED_HINT = (
    "if no other process or tool (another app, the mysql client, DaskRuntime workers) ever writes to "
    'this database, DataFlow(cache={"sole_writer": True}) keeps it on for this process\'s own writes'
)


class Dialect(Protocol):
    """What a feed asks of its database's dialect (``dialects.base.Dialect``, which imports this
    module: a Protocol here, so that the two never import each other)."""

    name: str
    url: str
    sa_dialect: Any

    def process_local(self) -> bool: ...


class PooledDialect(Dialect, Protocol):
    """A dialect with a SQLAlchemy engine (``dialects.pooled.PooledDialect``)."""

    engine: Any

    def prepare(self) -> None: ...


class Connection(Protocol):
    """A connection a feed installs or announces on (``dialects.connection.Connection``)."""

    async def execute(self, sql: str, params: Any = ...) -> Any: ...


class Watch(Protocol):
    """What ``ChangeFeed.watch`` returns: closed with the database."""

    async def close(self) -> None: ...


class ChangeFeed:
    """The feed of a database with no way to hear of other processes' writes (the base)."""

    quiet_sql: str | None = None  # run first in a transaction that may be PREPAREd (PostgreSQL's)

    def __init__(self, dialect: Dialect):
        self.dialect = dialect

    def join(self, cache: ResultCache) -> None:
        """Share writes with the caches of this process's other DataFlows on the same database (when
        nothing else tells them: ``shared_name``). Asked of every DataFlow, caching or not."""
        name = self.shared_name()
        if name is not None:
            cache.share(name)

    async def watch(self, cache: ResultCache) -> Watch | None:
        """Start telling ``cache`` of other processes' writes, then ``cache.watching(...)``; or turn
        it off when this database cannot."""
        if self.dialect.process_local():  # no other process can write to it
            cache.watching()
            return None
        return await self.watch_others(cache)

    async def watch_others(self, cache: ResultCache) -> Watch | None:
        """A database other processes can write to, without a feed: off, unless this process is its
        sole writer (``cache={"sole_writer": True}``)."""
        if cache.settings is not None and cache.settings.sole_writer:
            cache.watching()
            return None
        cache.turn_off(
            f"{self.dialect.name} cannot tell this process of other processes' writes, so a cached "
            f"result could be stale; {NO_FEED_HINT}"
        )
        return None

    def shared_name(self) -> str | None:
        """A name for the database that other DataFlows of this process may open too, so that their
        caches invalidate together (None: nothing to share, or the feed tells them). Here: its
        URL's driver, host, port and database (whoever logs in, with whatever options)."""
        import sqlalchemy as sa

        url = sa.engine.make_url(self.dialect.url)
        return f"{url.get_backend_name()}://{url.host}:{url.port}/{url.database}"

    async def install(self, conn: Connection, table_name: str, *, install: bool) -> bool:
        """Whether writes to ``table_name`` from any process reach ``watch`` (installing what makes
        them, inside the migration's transaction, when ``install``). Asked where the watch covers
        only the tables it names (PostgreSQL's triggers)."""
        return False

    async def announce(self, conn: Connection, tables: list[str]) -> None:
        """After a commit made with ``quiet_sql``: tell other processes' caches of ``tables``."""


def _file(dialect: Dialect) -> str:
    """The path of a file database's URL ('' or ':memory:' for one in memory)."""
    import sqlalchemy as sa

    return sa.engine.make_url(dialect.url).database or ""


class OneProcessFeed(ChangeFeed):
    """A database file that one process opens at a time (DuckDB locks it): nothing to watch, but
    DataFlows of this process that open the same file invalidate each other's caches."""

    def shared_name(self) -> str | None:
        path = _file(self.dialect)
        return None if path in ("", ":memory:") else os.path.realpath(path)


class DataVersionFeed(ChangeFeed):
    """A SQLite file: ``PRAGMA data_version`` on a connection of the cache's own, asked before each
    cached read is served. It changes when any other connection (another process's, or this
    pool's) has committed to the file since the last ask: then every cached result of the file goes.
    The connection comes out of the pool, so it opens the very file the pool does (a ``file:``
    name, say, is opened as the pool opens it)."""

    def shared_name(self) -> str | None:
        return None  # an in-memory database is one DataFlow's own; data_version sees every other

    async def watch_others(self, cache: ResultCache) -> Watch | None:
        dialect = cast("PooledDialect", self.dialect)
        dialect.prepare()
        engine = cast("sa.engine.Engine", dialect.engine)  # SQLite's is a sync one (sqlite.py)
        handle = engine.raw_connection()
        raw = cast("sqlite3.Connection", handle.driver_connection)
        handle.detach()  # the pool lets it go: it is the cache's for as long as the database is open
        watcher = _DataVersion(raw)
        cache.watching(functools.partial(watcher.check, cache))
        return watcher


class _DataVersion:
    """A file's ``PRAGMA data_version``, asked on one connection kept for it (any thread, one at a time)."""

    def __init__(self, raw: sqlite3.Connection):
        self._raw: sqlite3.Connection | None = raw
        self._lock = threading.Lock()
        self._seen = self._version()

    def _version(self) -> int:
        assert self._raw is not None
        return int(self._raw.execute("PRAGMA data_version").fetchone()[0])

    def check(self, cache: ResultCache) -> bool:
        """Empty ``cache`` when the file changed since the last ask; False once the connection failed."""
        with self._lock:
            if self._raw is None:
                return False
            try:
                version = self._version()
            except sqlite3.Error:
                return False
            if version != self._seen:
                self._seen = version
                cache.clear()
            return True

    async def close(self) -> None:
        with self._lock:
            raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()
