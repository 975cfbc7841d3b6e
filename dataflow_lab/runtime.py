"""LocalRuntime and AsyncLocalRuntime: run a Workflow, in one transaction by default.

Every run happens on the background loop (``_loop``). Nodes run in
topological order. With ``transaction="workflow"`` (the default) all writes
of one run to one database share a transaction: any failure rolls all of them
back. ``transaction="node"`` commits after each node instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _loop
from .errors import DataFlowError, NodeExecutionError, TransactionError, ValidationError, did_you_mean
from .nodes.base import RunContext
from .workflow import Connection, Workflow, WorkflowBuilder

if TYPE_CHECKING:  # pragma: no cover
    from .dataflow import DataFlow
    from .dialects import Connection as DBConnection

__all__ = ["AsyncLocalRuntime", "LocalRuntime"]

log = logging.getLogger("dataflow_lab.runtime")
TRANSACTION_MODES = ("workflow", "node")


class _Run(RunContext):
    """One run: its id and the connection it holds on each database it touched.

    A transaction begins lazily, before the run's first write to a database:
    reads before that are single statements on the same connection, so a
    read-only run pays no BEGIN/COMMIT round trips.
    """

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.now = dt.datetime.now(dt.UTC)
        self.writing = False  # set by the runtime before each node runs
        self._open: dict[int, list[Any]] = {}  # id(dataflow) -> [dataflow, connection, begun]

    async def connection(self, dataflow: DataFlow) -> DBConnection:
        entry = self._open.get(id(dataflow))
        if entry is None:
            dialect = await dataflow._opened()
            entry = self._open[id(dataflow)] = [dataflow, await dialect.acquire(), False]
        if self.writing and not entry[2]:
            await entry[1].begin()
            entry[2] = True
        return entry[1]

    async def commit(self) -> None:
        try:
            for dataflow, conn, begun in list(self._open.values()):
                if not begun:
                    continue
                try:
                    await conn.commit()
                except Exception as exc:
                    raise TransactionError(
                        f"Commit failed on {dataflow!r}: {dataflow._dialect.scrub(str(exc))}",
                        hint="nothing of this run was kept on that database; run the workflow again.",
                    ) from exc
        finally:
            await self.release()

    async def rollback(self) -> None:
        try:
            for dataflow, conn, begun in list(self._open.values()):
                if not begun:
                    continue
                try:
                    await conn.rollback()
                except Exception:  # the original error matters more; the pool discards broken connections
                    log.warning("rollback failed on %r", dataflow, exc_info=True)
        finally:
            await self.release()

    async def release(self) -> None:
        entries, self._open = list(self._open.values()), {}
        for dataflow, conn, _begun in entries:
            await dataflow._dialect.release(conn)


class LocalRuntime:
    """Runs workflows. ``execute`` blocks; ``execute_async`` awaits. Both return (results, run_id)."""

    def __init__(self, *, transaction: str = "workflow"):
        if transaction not in TRANSACTION_MODES:
            raise ValidationError(
                f"Unknown transaction mode '{transaction}'.{did_you_mean(transaction, TRANSACTION_MODES)}",
                hint="use 'workflow' (one transaction per run, the default) or 'node' (commit after each node).",
            )
        self.transaction = transaction

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transaction={self.transaction!r})"

    def execute(
        self, workflow: Workflow | WorkflowBuilder, parameters: Mapping[str, Mapping[str, Any]] | None = None
    ) -> tuple[dict[str, Any], str]:
        """Run the workflow and wait: (results by node id, run id)."""
        workflow, parameters = self._prepare(workflow, parameters)
        return _loop.run(self._execute(workflow, parameters))

    async def execute_async(
        self, workflow: Workflow | WorkflowBuilder, parameters: Mapping[str, Mapping[str, Any]] | None = None
    ) -> tuple[dict[str, Any], str]:
        """The async form of ``execute``; safe from any event loop, Jupyter's included."""
        workflow, parameters = self._prepare(workflow, parameters)
        return await _loop.run_async(self._execute(workflow, parameters))

    def _prepare(self, workflow: Any, parameters: Any) -> tuple[Workflow, dict[str, dict[str, Any]]]:
        if isinstance(workflow, WorkflowBuilder):
            workflow = workflow.build()
        if not isinstance(workflow, Workflow):
            raise ValidationError(
                f"execute() takes a Workflow, got {type(workflow).__name__}.",
                hint="build one with WorkflowBuilder().build().",
            )
        overrides = {}
        for node_id, values in (parameters or {}).items():
            if node_id not in workflow.nodes:
                raise ValidationError(
                    f"parameters name node '{node_id}', which the workflow does not have."
                    f"{did_you_mean(node_id, workflow.nodes)}",
                    hint=f"nodes: {', '.join(workflow.nodes)}.",
                )
            if not isinstance(values, Mapping):
                raise ValidationError(f"parameters['{node_id}'] must be a dict of parameter -> value.")
            spec = workflow.nodes[node_id]
            spec.node_class.check(values, node_id=node_id, partial=True)
            overrides[node_id] = dict(values)
        return workflow, overrides

    async def _execute(
        self, workflow: Workflow, overrides: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, Any], str]:
        run = _Run(str(uuid.uuid4()))
        for dataflow, table in workflow.models():
            await dataflow._ensure_table(table)
        results: dict[str, Any] = {}
        try:
            for node_id in workflow.order:
                results[node_id] = await self._run_node(
                    run, workflow, node_id, results, overrides.get(node_id)
                )
                if self.transaction == "node":
                    await run.commit()
            await run.commit()
        except BaseException:
            await run.rollback()
            raise
        return results, run.run_id

    async def _run_node(
        self,
        run: _Run,
        workflow: Workflow,
        node_id: str,
        results: dict[str, Any],
        override: dict[str, Any] | None,
    ) -> Any:
        spec = workflow.nodes[node_id]
        cls = spec.node_class
        try:
            incoming = workflow.inputs.get(node_id, ())
            if incoming or override:
                params = {**spec.params, **(override or {})}
                for c in incoming:
                    _assign(params, c.target_input, _follow(results[c.source], c))
                params = cls.check(params, node_id=node_id)
            else:
                params = cls.complete(spec.checked, node_id=node_id)
            run.writing = cls.writes
            return await cls(node_id, params).run(run)
        except NodeExecutionError:
            raise
        except Exception as exc:
            error = NodeExecutionError.wrap(node_id, cls.type_name, exc)
            if cls.dataflow is not None:
                scrubbed = cls.dataflow._dialect.scrub(str(error))
                if scrubbed != str(error):
                    error.args = (scrubbed,)
            raise error from exc


class AsyncLocalRuntime(LocalRuntime):
    """LocalRuntime for async code: ``await runtime.execute_async(workflow)``."""


def _follow(value: Any, c: Connection) -> Any:
    """Walk a dotted output path ('records.0.id') through dicts, lists and attributes."""
    for part in c.source_output.split("."):
        try:
            if isinstance(value, Mapping):
                value = value[part]
            elif isinstance(value, list | tuple):
                value = value[int(part)]
            else:
                value = getattr(value, part)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError):
            raise DataFlowError(
                f"connection {c}: the output of '{c.source}' has no '{part}'.",
                hint="check the source_output path against what the source node returned.",
            ) from None
    return value


def _assign(params: dict[str, Any], path: str, value: Any) -> None:
    """Set params['fields']['email'] for the path 'fields.email' (copying nested dicts)."""
    head, _, rest = path.partition(".")
    if not rest:
        params[head] = value
        return
    inner = dict(params.get(head) or {})
    _assign(inner, rest, value)
    params[head] = inner
