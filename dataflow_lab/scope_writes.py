"""ScopeWrites: the tables one transaction scope wrote, and what their result caches are told.

A ``Scope`` (transactions.py) owns one. Each write node notes the tables it writes (``note``).
When the scope commits, each database's tables are invalidated in its result cache
(``invalidate``; also when a COMMIT failed with an unknown outcome); a nested scope hands its
tables to the outer one instead (``hand_to``), and a rollback forgets them (``forget``): a
rolled-back write invalidates nothing.

A run whose transactions may be PREPAREd (two-phase commit, ``may_prepare``) begins each one
with the database's ``quiet_sql`` (PostgreSQL refuses to prepare a transaction that sent
NOTIFY), so other processes' caches hear nothing from its triggers: ``announce`` tells them
after the commit (``dialects/change_feed.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .dialects import Connection
    from .interfaces import DataFlow

__all__ = ["ScopeWrites"]

log = logging.getLogger("dataflow_lab.transactions")


class ScopeWrites:
    """The tables a scope wrote, by database; their cached results go when it commits."""

    __slots__ = ("_tables", "may_prepare")

    def __init__(self) -> None:
        self._tables: dict[int, tuple[DataFlow, set[str]]] = {}
        self.may_prepare = False  # its transactions may be PREPAREd: they begin quietly (quiet_sql)

    def note(self, dataflow: DataFlow, tables: Sequence[str]) -> None:
        """``tables`` of ``dataflow`` are written in this scope."""
        self._tables.setdefault(id(dataflow), (dataflow, set()))[1].update(tables)

    def hand_to(self, outer: ScopeWrites) -> None:
        """A nested scope succeeded: its writes are now the outer scope's, to invalidate at its commit."""
        for dataflow, tables in self._tables.values():
            outer.note(dataflow, tuple(tables))
        self._tables.clear()

    def forget(self) -> None:
        """Nothing noted stands (a rollback), or all of it was dealt with (a commit)."""
        self._tables.clear()

    def invalidate(self, dataflow: DataFlow | None = None) -> None:
        """After a commit (or one whose outcome is unknown) on ``dataflow`` (None: every database):
        drop the cached results of the tables written there."""
        for db, tables in self._written(dataflow):
            db.database.cache.invalidate(tables)

    def quiet_sql(self, dataflow: DataFlow) -> str | None:
        """What a transaction on ``dataflow`` runs first so that it may be PREPAREd (None: nothing)."""
        return dataflow.database.dialect.changes.quiet_sql if self.may_prepare else None

    async def announce(self, begun: Sequence[tuple[DataFlow, Connection]]) -> None:
        """After a quiet commit (``may_prepare``): tell other processes' caches what it changed."""
        if not self.may_prepare:
            return
        for dataflow, conn in begun:
            feed = dataflow.database.dialect.changes
            if feed.quiet_sql is None:
                continue
            for _, tables in self._written(dataflow):
                try:
                    await feed.announce(conn, sorted(tables))
                except Exception:  # committed: the error would mislead; other caches may lag
                    log.warning(
                        "announcing the tables a commit changed failed on %r", dataflow, exc_info=True
                    )

    def _written(self, dataflow: DataFlow | None) -> list[tuple[DataFlow, set[str]]]:
        return [(db, tables) for db, tables in self._tables.values() if dataflow is None or db is dataflow]
