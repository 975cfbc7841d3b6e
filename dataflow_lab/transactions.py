"""Transaction scopes: a run's transactions, savepoints and two-phase commit (db.transaction(): transaction_block).

A ``Scope`` holds the connection a run (or a ``db.transaction()`` block) uses on
each database. A run's transaction on a database it writes to begins at its
first statement there, so its reads and writes share one snapshot; a database
it only reads pays no BEGIN/COMMIT. A scope opened inside
another (a workflow run inside ``with db.transaction():``, or from inside a
running node) joins the outer transaction under a savepoint: if it fails, its
own writes are undone and the error reaches the outer scope. A database without
SAVEPOINT (DuckDB) gets the same outcome from an undo log: each write node of a
nested scope runs through ``saga.run_step``, which asks the node its before-image
and its undo (``nodes/undo.py``), and a failed nested scope applies the undos
inside the outer transaction, newest first. Unlike a saga's, this undo log is kept
in memory only: the outer transaction decides whether the writes stand.

With several PostgreSQL or MySQL databases and ``two_phase=True``, commit is the
two-phase protocol of ``two_phase.py`` (a MySQL transaction of such a run begins
as an XA branch: XA START takes its name).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import itertools
import logging
from typing import TYPE_CHECKING, Any, cast

from . import query_count
from .errors import ConnectionError, TransactionError, ValidationError, did_you_mean
from .scope_writes import ScopeWrites

if TYPE_CHECKING:  # pragma: no cover
    from .dialects import Connection
    from .interfaces import DataFlow

__all__ = ["ACTIVE_SCOPE", "ISOLATION_LEVELS", "Scope", "borrowed", "check_isolation"]

log = logging.getLogger("dataflow_lab.transactions")

# query_count.py's variable, read here as what it holds: only Scopes are set in it (here, modes, runtime)
ACTIVE_SCOPE = cast("contextvars.ContextVar[Scope | None]", query_count.ACTIVE_SCOPE)

ISOLATION_LEVELS = ("read_uncommitted", "read_committed", "repeatable_read", "serializable")

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
    __slots__ = ("dataflow", "conn", "begun", "alone", "savepoint", "undo", "branch", "key")

    def __init__(self, dataflow: DataFlow, conn: Connection):
        self.dataflow, self.conn, self.begun = dataflow, conn, False
        self.alone = False  # its one statement commits on its own (no BEGIN, no COMMIT: Scope.alone)
        self.savepoint: str | None = None
        self.branch: str | None = None  # its gid in a two-phase commit (two_phase.py), once named
        self.key: str | None = None
        # A nested scope on a database without SAVEPOINT: its write nodes and their undos
        # (saga.SagaStep), applied on rollback. None where a real savepoint (or the transaction itself) does the undoing.
        self.undo: list[Any] | None = None


class Scope:
    """The connections and transactions of one run or one ``db.transaction()`` block.

    It is the ``RunContext`` (nodes/base.py) every node runs with.
    """

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
        # Set when a nested scope's writes could not be undone: this transaction must not commit.
        self.doomed: BaseException | None = None
        # Set when the scope has committed or rolled back and given its connections back: a late
        # caller (a sync node's thread still running after its run was cancelled) gets none.
        self.ended = False
        # Tables this scope wrote, by database: their cached results go when it commits (scope_writes.py)
        self.writes = ScopeWrites()
        self.gid: str | None = None  # a two-phase commit's base gid, and its branches (two_phase.py)
        self.branches: list[_Held] = []
        # The run writes one statement (modes.one_statement): where the connection can keep every
        # guarantee so (PostgreSQL, SQLite, DuckDB inline), it is sent without BEGIN and COMMIT
        self.alone = False

    @property
    def nested(self) -> bool:
        """Whether this scope joined an outer one, whose transaction its writes commit or roll back with."""
        return self.parent is not None

    # -- connections -------------------------------------------------------
    async def connection(self, dataflow: DataFlow, *, write: bool | None = None) -> Connection:
        write = self.writing or id(dataflow) in self.eager if write is None else write
        held = self._held.get(id(dataflow))
        if held is None:
            if self.ended:
                raise TransactionError(
                    f"Run {self.run_id} has ended (committed, rolled back, or cancelled at a time "
                    "limit); its transaction takes no more work.",
                    hint="a sync Python node that outlived its run's time limit is still running: "
                    "what it starts now is refused, so nothing is written outside the run.",
                )
            if self.parent is not None:
                conn = await self.parent.connection(dataflow, write=write)
            else:
                dialect = await dataflow.database.open()
                conn = await dialect.acquire()
            held = self._held[id(dataflow)] = _Held(dataflow, conn)
        if write and not held.begun:
            if self.alone and self.parent is None and held.conn.commit_alone():
                held.begun = held.alone = True
                self.record_event(dataflow, "begin", held)
            else:
                await self._begin(held)
        return held.conn

    def transacting(self, dataflow: DataFlow) -> bool:
        """Whether a read of ``dataflow`` here is inside a transaction: one begun by this scope or one
        it joined, or one that begins at its first use (a run that writes there). Such a read never
        uses the result cache: it must see the transaction's own writes, and what it reads may be
        rolled back."""
        if self.writing:
            return True
        scope: Scope | None = self
        while scope is not None:
            held = scope._held.get(id(dataflow))
            if (held is not None and held.begun) or id(dataflow) in scope.eager:
                return True
            scope = scope.parent
        return False

    async def _begin(self, held: _Held) -> None:
        if self.parent is None:
            ops = held.dataflow.database.dialect.two_phase_sql if self.writes.may_prepare else None
            if ops is not None and ops.named_at_begin:
                from .two_phase import begin_branch

                await begin_branch(self, held)
            else:
                await held.conn.begin(self.isolation)
            quiet = self.writes.quiet_sql(held.dataflow)
            if quiet is not None:
                await held.conn.execute(quiet)
            self.record_event(held.dataflow, "begin", held)
        else:
            await self.parent.connection(held.dataflow, write=True)  # the outer transaction begins first
            if held.dataflow.database.dialect.supports_savepoints:
                held.savepoint = savepoint = f"dataflow_sp_{next(_savepoint_names)}"
                await held.conn.savepoint(savepoint)
                self.record_event(held.dataflow, "savepoint")
            else:
                held.undo = []
                self.record_event(held.dataflow, "savepoint")
        held.begun = True

    async def undo_log(self, dataflow: DataFlow | None) -> list[Any] | None:
        """Where a write node on ``dataflow`` records how to undo it (None: nothing to record).

        Only a nested scope on a database without SAVEPOINT keeps one; the runtime
        then runs the node through ``saga.run_step``, which asks the node how to undo it.
        """
        if dataflow is None or self.parent is None or dataflow.database.dialect.supports_savepoints:
            return None
        await self.connection(dataflow, write=True)
        return self._held[id(dataflow)].undo

    def record_event(self, dataflow: DataFlow, event: str, held: _Held | None = None) -> None:
        """Count a transaction event (begin, commit...) in the database's ledger; report it to hooks."""
        if event == "begin":
            dataflow.database.ledger.begin(held, self.run_id, self.node_id)
        elif event == "commit" or event == "rollback":
            dataflow.database.ledger.end(held, event == "commit")
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
                    elif held.undo:
                        self._hand_undo_to_parent(held)
                if self.doomed is not None:
                    self.parent.doomed = self.doomed
                self.writes.hand_to(self.parent.writes)  # its writes are now the outer transaction's
                return
            if self.doomed is not None:
                await self._refuse_doomed_commit()
            begun = self._begun()
            if two_phase and len(begun) > 1:
                from .two_phase import commit_two_phase

                try:
                    await commit_two_phase(self, begun)
                finally:
                    self.writes.invalidate()  # committed, or in doubt: either way the cache forgets
            else:
                committed: list[_Held] = []
                for held in begun:
                    try:
                        await self._commit_one(held, committed)
                    finally:  # (a COMMIT that failed may still have happened)
                        self.writes.invalidate(held.dataflow)
                    committed.append(held)
            await self.writes.announce([(held.dataflow, held.conn) for held in begun])
        finally:
            self.writes.forget()  # dealt with (a failure before the commit: rolled back, nothing goes)
            await self.release()

    async def _commit_one(self, held: _Held, committed: list[_Held]) -> None:
        if held.alone:  # the server committed its statement (or it sent none: nothing to commit)
            self.record_event(held.dataflow, "commit", held)
            return
        try:
            await held.conn.commit()
        except Exception as exc:
            if committed:  # never retried as a whole: that would apply the committed part again
                raise _partial_commit(held, committed, exc) from exc
            if held.dataflow.database.dialect.commit_never_sent(exc):
                raise ConnectionError(
                    f"The connection to {held.dataflow!r} was lost before COMMIT; the server rolled back.",
                    hint="nothing of this run was kept there; running it again is safe.",
                ) from exc
            raise TransactionError(
                f"COMMIT failed on {held.dataflow!r}: {held.dataflow.database.dialect.scrub(str(exc))}",
                hint="the outcome on that database is unknown if the connection broke during COMMIT; "
                "check the data before running the workflow again.",
            ) from exc
        self.record_event(held.dataflow, "commit", held)

    def _hand_undo_to_parent(self, held: _Held) -> None:
        """A nested scope succeeded: its writes are now the outer scope's, to undo if that one fails."""
        assert self.parent is not None and held.undo is not None, "a nested scope's undo"
        outer = self.parent._held.get(id(held.dataflow))
        if outer is not None and outer.undo is not None:
            outer.undo.extend(held.undo)

    async def _refuse_doomed_commit(self) -> None:
        cause = self.doomed
        for held in self._begun():
            try:
                await held.conn.rollback()
                self.record_event(held.dataflow, "rollback", held)
            except Exception:  # the refusal below matters more
                log.warning("rollback failed on %r", held.dataflow, exc_info=True)
        raise TransactionError(
            f"A failed inner block's writes could not be undone ({cause}); nothing of the outer "
            "transaction was committed: it was rolled back as a whole.",
            hint="the data is as it was before the outer block; run it again.",
        ) from cause

    async def rollback(self) -> None:
        """Undo every begun transaction (a nested scope rolls back to its savepoints)."""
        for held in self._begun():
            if held.alone and held.conn.committed_alone:  # it stands (see modes.one_statement)
                self.writes.invalidate(held.dataflow)
        self.writes.forget()  # nothing else it wrote stands: no cached result goes
        try:
            for held in self._begun():
                try:
                    if held.alone and held.conn.committed_alone:  # never counted as undone
                        self.record_event(held.dataflow, "commit", held)
                        continue
                    if self.parent is None:
                        await held.conn.rollback()
                    elif held.savepoint:
                        await held.conn.rollback_to_savepoint(held.savepoint)
                    elif held.undo:
                        await self._undo(held)
                    self.record_event(held.dataflow, "rollback", held)
                except Exception:  # the original error matters more; a dead connection is discarded
                    log.warning("rollback failed on %r", held.dataflow, exc_info=True)
            if self.parent is not None and self.doomed is not None:
                self.parent.doomed = self.doomed
        finally:
            await self.release()

    async def _undo(self, held: _Held) -> None:
        """Emulate ROLLBACK TO SAVEPOINT: apply the nodes' undos, newest first."""
        assert self.parent is not None and held.undo is not None, "a nested scope's undo"
        try:
            for step in reversed(held.undo):  # saga.SagaSteps; a nested scope's are never logged
                if step.undo is not None:
                    await step.undo.apply(held.conn)
        except Exception as exc:  # the outer transaction now holds half-undone writes: it must not commit
            self.parent.doomed = exc
            raise

    def _begun(self) -> list[_Held]:
        return [h for h in self._held.values() if h.begun]

    async def release(self) -> None:
        held, self._held = list(self._held.values()), {}
        if self.parent is None:
            self.ended = True
            for h in held:
                await h.dataflow.database.release(h.conn)


