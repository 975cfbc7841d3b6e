"""LocalRuntime and AsyncLocalRuntime: run a Workflow, in one transaction by default.

Every run happens on the background loop (``_loop``). Nodes run in
topological order. With ``transaction="workflow"`` (the default) all writes
of one run to one database share a transaction: any failure rolls all of them
back. ``transaction="node"`` commits after each node instead.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _loop
from .errors import DataFlowError, NodeExecutionError, TransactionError, ValidationError, did_you_mean
from .hooks import Hooks, _Fanout
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

    def __init__(self, run_id: str, hooks: _Fanout, parent: _Run | None = None):
        self.parent = parent  # a run started from inside a running node joins its transaction
        self.run_id = run_id
        self.hooks = hooks
        self.now = dt.datetime.now(dt.UTC)
        self.writing = False  # set by the runtime before each node runs
        self.node_id = ""  # the node running now
        self._open: dict[int, list[Any]] = {}  # id(dataflow) -> [dataflow, connection, begun]

    async def connection(self, dataflow: DataFlow) -> DBConnection:
        if self.parent is not None:
            self.parent.writing = self.writing  # the parent's node is waiting for us
            return await self.parent.connection(dataflow)
        entry = self._open.get(id(dataflow))
        if entry is None:
            dialect = await dataflow._opened()
            entry = self._open[id(dataflow)] = [dataflow, await dialect.acquire(), False]
        if self.writing and not entry[2]:
            await entry[1].begin()
            entry[2] = True
            self._transaction(dataflow, "begin")
        return entry[1]

    def _transaction(self, dataflow: DataFlow, event: str) -> None:
        if self.hooks.wants("transaction"):
            self.hooks.emit(
                "transaction", run_id=self.run_id, dataflow=dataflow, event=event, node_id=self.node_id
            )

    def progress(self, done: int, total: int | None) -> None:
        """Report bulk progress of the running node (rows done, of total if known)."""
        if self.hooks.wants("progress"):
            self.hooks.emit("progress", run_id=self.run_id, node_id=self.node_id, done=done, total=total)

    async def commit(self) -> None:
        if self.parent is not None:
            return  # the outer run commits
        try:
            for dataflow, conn, begun in list(self._open.values()):
                if not begun:
                    continue
                try:
                    await conn.commit()
                    self._transaction(dataflow, "commit")
                except Exception as exc:
                    raise TransactionError(
                        f"Commit failed on {dataflow!r}: {dataflow._dialect.scrub(str(exc))}",
                        hint="nothing of this run was kept on that database; run the workflow again.",
                    ) from exc
        finally:
            await self.release()

    async def rollback(self) -> None:
        if self.parent is not None:
            return  # the error reaches the outer run, which rolls back
        try:
            for dataflow, conn, begun in list(self._open.values()):
                if not begun:
                    continue
                try:
                    await conn.rollback()
                    self._transaction(dataflow, "rollback")
                except Exception:  # the original error matters more; the pool discards broken connections
                    log.warning("rollback failed on %r", dataflow, exc_info=True)
        finally:
            await self.release()

    async def release(self) -> None:
        entries, self._open = list(self._open.values()), {}
        for dataflow, conn, _begun in entries:
            await dataflow._dialect.release(conn)


# The run whose node is executing in this context. A workflow started from inside a
# running node (a callable that calls execute) joins that run's transaction: on SQLite and
# DuckDB it could never get the connection the outer run holds.
_ACTIVE_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("dataflow_lab_run", default=None)


class LocalRuntime:
    """Runs workflows. ``execute`` blocks; ``execute_async`` awaits. Both return (results, run_id)."""

    def __init__(self, *, transaction: str = "workflow", hooks: Any = ()):
        self.hooks = Hooks(hooks if isinstance(hooks, list | tuple) else [hooks])
        self._emit = _Fanout(self.hooks)
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
        run = _Run(str(uuid.uuid4()), self._emit, parent=_ACTIVE_RUN.get())
        token = _ACTIVE_RUN.set(run)
        emit = self._emit
        started = time.perf_counter()
        results: dict[str, Any] = {}
        error: BaseException | None = None
        if emit.wants("before_workflow"):
            emit.emit("before_workflow", run_id=run.run_id, workflow=workflow, runtime=self)
        try:
            for dataflow, table in workflow.models():
                await dataflow._ensure_table(table)
            for node_id in workflow.order:
                results[node_id] = await self._run_node(
                    run, workflow, node_id, results, overrides.get(node_id)
                )
                if self.transaction == "node":
                    await run.commit()
            await run.commit()
        except BaseException as exc:
            error = exc
            await run.rollback()
            raise
        finally:
            _ACTIVE_RUN.reset(token)
            if emit.wants("after_workflow"):
                emit.emit(
                    "after_workflow",
                    run_id=run.run_id,
                    workflow=workflow,
                    results=results,
                    error=error,
                    duration=time.perf_counter() - started,
                )
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
        emit = self._emit
        run.node_id = node_id
        if emit.wants("before_node"):
            emit.emit(
                "before_node",
                run_id=run.run_id,
                node_id=node_id,
                node_type=cls.type_name,
                params=dict(spec.params),
                node_class=cls,
            )
        started = time.perf_counter()
        result: Any = None
        error: BaseException | None = None
        try:
            result = await self._call_node(run, spec, workflow.inputs.get(node_id, ()), results, override)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            if emit.wants("after_node"):
                emit.emit(
                    "after_node",
                    run_id=run.run_id,
                    node_id=node_id,
                    node_type=cls.type_name,
                    result=result,
                    error=error,
                    duration=time.perf_counter() - started,
                    rows=rows_of(result),
                    node_class=cls,
                )

    async def _call_node(
        self,
        run: _Run,
        spec: Any,
        incoming: tuple[Connection, ...],
        results: dict[str, Any],
        override: dict[str, Any] | None,
    ) -> Any:
        node_id, cls = spec.node_id, spec.node_class
        try:
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


def rows_of(result: Any) -> int | None:
    """How many rows a node's output stands for (None when it is not a database result)."""
    if result is None:
        return 0
    if isinstance(result, dict):
        if "records" in result:
            return len(result["records"])
        counts = [result[k] for k in ("inserted", "updated", "deleted") if isinstance(result.get(k), int)]
        if counts:
            return sum(counts)
        if "deleted" in result:
            return int(bool(result["deleted"]))
        if "record" in result or "id" in result:
            return 1
        if isinstance(result.get("count"), int):
            return 1
    return None


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
