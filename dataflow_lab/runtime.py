"""LocalRuntime and AsyncLocalRuntime: run a Workflow, in one transaction by default.

Every run happens on the background loop (``_loop``), nodes in topological
order. The ``transaction`` mode (a ``TransactionMode``) decides what a failure
undoes; each mode is a strategy object in ``modes.py``:

- ``"workflow"`` (default): all writes of a run to a database share one
  transaction; any failure rolls all of them back.
- ``"node"``: each node commits on its own; a failure keeps earlier nodes.
- ``"saga"``: each node commits on its own, and a failure (or a cancellation)
  runs the compensations of the committed nodes in reverse order (``saga.py``).
- ``"2pc"``: one transaction per database, committed with two-phase commit
  across PostgreSQL databases (see ``transactions.py``).
- ``"auto"``: one database -> "workflow"; several PostgreSQL databases that
  allow prepared transactions -> "2pc"; otherwise "saga".

A run is a ``Run``: the runtime's settings, the hooks it reaches (the
runtime's, those of every DataFlow it touches, the process-wide ones) and the
node records for ``after_workflow``. The strategies, ``saga.py`` and the Dask
workers (``_remote.py``) drive a run through its package-internal methods.

Transient failures (lost connections, timeouts, deadlocks, serialization
failures) are retried per ``RetryPolicy``: the whole run in "workflow" and
"2pc" modes (its transaction was rolled back, so nothing is applied twice),
the failing node's own transaction in "node" and "saga" modes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _loop
from .access import prepare_run
from .errors import NodeExecutionError, ValidationError, refuse_unknown_options
from .hooks import Fanout, Hooks, NodeRecord
from .modes import Strategy, TransactionMode
from .process_memory import probe_for
from .retry import RetryPolicy, retry_reason
from .routing import RunResults
from .scheduler import RunNode, Walk, node_ended, node_params, rows_of
from .tracking import Runs, RunTracker
from .transactions import ACTIVE_SCOPE, Scope, check_isolation
from .workflow import Connection, NodeSpec, Workflow, WorkflowBuilder, prepare

if TYPE_CHECKING:  # pragma: no cover
    from .dataflow import DataFlow

__all__ = ["AsyncLocalRuntime", "LocalRuntime", "Run", "TransactionMode", "rows_of"]

log = logging.getLogger("dataflow_lab.runtime")
TRANSACTION_MODES = tuple(m.value for m in TransactionMode)  # the names, for a CLI's choices
_ONCE = RetryPolicy(attempts=1)
_NESTED = TransactionMode.WORKFLOW.strategy  # a run inside an open transaction scope joins it


class LocalRuntime:
    """Runs workflows. ``execute`` blocks; ``execute_async`` awaits. Both return (results, run_id).

    ``transaction``: a ``TransactionMode`` or its name: "workflow" (default), "node", "saga",
    "2pc" or "auto". ``retry``: a RetryPolicy, a number of attempts, or False. ``isolation``: e.g.
    "serializable". ``hooks``: subscribers (see ``hooks.py``).
    """

    def __init__(
        self,
        *,
        transaction: TransactionMode | str = TransactionMode.WORKFLOW,
        hooks: Any = (),
        retry: Any = None,
        isolation: str | None = None,
        user: Any = None,
        **unknown: Any,
    ):
        refuse_unknown_options(type(self).__name__, unknown, keyword_options(type(self)))
        self.user = user  # who the runs act for: a name (the audit log's "who") or an access.User
        self.transaction = TransactionMode.of(transaction, owner=type(self).__name__)
        self.strategy: Strategy = self.transaction.strategy
        self.retry = RetryPolicy.of(retry)
        self.isolation = check_isolation(isolation)
        self.hooks = Hooks(hooks if isinstance(hooks, list | tuple) else [hooks])
        self.tracker = RunTracker()  # always on: the recent runs of this runtime (tracking.py)
        self.hooks.subscribe(self.tracker)

    max_concurrency = 1  # nodes at once in "node"/"saga" mode (AsyncLocalRuntime runs branches concurrently)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transaction={str(self.transaction)!r})"

    def execute(
        self,
        workflow: Workflow | WorkflowBuilder,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        user: Any = None,
        tenant: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Run the workflow and wait: (results by node id, run id).

        ``user``: a ``User`` (or a name) for this run instead of the runtime's; ``tenant``: the
        tenant of multi_tenant models instead of ``with db.tenant(...)``. See ``access.py``.
        """
        workflow, parameters = self._prepare(workflow, parameters)
        user = self.user if user is None else user
        return _loop.run(prepare_run(workflow, user, tenant, self._execute(workflow, parameters)))

    async def execute_async(
        self,
        workflow: Workflow | WorkflowBuilder,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        user: Any = None,
        tenant: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """The async form of ``execute``; safe from any event loop, Jupyter's included.

        Cancelling it (``asyncio.wait_for``, a task's ``cancel()``) cancels the run, which rolls
        back or, in saga mode, compensates, before the cancellation reaches the caller.
        """
        workflow, parameters = self._prepare(workflow, parameters)
        user = self.user if user is None else user
        return await _loop.run_async(prepare_run(workflow, user, tenant, self._execute(workflow, parameters)))

    def runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int | None = None
    ) -> Runs:
        """The recent runs of this runtime, oldest first (``.frame()``: a DataFrame); see tracking.py."""
        return self.tracker.runs(status=status, workflow=workflow, limit=limit)

    def _prepare(self, workflow: Any, parameters: Any) -> tuple[Workflow, dict[str, dict[str, Any]]]:
        return prepare(workflow, parameters)

    async def _execute(
        self, workflow: Workflow, overrides: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, Any], str]:
        run = self.open_run(workflow, overrides)
        return await run.execute(ACTIVE_SCOPE.get()), run.run_id

    # -- package-internal ------------------------------------------------------------
    def open_run(
        self,
        workflow: Workflow | None,
        overrides: dict[str, dict[str, Any]] | None = None,
        *,
        run_id: str | None = None,
        results: dict[str, Any] | None = None,
    ) -> Run:
        """Package-internal: a run of ``workflow`` on this runtime, not started.

        ``execute`` runs it whole; a Dask worker (``_remote.py``) runs one node of it with
        ``node_in_own_transaction``, or its compensations with ``compensate``.
        """
        return Run(self, workflow, overrides, run_id=run_id, results=results)


