"""The saga log: what undoing each committed saga step takes, kept in the database it wrote to.

A step's entry (the ids it created, the before-image of the rows it changed) is
written in the step's own transaction, so it exists exactly when the step's writes
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
import functools
import itertools
import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .model import parse_model

if TYPE_CHECKING:  # pragma: no cover
    from .dataflow import DataFlow
    from .saga import SagaStep
    from .schema import ModelTable

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
_IN_FLIGHT: set[str] = set()  # saga runs of this process that have not ended: never resumed here
_FINISHED: set[str] = set()  # runs that succeeded but whose entries could not be deleted (server down)
_seq = itertools.count(1)


def begin_run(run_id: str) -> None:
    """A saga run of this process starts: its entries are not owed compensations while it runs."""
    _IN_FLIGHT.add(run_id)


def end_run(run_id: str) -> None:
    """The saga run ended (committed, or compensated as far as it could be)."""
    _IN_FLIGHT.discard(run_id)


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
_TABLES: weakref.WeakKeyDictionary[Any, ModelTable] = weakref.WeakKeyDictionary()


@functools.cache
def _schema() -> Any:
    return parse_model(_SagaEntry, internal=True)


def log_table(dataflow: DataFlow) -> ModelTable:
    table = _TABLES.get(dataflow)
    if table is None:
        from .schema import ModelTable

        table = _TABLES[dataflow] = ModelTable(_schema(), dataflow._dialect)
    return table


# -- writing (in the step's transaction) -------------------------------------------------------
async def ensure_log(db: DataFlow, scope: Any) -> None:
    """Create the saga log table before a step's transaction begins (in it, if it has begun).

    It is dataflow_lab's own table: created whatever the models' policy (existing_schema too).
    """
    table = log_table(db)
    key = (table.model.table_name, table.model.signature())
    if key in db._ready:
        return
    policy = {"auto_migrate": True, "existing_schema": False, "clock": db.clock}
    if scope.holds(db):  # a second connection could wait forever for this one (SQLite, DuckDB)
        await table.ensure(await scope.connection(db, write=True), **policy)
        return
    dialect = await db._opened()
    conn = await dialect.acquire()
    try:
        await conn.begin()
        try:
            await table.ensure(conn, **policy)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
    finally:
        await dialect.release(conn)
    db._ready = db._ready | {key}


async def log_step(scope: Any, saga_step: SagaStep) -> None:
    """Record what undoing ``saga_step`` takes, on its database, in its (not yet committed) transaction."""
    from .audit import _jsonable

    node = saga_step.node
    mt, db = getattr(node, "mt", None), node.dataflow
    if mt is None or db is None or not (saga_step.created or saga_step.before):
        return
    table = log_table(db)
    conn = await scope.connection(db, write=True)
    now = dt.datetime.now(dt.UTC)  # the wall clock, even under a deterministic one: it dates the grace
    seq = next(_seq)
    created = [_jsonable({"id": i})["id"] for i in saga_step.created]
    values = (scope.run_id, seq, node.node_id, node.model.name, created,
              [_jsonable(row) for row in saga_step.before], now, now)  # fmt: skip
    row = tuple(table.to_db(c, v) for c, v in zip(_COLUMNS, values, strict=True))
    await conn.execute(table.dialect.multirow_insert_sql(table.table, _COLUMNS, 1), row)
    saga_step.logged = (scope.run_id, seq)


async def forget_step(saga_step: SagaStep, conn: Any) -> None:
    """Delete a compensated step's entry, in the compensation's transaction."""
    if saga_step.logged is None:
        return
    run_id, seq = saga_step.logged
    t = log_table(saga_step.node.dataflow).table
    stmt = sa.delete(t).where(t.c.run_id == run_id, t.c.seq == seq)
    await conn.execute(*log_table(saga_step.node.dataflow).dialect.compile(stmt))


async def forget_run(run_id: str, steps: list[SagaStep]) -> None:
    """A run that succeeded owes nothing: delete its entries on every database it logged to."""
    for db in {id(s.node.dataflow): s.node.dataflow for s in steps if s.logged is not None}.values():
        table = log_table(db)
        try:
            dialect = await db._opened()
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
    from .migrations.live import read_table

    table = log_table(db)
    dialect = await db._opened()
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
        if r["run_id"] not in _IN_FLIGHT and r["run_id"] not in _FINISHED and r["created_at"] <= cutoff
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
    db._pending_compensations = None  # counted again when asked (fresh entries were not tried)
    return done


async def _resume_one(db: DataFlow, entry: dict[str, Any]) -> ResumedCompensation:
    mt = db._tables.get(entry["model"])
    what = {"run_id": entry["run_id"], "node_id": entry["node_id"], "model": entry["model"]}
    if mt is None:
        return ResumedCompensation(**what, status="pending", error=f"model '{entry['model']}' is not defined "
                                   f"on {db!r}; define it and call db.resume_compensations()")  # fmt: skip
    dialect = await db._opened()
    try:
        await db._ensure_table(mt)
        conn = await dialect.acquire()
    except Exception as exc:
        return ResumedCompensation(**what, status="failed", error=dialect.scrub(str(exc)))
    try:
        await conn.begin()
        try:
            await undo(mt, conn, _ids(mt, entry["created"]), _images(mt, entry["before"]))
            t = log_table(db).table
            await conn.execute(*dialect.compile(sa.delete(t).where(t.c.id == entry["id"])))
            await conn.commit()
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
    from .audit import _typed

    return [_typed(mt.model, row) for row in before]


async def undo(mt: ModelTable, conn: Any, created: list[Any], before: list[dict[str, Any]]) -> None:
    """Delete the rows a step created; write back the rows it changed (idempotent)."""
    for start in range(0, len(created), 500):
        ids = created[start : start + 500]
        await conn.execute(*mt.dialect.compile(sa.delete(mt.table).where(mt.table.c.id.in_(ids))))
    if before:
        columns = mt.columns
        rows = [tuple(mt.to_db(c, row[c]) for c in columns) for row in before]
        update = [c for c in columns if c != "id"]
        await mt.dialect.bulk_upsert(conn, mt.table, columns, rows, ["id"], update)
