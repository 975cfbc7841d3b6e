"""Transaction scopes: a run's transactions, db.transaction(), savepoints and two-phase commit.

A ``Scope`` holds the connection a run (or a ``db.transaction()`` block) uses on
each database. A run's transaction on a database it writes to begins at its
first statement there, so its reads and writes share one snapshot; a database
it only reads pays no BEGIN/COMMIT. A scope opened inside
another (a workflow run inside ``with db.transaction():``, or from inside a
running node) joins the outer transaction under a savepoint: if it fails, its
own writes are undone and the error reaches the outer scope.

With several PostgreSQL databases and ``two_phase=True``, commit is
PREPARE TRANSACTION on every database, a decision row on the first
(the coordinator), then COMMIT PREPARED everywhere. A crash in between leaves
prepared transactions that ``recover_in_doubt`` resolves at start-up: commit
when the coordinator recorded the decision, roll back when it did not.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import itertools
import logging
from typing import TYPE_CHECKING, Any

from .errors import ConnectionError, DataFlowError, TransactionError, ValidationError, did_you_mean
from .nodes.base import RunContext

if TYPE_CHECKING:  # pragma: no cover
    from .dataflow import DataFlow
    from .dialects import Connection

__all__ = ["ACTIVE_SCOPE", "ISOLATION_LEVELS", "Scope", "TransactionBlock", "check_isolation"]

log = logging.getLogger("dataflow_lab.transactions")

ISOLATION_LEVELS = ("read_uncommitted", "read_committed", "repeatable_read", "serializable")
DECISION_TABLE = "dataflow_lab_2pc_decisions"
GID_PREFIX = "dataflow_lab"

# The scope whose work is running in this context; a new scope started here joins it.
ACTIVE_SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "dataflow_lab_scope", default=None
)
_savepoint_names = itertools.count(1)


def check_isolation(level: str | None) -> str | None:
    """'READ COMMITTED', 'read-committed', 'read_committed' -> 'read_committed'."""
    if level is None:
        return None
    key = str(level).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in ISOLATION_LEVELS:
        raise ValidationError(
            f"Unknown isolation level '{level}'.{did_you_mean(key, ISOLATION_LEVELS)}",
            hint=f"use one of {', '.join(ISOLATION_LEVELS)}.",
        )
    return key


class _Held:
    __slots__ = ("dataflow", "conn", "begun", "savepoint")

    def __init__(self, dataflow: DataFlow, conn: Connection):
        self.dataflow, self.conn, self.begun, self.savepoint = dataflow, conn, False, None


class Scope(RunContext):
    """The connections and transactions of one run or one ``db.transaction()`` block."""

    def __init__(self, run_id: str, hooks: Any, *, parent: Scope | None = None, isolation: str | None = None):
        self.run_id = run_id
        self.hooks = hooks
        self.parent = parent
        self.isolation = check_isolation(isolation)
        self.now = dt.datetime.now(dt.UTC)
        self.writing = False  # set by the runtime before each node runs
        self.node_id = ""  # the node running now
        # statements the running node has sent, counted only when monitoring is on (query_count.py);
        # the runtime zeroes these before each node
        self.queries = 0
        self.sql: list[str] | None = None
        # Databases this run will write to: their transaction begins at first use, so the run's reads
        # see the same snapshot its writes act on. Other databases are read outside a transaction.
        self.eager: set[int] = set()
        self._held: dict[int, _Held] = {}

    # -- connections -------------------------------------------------------
    async def connection(self, dataflow: DataFlow, *, write: bool | None = None) -> Connection:
        write = self.writing or id(dataflow) in self.eager if write is None else write
        held = self._held.get(id(dataflow))
        if held is None:
            if self.parent is not None:
                conn = await self.parent.connection(dataflow, write=write)
            else:
                dialect = await dataflow._opened()
                conn = await dialect.acquire()
            held = self._held[id(dataflow)] = _Held(dataflow, conn)
        if write and not held.begun:
            await self._begin(held)
        return held.conn

    async def _begin(self, held: _Held) -> None:
        if self.parent is None:
            await held.conn.begin(self.isolation)
            self._event(held.dataflow, "begin", held)
        else:
            await self.parent.connection(held.dataflow, write=True)  # the outer transaction begins first
            if held.dataflow._dialect.supports_savepoints:
                held.savepoint = f"dataflow_sp_{next(_savepoint_names)}"
                await held.conn.savepoint(held.savepoint)
                self._event(held.dataflow, "savepoint")
        held.begun = True

    def _event(self, dataflow: DataFlow, event: str, held: _Held | None = None) -> None:
        if event == "begin":
            dataflow._ledger.begin(held, self.run_id, self.node_id)
        elif event == "commit" or event == "rollback":
            dataflow._ledger.end(held, event == "commit")
        if self.hooks is not None and self.hooks.wants("transaction"):
            self.hooks.emit(
                "transaction", run_id=self.run_id, dataflow=dataflow, event=event, node_id=self.node_id
            )

    def progress(self, done: int, total: int | None) -> None:
        """Report bulk progress of the running node (rows done, of total if known)."""
        if self.hooks is not None and self.hooks.wants("progress"):
            self.hooks.emit("progress", run_id=self.run_id, node_id=self.node_id, done=done, total=total)

    def holds(self, dataflow: DataFlow) -> bool:
        """Whether this scope (or one it joined) already has a connection to ``dataflow``."""
        scope: Scope | None = self
        while scope is not None:
            if id(dataflow) in scope._held:
                return True
            scope = scope.parent
        return False

    @property
    def databases(self) -> list[DataFlow]:
        """The databases this scope has begun a transaction on."""
        return [h.dataflow for h in self._held.values() if h.begun]

    # -- ending ------------------------------------------------------------
    async def commit(self, *, two_phase: bool = False) -> None:
        """Commit every begun transaction (a nested scope releases its savepoints)."""
        try:
            if self.parent is not None:
                for held in self._begun():
                    if held.savepoint:
                        await held.conn.release_savepoint(held.savepoint)
                return
            begun = self._begun()
            if two_phase and len(begun) > 1:
                await _commit_two_phase(self, begun)
            else:
                for held in begun:
                    await self._commit_one(held)
        finally:
            await self.release()

    async def _commit_one(self, held: _Held) -> None:
        try:
            await held.conn.commit()
        except Exception as exc:
            if held.dataflow._dialect.commit_never_sent(exc):
                raise ConnectionError(
                    f"The connection to {held.dataflow!r} was lost before COMMIT; the server rolled back.",
                    hint="nothing of this run was kept there; running it again is safe.",
                ) from exc
            raise TransactionError(
                f"COMMIT failed on {held.dataflow!r}: {held.dataflow._dialect.scrub(str(exc))}",
                hint="the outcome on that database is unknown if the connection broke during COMMIT; "
                "check the data before running the workflow again.",
            ) from exc
        self._event(held.dataflow, "commit", held)

    async def rollback(self) -> None:
        """Undo every begun transaction (a nested scope rolls back to its savepoints)."""
        try:
            for held in self._begun():
                try:
                    if self.parent is None:
                        await held.conn.rollback()
                    elif held.savepoint:
                        await held.conn.rollback_to_savepoint(held.savepoint)
                    self._event(held.dataflow, "rollback", held)
                except Exception:  # the original error matters more; a dead connection is discarded
                    log.warning("rollback failed on %r", held.dataflow, exc_info=True)
        finally:
            await self.release()

    def _begun(self) -> list[_Held]:
        return [h for h in self._held.values() if h.begun]

    async def release(self) -> None:
        held, self._held = list(self._held.values()), {}
        if self.parent is None:
            for h in held:
                await h.dataflow._dialect.release(h.conn)


async def _commit_two_phase(scope: Scope, begun: list[_Held]) -> None:
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


class TransactionBlock:
    """``with db.transaction():`` / ``async with db.transaction():`` — one transaction for the block.

    Workflows run inside the block join it; a nested block is a savepoint. On an
    exception everything in the block is rolled back and the original exception
    propagates unchanged.
    """

    def __init__(self, dataflow: DataFlow, isolation: str | None = None):
        self.dataflow = dataflow
        self.isolation = check_isolation(isolation)
        self._scope: Scope | None = None
        self._token: contextvars.Token | None = None

    def __repr__(self) -> str:
        state = "open" if self._scope is not None else "idle"
        return f"<transaction on {self.dataflow!r} ({self.isolation or 'default isolation'}, {state})>"

    def _enter(self) -> Scope:
        if self._scope is not None:
            raise DataFlowError("This transaction block is already open.", hint="use a new db.transaction().")
        parent = ACTIVE_SCOPE.get()
        self._scope = Scope(f"transaction-{id(self):x}", None, parent=parent, isolation=self.isolation)
        self._token = ACTIVE_SCOPE.set(self._scope)
        return self._scope

    async def _begin(self) -> None:
        await self._scope.connection(self.dataflow, write=True)

    async def _end(self, failed: bool) -> None:
        if failed:
            await self._scope.rollback()
        else:
            await self._scope.commit()

    def _leave(self) -> None:
        ACTIVE_SCOPE.reset(self._token)
        self._scope = self._token = None

    def __enter__(self) -> TransactionBlock:
        from . import _loop

        self._enter()
        try:
            _loop.run(self._begin())
        except BaseException:
            _loop.run(self._scope.rollback())
            self._leave()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from . import _loop

        try:
            _loop.run(self._end(exc_type is not None))
        finally:
            self._leave()

    async def __aenter__(self) -> TransactionBlock:
        from . import _loop

        self._enter()
        try:
            await _loop.run_async(self._begin())
        except BaseException:
            await _loop.run_async(self._scope.rollback())
            self._leave()
            raise
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from . import _loop

        try:
            await _loop.run_async(self._end(exc_type is not None))
        finally:
            self._leave()
