"""The walk over a workflow's steps: order, skips, cycles, and concurrent branches.

The runtime gives a ``Walk`` one callable, ``run_node(node_id, incoming)``,
that runs a node in whatever transaction the mode asks for. The walk decides
*when* each node runs and *whether* it does:

- in order (``concurrency=1``), or as soon as its upstream steps are done, at
  most ``concurrency`` at a time (``transaction="node"``/``"saga"`` in
  AsyncLocalRuntime);
- skipped when ``routing.live_connections`` says so;
- a declared cycle runs as one step, its body repeated (see ``cycles.py``).

Results always end in the workflow's order, whichever finished first.
"""

from __future__ import annotations

import asyncio
import graphlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .cycles import Cycle
from .errors import CycleNotConvergedError, DataFlowError
from .hooks import NodeRecord
from .routing import RunResults, Skipped, live_connections, routers
from .workflow import Connection, NodeSpec, Workflow

__all__ = ["Walk", "node_ended", "node_params", "rows_of"]

RunNode = Callable[[str, tuple[Connection, ...]], Awaitable[Any]]


class Walk:
    """One pass over ``workflow.steps``, filling ``results``."""

    def __init__(
        self,
        workflow: Workflow,
        results: RunResults,
        run_node: RunNode,
        *,
        emit: Any,
        run_id: str,
        concurrency: int = 1,
    ):
        self.workflow, self.results, self.run_node = workflow, results, run_node
        self.emit, self.run_id, self.concurrency = emit, run_id, concurrency
        self.routers = routers(workflow)

    async def run(self) -> None:
        try:
            if self.concurrency <= 1 or len(self.workflow.steps) < 2:
                for step in self.workflow.steps:
                    await self._step(step)
            else:
                await self._concurrently()
        finally:
            ordered = {n: self.results[n] for n in self.workflow.order if n in self.results}
            iterations = dict(self.results.iterations)
            self.results.clear()
            self.results.update(ordered)
            self.results.iterations.update(iterations)

    async def _step(self, step: str | Cycle) -> None:
        if isinstance(step, Cycle):
            await self._cycle(step)
        else:
            await self._node(step)

    async def _node(self, node_id: str) -> None:
        workflow = self.workflow
        live = live_connections(workflow.inputs.get(node_id, ()), self.results, self.routers)
        if isinstance(live, str):
            self.results[node_id] = Skipped(live)
            if self.emit.wants("node_skipped"):
                spec = workflow.nodes[node_id]
                self.emit.emit(
                    "node_skipped",
                    run_id=self.run_id,
                    node_id=node_id,
                    node_type=spec.type_name,
                    reason=live,
                )
            return
        self.results[node_id] = await self.run_node(node_id, tuple(live))

    async def _cycle(self, cycle: Cycle) -> None:
        results = self.results
        for iteration in range(1, cycle.max_iterations + 1):
            for node_id in cycle.body:
                await self._node(node_id)
                results.iterations.setdefault(node_id, []).append(results[node_id])
            if iteration_ended(self.emit, self.run_id, cycle, iteration, results[cycle.source]):
                return
        not_converged(cycle, {n: results[n] for n in cycle.body}, results)

    async def _concurrently(self) -> None:
        """Start each step once its upstream steps are done; at most ``concurrency`` at a time."""
        sorter = graphlib.TopologicalSorter(step_dependencies(self.workflow))
        sorter.prepare()
        limit = asyncio.Semaphore(self.concurrency)

        async def guarded(step: str | Cycle) -> None:
            async with limit:
                await self._step(step)

        running: dict[asyncio.Task, str | Cycle] = {}
        failure: BaseException | None = None
        try:
            while sorter.is_active():
                if failure is None:
                    for step in sorter.get_ready():
                        running[asyncio.ensure_future(guarded(step))] = step
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step = running.pop(task)
                    if task.exception() is None:
                        sorter.done(step)
                    elif failure is None:  # the first failure wins; the branches in flight finish
                        failure = task.exception()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if failure is not None:
            raise failure


