"""LocalRuntime and AsyncLocalRuntime: run a Workflow, in one transaction by default.

Every run happens on the background loop (``_loop``), nodes in topological
order. The ``transaction`` mode (a ``TransactionMode``) decides what a failure
undoes; each mode is a strategy object in ``modes.py``:

- ``"auto"`` (default): one database, or several that do not all allow
  two-phase commit -> "workflow"; several that do (PostgreSQL with prepared
  transactions, MySQL/MariaDB with XA) -> "2pc".
- ``"workflow"``: all writes of a run to a database share one transaction; any
  failure rolls all of them back. Across databases, one COMMIT each: if a later
  one fails, the error names the databases that committed.
- ``"node"``: each node commits on its own; a failure keeps earlier nodes.
- ``"saga"``: each node commits on its own, and a failure (or a cancellation)
  runs the compensations of the committed nodes in reverse order (``saga.py``).
- ``"2pc"``: one transaction per database, committed with two-phase commit
  across PostgreSQL and MySQL/MariaDB databases (see ``transactions.py``).

A run is a ``Run``: the runtime's settings, the hooks it reaches (the
runtime's, those of every DataFlow it touches, the process-wide ones) and the
node records for ``after_workflow``. The strategies, ``saga.py`` and the Dask
workers (``_remote.py``) drive a run through its package-internal methods.

Transient failures (lost connections, timeouts, deadlocks, serialization
failures) are retried per ``RetryPolicy``: the whole run in "workflow" and
"2pc" modes (its transaction was rolled back, so nothing is applied twice),
the failing node's own transaction in "node" and "saga" modes.

Time limits: ``timeout`` bounds the whole run (300 s), ``node_timeout`` each node
(30 s; ``add_node(..., timeout=)`` sets one node's). Passing one cancels the run at
its current await, which rolls back or compensates as its mode says and returns the
connections; the error (``RunTimeoutError``, ``NodeTimeoutError``) names the node and
the limit. A sync Python node runs on a daemon thread, which cannot be stopped: the
run ends at once, and the callable runs on to its own end with its result dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _loop
from .access import prepare_run
from .deadlines import Deadline
from .errors import (
    NodeExecutionError,
    NodeTimeoutError,
    RunTimeoutError,
    ValidationError,
    refuse_unknown_options,
)
from .hooks import Fanout, Hooks, NodeRecord
from .leaks import after_run
from .modes import Strategy, TransactionMode
from .process_memory import probe_for
from .retry import RetryPolicy, note_attempts, retry_reason
from .routing import RunResults
from .scheduler import RunNode, Walk, node_ended, node_params, rows_of
from .tracking import Runs, RunTracker
from .transactions import ACTIVE_SCOPE, Scope, check_isolation
from .workflow import Connection, NodeSpec, Workflow, WorkflowBuilder, prepare

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow

__all__ = ["AsyncLocalRuntime", "LocalRuntime", "Run", "TransactionMode", "rows_of"]

log = logging.getLogger("dataflow_lab.runtime")
TRANSACTION_MODES = tuple(m.value for m in TransactionMode)  # the names, for a CLI's choices
_NESTED = TransactionMode.WORKFLOW.strategy  # a run inside an open transaction scope joins it


class LocalRuntime:
    """Runs workflows. ``execute`` blocks; ``execute_async`` awaits. Both return (results, run_id).

    ``transaction``: a ``TransactionMode`` or its name: "auto" (default), "workflow", "node",
    "saga" or "2pc". ``retry``: a RetryPolicy, a number of attempts, or False. ``isolation``: e.g.
    "serializable". ``hooks``: subscribers (see ``hooks.py``). ``timeout``: seconds for a whole
    run (300; None: no limit); ``node_timeout``: seconds for each node (30; None: no limit).
    """

    def __init__(
        self,
        *,
        transaction: TransactionMode | str = TransactionMode.AUTO,
        hooks: Any = (),
        retry: Any = None,
        isolation: str | None = None,
        user: Any = None,
        timeout: float | None = 300.0,
        node_timeout: float | None = 30.0,
        **unknown: Any,
    ):
        refuse_unknown_options(type(self).__name__, unknown, keyword_options(type(self)))
        self.timeout = check_timeout("timeout", timeout, owner=type(self).__name__)
        self.node_timeout = check_timeout("node_timeout", node_timeout, owner=type(self).__name__)
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
        here = _claimed_here(workflow)
        if here is None:
            return _loop.run(prepare_run(workflow, user, tenant, self._execute(workflow, parameters)))
        try:  # no hand-off to the background thread: two were most of a SQLite run's time
            return _loop.run_here(prepare_run(workflow, user, tenant, self._execute(workflow, parameters)))
        finally:
            here.unclaim()

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
        self.strategy: Strategy = runtime.strategy  # what "auto" resolved to, once it has
        self.cancelled_in: str | None = None  # the first node a cancellation (a timeout) reached
        # each node's memory and pool use, measured when a subscriber asks (the MetricsCollector);
        # the node classes' pool lookups are kept on the workflow, for all its runs (its nodes never change)
        pools = workflow.__dict__.setdefault("_node_pools", {}) if workflow is not None else None
        self.probe = probe_for(self.emit.node_figures(), pools)

    def __repr__(self) -> str:
        return f"<Run {self.run_id} on {self.runtime!r}>"

    async def execute(self, parent: Scope | None) -> RunResults:
        """The whole run, retried whole when its mode allows; reported to the hooks."""
        workflow, emit, started = self.workflow, self.emit, time.perf_counter()
        assert workflow is not None and isinstance(self.results, RunResults)
        error: BaseException | None = None
        if emit.wants("before_workflow"):
            emit.emit("before_workflow", run_id=self.run_id, workflow=workflow, runtime=self.runtime)
        ended = emit.wants("after_workflow")
        self.records = [] if ended and emit.wants_records() else None
        try:
            await self._within_timeout(parent)
            return self.results
        except BaseException as exc:
            error = exc
            mark_run(exc, self.run_id)
            raise
        finally:
            if parent is None:  # a nested run's connections are its parent's
                after_run(self.run_id, workflow.dataflows())
            if ended:
                emit.emit(
                    "after_workflow",
                    run_id=self.run_id,
                    workflow=workflow,
                    results=self.results,
                    error=error,
                    duration=time.perf_counter() - started,
                    mode=self.strategy.mode,  # "auto" resolved (until it could be, "auto")
                    runtime=self.runtime,
                    nodes=self.records,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _within_timeout(self, parent: Scope | None) -> None:
        limit = Deadline(self.runtime.timeout)
        try:
            with limit:
                await self._attempts(parent)
        except TimeoutError:
            if not limit.expired:  # a TimeoutError of the run's own passes unchanged
                raise
            raise self._run_timeout() from None

    async def _attempts(self, parent: Scope | None) -> None:
        """Run the strategy, again while a whole-run retry is allowed."""
        workflow = self.workflow
        assert workflow is not None and isinstance(self.results, RunResults)
        for dataflow, table in workflow.models():
            await dataflow.database.ensure_table(table, parent)
        strategy = _NESTED if parent is not None else await self.runtime.strategy.resolve(workflow)
        self.strategy = strategy
        whole_run, since = strategy.retries_whole_run and parent is None, time.monotonic()
        for attempt in itertools.count(1):
            self.results.clear()
            try:
                await strategy.run(self, parent)
                return
            except Exception as exc:
                if not whole_run or not await self.should_retry(exc, attempt, self.run_id, since=since):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_timeout(self) -> RunTimeoutError:
        node = self.cancelled_in
        where = f" while node '{node}' ran" if node else ""
        return RunTimeoutError(
            f"The run passed its timeout of {self.runtime.timeout:g} s{where} and was cancelled: "
            f"{_undone(self.strategy)}.",
            node_id=node,
            limit=float(self.runtime.timeout or 0),
            hint="raise LocalRuntime(timeout=...) (None: no limit), or find what the node waits on.",
        )

    async def should_retry(
        self,
        exc: BaseException,
        attempt: int,
        run_id: str | None = None,
        node_id: str | None = None,
        *,
        since: float | None = None,
    ) -> bool:
        """Whether ``exc`` is transient and the policy allows another try (``since``: the first try's
        ``time.monotonic()``); if so, report it and wait the delay. If not, the error says how many
        attempts were made."""
        reason, delay = retry_reason(exc), self.retry.delay(attempt)
        elapsed = 0.0 if since is None else time.monotonic() - since
        if reason is None or not self.retry.allows(attempt, elapsed, delay):
            note_attempts(exc, attempt, elapsed)
            return False
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
        since = time.monotonic()
        for attempt in itertools.count(1):
            scope = self.scope()
            token = ACTIVE_SCOPE.set(scope)
            try:
                result = await self.run_node(scope, node_id, incoming=incoming, saga_steps=saga_steps)
                await scope.commit()
                return result
            except Exception as exc:
                await scope.rollback()
                if await self.should_retry(exc, attempt, self.run_id, node_id, since=since):
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
            if isinstance(exc, asyncio.CancelledError) and self.cancelled_in is None:
                self.cancelled_in = node_id
            raise
        finally:
            if self.records is not None or emit.wants("after_node"):  # nobody listening: no call at all
                ended = time.perf_counter()  # one reading: the node's duration and its probe's end
                memory_mb, pool_usage = probe.end(memory, cls, ended) if probe is not None else (None, None)
                node_ended(
                    emit, self.records, scope.run_id, node_id, cls, started, ended - started, result, error,
                    scope.queries, scope.sql, memory_mb, pool_usage,
                )  # fmt: skip
            elif probe is not None:  # a started probe always ends: its thread's chain counts the
                probe.end(
                    memory, cls, time.perf_counter()
                )  # nodes in flight (the subscriber left during the node)

    def node_limit(self, spec: NodeSpec) -> float | None:
        """The seconds ``spec`` may run: its own ``timeout`` when add_node gave one, else the runtime's."""
        limit = self.runtime.node_timeout if spec.timeout is None else spec.timeout
        return None if limit is None or math.isinf(limit) else limit

    async def _within_node_timeout(
        self, scope: Scope, spec: NodeSpec, node: Any, saga_steps: list | None
    ) -> Any:
        limit = self.node_limit(spec)
        timer = Deadline(limit)
        try:
            with timer:
                return await self._run_in(scope, node, saga_steps)
        except TimeoutError:
            if limit is None or not timer.expired:  # the node's own TimeoutError passes unchanged
                raise
            raise NodeTimeoutError(
                f"it ran past its node_timeout of {limit:g} s and was cancelled.",
                node_id=spec.node_id,
                limit=limit,
                hint="raise the node's limit (add_node(..., timeout=s)) or the runtime's "
                "(LocalRuntime(node_timeout=s); None: no limit), or find what the node waits on.",
            ) from None

    async def _run_in(self, scope: Scope, node: Any, saga_steps: list | None) -> Any:
        if saga_steps is None:
            return await node.run(scope)
        from . import saga  # only saga runs pay for its import

        if not saga.needs_compensation(node):
            return await node.run(scope)
        return await saga.run_step(scope, node, saga_steps)

    async def _call_node(
        self, scope: Scope, spec: NodeSpec, incoming: tuple[Connection, ...], saga_steps: list | None
    ) -> Any:
        node_id, cls = spec.node_id, spec.node_class
        try:
            node = cls(node_id, node_params(spec, incoming, self.results, self.overrides.get(node_id)))
            scope.writing = cls.writes
            if cls.writes and cls.dataflow is not None:
                scope.writes.note(cls.dataflow, cls.written_tables())
            if saga_steps is None and cls.writes:  # a nested scope without SAVEPOINT keeps an undo log
                saga_steps = await scope.undo_log(cls.dataflow)
            return await self._within_node_timeout(scope, spec, node, saga_steps)
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
    ``max_concurrency`` nodes at a time. In the "workflow" and "2pc" modes (and "auto", the default,
    which runs as one of them) nodes share one connection per database (one transaction), so they
    run one after another.
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


