"""Two-phase commit across PostgreSQL databases, and recovery of what a crash left in doubt.

Commit is PREPARE TRANSACTION on every database, a decision row on the first
(the coordinator), then COMMIT PREPARED everywhere. The coordinating process
holds an advisory lock on the coordinator for the whole commit, so recovery in
another process never touches a commit that is still alive.

Once anything is prepared the run is never retried: an error after PREPARE is
resolved from the decision record (commit if it exists, roll back if it does
not), and if a database cannot be reached the error says what state each one
is in. ``recover_in_doubt`` resolves the rest later. A decision row is deleted
only once every participant has resolved.

Gids are ``dataflow_lab:<coordinator key>:<run id>:<n>``; the coordinator key
names the coordinator's database (server system identifier + database name), so
recovery on any participant knows where the decision lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from ._decisions import (
    DECISION_TABLE,
    GID_PREFIX,
    IN_FLIGHT,
    LOCK_SQL,
    ensure_decision_table,
    forget_decision,
    key_of,
)
from ._in_doubt import recover_in_doubt
from .errors import TransactionError

if TYPE_CHECKING:  # pragma: no cover
    from .dialects import Connection
    from .dialects.base import TwoPhaseConnection
    from .interfaces import DataFlow, Held, Scope

__all__ = ["DECISION_TABLE", "GID_PREFIX", "InDoubtError", "commit_two_phase", "recover_in_doubt"]


class InDoubtError(TransactionError):
    """A two-phase commit failed after PREPARE; ``states`` says what each database holds now.

    Never retried as a whole: some databases may have committed already.
    """

    def __init__(self, message: str, *, states: dict[str, str], hint: str | None = None):
        super().__init__(message, hint=hint)
        self.states = states


class _SimulatedCrash(TransactionError):
    """Fault injection for tests: the process 'dies' with no resolution attempted."""


async def commit_two_phase(scope: Scope, begun: Sequence[Held]) -> None:
    """PREPARE everywhere; record the decision on the coordinator; COMMIT PREPARED everywhere."""
    for held in begun:
        if not held.dataflow.database.dialect.supports_two_phase:
            raise TransactionError(
                f"Two-phase commit needs PostgreSQL; {held.dataflow!r} cannot prepare a transaction.",
                hint="use transaction='saga' across other databases.",
            )
    coordinator = begun[0]
    keys = [await key_of(held.conn) for held in begun]
    gid = f"{GID_PREFIX}:{keys[0]}:{scope.run_id}"  # the decision's name; each database prepares gid:<n>
    alive = await _hold_liveness_lock(coordinator.dataflow, gid)
    IN_FLIGHT.add(gid)
    try:
        await _two_phase(scope, begun, gid, keys)
    finally:
        IN_FLIGHT.discard(gid)
        await _release_liveness_lock(coordinator.dataflow, alive, gid)


async def _hold_liveness_lock(db: DataFlow, gid: str) -> Connection:
    """A session advisory lock on the coordinator, held while this process commits ``gid``."""
    dialect = await db.database.open()
    conn = await dialect.acquire()
    try:
        await conn.fetch(f"SELECT pg_advisory_lock({LOCK_SQL})", [gid])
    except BaseException:
        await dialect.release(conn)
        raise
    return conn


async def _release_liveness_lock(db: DataFlow, conn: Connection, gid: str) -> None:
    try:
        await conn.fetch(f"SELECT pg_advisory_unlock({LOCK_SQL})", [gid])
    except Exception:  # a dead session has released its lock already
        pass
    finally:
        await db.database.release(conn)


async def _two_phase(scope: Scope, begun: Sequence[Held], gid: str, keys: list[str]) -> None:
    gids = [f"{gid}:{n}" for n in range(len(begun))]  # unique per server, as PostgreSQL requires
    prepared: list[Held] = []
    for held, part in zip(begun, gids, strict=True):
        try:
            await cast("TwoPhaseConnection", held.conn).prepare(part)  # checked by commit_two_phase
        except Exception as exc:
            await _abort_prepare(scope, begun, gids, len(prepared), exc)
        prepared.append(held)
        scope.record_event(held.dataflow, "prepare")
    coordinator = begun[0]
    try:
        await _record_decision(coordinator.conn, gid, keys, coordinator.dataflow)
    except Exception as exc:
        await _resolve_after_prepare(scope, begun, gids, gid, exc, committed=set())
        return
    if getattr(scope, "_crash_after_decision", False):  # fault injection for tests
        raise _SimulatedCrash("simulated crash after the commit decision was recorded")
    committed: set[int] = set()
    for n, (held, part) in enumerate(zip(begun, gids, strict=True)):
        try:
            await cast("TwoPhaseConnection", held.conn).finish_prepared(part, commit=True)
        except Exception as exc:
            await _resolve_after_prepare(scope, begun, gids, gid, exc, committed=committed)
            return
        committed.add(n)
        scope.record_event(held.dataflow, "commit", held)
    await forget_decision(coordinator.dataflow, coordinator.conn, gid)


async def _abort_prepare(
    scope: Scope, begun: Sequence[Held], gids: list[str], done: int, exc: Exception
) -> None:
    """PREPARE failed on begun[done]: roll back every half (its reply may be lost: it may be prepared)."""
    states: dict[str, str] = {}
    for n, (held, part) in enumerate(zip(begun, gids, strict=True)):
        if n < done:
            ok = await _try_finish(held.dataflow, part, commit=False)
        elif n == done:
            ok = await _try_finish(held.dataflow, part, commit=False, missing_ok=True)
        else:
            ok = True
            try:
                await held.conn.rollback()
            except Exception:
                ok = False
        states[held.dataflow.url] = "rolled back" if ok else "prepared, no decision (recovery rolls it back)"
    scrub = begun[done].dataflow.database.dialect.scrub
    raise InDoubtError(
        f"PREPARE TRANSACTION failed on {begun[done].dataflow!r}: {scrub(str(exc))}. "
        f"State: {_describe(states)}",
        states=states,
        hint="nothing was committed on any database; prepared halves without a decision are rolled "
        "back by recover_in_doubt() or at start-up.",
    ) from exc


async def _resolve_after_prepare(
    scope: Scope, begun: Sequence[Held], gids: list[str], gid: str, exc: Exception, *, committed: set[int]
) -> None:
    """An error after every PREPARE: settle the decision, finish each half, or say what is where."""
    coordinator = begun[0].dataflow
    outcome = await _settle(coordinator, gid)
    states: dict[str, str] = {}
    for n, (held, part) in enumerate(zip(begun, gids, strict=True)):
        url = held.dataflow.url
        if n in committed:
            states[url] = "committed"
        elif outcome is None:
            states[url] = "prepared, decision unknown (recover_in_doubt() resolves it)"
        elif await _try_finish(held.dataflow, part, commit=outcome == "commit", missing_ok=True):
            states[url] = "committed" if outcome == "commit" else "rolled back"
            if outcome == "commit":
                scope.record_event(held.dataflow, "commit", held)
        else:
            verb = "commits" if outcome == "commit" else "rolls back"
            states[url] = f"prepared, decision '{outcome}' (recover_in_doubt() {verb} it)"
    if outcome == "commit" and all(s == "committed" for s in states.values()):
        await forget_decision(coordinator, None, gid)
        return  # every half committed, exactly once: the run succeeded
    scrub = begun[0].dataflow.database.dialect.scrub
    nothing = all(s != "committed" for s in states.values()) and outcome != "commit"
    raise InDoubtError(
        f"Two-phase commit {gid} failed after PREPARE: {scrub(str(exc))}. State: {_describe(states)}",
        states=states,
        hint=("nothing was committed on any database; " if nothing else "")
        + "the run is not retried; check the states above before running it again.",
    ) from exc


def _describe(states: dict[str, str]) -> str:
    return "; ".join(f"{url}: {state}" for url, state in states.items())


async def _settle(db: DataFlow, gid: str) -> str | None:
    """The decision for ``gid``: the recorded one, else 'abort' (recorded now); None if unreachable."""
    try:
        dialect = await db.database.open()
        conn = await dialect.acquire()
    except Exception:
        return None
    try:
        await ensure_decision_table(db, conn)
        await conn.execute(
            f"INSERT INTO {DECISION_TABLE} (gid, outcome) VALUES ($1, 'abort') ON CONFLICT DO NOTHING", [gid]
        )
        rows = await conn.fetch(f"SELECT outcome FROM {DECISION_TABLE} WHERE gid = $1", [gid])
        return rows[0][0] if rows else None
    except Exception:
        return None
    finally:
        await dialect.release(conn)


async def _try_finish(db: DataFlow, gid: str, *, commit: bool, missing_ok: bool = True) -> bool:
    """COMMIT/ROLLBACK PREPARED on a fresh connection; a gid no longer prepared counts as done."""
    try:
        dialect = await db.database.open()
        conn = await dialect.acquire()
    except Exception:
        return False
    try:
        rows = await conn.fetch("SELECT 1 FROM pg_prepared_xacts WHERE gid = $1", [gid])
        if rows:
            await cast("TwoPhaseConnection", conn).finish_prepared(gid, commit=commit)
            return True
        return missing_ok
    except Exception:
        return False
    finally:
        await dialect.release(conn)


async def _record_decision(conn: Connection, gid: str, participants: list[str], db: DataFlow) -> None:
    await ensure_decision_table(db, conn)
    rows = await conn.fetch(
        f"INSERT INTO {DECISION_TABLE} (gid, outcome, participants) VALUES ($1, 'commit', $2) "
        "ON CONFLICT DO NOTHING RETURNING gid",
        [gid, participants],
    )
    if not rows:
        raise TransactionError(f"a decision other than 'commit' was recorded for {gid} first")
