"""Query counting for monitoring: each statement bumps the running scope's tally.

A monitored database's connections call ``count_statement`` (or
``keep_statement``, which also keeps the SQL text: the development default)
with each statement they send; see ``dialects.connection.statement_note``. The
count goes to the scope of the run in the current task (a context variable),
so concurrent runs on one event loop never mix their counts. The runtime
zeroes the scope's tally before each node and reports it in ``after_node``
as ``queries`` and ``sql``. With monitoring off, connections call nothing.

Not counted: DuckDB's Arrow bulk path (it runs on the database's own
connection object, not through ``Connection``), and BEGIN / COMMIT, which the
transaction monitor counts as transactions instead.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["ACTIVE_SCOPE", "MAX_SQL_PER_NODE", "Tally", "count_statement", "keep_statement"]


class Tally(Protocol):
    """What counting asks of the running scope (``transactions.Scope``, which reads this variable as its own)."""

    queries: int
    sql: list[str] | None
    run_id: str
    node_id: str  # the node running now

    @property
    def parent(self) -> Tally | None: ...  # the outer scope a nested one joined


# The scope whose work is running in this context; a new scope started here joins it (transactions.py).
ACTIVE_SCOPE: contextvars.ContextVar[Tally | None] = contextvars.ContextVar(
    "dataflow_lab_scope", default=None
)

MAX_SQL_PER_NODE = 50  # statements kept per node run (a skip-mode bulk load may run thousands)


def count_statement(sql: str, params: Sequence[Any] | None) -> None:
    scope = ACTIVE_SCOPE.get()
    if scope is not None:
        scope.queries += 1


def keep_statement(sql: str, params: Sequence[Any] | None) -> None:
    scope = ACTIVE_SCOPE.get()
    if scope is not None:
        scope.queries += 1
        kept = scope.sql
        if kept is None:
            scope.sql = [sql]  # stripped when read (monitoring_views)
        elif len(kept) < MAX_SQL_PER_NODE:
            kept.append(sql)
