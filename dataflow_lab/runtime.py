"""LocalRuntime and AsyncLocalRuntime: run a Workflow, in one transaction by default.

Every run happens on the background loop (``_loop``), nodes in topological
order. The ``transaction`` mode decides what a failure undoes:

- ``"workflow"`` (default): all writes of a run to a database share one
  transaction; any failure rolls all of them back.
- ``"node"``: each node commits on its own; a failure keeps earlier nodes.
- ``"saga"``: each node commits on its own, and a failure runs the
  compensations of the committed nodes in reverse order (see ``saga.py``).
- ``"2pc"``: one transaction per database, committed with two-phase commit
  across PostgreSQL databases (see ``transactions.py``).
- ``"auto"``: one database -> "workflow"; several PostgreSQL databases that
  allow prepared transactions -> "2pc"; otherwise "saga".

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
from .errors import NodeExecutionError, ValidationError, did_you_mean, refuse_unknown_options
from .hooks import Hooks, _Fanout
from .retry import RetryPolicy, retry_reason
from .routing import RunResults
from .scheduler import Walk, node_ended, node_params, rows_of
from .transactions import ACTIVE_SCOPE, Scope, check_isolation
from .workflow import Connection, NodeSpec, Workflow, WorkflowBuilder, prepare

if TYPE_CHECKING:  # pragma: no cover
    from .dataflow import DataFlow

__all__ = ["AsyncLocalRuntime", "LocalRuntime", "rows_of"]

log = logging.getLogger("dataflow_lab.runtime")
TRANSACTION_MODES = ("workflow", "node", "saga", "2pc", "auto")
_ONCE = RetryPolicy(attempts=1)


class LocalRuntime:
    """Runs workflows. ``execute`` blocks; ``execute_async`` awaits. Both return (results, run_id).

    ``transaction``: "workflow" (default), "node", "saga", "2pc" or "auto".
    ``retry``: a RetryPolicy, a number of attempts, or False. ``isolation``: e.g.
    "serializable". ``hooks``: subscribers (see ``hooks.py``).
    """

    def __init__(
        self,
        *,
        transaction: str = "workflow",
        hooks: Any = (),
        retry: Any = None,
        isolation: str | None = None,
        user: Any = None,
        **unknown: Any,
    ):
        refuse_unknown_options(type(self).__name__, unknown, keyword_options(type(self)))
        self.user = user  # who the runs act for: a name (the audit log's "who") or an access.User
        if transaction not in TRANSACTION_MODES:
            raise ValidationError(
                f"Unknown transaction mode '{transaction}'.{did_you_mean(transaction, TRANSACTION_MODES)}",
                hint="use 'workflow' (one transaction per run, the default), 'node', 'saga', '2pc' or 'auto'.",
            )
        self.transaction = transaction
        self.retry = RetryPolicy.of(retry)
        self.isolation = check_isolation(isolation)
        self.hooks = Hooks(hooks if isinstance(hooks, list | tuple) else [hooks])
        self._emit = _Fanout(self.hooks)
        # run_id -> the run's node records, kept while someone wants after_workflow (its ``nodes``)
        self._records: dict[str, list[tuple] | None] = {}

    max_concurrency = 1  # nodes at once in "node"/"saga" mode (AsyncLocalRuntime runs branches concurrently)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transaction={self.transaction!r})"

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
        """The async form of ``execute``; safe from any event loop, Jupyter's included."""
        workflow, parameters = self._prepare(workflow, parameters)

        user = self.user if user is None else user
        return await _loop.run_async(prepare_run(workflow, user, tenant, self._execute(workflow, parameters)))

    def _prepare(self, workflow: Any, parameters: Any) -> tuple[Workflow, dict[str, dict[str, Any]]]:
        return prepare(workflow, parameters)

    # -- a run ---------------------------------------------------------------
    async def _execute(
        self, workflow: Workflow, overrides: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, Any], str]:
        parent = ACTIVE_SCOPE.get()
        run_id = str(uuid.uuid4())
        emit, started = self._emit, time.perf_counter()
        results = RunResults()
        error: BaseException | None = None
        if emit.wants("before_workflow"):
            emit.emit("before_workflow", run_id=run_id, workflow=workflow, runtime=self)
        records = self._records[run_id] = [] if emit.wants("after_workflow") else None
        try:
            for dataflow, table in workflow.models():
                await dataflow.database.ensure_table(table, parent)
            mode = "workflow" if parent is not None else await self._resolve_mode(workflow)
            whole_run = mode in ("workflow", "2pc") and parent is None
            for attempt in range(1, (self.retry if whole_run else _ONCE).attempts + 1):
                results.clear()
                try:
                    await self._attempt(workflow, overrides, mode, parent, run_id, results)
                    return results, run_id
                except Exception as exc:
                    if not whole_run or not await self._should_retry(exc, attempt, run_id):
                        raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            if records is not None:
                del self._records[run_id]
                emit.emit(
                    "after_workflow",
                    run_id=run_id,
                    workflow=workflow,
                    results=results,
                    error=error,
                    duration=time.perf_counter() - started,
                    mode=self.transaction,
                    runtime=self,
                    nodes=records,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _should_retry(
        self, exc: BaseException, attempt: int, run_id: str, node_id: str | None = None
    ) -> bool:
        reason = retry_reason(exc)
        if reason is None or attempt >= self.retry.attempts:
            return False
        delay = self.retry.delay(attempt)
        log.info("retrying %s after %s (attempt %d): %s", node_id or "the run", reason, attempt, exc)
        if self._emit.wants("retry"):
            self._emit.emit(
                "retry",
                run_id=run_id,
                node_id=node_id or getattr(exc, "node_id", None),
                attempt=attempt,
                error=exc,
                delay=delay,
                reason=reason,
            )
        await asyncio.sleep(delay)
        return True

    async def _attempt(
        self,
        workflow: Workflow,
        overrides: dict[str, dict[str, Any]],
        mode: str,
        parent: Scope | None,
        run_id: str,
        results: RunResults,
    ) -> None:
        if mode in ("node", "saga"):
            await self._node_by_node(workflow, overrides, mode, run_id, results)
            return
        scope = Scope(run_id, self._emit, parent=parent, isolation=self.isolation)
        scope.eager = {id(db) for db in _written_dataflows(workflow)}
        token = ACTIVE_SCOPE.set(scope)

        def run_node(node_id: str, incoming: tuple[Connection, ...]) -> Any:
            return self._run_node(
                scope, workflow, node_id, results, overrides.get(node_id), incoming=incoming
            )

        try:
            # one connection per database is shared by every node: they run one after another
            await Walk(workflow, results, run_node, emit=self._emit, run_id=run_id).run()
            await scope.commit(two_phase=mode == "2pc")
        except BaseException:
            await scope.rollback()
            raise
        finally:
            ACTIVE_SCOPE.reset(token)

    async def _node_by_node(
        self,
        workflow: Workflow,
        overrides: dict[str, dict[str, Any]],
        mode: str,
        run_id: str,
        results: RunResults,
    ) -> None:
        """Each node in its own transaction (retried alone); in saga mode, undo on failure."""
        steps: list = []  # saga.SagaStep, in the order they committed
        recorder = steps if mode == "saga" else None

        def run_node(node_id: str, incoming: tuple[Connection, ...]) -> Any:
            return self._in_own_transaction(
                workflow, node_id, results, overrides.get(node_id), incoming, run_id, recorder
            )

        walk = Walk(
            workflow, results, run_node, emit=self._emit, run_id=run_id, concurrency=self.max_concurrency
        )
        if mode != "saga":
            await walk.run()
            return
        from . import saga_log

        saga_log.IN_FLIGHT.add(run_id)  # its log entries are not owed compensations while it runs
        try:
            await walk.run()
        except Exception as exc:
            setattr(exc, "compensations", await self._compensate(steps, run_id))  # noqa: B010 - any exception
            raise
        else:
            await saga_log.forget_run(run_id, steps)
        finally:
            saga_log.IN_FLIGHT.discard(run_id)

    async def _in_own_transaction(
        self,
        workflow: Workflow,
        node_id: str,
        results: dict[str, Any],
        override: dict[str, Any] | None,
        incoming: tuple[Connection, ...],
        run_id: str,
        saga_steps: list | None,
    ) -> Any:
        """Run one node in its own transaction, retrying it alone on transient failures."""
        for attempt in range(1, self.retry.attempts + 1):
            scope = Scope(run_id, self._emit, isolation=self.isolation)
            token = ACTIVE_SCOPE.set(scope)
            try:
                result = await self._run_node(
                    scope, workflow, node_id, results, override, incoming=incoming, saga_steps=saga_steps
                )
                await scope.commit()
                return result
            except Exception as exc:
                await scope.rollback()
                if await self._should_retry(exc, attempt, run_id, node_id):
                    continue
                raise
            except BaseException:
                await scope.rollback()
                raise
            finally:
                ACTIVE_SCOPE.reset(token)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _compensate(self, steps: list, run_id: str) -> list[dict[str, Any]]:
        """Run compensations newest first, each in its own (retried) transaction; record each."""
        from . import saga

        return await saga.compensate_steps(self, steps, run_id)

    async def _resolve_mode(self, workflow: Workflow) -> str:
        if self.transaction != "auto":
            return self.transaction
        dataflows = workflow.dataflows()
        if len(dataflows) <= 1:
            return "workflow"
        if all(db.database.dialect.supports_two_phase for db in dataflows):
            if all([await db.database.allows_two_phase() for db in dataflows]):
                return "2pc"
        return "saga"

    # -- a node --------------------------------------------------------------
    async def _run_node(
        self,
        scope: Scope,
        workflow: Workflow,
        node_id: str,
        results: dict[str, Any],
        override: dict[str, Any] | None,
        *,
        incoming: tuple[Connection, ...] = (),
        saga_steps: list | None = None,
    ) -> Any:
        spec = workflow.nodes[node_id]
        cls = spec.node_class
        emit = self._emit
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
        started = time.perf_counter()
        result: Any = None
        error: BaseException | None = None
        try:
            result = await self._call_node(scope, spec, incoming, results, override, saga_steps)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            records = self._records.get(scope.run_id)
            if records is not None or emit.wants("after_node"):  # nobody listening: no call at all
                node_ended(
                    emit,
                    records,
                    run_id=scope.run_id,
                    node_id=node_id,
                    node_class=cls,
                    started=started,
                    duration=time.perf_counter() - started,
                    result=result,
                    error=error,
                    queries=scope.queries,
                    sql=scope.sql,
                )

    async def _call_node(
        self,
        scope: Scope,
        spec: NodeSpec,
        incoming: tuple[Connection, ...],
        results: dict[str, Any],
        override: dict[str, Any] | None,
        saga_steps: list | None,
    ) -> Any:
        node_id, cls = spec.node_id, spec.node_class
        try:
            node = cls(node_id, node_params(spec, incoming, results, override))
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
        return (
            f"{type(self).__name__}(transaction={self.transaction!r}, max_concurrency={self.max_concurrency})"
        )


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