class Run:
    """Package-internal: one run of a workflow on a LocalRuntime.

    It holds what every node of the run shares: the run id, the results so far, the hooks the run
    reaches (``emit``: the runtime's, those of the DataFlows it touches, the process-wide ones)
    and the node records for ``after_workflow``. The strategies of ``modes.py`` run it with
    ``scope``, ``walk``, ``node_in`` and ``node_alone``; ``saga.compensate_steps`` uses ``emit``,
    ``retry`` and ``should_retry``.
    """

    def __init__(
        self,
        runtime: LocalRuntime,
        workflow: Workflow | None,
        overrides: dict[str, dict[str, Any]] | None = None,
        *,
        run_id: str | None = None,
        results: dict[str, Any] | None = None,
    ):
        self.runtime, self.workflow, self.overrides = runtime, workflow, overrides or {}
        self.run_id = run_id or str(uuid.uuid4())
        self.results: dict[str, Any] = RunResults() if results is None else results
        self.retry, self.isolation = runtime.retry, runtime.isolation
        self.concurrency = runtime.max_concurrency
        dataflows = workflow.dataflows() if workflow is not None else ()
        self.emit = Fanout(runtime.hooks, *(db.hooks for db in dataflows))
        self.records: list[NodeRecord] | None = None  # kept while someone wants after_workflow's nodes
        # each node's memory and pool use, measured when a subscriber asks (the MetricsCollector)
        self.probe = probe_for(self.emit.node_figures())

    def __repr__(self) -> str:
        return f"<Run {self.run_id} on {self.runtime!r}>"

    async def execute(self, parent: Scope | None) -> RunResults:
        """The whole run, retried whole when its mode allows; reported to the hooks."""
        workflow, emit, started = self.workflow, self.emit, time.perf_counter()
        assert workflow is not None and isinstance(self.results, RunResults)
        strategy, error = self.runtime.strategy, None
        if emit.wants("before_workflow"):
            emit.emit("before_workflow", run_id=self.run_id, workflow=workflow, runtime=self.runtime)
        ended = emit.wants("after_workflow")
        self.records = [] if ended and emit.wants_records() else None
        try:
            for dataflow, table in workflow.models():
                await dataflow.database.ensure_table(table, parent)
            strategy = _NESTED if parent is not None else await strategy.resolve(workflow)
            whole_run = strategy.retries_whole_run and parent is None
            for attempt in range(1, (self.retry if whole_run else _ONCE).attempts + 1):
                self.results.clear()
                try:
                    await strategy.run(self, parent)
                    return self.results
                except Exception as exc:
                    if not whole_run or not await self.should_retry(exc, attempt, self.run_id):
                        raise
        except BaseException as exc:
            error = exc
            mark_run(exc, self.run_id)
            raise
        finally:
            if ended:
                emit.emit(
                    "after_workflow",
                    run_id=self.run_id,
                    workflow=workflow,
                    results=self.results,
                    error=error,
                    duration=time.perf_counter() - started,
                    mode=strategy.mode,  # "auto" resolved (until it could be, "auto")
                    runtime=self.runtime,
                    nodes=self.records,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def should_retry(
        self, exc: BaseException, attempt: int, run_id: str | None = None, node_id: str | None = None
    ) -> bool:
        """Whether ``exc`` is transient and attempts are left; if so, report it and wait the delay."""
        reason = retry_reason(exc)
        if reason is None or attempt >= self.retry.attempts:
            return False
        delay = self.retry.delay(attempt)
        log.info("retrying %s after %s (attempt %d): %s", node_id or "the run", reason, attempt, exc)
        if self.emit.wants("retry"):
            self.emit.emit(
                "retry",
                run_id=run_id or self.run_id,
                node_id=node_id or getattr(exc, "node_id", None),
                attempt=attempt,
                error=exc,
                delay=delay,
                reason=reason,
            )
        await asyncio.sleep(delay)
        return True

    # -- for the strategies ------------------------------------------------------------
    def scope(self, parent: Scope | None = None) -> Scope:
        """A transaction scope of this run (nested in ``parent``'s when given)."""
        return Scope(self.run_id, self.emit, parent=parent, isolation=self.isolation)

    def written_dataflows(self) -> list[DataFlow]:
        assert self.workflow is not None
        return _written_dataflows(self.workflow)

    async def walk(self, run_node: RunNode, *, concurrency: int = 1) -> None:
        """Walk the workflow's steps, running each node with ``run_node``."""
        assert self.workflow is not None and isinstance(self.results, RunResults)
        walk = Walk(
            self.workflow, self.results, run_node, emit=self.emit, run_id=self.run_id, concurrency=concurrency
        )
        await walk.run()

    def node_in(self, scope: Scope) -> RunNode:
        """Run each node in ``scope``, the one transaction the whole run shares."""

        def run_node(node_id: str, incoming: tuple[Connection, ...]) -> Any:
            return self.run_node(scope, node_id, incoming=incoming)

        return run_node

    def node_alone(self, saga_steps: list | None) -> RunNode:
        """Run each node in its own transaction; record saga steps in ``saga_steps`` when given."""

        def run_node(node_id: str, incoming: tuple[Connection, ...]) -> Any:
            return self.node_in_own_transaction(node_id, incoming, saga_steps)

        return run_node

    async def node_in_own_transaction(
        self, node_id: str, incoming: tuple[Connection, ...], saga_steps: list | None
    ) -> Any:
        """Run one node in its own transaction, retrying it alone on transient failures."""
        for attempt in range(1, self.retry.attempts + 1):
            scope = self.scope()
            token = ACTIVE_SCOPE.set(scope)
            try:
                result = await self.run_node(scope, node_id, incoming=incoming, saga_steps=saga_steps)
                await scope.commit()
                return result
            except Exception as exc:
                await scope.rollback()
                if await self.should_retry(exc, attempt, self.run_id, node_id):
                    continue
                raise
            except BaseException:
                await scope.rollback()
                raise
            finally:
                ACTIVE_SCOPE.reset(token)
        raise AssertionError("unreachable")  # pragma: no cover

    async def compensate(self, steps: list) -> list[dict[str, Any]]:
        """Run compensations newest first, each in its own (retried) transaction; record each."""
        from . import saga  # it needs SQLAlchemy, which `import dataflow_lab` must not load

        return await saga.compensate_steps(self, steps, self.run_id)

    # -- a node --------------------------------------------------------------
    async def run_node(
        self,
        scope: Scope,
        node_id: str,
        *,
        incoming: tuple[Connection, ...] = (),
        saga_steps: list | None = None,
    ) -> Any:
        """Run one node in ``scope``, between its before_node and after_node (and its record)."""
        assert self.workflow is not None
        spec = self.workflow.nodes[node_id]
        cls = spec.node_class
        emit = self.emit
        scope.node_id = node_id
        scope.queries, scope.sql = 0, None
        if emit.wants("before_node"):
            emit.emit(
                "before_node",
                run_id=scope.run_id,
                node_id=node_id,
                node_type=cls.type_name,
                params=dict(spec.params),
                node_class=cls,
            )
        probe = self.probe
        memory = probe.start() if probe is not None else None
        started = time.perf_counter()
        result: Any = None
        error: BaseException | None = None
        try:
            result = await self._call_node(scope, spec, incoming, saga_steps)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            if self.records is not None or emit.wants("after_node"):  # nobody listening: no call at all
                figures = _figures(probe, memory, cls) if probe is not None else (None, None)
                node_ended(
                    emit,
                    self.records,
                    run_id=scope.run_id,
                    node_id=node_id,
                    node_class=cls,
                    started=started,
                    duration=time.perf_counter() - started,
                    result=result,
                    error=error,
                    queries=scope.queries,
                    sql=scope.sql,
                    memory_mb=figures[0],
                    pool_usage=figures[1],
                )

    async def _call_node(
        self, scope: Scope, spec: NodeSpec, incoming: tuple[Connection, ...], saga_steps: list | None
    ) -> Any:
        node_id, cls = spec.node_id, spec.node_class
        try:
            node = cls(node_id, node_params(spec, incoming, self.results, self.overrides.get(node_id)))
            scope.writing = cls.writes
            if saga_steps is None and cls.writes:  # a nested scope without SAVEPOINT keeps an undo log
                saga_steps = await scope.undo_log(cls.dataflow)
            if saga_steps is None:
                return await node.run(scope)
            from . import saga  # only saga runs pay for its import

            if not saga.needs_compensation(node):
                return await node.run(scope)
            return await saga.run_step(scope, node, saga_steps)
        except NodeExecutionError:
            raise
        except Exception as exc:
            error = NodeExecutionError.wrap(node_id, cls.type_name, exc)
            if cls.dataflow is not None:
                scrubbed = cls.dataflow.database.dialect.scrub(str(error))
                if scrubbed != str(error):
                    error.args = (scrubbed,)
            raise error from exc


class AsyncLocalRuntime(LocalRuntime):
    """LocalRuntime for async code: ``await runtime.execute_async(workflow)``.

    With ``transaction="node"`` or ``"saga"``, independent branches run concurrently, at most
    ``max_concurrency`` nodes at a time. In the "workflow" and "2pc" modes nodes share one
    connection per database (one transaction), so they run one after another.
    """

    def __init__(self, *, max_concurrency: int = 10, **options: Any):
        super().__init__(**options)
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValidationError(
                f"max_concurrency must be a positive int, got {max_concurrency!r}.",
                hint="1 runs nodes one at a time; 10 (the default) runs up to 10 branches at once.",
            )
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transaction={str(self.transaction)!r}, max_concurrency={self.max_concurrency})"


def _figures(probe: Any, memory: int | None, node_class: Any) -> tuple[float | None, str | None]:
    """(memory_mb, pool_usage) of a node that just ended (see hooks.NodeRecord)."""
    db = node_class.dataflow
    return probe.megabytes(memory), db.database.dialect.pool_usage() if db is not None else None


def mark_run(error: BaseException, run_id: str) -> None:
    """Name the run an error came out of (``error.run_id``, as in ``runtime.runs()``)."""
    try:
        error.run_id = run_id  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # pragma: no cover - an exception type that takes no attributes
        pass


def keyword_options(cls: type) -> set[str]:
    """The keyword-only options of ``cls`` and of the classes it builds on (``**options`` passed up)."""
    import inspect

    return {
        p.name
        for klass in cls.__mro__
        if "__init__" in klass.__dict__ and klass is not object
        for p in inspect.signature(klass.__dict__["__init__"]).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }


def _written_dataflows(workflow: Workflow) -> list[DataFlow]:
    return [
        spec.node_class.dataflow
        for spec in workflow.nodes.values()
        if spec.node_class.writes and spec.node_class.dataflow is not None
    ]