def iteration_ended(emit: Any, run_id: str, cycle: Cycle, iteration: int, output: Any) -> bool:
    """Whether the cycle converged with ``output`` (its closing node's); tells ``cycle_iteration``."""
    converged = False
    if cycle.converge_when is not None:
        try:
            converged = bool(cycle.converge_when(output))
        except Exception as exc:
            raise DataFlowError(
                f"converge_when of the cycle {cycle} raised {type(exc).__name__}: {exc}",
                hint=f"it is called with the output of '{cycle.source}' after each iteration.",
            ) from exc
    if emit.wants("cycle_iteration"):
        emit.emit(
            "cycle_iteration",
            run_id=run_id,
            nodes=cycle.body,
            iteration=iteration,
            output=output,
            converged=converged,
        )
    return converged


def not_converged(cycle: Cycle, last: dict[str, Any], results: RunResults) -> None:
    """After max_iterations: a cycle with a convergence condition that never held is an error."""
    if cycle.converge_when is not None:
        raise CycleNotConvergedError(cycle.body, cycle.max_iterations, last, results.copy())


def step_dependencies(workflow: Workflow) -> dict[str | Cycle, set[str | Cycle]]:
    """Each step -> the steps whose outputs it takes (cycle connections excluded)."""
    owner: dict[str, str | Cycle] = {}
    for step in workflow.steps:
        for node_id in step.body if isinstance(step, Cycle) else (step,):
            owner[node_id] = step
    depends: dict[str | Cycle, set[str | Cycle]] = {step: set() for step in workflow.steps}
    for node_id, incoming in workflow.inputs.items():
        for c in incoming:
            if not c.cycle and owner[c.source] != owner[node_id]:
                depends[owner[node_id]].add(owner[c.source])
    return depends


# -- a node's parameters ----------------------------------------------------------
def node_params(
    spec: NodeSpec,
    incoming: tuple[Connection, ...],
    results: Mapping[str, Any],
    override: dict[str, Any] | None,
) -> dict[str, Any]:
    """The node's parameters: as checked at add_node, or re-checked with inputs and overrides."""
    cls = spec.node_class
    if not incoming and not override:
        return cls.complete(spec.checked, node_id=spec.node_id)
    params = {**spec.params, **(override or {})}
    for c in incoming:
        _assign(params, c.target_input, _follow(results[c.source], c))
    return cls.check(params, node_id=spec.node_id)


def node_ended(
    emit: Any,
    records: list[NodeRecord] | None,
    run_id: str,
    node_id: str,
    node_class: Any,
    started: float,
    duration: float,
    result: Any,
    error: BaseException | None,
    queries: int = 0,
    sql: list[str] | None = None,
    memory_mb: float | None = None,
    pool_usage: str | None = None,
) -> None:
    """Report a node's end: its record for after_workflow (``hooks.NODE_RECORD``) and ``after_node``.

    Called once per node while a run is monitored: the runtime passes the fields in order.
    """
    rows = rows_of(result)
    if records is not None:
        records.append(
            _record(
                NodeRecord,
                (node_id, node_class, started, duration, rows, queries, sql, error, memory_mb, pool_usage),
            )
        )
    if emit.wants("after_node"):
        emit.emit(
            "after_node",
            run_id=run_id,
            node_id=node_id,
            node_type=node_class.type_name,
            result=result,
            error=error,
            duration=duration,
            rows=rows,
            node_class=node_class,
            queries=queries,
            sql=sql,
            memory_mb=memory_mb,
            pool_usage=pool_usage,
        )


_record = tuple.__new__  # a NodeRecord from its fields, without NamedTuple's Python-level __new__


def rows_of(result: Any) -> int | None:
    """How many rows a node's output stands for (None when it is not a database result)."""
    if result is None:
        return 0
    if isinstance(result, dict):
        if "records" in result:
            return len(result["records"])
        counted: int | None = None  # a loop, not a comprehension: this runs per node while monitored
        for key in ("inserted", "updated", "deleted"):
            value = result.get(key)
            if isinstance(value, int):
                counted = value if counted is None else counted + value
        if counted is not None:
            return int(counted)
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
