"""The public records that reading a DataFlow's state returns, made when first read.

``db.health()``'s ``HealthReport``, ``leaks.recent()``'s ``Leak``, ``db.slow_statements()``'s
``SlowStatement``, ``db.audit()``'s ``AuditEntry`` and ``db.runs()``'s ``RunRecord``. A first
run makes none of them, and a frozen dataclass costs 0.5-1 ms at import (it compiles six
methods), so they live here, imported at the first read; the modules that make them
(health, leaks, statement_log, audit, tracking) still export them by name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

__all__ = ["AuditEntry", "HealthReport", "Leak", "RunRecord", "SlowStatement"]


@dataclass(frozen=True)
class HealthReport:
    """One probe's outcome: ``ok`` (every connection answered), ``degraded`` (dead connections were
    discarded, but the database answers), ``down`` (no connection could be made or used)."""

    status: str
    latency_ms: float | None
    error: str | None
    checked_at: dt.datetime
    pinged: int = 0
    discarded: int = 0
    last_error: str | None = None  # the latest error any probe of this database met (this one's or older)

    def __repr__(self) -> str:
        latency = "n/a" if self.latency_ms is None else f"{self.latency_ms:.1f} ms"
        error = f", error={self.error!r}" if self.error else ""
        return (
            f"HealthReport({self.status}, latency={latency}, pinged={self.pinged}, "
            f"discarded={self.discarded}, checked_at={self.checked_at.isoformat(timespec='seconds')}{error})"
        )

    def _repr_html_(self) -> str:
        import html  # here: its entity table is no cost of opening a database

        colour = {"ok": "#1a7f37", "degraded": "#9a6700", "down": "#cf222e"}.get(self.status, "#57606a")
        rows = "".join(
            f"<tr><th style='text-align:left'>{name}</th><td>{html.escape(str(value))}</td></tr>"
            for name, value in (
                ("latency", "n/a" if self.latency_ms is None else f"{self.latency_ms:.1f} ms"),
                ("pinged", self.pinged),
                ("discarded", self.discarded),
                ("checked at", self.checked_at.isoformat(timespec="seconds")),
                ("error", self.error or "none"),
                ("last error seen", self.last_error or "none"),
            )
        )
        return f"<b style='color:{colour}'>health: {self.status}</b><table>{rows}</table>"


@dataclass(frozen=True)
class Leak:
    """One leak: ``kind`` is "collected", "checked_out" or "open_transaction"."""

    kind: str
    message: str
    site: str  # file:line of the DataFlow(...) call, or the node that checked the connection out
    database: str | None  # the database's token (None: a database no longer alive)
    at: dt.datetime


@dataclass(frozen=True)
class SlowStatement:
    """One statement that ran at least ``slow_query_threshold`` seconds."""

    sql: str  # as sent: values are bound parameters, never in the text
    seconds: float
    at: dt.datetime  # when it ended
    run_id: str | None
    node_id: str | None
    error: str | None  # the first line of its error, when it failed
    plan: str | None  # EXPLAIN's plan (PostgreSQL, DuckDB), once explained; None meanwhile or elsewhere

    def as_dict(self) -> dict[str, Any]:
        return {"sql": self.sql, "seconds": self.seconds, "at": self.at.isoformat(), "run_id": self.run_id,
                "node_id": self.node_id, "error": self.error, "plan": self.plan}  # fmt: skip


@dataclass(frozen=True)
class AuditEntry:
    """One audited write of one row."""

    id: int
    model: str
    record_id: str
    operation: str  # the node's operation: create, update, delete, upsert, bulk_create...
    user: str | None
    run_id: str | None
    node_id: str | None
    at: dt.datetime
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def changes(self) -> dict[str, tuple[Any, Any]]:
        """Fields whose value differs: field -> (before, after)."""
        before, after = self.before or {}, self.after or {}
        return {k: (before.get(k), after.get(k)) for k in {*before, *after} if before.get(k) != after.get(k)}


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run, as its tracker saw it end."""

    run_id: str
    workflow: str
    status: str  # "success" | "error" | "cancelled"
    started: dt.datetime
    duration_ms: float
    error: str | None  # the first line of the error's message
    error_type: str | None  # its class name
    failed_node: str | None  # the node whose error ended the run, if a node's did
    nodes: dict[str, str]  # node id -> "success" | "error" | "cancelled" | "skipped" | "not run"
    mode: str  # the transaction mode it ran in ("auto" resolved)
