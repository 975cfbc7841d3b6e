"""ResultCache: Read, List and Count results of one DataFlow, kept until a write could change them.

It never serves a result an uncached read would not give (README: "Caching"):

- **Own writes.** A scope that commits a write through this DataFlow invalidates the tables it
  wrote (``invalidate``), before its commit returns; a rollback invalidates nothing. Reads inside
  a transaction never use the cache (the nodes ask, ``nodes/cached.py``), so they see their own
  writes and nothing read in a failed transaction is kept.
- **A read racing a write.** Each table has a generation, raised by every invalidation. A read
  takes a ``ticket`` before it asks the database and may ``put`` its result only while the ticket
  is still current, so a result read before a commit is never kept after that commit's
  invalidation.
- **Other processes.** The dialect's change feed says how their writes are seen
  (``dialects/change_feed.py``): PostgreSQL's triggers notify a LISTEN connection
  (``dialects/pg_notify.py``), and a SQLite file's ``PRAGMA data_version`` is asked before each
  cached read is served. An in-memory SQLite or a DuckDB file is this process's alone. When a
  database has no such channel (MySQL), or the channel drops, the cache turns itself off
  (``turn_off``): ``stats()`` says so and why. On MySQL, ``sole_writer`` (the user's word that
  no other process writes there) keeps it on for this process's own writes.

Keys are what fully decides a result: the compiled SQL (model, filter shape, ordering, guards),
its bound values (filter values, tenant, paging; an encrypted field's blind index, never its
plaintext), and the user. Values are kept as the nodes hand them over; the nodes copy them on
the way in and out (``nodes/cached.py``). Nothing here logs a key or a value.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ALL_TABLES", "CacheSettings", "ResultCache", "Ticket"]

log = logging.getLogger("dataflow_lab.cache")

ALL_TABLES = "*"  # a write whose tables are unknown (your own SQL): every table of the database
Ticket = tuple[int, int]  # (epoch, the table's generation) when a read began

# Caches of DataFlows of this process that share one database only this process can open (a
# DuckDB file): a write through one invalidates them all (ResultCache.share).
_SHARED: dict[str, weakref.WeakSet[ResultCache]] = {}
_SHARED_LOCK = threading.Lock()


@dataclass(frozen=True)
class CacheSettings:
    """``DataFlow(cache=...)``: at most ``max_entries`` results, each kept ``ttl`` seconds (None: until
    a write invalidates it). ``sole_writer``: no other process or tool writes to the database, so a
    database that cannot report their writes (MySQL) may cache, invalidated by this process's
    writes alone (where a database can report them, they are watched all the same)."""

    max_entries: int = 10_000
    ttl: float | None = None
    sole_writer: bool = False


class ResultCache:
    """The result cache of one database (``db.database.cache``). Thread-safe: runs on any thread use it."""

    def __init__(self, settings: CacheSettings | None):
        self.settings = settings
        self._lock = threading.Lock()
        self._entries: OrderedDict[Any, tuple[str, Any, float | None]] = OrderedDict()
        self._by_table: dict[str, set[Any]] = {}
        self._generations: dict[str, int] = {}
        self._epoch = 0
        self._watching = False  # a change channel is up (or none is needed): results may be kept
        self._watched: set[str] | None = None  # tables the channel covers (None: every table)
        self._before_serve: Callable[[], bool] | None = None  # asks the channel; False: it dropped
        self.off_reason: str | None = None if settings is not None else "not enabled"
        self.hits = self.misses = self.invalidations = self.bypassed = 0
        self._siblings: weakref.WeakSet[ResultCache] | None = None  # see share()

    # -- state -------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Whether this DataFlow asked for a cache (``DataFlow(cache=...)``)."""
        return self.settings is not None

    @property
    def on(self) -> bool:
        """Whether results are served and kept now (enabled, its change channel up, not turned off)."""
        return self.settings is not None and self._watching and self.off_reason is None

    def watching(self, before_serve: Callable[[], bool] | None = None, *, tables: bool = False) -> None:
        """The change channel is up: results may be kept from now on.

        ``before_serve`` is asked before each cached read is served (SQLite's data_version);
        returning False turns the cache off. ``tables``: the channel covers only the tables
        ``watch(name)`` names (PostgreSQL's triggers); else every table.
        """
        with self._lock:
            self._before_serve = before_serve
            self._watched = set() if tables else None
            self._watching = True

    def share(self, name: str) -> None:
        """Other DataFlows of this process may open the same database ``name`` (a DuckDB file, which
        no other process can): each one's writes invalidate every such cache. A DataFlow without a
        cache shares too: its writes must reach the others'."""
        with _SHARED_LOCK:
            self._siblings = _SHARED.setdefault(name, weakref.WeakSet())
            self._siblings.add(self)

    def watch(self, table: str) -> None:
        """``table`` now notifies its changes (its trigger is installed)."""
        with self._lock:
            if self._watched is not None:
                self._watched.add(table)

    def covers(self, table: str) -> bool:
        """Whether results of ``table`` may be served and kept now."""
        return self.on and (self._watched is None or table in self._watched)

    def turn_off(self, reason: str, *, warn: bool = True) -> None:
        """Stop serving and keeping results, say why (the dashboard shows it; a warning too, unless
        ``warn=False``), and drop every entry."""
        with self._lock:
            if self.off_reason is None:
                if warn:
                    log.warning("result cache turned off: %s", reason)
                self.off_reason = reason
            self._drop_all()

    # -- reading ------------------------------------------------------------------------------
    def ticket(self, table: str) -> Ticket:
        """Taken before a read asks the database; ``put`` keeps its result only if still current."""
        return self._epoch, self._generations.get(table, 0)

    def generation(self, table: str) -> int:
        """How many times ``table``'s results were invalidated (a notification names any table)."""
        return self._generations.get(table, 0)

    def get(self, key: Any) -> tuple[bool, Any]:
        """(True, value) for a current entry; (False, None) otherwise. Counts a hit or a miss."""
        before_serve = self._before_serve
        if before_serve is not None and not before_serve():
            self.turn_off("the change channel dropped")
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[2] is not None and entry[2] <= time.monotonic():
                self._forget(key, entry[0])
                entry = None
            if entry is None:
                self.misses += 1
                return False, None
            self._entries.move_to_end(key)
            self.hits += 1
            return True, entry[1]

    def put(self, key: Any, table: str, value: Any, ticket: Ticket) -> None:
        """Keep ``value`` under ``key``, unless a write invalidated ``table`` since ``ticket``."""
        settings = self.settings
        if settings is None:
            return
        with self._lock:
            if not self.on or ticket != (self._epoch, self._generations.get(table, 0)):
                return
            expires = None if settings.ttl is None else time.monotonic() + settings.ttl
            if key in self._entries:
                self._forget(key, self._entries[key][0])
            self._entries[key] = (table, value, expires)
            self._by_table.setdefault(table, set()).add(key)
            while len(self._entries) > settings.max_entries:
                old_key, (old_table, _, _) = next(iter(self._entries.items()))
                self._forget(old_key, old_table)

    def bypass(self) -> None:
        """Count a read that could not use the cache (inside a transaction, ``cache=False``...)."""
        self.bypassed += 1

    # -- invalidating -------------------------------------------------------------------------
    def invalidate(self, tables: Iterable[str]) -> None:
        """Drop the entries of ``tables`` (``ALL_TABLES``: every one) and refuse reads begun before;
        in every cache this one ``share``s its database with, too (this one may be off: a plain
        DataFlow's writes still reach the others)."""
        siblings = self._siblings
        if self.settings is None and siblings is None:
            return
        tables = set(tables)
        if siblings is not None:
            for other in list(siblings):
                if other is not self:
                    other._invalidate(tables)
        self._invalidate(tables)

    def _invalidate(self, tables: set[str]) -> None:
        if self.settings is None:
            return
        with self._lock:
            for table in tables:
                if table == ALL_TABLES:
                    self._drop_all()
                else:
                    self._generations[table] = self._generations.get(table, 0) + 1
                    for key in self._by_table.pop(table, ()):
                        self._entries.pop(key, None)
                self.invalidations += 1

    def clear(self) -> None:
        """Drop every entry (a migration, a key rotation, another process's write to a SQLite file)."""
        self.invalidate([ALL_TABLES])

    def _drop_all(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._by_table.clear()

    def _forget(self, key: Any, table: str) -> None:
        self._entries.pop(key, None)
        keys = self._by_table.get(table)
        if keys is not None:
            keys.discard(key)

    # -- the dashboard ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """hits, misses, cache_hit_rate (None before the first cached read), invalidations,
        entries, bypassed, and whether it is on (and why not)."""
        hits, misses = self.hits, self.misses
        return {
            "enabled": self.enabled,
            "on": self.on,
            "off_reason": None if self.on else (self.off_reason or "waiting for the change channel"),
            "hits": hits,
            "misses": misses,
            "cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
            "invalidations": self.invalidations,
            "entries": len(self._entries),
            "bypassed": self.bypassed,
            "max_entries": self.settings.max_entries if self.settings is not None else None,
            "ttl": self.settings.ttl if self.settings is not None else None,
            "sole_writer": self.settings.sole_writer if self.settings is not None else None,
        }
