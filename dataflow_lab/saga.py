"""Saga compensation: undo committed nodes, newest first, when a later node fails.

Before a write node runs under ``transaction="saga"``, ``capture`` reads what
the node is about to change (its *before-image*). After it commits, ``step``
notes which rows it created. Compensating a step is then the same for every
operation, and idempotent:

- delete the rows the node created (Create, BulkCreate, the inserts of upserts);
- write back the before-image (Update, Delete, BulkUpdate, BulkDelete, the
  updates of upserts) with ``INSERT ... ON CONFLICT (id) DO UPDATE``.

A Python callable declares its own compensation with ``@compensate_with(undo)``;
``undo(result=..., **params)`` is called with the node's output and parameters.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import saga_log
from .nodes.base import Node

__all__ = ["SagaStep", "capture", "compensate", "compensate_steps", "compensate_with", "run_step", "step"]

log = logging.getLogger("dataflow_lab.runtime")


def compensate_with(undo: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare how to undo a Python node: ``undo(result=..., **params)`` (sync or async)."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__dataflow_compensation__ = undo
        return fn

    return mark


@dataclass
class SagaStep:
    """What one committed node did, and what undoing it needs."""

    node_id: str
    node_type: str
    node: Node
    params: dict[str, Any]
    result: Any = None
    before: list[dict[str, Any]] = field(default_factory=list)
    created: list[Any] = field(default_factory=list)
    logged: tuple[str, int] | None = None  # (run_id, seq) of its saga log entry (saga_log.py)


async def capture(node: Node, conn: Any) -> list[dict[str, Any]]:
    """The rows ``node`` may change, read before it runs (empty for inserts and reads)."""
    from .nodes.bulk import BulkDelete, BulkUpdate, BulkUpsert
    from .nodes.crud import Delete, Update, Upsert

    mt, p = getattr(node, "mt", None), node.params
    guards = node.guards(include_deleted=True) if mt is not None else []  # only the run's tenant's rows
    if isinstance(node, Update | Delete):
        return await _select(mt, conn, {"id": {"$eq": node._id_from(p)}}, guards)
    if isinstance(node, Upsert):
        return await _select(mt, conn, {k: {"$eq": v} for k, v in p["where"].items()}, guards)
    if isinstance(node, BulkUpdate | BulkDelete):
        return await _select(mt, conn, p.get("filter") or {}, guards)
    if isinstance(node, BulkUpsert):
        p["data"] = list(p["data"]) if not isinstance(p["data"], list) else p["data"]  # read it twice
        keys = p["conflict_on"]
        values = [tuple(row.get(k) for k in keys) for row in p["data"] if all(k in row for k in keys)]
        if not values:
            return []
        if len(keys) == 1:
            doc = {keys[0]: {"$in": [mt.check(keys[0], v[0]) for v in values]}}
        else:
            doc = {
                "$or": [{k: {"$eq": mt.check(k, x)} for k, x in zip(keys, v, strict=True)} for v in values]
            }
        return await _select(mt, conn, doc, guards)
    return []


async def step(node: Node, conn: Any, before: list[dict[str, Any]], result: Any) -> SagaStep:
    """Record a committed node: its before-image and the ids of rows it created."""
    from .nodes.bulk import BulkCreate, BulkUpsert
    from .nodes.crud import Create, Upsert

    created: list[Any] = []
    if isinstance(node, Create):
        created = [result["id"]]
    elif isinstance(node, Upsert) and result["created"]:
        created = [result["record"]["id"]]
    elif isinstance(node, BulkCreate):
        created = list(result.get("ids", []))
    elif isinstance(node, BulkUpsert):
        keys = node.params["conflict_on"]
        values = [tuple(row.get(k) for k in keys) for row in node.params["data"]]
        known = {tuple(row[k] for k in keys) for row in before}
        fresh = [v for v in values if v not in known and None not in v]
        if fresh:
            doc = {
                "$or": [
                    {k: {"$eq": node.mt.check(k, x)} for k, x in zip(keys, v, strict=True)} for v in fresh
                ]
            }
            guards = node.guards(include_deleted=True)
            created = [row["id"] for row in await _select(node.mt, conn, doc, guards)]
    return SagaStep(node.node_id, node.type_name, node, dict(node.params), result, before, created)


async def compensate(saga_step: SagaStep, conn: Any) -> None:
    """Undo one step on ``conn`` (inside a transaction the caller commits). Idempotent."""
    node = saga_step.node
    undo = getattr(getattr(node, "fn", None), "__dataflow_compensation__", None)
    if undo is not None:
        outcome = undo(result=saga_step.result, **saga_step.params)
        if inspect.isawaitable(outcome):
            await outcome
        return
    mt = getattr(node, "mt", None)
    if mt is None:
        return
    await saga_log.undo(mt, conn, saga_step.created, saga_step.before)
    await saga_log.forget_step(saga_step, conn)  # in the same transaction: owed exactly until undone


def needs_compensation(node: Node) -> bool:
    return node.writes or hasattr(getattr(node, "fn", None), "__dataflow_compensation__")


async def _select(mt: Any, conn: Any, doc: dict[str, Any], guards: Any = ()) -> list[dict[str, Any]]:
    from .nodes.model_node import select_rows

    return mt.rows(await conn.fetch(*mt.dialect.compile(select_rows(mt, doc, (), None, 0, guards))))


async def run_step(scope: Any, node: Node, saga_steps: list[SagaStep]) -> Any:
    """Run a node that needs compensation, recording what undoing it takes in ``saga_steps``."""
    if getattr(node, "mt", None) is not None and node.dataflow is not None:
        await saga_log.ensure_log(node.dataflow, scope)  # before its transaction begins
    conn = await scope.connection(node.dataflow, write=True) if node.dataflow is not None else None
    if "return_ids" in node.param_map():
        node.params["return_ids"] = True  # compensation deletes exactly the rows it created
    before = await capture(node, conn) if conn is not None else []
    result = await node.run(scope)
    if conn is None:
        saga_steps.append(SagaStep(node.node_id, node.type_name, node, dict(node.params), result))
        return result
    saga_step = await step(node, conn, before, result)
    await saga_log.log_step(scope, saga_step)  # in the node's transaction: committed with its writes
    saga_steps.append(saga_step)
    return result


async def compensate_steps(runtime: Any, steps: list[SagaStep], run_id: str) -> list[dict[str, Any]]:
    """Undo ``steps`` newest first, each in its own transaction retried per ``runtime.retry``.

    ``runtime``: the run (``runtime.Run``): its ``emit``, ``retry`` and ``should_retry``.
    """
    from .transactions import Scope

    emit = runtime.emit
    record = []
    for saga_step in reversed(steps):
        entry = {
            "node_id": saga_step.node_id,
            "node_type": saga_step.node_type,
            "status": "compensated",
            "error": None,
        }
        for attempt in range(1, runtime.retry.attempts + 1):
            scope = Scope(run_id, emit)
            try:
                dataflow = saga_step.node.dataflow
                conn = await scope.connection(dataflow, write=True) if dataflow is not None else None
                await compensate(saga_step, conn)
                await scope.commit()
                break
            except Exception as exc:
                await scope.rollback()
                if await runtime.should_retry(exc, attempt, run_id, saga_step.node_id):
                    continue
                entry.update(status="failed", error=str(exc))
                if saga_step.node.dataflow is not None:
                    saga_step.node.dataflow._pending_compensations = None  # counted again when asked
                log.error("compensation of %s failed: %s", saga_step.node_id, exc)
                break
        record.append(entry)
        if emit.wants("compensation"):
            emit.emit("compensation", run_id=run_id, node_id=saga_step.node_id, status=entry["status"],
                      error=entry["error"], node_type=saga_step.node_type)  # fmt: skip
    return record
