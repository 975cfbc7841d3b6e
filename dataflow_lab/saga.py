"""Saga compensation: undo committed nodes, newest first, when a later node fails.

What undoing a node takes is the node's own answer (``nodes/undo.py``): before it
runs under ``transaction="saga"``, ``run_step`` asks its ``before_image`` (what it
is about to change), and after it ran, in the same transaction, its ``undo`` (how
to reverse it). The answer is logged in that transaction (``saga_log.py``), so it
is owed exactly while the node's writes stand. When a later node fails,
``compensate_steps`` applies the answers newest first, each in its own
transaction; applying one is idempotent.

A Python callable declares its own compensation with ``@compensate_with(undo)``;
``undo(result=..., **params)`` is called with the node's output and parameters.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import saga_log
from .nodes.base import Node, Undo
from .nodes.python import compensate_with

if TYPE_CHECKING:  # pragma: no cover
    from .transactions import Scope

__all__ = ["SagaStep", "compensate", "compensate_steps", "compensate_with", "needs_compensation", "run_step"]

log = logging.getLogger("dataflow_lab.runtime")


@dataclass
class SagaStep:
    """A node that ran, and how to undo it (None: nothing to undo)."""

    node_id: str
    node_type: str
    node: Node
    params: dict[str, Any]
    result: Any = None
    undo: Undo | None = None
    logged: tuple[str, int] | None = None  # (run_id, seq) of its saga log entry (saga_log.py)


def needs_compensation(node: Node) -> bool:
    """Whether ``node`` runs through ``run_step``: it writes, or its class says how to undo it."""
    return node.writes or type(node).undo is not Node.undo


async def run_step(scope: Scope, node: Node, saga_steps: list[SagaStep]) -> Any:
    """Run a node that needs compensation, recording what undoing it takes in ``saga_steps``.

    A top-level scope (a saga run's node) logs the undo with the node's writes; a nested
    scope's (``transactions.py``) lives and dies with its outer transaction, so it is not logged.
    """
    db, logged = node.dataflow, not scope.nested
    if db is not None and logged:
        await saga_log.ensure_log(db, scope)  # before its transaction begins
    conn = await scope.connection(db, write=True) if db is not None else None
    before = await node.before_image(conn)
    result = await node.run(scope)
    undo = await node.undo(conn, before, result)
    if undo is None and not node.writes:
        return result
    saga_step = SagaStep(node.node_id, node.type_name, node, dict(node.params), result, undo)
    if logged and conn is not None:
        await saga_log.log_step(scope, saga_step)  # in the node's transaction: committed with its writes
    saga_steps.append(saga_step)
    return result


async def compensate(saga_step: SagaStep, conn: Any) -> None:
    """Undo one step on ``conn`` (inside a transaction the caller commits). Idempotent."""
    if saga_step.undo is not None:
        await saga_step.undo.apply(conn)
    await saga_log.forget_step(saga_step, conn)  # in the same transaction: owed exactly until undone


async def compensate_steps(runtime: Any, steps: list[SagaStep], run_id: str) -> list[dict[str, Any]]:
    """Undo ``steps`` newest first, each in its own transaction retried per ``runtime.retry``.

    ``runtime``: the run (``runtime.Run``): its ``emit``, ``retry`` and ``should_retry``.
    Returns a record per step. It holds no state of the run that failed (each step gets
    a fresh scope and connection), so it may run as its own task, e.g. under
    ``asyncio.shield`` while the run is being cancelled.
    """
    emit = runtime.emit
    record = []
    for saga_step in reversed(list(steps)):
        entry = await _compensate_one(runtime, emit, saga_step, run_id)
        record.append(entry)
        if emit.wants("compensation"):
            emit.emit("compensation", run_id=run_id, node_id=saga_step.node_id, status=entry["status"],
                      error=entry["error"], node_type=saga_step.node_type)  # fmt: skip
    return record


async def _compensate_one(runtime: Any, emit: Any, saga_step: SagaStep, run_id: str) -> dict[str, Any]:
    from .transactions import Scope

    entry = {"node_id": saga_step.node_id, "node_type": saga_step.node_type, "status": "compensated",
             "error": None}  # fmt: skip
    dataflow, since = saga_step.node.dataflow, time.monotonic()
    for attempt in itertools.count(1):
        scope = Scope(run_id, emit)
        try:
            conn = await scope.connection(dataflow, write=True) if dataflow is not None else None
            if dataflow is not None:
                scope.writes.note(dataflow, type(saga_step.node).written_tables())
            await compensate(saga_step, conn)
            await scope.commit()
            return entry
        except Exception as exc:
            await scope.rollback()
            if await runtime.should_retry(exc, attempt, run_id, saga_step.node_id, since=since):
                continue
            entry.update(status="failed", error=str(exc))
            if dataflow is not None:
                dataflow.database.pending_count = None  # counted again when asked
            log.error("compensation of %s failed: %s", saga_step.node_id, exc)
            return entry
        except BaseException:  # cancelled: its saga log entry stays owed, resumed later
            await scope.rollback()
            raise
    return entry  # pragma: no cover - the loop always returns
