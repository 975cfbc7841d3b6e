"""Two-phase commit across PostgreSQL and MySQL/MariaDB databases, and recovery of what a crash left in doubt.

Commit is PREPARE on every database (PREPARE TRANSACTION; XA END + XA PREPARE),
a decision row on the coordinator, then COMMIT everywhere (COMMIT PREPARED; XA
COMMIT). The coordinating process holds a session lock on the coordinator for
the whole commit (an advisory lock; GET_LOCK) and records the decision on that
lock's connection, so recovery in another process never touches a commit that
is still alive. The statements are the dialect's ``two_phase_sql``.

Once anything is prepared the run is never retried: an error after PREPARE is
resolved from the decision record (commit if it exists, roll back if it does
not), and if a database cannot be reached the error says what state each one
is in. ``recover_in_doubt`` resolves the rest later. A decision row is deleted
only once every participant has resolved.

Gids are ``dataflow_lab:<coordinator key>:<run>:<branch>``; the coordinator key
names the coordinator's database, so recovery on any participant knows where
the decision lives (``<run>``: the start of the run id, and 8 random hex digits
per attempt: XA's gtrid holds 64 bytes). A branch is named when its transaction begins where XA
needs it then (MySQL: the first such database coordinates), else at commit (the
first database begun coordinates).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._decisions import (
    DECISION_TABLE,
    GID_PREFIX,
    IN_FLIGHT,
    ensure_decision_table,
    forget_decision,
    key_of,
    sql_of,
)
from ._in_doubt import recover_in_doubt
from .errors import TransactionError

if TYPE_CHECKING:  # pragma: no cover
    from .dialects import Connection
    from .interfaces import DataFlow, Held, Scope

__all__ = [
    "DECISION_TABLE",
    "GID_PREFIX",
    "InDoubtError",
    "begin_branch",
    "commit_two_phase",
    "recover_in_doubt",
]

_PLAIN_RUN = re.compile(r"[A-Za-z0-9_-]+")


class InDoubtError(TransactionError):
    """A two-phase commit failed after PREPARE; ``states`` says what each database holds now.

    Never retried as a whole: some databases may have committed already.
    """

    def __init__(self, message: str, *, states: dict[str, str], hint: str | None = None):
        super().__init__(message, hint=hint)
        self.states = states


class _SimulatedCrash(TransactionError):
    """Fault injection for tests: the process 'dies' with no resolution attempted."""


def _run_part(run_id: str) -> str:
    """The run in a gid: its id (or its hash) cut to 23 characters, and 8 random hex digits.

    Each attempt of a run gets its own: a retried run's XA START must not meet the xid of an
    earlier attempt whose lost session the server has not ended yet (XAER_DUPID).
    """
    compact = run_id.replace("-", "")
    if not _PLAIN_RUN.fullmatch(compact):
        compact = hashlib.sha1(run_id.encode()).hexdigest()
    return f"{compact[:23]}.{secrets.token_hex(4)}"


async def _name(scope: Scope, held: Held) -> str:
    """``held``'s place in the scope's commit: its key and its gid (the first named coordinates)."""
    held.key = await key_of(held.dataflow, held.conn)
    if scope.gid is None:
        scope.gid = f"{GID_PREFIX}:{held.key}:{_run_part(scope.run_id)}"
    scope.branches.append(held)
    return f"{scope.gid}:{len(scope.branches) - 1}"


async def begin_branch(scope: Scope, held: Held) -> None:
    """Begin ``held``'s transaction as a named branch of the scope's commit (XA START takes its name)."""
    gid = await _name(scope, held)
    held.branch = await sql_of(held.dataflow).begin(held.conn, gid, scope.isolation, held.key or "")


async def commit_two_phase(scope: Scope, begun: Sequence[Held]) -> None:
    """PREPARE everywhere; record the decision on the coordinator; COMMIT everywhere."""
    for held in begun:
        if not held.dataflow.database.dialect.supports_two_phase:
            raise TransactionError(
                f"Two-phase commit needs PostgreSQL or MySQL/MariaDB (XA); {held.dataflow!r} cannot "
                "prepare a transaction.",
                hint="use transaction='saga' across other databases.",
            )
        if not await held.dataflow.database.allows_two_phase():
            raise TransactionError(
                f"Two-phase commit is not enabled on {held.dataflow!r}: nothing was committed.",
                hint="PostgreSQL: set max_prepared_transactions > 0. MySQL/MariaDB: 2PC needs MariaDB "
                "10.5+ or MySQL 5.7.7+ (older ones drop a prepared branch at disconnect) and, on MySQL "
                "8, GRANT XA_RECOVER_ADMIN (recovery runs XA RECOVER). Or use transaction='saga'.",
            )
    for held in begun:
        if held.branch is None:  # PostgreSQL: named now, at PREPARE
            held.branch = await _name(scope, held)
    ordered = sorted(begun, key=scope.branches.index)  # the coordinator first
    assert scope.gid is not None, "named above"
    coordinator = ordered[0]
    alive = await _hold_liveness_lock(coordinator.dataflow, scope.gid)
    IN_FLIGHT.add(scope.gid)
    try:
        await _two_phase(scope, ordered, scope.gid, alive)
    finally:
        IN_FLIGHT.discard(scope.gid)
        await _release_liveness_lock(coordinator.dataflow, alive, scope.gid)


async def _hold_liveness_lock(db: DataFlow, gid: str) -> Connection:
    """A session lock on the coordinator, held while this process commits ``gid``."""
    dialect = await db.database.open()
    conn = await dialect.acquire()
    try:
        await sql_of(db).lock(conn, gid)
    except BaseException:
        await dialect.release(conn)
        raise
    return conn


async def _release_liveness_lock(db: DataFlow, conn: Connection, gid: str) -> None:
    try:
        await sql_of(db).unlock(conn, gid)
    except Exception:  # a dead session has released its lock already
        pass
    finally:
        await db.database.release(conn)


def _gids(begun: Sequence[Held]) -> list[str]:
    return [held.branch or "" for held in begun]


async def _two_phase(scope: Scope, begun: Sequence[Held], gid: str, alive: Connection) -> None:
    gids = _gids(begun)
    prepared: list[Held] = []
    for held, part in zip(begun, gids, strict=True):
        try:
            await sql_of(held.dataflow).prepare(held.conn, part)
        except Exception as exc:
            await _abort_prepare(scope, begun, gids, len(prepared), exc)
        prepared.append(held)
        scope.record_event(held.dataflow, "prepare")
    coordinator = begun[0]
    try:  # on the lock's connection: the coordinator's own may be bound to its prepared branch (XA)
        await _record_decision(alive, gid, [h.key or "" for h in begun], coordinator.dataflow)
    except Exception as exc:
        await _resolve_after_prepare(scope, begun, gids, gid, exc, committed=set())
        return
    if getattr(scope, "_crash_after_decision", False):  # fault injection for tests
        raise _SimulatedCrash("simulated crash after the commit decision was recorded")
    committed: set[int] = set()
    for n, (held, part) in enumerate(zip(begun, gids, strict=True)):
        try:
            await sql_of(held.dataflow).finish(held.conn, part, commit=True)
        except Exception as exc:
            await _resolve_after_prepare(scope, begun, gids, gid, exc, committed=committed)
            return
        committed.add(n)
        scope.record_event(held.dataflow, "commit", held)
    await forget_decision(coordinator.dataflow, alive, gid)


async def _abort_prepare(
    scope: Scope, begun: Sequence[Held], gids: list[str], done: int, exc: Exception
) -> None:
    """PREPARE failed on begun[done]: roll back every half (its reply may be lost: it may be prepared)."""
    states: dict[str, str] = {}
    for n, (held, part) in enumerate(zip(begun, gids, strict=True)):
        if n <= done:
            ok = await _try_finish(held, part, commit=False)
        else:
            ok = True
            try:
                await held.conn.rollback()
            except Exception:
                ok = False
        states[held.dataflow.url] = "rolled back" if ok else "prepared, no decision (recovery rolls it back)"
    scrub = begun[done].dataflow.database.dialect.scrub
    raise InDoubtError(
        f"PREPARE failed on {begun[done].dataflow!r}: {scrub(str(exc))}. State: {_describe(states)}",
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
        elif await _try_finish(held, part, commit=outcome == "commit"):
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
        return await sql_of(db).record_abort(conn, gid)
    except Exception:
        return None
    finally:
        await dialect.release(conn)


async def _try_finish(held: Held, gid: str, *, commit: bool) -> bool:
    """COMMIT/ROLLBACK the prepared ``gid``; one no longer prepared (or never) counts as done.

    PostgreSQL: on a fresh connection. MySQL: on the session that holds the branch; where that
    fails, on a fresh one once that session has closed.
    """
    db, ops = held.dataflow, sql_of(held.dataflow)
    if ops.bound_to_session:
        try:
            return await ops.finish(held.conn, gid, commit=commit)
        except Exception:  # never prepared there, or the connection broke: look from a fresh one
            ops.let_go(held.conn)  # (which the server lets finish it once this session has ended)
    try:
        dialect = await db.database.open()
        conn = await dialect.acquire()
    except Exception:
        return False
    try:
        if await ops.is_prepared(conn, gid):
            return await ops.finish(conn, gid, commit=commit)
        return True
    except Exception:
        return False
    finally:
        await dialect.release(conn)


async def _record_decision(conn: Connection, gid: str, participants: list[str], db: DataFlow) -> None:
    await ensure_decision_table(db, conn)
    if not await sql_of(db).record_commit(conn, gid, participants):
        raise TransactionError(f"a decision other than 'commit' was recorded for {gid} first")
