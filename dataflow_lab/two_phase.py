"""Two-phase commit across PostgreSQL databases, and recovery of what a crash left in doubt.

Commit is PREPARE TRANSACTION on every database, a decision row on the first
(the coordinator), then COMMIT PREPARED everywhere. A crash in between leaves
prepared transactions that ``recover_in_doubt`` resolves at start-up: commit
when the coordinator recorded the decision, roll back when it did not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import TransactionError

if TYPE_CHECKING:  # pragma: no cover
    from .dataflow import DataFlow
    from .dialects import Connection
    from .transactions import Scope, _Held

__all__ = ["DECISION_TABLE", "GID_PREFIX", "commit_two_phase", "recover_in_doubt"]

DECISION_TABLE = "dataflow_lab_2pc_decisions"
GID_PREFIX = "dataflow_lab"


async def commit_two_phase(scope: Scope, begun: list[_Held]) -> None:
    """PREPARE everywhere; record the decision on the coordinator; COMMIT PREPARED everywhere."""
    for held in begun:
        if not hasattr(held.conn, "prepare"):
            raise TransactionError(
                f"Two-phase commit needs PostgreSQL; {held.dataflow!r} cannot prepare a transaction.",
                hint="use transaction='saga' across other databases.",
            )
    gid = f"{GID_PREFIX}:{scope.run_id}"  # the decision's name; each database prepares gid:<n>
    _IN_FLIGHT.add(gid)
    try:
        await _two_phase(scope, begun, gid)
    finally:
        _IN_FLIGHT.discard(gid)


async def _two_phase(scope: Scope, begun: list[_Held], gid: str) -> None:
    gids = [f"{gid}:{n}" for n in range(len(begun))]  # unique per server, as PostgreSQL requires
    prepared: list[_Held] = []
    try:
        for held, part in zip(begun, gids, strict=True):
            await held.conn.prepare(part)
            prepared.append(held)
            scope._event(held.dataflow, "prepare")
    except Exception as exc:
        for held, part in zip(prepared, gids, strict=False):
            await held.conn.finish_prepared(part, commit=False)
        for held in begun[len(prepared) :]:
            await held.conn.rollback()
        raise TransactionError(
            f"PREPARE TRANSACTION failed: {exc}", hint="nothing was committed on any database."
        ) from exc
    coordinator = begun[0]
    await _record_decision(coordinator.conn, gid)
    if getattr(scope, "_crash_after_decision", False):  # fault injection for tests
        raise TransactionError("simulated crash after the commit decision was recorded")
    for held, part in zip(begun, gids, strict=True):
        await held.conn.finish_prepared(part, commit=True)
        scope._event(held.dataflow, "commit", held)
    await coordinator.conn.execute(f"DELETE FROM {DECISION_TABLE} WHERE gid = $1", [gid])


async def _record_decision(conn: Connection, gid: str) -> None:
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {DECISION_TABLE} (gid text PRIMARY KEY, decided_at "
        "timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute(f"INSERT INTO {DECISION_TABLE} (gid) VALUES ($1) ON CONFLICT DO NOTHING", [gid])


_IN_FLIGHT: set[str] = set()  # this process's two-phase commits between PREPARE and COMMIT PREPARED


async def recover_in_doubt(dataflows: list[DataFlow], *, min_age: float = 0.0) -> dict[str, str]:
    """Resolve prepared transactions a crash left behind: {gid@url: 'committed' | 'rolled back' | 'in doubt'}.

    Participant 0 of each two-phase commit is its coordinator. A prepared transaction is
    committed when a decision row exists on any of ``dataflows``; rolled back when its
    coordinator is among them and recorded no decision (presumed abort); otherwise left
    in doubt. Only transactions prepared at least ``min_age`` seconds ago are touched, so
    another process's commit in progress is left alone.
    """
    pg = [db for db in dataflows if db.dialect == "postgresql"]
    decided: set[str] = set()
    pending: list[tuple[DataFlow, str]] = []
    for db in pg:
        rows, decisions = await _in_doubt_on(db, min_age)
        pending += [(db, gid) for gid in rows if gid.rsplit(":", 1)[0] not in _IN_FLIGHT]
        decided |= decisions
    coordinated = {gid.rsplit(":", 1)[0] for _, gid in pending if gid.endswith(":0")}
    outcome: dict[str, str] = {}
    for db, gid in pending:
        base = gid.rsplit(":", 1)[0]
        if base in decided:
            verdict = True
        elif base in coordinated or gid.endswith(":0"):
            verdict = False
        else:
            outcome[f"{gid}@{db.url}"] = "in doubt"
            continue
        await _finish(db, gid, verdict)
        outcome[f"{gid}@{db.url}"] = "committed" if verdict else "rolled back"
    for db in pg:
        await _forget_finished_decisions(db)
    return outcome


async def _in_doubt_on(db: DataFlow, min_age: float) -> tuple[list[str], set[str]]:
    dialect = await db._opened()
    conn = await dialect.acquire()
    try:
        rows = await conn.fetch(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE $1 "
            "AND prepared <= now() - make_interval(secs => $2)",
            [f"{GID_PREFIX}:%", float(min_age)],
        )
        decisions: set[str] = set()
        if (await conn.fetch("SELECT to_regclass($1) IS NOT NULL", [DECISION_TABLE]))[0][0]:
            decisions = {r[0] for r in await conn.fetch(f"SELECT gid FROM {DECISION_TABLE}")}
        return [r[0] for r in rows], decisions
    finally:
        await dialect.release(conn)


async def _finish(db: DataFlow, gid: str, commit: bool) -> None:
    dialect = await db._opened()
    conn = await dialect.acquire()
    try:
        await conn.finish_prepared(gid, commit=commit)
    finally:
        await dialect.release(conn)


async def _forget_finished_decisions(db: DataFlow) -> None:
    dialect = await db._opened()
    conn = await dialect.acquire()
    try:
        if (await conn.fetch("SELECT to_regclass($1) IS NOT NULL", [DECISION_TABLE]))[0][0]:
            await conn.execute(
                f"DELETE FROM {DECISION_TABLE} d WHERE NOT EXISTS (SELECT 1 FROM "
                "pg_prepared_xacts p WHERE p.gid LIKE d.gid || ':%')"
            )
    finally:
        await dialect.release(conn)