def _claimed_here(workflow: Workflow) -> Any:
    """The dialect of a run that may run whole on the caller's thread, claimed for it; None if not.

    That is a run of one database whose statements need nothing of the background loop
    (``Dialect.runs_on_any_thread``: SQLite), already opened, with every table it uses checked,
    whose nodes are all that database's own (no Python node, which may wait on other work), outside
    a ``db.transaction()`` block, on a thread where no event loop runs (not Jupyter's kernel thread).
    While the thread holds its claim, the background loop's users of that database wait.
    """
    if ACTIVE_SCOPE.get() is not None:
        return None
    facts = workflow.__dict__.get("_on_one_database")  # what never changes for a built workflow: kept
    if facts is None:
        dataflows = workflow.dataflows()
        alone = len(dataflows) == 1 and all(
            s.node_class.dataflow is dataflows[0] for s in workflow.nodes.values()
        )
        keys = tuple((t.model.table_name, t.model.signature()) for _, t in workflow.models())
        facts = workflow.__dict__["_on_one_database"] = (dataflows[0] if alone else None, keys)
    db, keys = facts
    if db is None:
        return None
    database = db.database
    if not database.settled or not database.dialect.runs_on_any_thread:
        return None
    if not all(database.is_ready(key) for key in keys):
        return None
    if not _loop.can_run_here() or not database.dialect.claim():
        return None
    return database.dialect


def _undone(strategy: Strategy) -> str:
    """What a cancelled run of ``strategy`` left behind."""
    if strategy.compensates:
        return "the nodes that had committed were compensated"
    if strategy.per_node:
        return "the running node's transaction was rolled back; the nodes that had committed are kept"
    return "its transaction was rolled back"


def check_timeout(name: str, value: Any, *, owner: str = "LocalRuntime") -> float | None:
    """A time limit in seconds: a positive number, or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValidationError(
            f"{owner}: {name} must be a positive number of seconds or None, got {value!r}.",
            hint=f"e.g. {name}=60, or {name}=None for no limit.",
        )
    return float(value)


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
