"""The saga log: what undoing each committed saga step takes, kept in the database it wrote to.

A step's entry is its node's ``RowUndo`` (``nodes/undo.py``: the ids it created, the
before-image of the rows it changed), written in the step's own transaction, so it exists exactly when the step's writes
do. Compensating the step deletes its entry in the compensation's transaction, and a
run that succeeds deletes its entries. So an entry that outlives its run is a
compensation still owed: the database was down when it ran, or the process died.

``db.resume_compensations()`` (and a DataFlow's first use of its database) runs them,
newest first per run, each in its own transaction; the dashboard counts the ones
pending (``safety_events.pending_compensations``). Entries younger than the DataFlow's
``in_doubt_grace`` are left alone unless ``force=True``: they may belong to a run still
going on in another process. Python nodes' own undo callables (``compensate_with``)
cannot be stored: their failures are reported on the error only.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

# The migrations package is imported before its submodule: importing the submodule first took its lock
# ahead of the package's, and the warm-up thread importing the package deadlocked with it (Python broke
# the tie with a partial module: "saga resume failed" on stderr).
from . import migrations  # noqa: F401
from .audit import _jsonable, _typed
from .migrations.live import read_table
from .nodes.undo import RowUndo
from .schema import ModelTable, internal_table

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow, SagaStep

__all__ = [
    "SAGA_LOG_TABLE",
    "ResumedCompensation",
    "begin_run",
    "end_run",
    "ensure_log",
    "forget_run",
    "log_step",
    "pending",
    "resume",
]

log = logging.getLogger("dataflow_lab.transactions")

SAGA_LOG_TABLE = "dataflow_lab_saga_log"
IN_FLIGHT: set[str] = set()  # saga runs of this process that have not ended: never resumed here
_FINISHED: set[str] = set()  # runs that succeeded but whose entries could not be deleted (server down)
_seq = itertools.count(1)


def begin_run(run_id: str) -> None:
    """A saga run of this process starts: its entries are not owed compensations while it runs."""
    IN_FLIGHT.add(run_id)


def end_run(run_id: str) -> None:
    """The saga run ended (committed, or compensated as far as it could be)."""
    IN_FLIGHT.discard(run_id)


@dataclass(frozen=True)
class ResumedCompensation:
    """One owed compensation that ``resume_compensations()`` ran (or could not)."""

    run_id: str
    node_id: str
    model: str
    status: str  # "compensated" | "failed" | "pending" (its model is not defined on this DataFlow)
    error: str | None = None


class _SagaEntry:
    """The saga log table, declared as a model so each dialect stores it its own way."""

    __tablename__ = SAGA_LOG_TABLE
    __dataflow__ = {"indexes": [["run_id"]]}
    run_id: str
    seq: int
    node_id: str
    model: str
    created: list
    before: list


_COLUMNS = ("run_id", "seq", "node_id", "model", "created", "before", "created_at", "updated_at")


def log_table(dataflow: DataFlow) -> ModelTable:
    return internal_table(_SagaEntry, dataflow)


# -- writing (in the step's transaction) -------------------------------------------------------
async def ensure_log(db: DataFlow, scope: Any) -> None:
    """Create the saga log table before a step's transaction begins (in it, if it has begun).

    It is dataflow_lab's own table: created whatever the models' policy (existing_schema too).
    """
    table = log_table(db)
    key = (table.model.table_name, table.model.signature())
    if db.database.is_ready(key):
        return
    if scope.holds(db):  # a second connection could wait forever for this one (SQLite, DuckDB)
        await table.ensure(await scope.connection(db, write=True), auto_migrate=True, clock=db.clock)
        return
    dialect = await db.database.open()
    conn = await dialect.acquire()
    try:
        await conn.begin()
        try:
            await table.ensure(conn, auto_migrate=True, clock=db.clock)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
    finally:
        await dialect.release(conn)
    db.database.mark_ready(key)


async def log_step(scope: Any, saga_step: SagaStep) -> None:
    """Record what undoing ``saga_step`` takes, on its database, in its (not yet committed) transaction.

    Only a ``RowUndo`` can be stored (it is data); other undos are owed in memory only.
    """
    from .audit import _json_value

    undo = saga_step.undo
    if not isinstance(undo, RowUndo) or undo.empty:
        return
    db = undo.dataflow
    mt = db.table(undo.model)  # its encrypted fields are logged as ciphertexts (ModelTable.sealed_image)
    table = log_table(db)
    conn = await scope.connection(db, write=True)
    now = dt.datetime.now(dt.UTC)  # the wall clock, even under a deterministic one: it dates the grace
    seq = next(_seq)
    created = [_json_value(i) for i in undo.created]
    values = (scope.run_id, seq, saga_step.node_id, undo.model, created,
              [_jsonable(mt.sealed_image(row, row["id"], "@saga")) for row in undo.before], now, now)  # fmt: skip
    row = tuple(table.to_db(c, v) for c, v in zip(_COLUMNS, values, strict=True))
    await conn.execute(table.dialect.multirow_insert_sql(table.table, _COLUMNS, 1), row)
    saga_step.logged = (scope.run_id, seq)


async def forget_step(saga_step: SagaStep, conn: Any) -> None:
    """Delete a compensated step's entry, in the compensation's transaction."""
    if saga_step.logged is None or not isinstance(saga_step.undo, RowUndo):
        return
    run_id, seq = saga_step.logged
    table = log_table(saga_step.undo.dataflow)
    stmt = sa.delete(table.table).where(table.table.c.run_id == run_id, table.table.c.seq == seq)
    await conn.execute(*table.dialect.compile(stmt))


async def forget_run(run_id: str, steps: list[SagaStep]) -> None:
    """A run that succeeded owes nothing: delete its entries on every database it logged to."""
    logged = [s.undo.dataflow for s in steps if s.logged is not None and isinstance(s.undo, RowUndo)]
    for db in {id(db): db for db in logged}.values():
        table = log_table(db)
        try:
            dialect = await db.database.open()
            conn = await dialect.acquire()
            try:
                await conn.execute(
                    *dialect.compile(sa.delete(table.table).where(table.table.c.run_id == run_id))
                )
            finally:
                await dialect.release(conn)
        except Exception:
            _FINISHED.add(run_id)  # never undone by this process; another one would (see the docs)
            log.warning("saga run %s succeeded but its log on %r could not be cleared", run_id, db,
                        exc_info=True)  # fmt: skip


# -- reading and resuming ----------------------------------------------------------------------
async def pending(db: DataFlow, *, min_age: float = 0.0) -> list[dict[str, Any]]:
    """The entries still owed on ``db``, oldest run first (``[]`` when it has no saga log)."""

    table = log_table(db)
    dialect = await db.database.open()
    conn = await dialect.acquire()
    try:
        if await read_table(dialect, conn, SAGA_LOG_TABLE) is None:
            return []
        t = table.table
        rows = table.rows(await conn.fetch(*dialect.compile(sa.select(*t.c).order_by(t.c.id))))
    finally:
        await dialect.release(conn)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=min_age)
    return [
        r
        for r in rows
        if r["run_id"] not in IN_FLIGHT and r["run_id"] not in _FINISHED and r["created_at"] <= cutoff
    ]


async def resume(db: DataFlow, *, min_age: float = 0.0) -> list[ResumedCompensation]:
    """Run every compensation still owed on ``db``: per run newest step first, each in its own transaction."""
    entries = await pending(db, min_age=min_age)
    runs: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        runs.setdefault(entry["run_id"], []).append(entry)
    done = []
    for run in runs.values():
        for entry in sorted(run, key=lambda e: e["seq"], reverse=True):
            done.append(await _resume_one(db, entry))
    db.database.pending_count = None  # counted again when asked (fresh entries were not tried)
    return done


async def _resume_one(db: DataFlow, entry: dict[str, Any]) -> ResumedCompensation:
    what = {"run_id": entry["run_id"], "node_id": entry["node_id"], "model": entry["model"]}
    if entry["model"] not in db.models:
        return ResumedCompensation(**what, status="pending", error=f"model '{entry['model']}' is not defined "
                                   f"on {db!r}; define it and call db.resume_compensations()")  # fmt: skip
    mt = db.table(entry["model"])
    dialect = await db.database.open()
    try:
        await db.database.ensure_table(mt)
        conn = await dialect.acquire()
    except Exception as exc:
        return ResumedCompensation(**what, status="failed", error=dialect.scrub(str(exc)))
    try:
        await conn.begin()
        try:
            undo = RowUndo(db, entry["model"], _ids(mt, entry["created"]), _images(mt, entry["before"]))
            await undo.apply(conn)
            t = log_table(db).table
            await conn.execute(*dialect.compile(sa.delete(t).where(t.c.id == entry["id"])))
            try:
                await conn.commit()
            finally:
                db.database.cache.invalidate([mt.model.table_name])
        except BaseException:
            await conn.rollback()
            raise
    except Exception as exc:
        return ResumedCompensation(**what, status="failed", error=dialect.scrub(str(exc)))
    finally:
        await dialect.release(conn)
    return ResumedCompensation(**what, status="compensated")


def _ids(mt: ModelTable, created: list[Any]) -> list[Any]:
    return [mt.check("id", i) for i in created]


def _images(mt: ModelTable, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    opened = (mt.opened_image(row, row.get("id"), "@saga") for row in before)
    return [typed for row in opened if (typed := _typed(mt.model, row)) is not None]