@contextlib.asynccontextmanager
async def borrowed(dataflow: DataFlow, scope: Scope | None) -> Any:
    """A connection to ``dataflow`` for a read outside any run: the open transaction's when ``scope``
    (the caller's ``ACTIVE_SCOPE``) holds one, else a pooled one, released after.

    SQLite and DuckDB have one writer: a second connection would wait forever for the block's.
    """
    if scope is not None and scope.holds(dataflow):
        yield await scope.connection(dataflow)
        return
    dialect = await dataflow.database.open()
    conn = await dialect.acquire()
    try:
        yield conn
    finally:
        await dialect.release(conn)


def _partial_commit(failed: _Held, committed: list[_Held], exc: Exception) -> TransactionError:
    done = ", ".join(repr(h.dataflow) for h in committed)
    lost = failed.dataflow.database.dialect.commit_never_sent(exc)
    there = "was rolled back there" if lost else "has an unknown outcome there"
    return TransactionError(
        f"The run committed on {done}, then COMMIT failed on {failed.dataflow!r} "
        f"({failed.dataflow.database.dialect.scrub(str(exc))}): its part {there}.",
        hint="the run is not retried (that would write the committed part twice). All or nothing "
        "across databases needs 2PC (each database a PostgreSQL with max_prepared_transactions > 0 "
        "or a MySQL/MariaDB, which transaction='auto' then uses), or transaction='saga', which "
        "undoes committed nodes.",
    )
