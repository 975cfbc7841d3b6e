"""DaskRuntime: run a Workflow on dask.distributed, one task per node.

Each node becomes ``client.submit(run_node, task, ..., *upstream_futures,
key=f"{node_id}-{run_id}", pure=False)``, so Dask starts it once the nodes it
takes inputs from are done, on whichever worker is free. Workers rebuild each
DataFlow from its description (URL, configuration, models) and keep it, so
connection pools are per worker process and never pickled (``_remote.py``).

Transactions are per node: a node commits on its worker when it succeeds.
``transaction="saga"`` records what each committed node did, and when a node
fails, undoes the committed ones newest first, in one task on a worker. Every
node of the run is submitted up front, so branches that do not depend on the
failed node may still run and commit; the runtime waits for all of them, then
compensates every committed node (saga) or keeps them (node). Declared cycles
iterate from the client: each iteration is submitted, and the client reads the
closing node's output to test convergence. SwitchNode routes and skips exactly
as on LocalRuntime. Results have LocalRuntime's shape.

Databases private to one process (in-memory SQLite, DuckDB) are refused: the
workers could not see them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from ._loop import run
from ._remote import NodeTask, compensate, opened, run_node
from .access import check_run, user_name
from .cycles import Cycle
from .errors import ValidationError, refuse_unknown_options
from .hooks import Fanout, Hooks, NodeRecord
from .modes import TransactionMode
from .nodes.base import node_ref
from .retry import RetryPolicy
from .routing import RunResults, Skipped, routers
from .runtime import check_timeout, keyword_options, mark_run
from .scheduler import iteration_ended, node_ended, not_converged
from .tracking import Runs, RunTracker
from .transactions import check_isolation
from .transit import Transit
from .workflow import Workflow, WorkflowBuilder, prepare

__all__ = ["DaskRuntime"]


class DaskRuntime:
    """Runs workflows on a dask.distributed cluster. ``execute`` returns (results, run_id).

    ``client_or_address``: a ``distributed.Client``, or a scheduler address to connect to
    (that client is closed by ``close()``). ``transaction``: "node" (default) or "saga".
    ``node_timeout``: seconds each node may run (30; None: no limit; ``add_node(timeout=)`` sets
    one node's), enforced on its worker: the node is cancelled there and its transaction rolled
    back. There is no whole-run ``timeout``: Dask cannot stop a task that has started, so a run's
    limit could not roll back what its running nodes then commit.
    """

    def __init__(
        self,
        client_or_address: Any,
        *,
        transaction: TransactionMode | str = TransactionMode.NODE,
        retry: Any = None,
        isolation: str | None = None,
        hooks: Any = (),
        user: str | None = None,
        node_timeout: float | None = 30.0,
        **unknown: Any,
    ):
        if "timeout" in unknown:
            raise ValidationError(
                "DaskRuntime has no whole-run timeout: Dask cannot stop a task once it has started, so "
                "a run's limit could not undo what its running nodes commit afterwards.",
                hint="use node_timeout=seconds (each node is cancelled and rolled back on its worker), "
                "or LocalRuntime(timeout=...).",
            )
        refuse_unknown_options("DaskRuntime", unknown, keyword_options(DaskRuntime))
        self.node_timeout = check_timeout("node_timeout", node_timeout, owner="DaskRuntime")
        mode = TransactionMode.of(transaction, owner="DaskRuntime")
        if not mode.strategy.per_node:
            raise ValidationError(
                f"DaskRuntime cannot run transaction mode {str(transaction)!r}.",
                hint="on Dask each node commits on its own worker: use transaction='node', or 'saga' to "
                "undo committed nodes when one fails. One transaction per run needs LocalRuntime.",
            )
        self.client, self._owns_client = _client(client_or_address), isinstance(client_or_address, str)
        self.transaction, self.strategy = mode, mode.strategy
        self.retry = RetryPolicy.of(retry)
        self.isolation = check_isolation(isolation)
        self.user = user
        self.hooks = Hooks(hooks if isinstance(hooks, list | tuple) else [hooks])
        self.tracker = RunTracker()  # always on: the recent runs of this runtime (tracking.py)
        self.hooks.subscribe(self.tracker)

    def runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int | None = None
    ) -> Runs:
        """The recent runs of this runtime, oldest first (``.frame()``: a DataFrame); see tracking.py."""
        return self.tracker.runs(status=status, workflow=workflow, limit=limit)

    def __repr__(self) -> str:
        return f"DaskRuntime({self.client.scheduler.address!r}, transaction={str(self.transaction)!r})"

    def close(self) -> None:
        """Close the client if this runtime opened it (from an address)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> DaskRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(
        self,
        workflow: Workflow | WorkflowBuilder,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        user: Any = None,
        tenant: str | None = None,
    ) -> tuple[RunResults, str]:
        """Run the workflow on the cluster and wait: (results by node id, run id).

        ``user`` and ``tenant`` as for LocalRuntime: grants are checked here, and each task
        runs as the user (the audit log's "who") within the captured tenants.
        """

        workflow, overrides = prepare(workflow, parameters)
        _check_shareable(workflow)
        user = self.user if user is None else user
        tenants = check_run(workflow, user, tenant)
        run = _DaskRun(self, workflow, overrides, user_name(user), dict(tenants))
        emit, started, error = run.emit, time.perf_counter(), None
        if emit.wants("before_workflow"):
            emit.emit("before_workflow", run_id=run.run_id, workflow=workflow, runtime=self)
        try:
            run.go()
            return run.results, run.run_id
        except BaseException as exc:
            error = exc
            mark_run(exc, run.run_id)
            raise
        finally:
            if emit.wants("after_workflow"):
                emit.emit(
                    "after_workflow",
                    run_id=run.run_id,
                    workflow=workflow,
                    results=run.results,
                    error=error,
                    duration=time.perf_counter() - started,
                    mode=self.transaction,
                    runtime=self,
                    nodes=run.records,
                )

    async def execute_async(
        self,
        workflow: Workflow | WorkflowBuilder,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        user: Any = None,
        tenant: str | None = None,
    ) -> tuple[RunResults, str]:
        """``execute`` on a thread (with this context's tenants), so the event loop stays free."""
        import asyncio

        return await asyncio.to_thread(self.execute, workflow, parameters, user=user, tenant=tenant)


class _DaskRun:
    """One run: submit the steps, iterate cycles, settle every future, compensate on failure."""

    def __init__(
        self,
        runtime: DaskRuntime,
        workflow: Workflow,
        overrides: dict[str, dict[str, Any]],
        user: str | None,
        tenants: dict[Any, str],
    ):
        self.runtime, self.workflow, self.overrides = runtime, workflow, overrides
        self.user, self.tenants = user, tenants
        self.records: list[NodeRecord] = []  # for after_workflow's ``nodes``
        # the runtime's hooks, those of the DataFlows the run touches, the process-wide ones
        self.emit = Fanout(runtime.hooks, *(db.hooks for db in workflow.dataflows()))
        self.run_id = str(uuid.uuid4())
        self.results = RunResults()
        self.routers = routers(workflow)
        self.latest: dict[str, Any] = {}  # node id -> its newest future
        self.submitted: list[tuple[str, Any]] = []  # (node id, future), in submission order
        self.committed: list[Any] = []  # the Outcomes of every node that finished
        self.transit = _transit(workflow, self.run_id)  # encrypted fields: payloads travel sealed

    def go(self) -> None:
        try:
            self._go()
        finally:  # what the workers committed: this process's caches heard of it only where the
            self._forget_written()  # database has a change feed (none on MySQL: sole_writer)

    def _forget_written(self) -> None:
        for spec in self.workflow.nodes.values():
            cls = spec.node_class
            if cls.writes and cls.dataflow is not None:
                cls.dataflow.database.cache.invalidate(cls.written_tables())

    def _go(self) -> None:
        for dataflow, table in self.workflow.models():  # once, here, rather than racing on every worker
            run(dataflow.database.ensure_table(table))
        failure: BaseException | None = None
        try:
            try:
                for step in self.workflow.steps:
                    if isinstance(step, Cycle):
                        self._cycle(step)
                    else:
                        self._submit(step, f"{step}-{self.run_id}")
            except Exception as exc:  # a cycle's node failed, or it did not converge
                failure = exc
            outcomes, node_failure = self._settle()
        except BaseException:  # Ctrl-C: tasks not yet started never start (running ones finish)
            self.runtime.client.cancel([future for _, future in self.submitted])
            raise
        failure = node_failure or failure
        for node_id in self.workflow.order:
            if node_id in outcomes:
                self.results[node_id] = outcomes[node_id].result
        if failure is not None:
            if self.runtime.strategy.compensates:
                failure.compensations = self._compensate()  # type: ignore[attr-defined]
            raise failure
        if self.runtime.strategy.compensates:  # it succeeded: its saga log owes nothing
            from . import saga_log

            steps = [step for outcome in self.committed for step in outcome.saga_steps]
            run(saga_log.forget_run(self.run_id, steps))

    def _submit(self, node_id: str, key: str) -> Any:
        spec = self.workflow.nodes[node_id]
        incoming = self.workflow.inputs.get(node_id, ())
        sources = tuple(dict.fromkeys(c.source for c in incoming if c.source in self.latest))
        params, override, seal = dict(spec.params), self.overrides.get(node_id), self.transit
        task = NodeTask(
            node_id, node_ref(spec.node_class), params if seal is None else seal.seal(params), incoming,
            self.routers, override if seal is None or override is None else seal.seal(override),
            self.run_id, self.runtime.transaction, self.runtime.retry, self.runtime.isolation, self.user,
            self.tenants, self._node_limit(spec), sealed=seal is not None,
        )  # fmt: skip
        emit = self.emit
        if emit.wants("before_node"):  # on Dask: when the task is submitted
            emit.emit(
                "before_node",
                run_id=self.run_id,
                node_id=node_id,
                node_type=spec.type_name,
                params=dict(spec.params),
                node_class=spec.node_class,
            )
        future = self.runtime.client.submit(
            run_node, task, sources, *(self.latest[s] for s in sources), key=key, pure=False
        )
        self.latest[node_id] = future
        self.submitted.append((node_id, future))
        return future

    def _node_limit(self, spec: Any) -> float | None:
        limit = self.runtime.node_timeout if spec.timeout is None else spec.timeout
        return None if limit is None or limit == float("inf") else limit

    def _cycle(self, cycle: Cycle) -> None:
        """Submit the body once per iteration; the client reads the closing output to decide."""
        for iteration in range(1, cycle.max_iterations + 1):
            futures = [self._submit(n, f"{n}-{iteration}-{self.run_id}") for n in cycle.body]
            outcomes = [
                opened(self.transit, o) for o in self.runtime.client.gather(futures)
            ]  # raises the first failure
            for node_id, outcome in zip(cycle.body, outcomes, strict=True):
                self.results.iterations.setdefault(node_id, []).append(outcome.result)
            output = outcomes[-1].result  # the closing node: every other body node leads to it, so it is last
            if iteration_ended(self.emit, self.run_id, cycle, iteration, output):
                return
        not_converged(cycle, {n: self.results.iterations[n][-1] for n in cycle.body}, self.results)

    def _settle(self) -> tuple[dict[str, Any], BaseException | None]:
        """Wait for every submitted task; report each; the first failure in run order is the cause."""
        from distributed import wait

        wait([future for _, future in self.submitted])
        finished = [(n, f) for n, f in self.submitted if f.status == "finished"]
        gathered = [opened(self.transit, o) for o in self.runtime.client.gather([f for _, f in finished])]
        values = dict(zip((id(f) for _, f in finished), gathered, strict=True))
        outcomes: dict[str, Any] = {}
        failure: BaseException | None = None
        for node_id, future in self.submitted:
            if id(future) in values:
                outcomes[node_id] = outcome = values[id(future)]
                self._report(node_id, outcome, None)
            elif failure is None:
                failure = future.exception()
                self._report(node_id, None, failure)
        self.committed = [values[id(f)] for _, f in finished]
        return outcomes, failure

    def _report(self, node_id: str, outcome: Any, error: BaseException | None) -> None:
        emit, spec = self.emit, self.workflow.nodes[node_id]
        if outcome is not None and isinstance(outcome.result, Skipped):
            if emit.wants("node_skipped"):
                emit.emit(
                    "node_skipped",
                    run_id=self.run_id,
                    node_id=node_id,
                    node_type=spec.type_name,
                    reason=outcome.result.reason,
                )
            return
        result = None if outcome is None else outcome.result
        duration = 0.0 if outcome is None else outcome.duration
        # "started" is a client-side reading (workers' clocks are their own); queries are not
        # counted: the workers' copies of the DataFlow are not monitored
        node_ended(
            emit,
            self.records,
            run_id=self.run_id,
            node_id=node_id,
            node_class=spec.node_class,
            started=time.perf_counter() - duration,
            duration=duration,
            result=result,
            error=error,
        )

    def _compensate(self) -> list[dict[str, Any]]:
        committed = sorted(self.committed, key=lambda outcome: outcome.finished)
        steps = [step for outcome in committed for step in outcome.saga_steps]
        if not steps:
            return []
        seal = self.transit
        record = self.runtime.client.submit(
            compensate, steps if seal is None else seal.seal(steps), self.run_id, self.runtime.retry,
            seal is not None, key=f"compensate-{self.run_id}", pure=False,
        ).result()  # fmt: skip
        emit = self.emit
        if emit.wants("compensation"):
            for entry in record:
                emit.emit("compensation", run_id=self.run_id, **entry)
        return record


def _client(client_or_address: Any) -> Any:
    if isinstance(client_or_address, str):
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - depends on the environment
            raise ValidationError(
                "DaskRuntime needs dask.distributed.", hint="pip install 'dataflow-lab[dask]'."
            ) from None
        return Client(client_or_address)
    if not callable(getattr(client_or_address, "submit", None)):
        raise ValidationError(
            f"DaskRuntime takes a distributed.Client or a scheduler address, got {type(client_or_address).__name__}.",
            hint="e.g. DaskRuntime(Client(LocalCluster())) or DaskRuntime('tcp://scheduler:8786').",
        )
    return client_or_address


def _transit(workflow: Workflow, run_id: str) -> Transit | None:
    """What seals the run's task payloads when its workflow touches encrypted fields (else None):
    the keys stay in this process and the workers' environments, never in a payload."""
    owners = [db for db, mt in workflow.models() if mt.model.encrypted]
    return None if not owners else owners[0].transit(run_id)


def _check_shareable(workflow: Workflow) -> None:
    for db in workflow.dataflows():
        if db.database.dialect.process_local():
            raise ValidationError(
                f"{db!r} lives in one process (in-memory SQLite, or DuckDB, which one process opens at "
                "a time), so Dask workers cannot share it.",
                hint="run this workflow on LocalRuntime, or put its models on PostgreSQL "
                "(or a SQLite file) for DaskRuntime.",
            )
