"""Recovery of two-phase commits a crash (or a lost reply) left prepared.

Every participant is searched for prepared transactions with our gid prefix
(pg_prepared_xacts; MySQL's XA RECOVER), whether or not the committing process
saw its PREPARE reply. A transaction is committed when its coordinator recorded 'commit';
rolled back when the decision is 'abort' or, once its coordinator is reachable
and no longer alive (its session lock is free), no decision exists (presumed
abort: 'abort' is recorded first, so a late commit cannot race it). A
decision row is deleted only when every participant it lists is among the
databases searched and none of them still holds a prepared half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _decisions as tp  # the two-phase decision records

if TYPE_CHECKING:  # pragma: no cover
    from .dialects import Connection
    from .interfaces import DataFlow

__all__ = ["recover_in_doubt"]


def _parse(gid: str) -> tuple[str, str | None]:
    """'dataflow_lab:<key>:<run>:<n>' -> (base, coordinator key); older gids have no key."""
    base = gid.rsplit(":", 1)[0]
    parts = base.split(":")
    return base, parts[1] if len(parts) == 3 else None


class _Seen:
    __slots__ = ("db", "key", "gids", "decisions")

    def __init__(self, db: DataFlow, key: str, gids: list[str], decisions: dict[str, tuple[str, Any]]):
        self.db, self.key, self.gids, self.decisions = db, key, gids, decisions


async def recover_in_doubt(dataflows: list[DataFlow], *, min_age: float = 0.0) -> dict[str, str]:
    """Resolve prepared transactions left behind: {gid@url: 'committed' | 'rolled back' | 'in doubt'}.

    Only transactions prepared at least ``min_age`` seconds ago are touched (MySQL: begun, as XA
    RECOVER gives no time), and never one whose coordinating process is alive (it holds the
    commit's session lock).
    """
    seen = [await _scan(db, min_age) for db in dataflows if db.database.dialect.supports_two_phase]
    by_key = {s.key: s for s in seen}
    outcome: dict[str, str] = {}
    for s in seen:
        for gid in s.gids:
            base, coordinator = _parse(gid)
            if base in tp.IN_FLIGHT:
                continue
            verdict = await _verdict(gid, base, coordinator, seen, by_key)
            if verdict == "alive":
                continue
            if verdict is None:
                outcome[f"{gid}@{s.db.url}"] = "in doubt"
                continue
            if not await _finish(s.db, gid, verdict == "commit"):  # a live session still holds it (XA)
                outcome[f"{gid}@{s.db.url}"] = "in doubt"
                continue
            outcome[f"{gid}@{s.db.url}"] = "committed" if verdict == "commit" else "rolled back"
    await _forget_resolved(seen, by_key)
    return outcome


async def _verdict(
    gid: str, base: str, coordinator: str | None, seen: list[_Seen], by_key: dict
) -> str | None:
    if coordinator in by_key and await _alive(by_key[coordinator].db, base):
        return "alive"  # its coordinating process is still committing it: never touch it
    for s in seen:
        if base in s.decisions:
            return s.decisions[base][0]
    if coordinator is None:  # an older gid: participant 0 was the coordinator
        coordinated = any(g.startswith(base + ":") and g.endswith(":0") for s in seen for g in s.gids)
        return "abort" if coordinated or gid.endswith(":0") else None
    if coordinator not in by_key:
        return None  # the decision lives on a database not searched: leave it to a recovery that sees it
    return await _presume_abort(by_key[coordinator], base)


async def _presume_abort(coordinator: _Seen, base: str) -> str | None:
    """No decision yet: if the coordinating process is gone, record 'abort' (or read what won)."""
    db = coordinator.db
    dialect = await db.database.open()
    conn = await dialect.acquire()
    ops = tp.sql_of(db)
    try:
        if not await ops.try_lock(conn, base):
            return "alive"
        try:
            await tp.ensure_decision_table(db, conn)
            decided = await ops.record_abort(conn, base)
            if decided is not None:
                coordinator.decisions[base] = (decided, None)
            return decided
        finally:
            await ops.unlock(conn, base)
    finally:
        await dialect.release(conn)


async def _alive(db: DataFlow, base: str) -> bool:
    dialect = await db.database.open()
    conn = await dialect.acquire()
    ops = tp.sql_of(db)
    try:
        if not await ops.try_lock(conn, base):
            return True
        await ops.unlock(conn, base)
        return False
    finally:
        await dialect.release(conn)


async def _scan(db: DataFlow, min_age: float) -> _Seen:
    dialect = await db.database.open()
    conn = await dialect.acquire()
    try:
        key = await tp.key_of(db, conn)
        gids = await tp.sql_of(db).prepared(conn, key, min_age)
        return _Seen(db, key, gids, await _decisions(db, conn))
    finally:
        await dialect.release(conn)


async def _decisions(db: DataFlow, conn: Connection) -> dict[str, tuple[str, Any]]:
    ops = tp.sql_of(db)
    if not await ops.has_decisions(conn):
        return {}
    await tp.ensure_decision_table(db, conn)
    return await ops.decisions(conn)


async def _finish(db: DataFlow, gid: str, commit: bool) -> bool:
    """Commit or roll back ``gid``; False when a live session still holds it (MySQL)."""
    dialect = await db.database.open()
    conn = await dialect.acquire()
    try:
        if not await tp.sql_of(db).finish(conn, gid, commit=commit):
            return False
        if commit:  # its tables are unknown here: every cache of the database forgets everything
            db.database.cache.clear()
            await db.database.dialect.changes.announce(conn, ["*"])
        return True
    finally:
        await dialect.release(conn)


async def _still_prepared(seen: _Seen, base: str) -> bool:
    dialect = await seen.db.database.open()
    conn = await dialect.acquire()
    try:
        return await tp.sql_of(seen.db).any_prepared(conn, seen.key, base)
    finally:
        await dialect.release(conn)


async def _forget_resolved(seen: list[_Seen], by_key: dict[str, _Seen]) -> None:
    """Delete a decision only once every participant it names is searched and resolved."""
    for s in seen:
        for base, (_, participants) in list(s.decisions.items()):
            if base in tp.IN_FLIGHT:
                continue
            found = [by_key.get(p) for p in participants] if participants else [s]
            where = [w for w in found if w is not None]
            if len(where) < len(found):
                continue  # a participant not searched may still hold its half: keep the decision
            if any([await _still_prepared(w, base) for w in where]):
                continue
            if participants is None and _parse(base)[1] is not None:
                continue  # an 'abort' written by recovery before every half was seen: keep it
            await tp.forget_decision(s.db, None, base)
