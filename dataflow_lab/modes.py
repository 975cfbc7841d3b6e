"""Transaction modes: what a failure undoes, one strategy object per mode.

``TransactionMode`` names the modes (a ``StrEnum``: the plain strings work
everywhere a mode is taken). Each maps to a ``Strategy`` that runs one attempt
of a run, given the runtime's ``Run`` (``runtime.py``):

- ``WorkflowScoped`` ("workflow"): one transaction per database for the whole
  run; any failure rolls all of them back. A failed run is retried whole.
- ``TwoPhase`` ("2pc"): the same, committed with two-phase commit across
  PostgreSQL and MySQL/MariaDB databases (``two_phase.py``; XA on MySQL).
- ``PerNode`` ("node"): each node commits on its own (and is retried alone); a
  failure keeps earlier nodes.
- ``Saga`` ("saga"): per node, and a failure *or a cancellation* runs the
  compensations of the committed nodes newest first (``saga.py``), shielded
  from the cancellation, which then propagates.
- ``Auto`` ("auto", the runtimes' default): resolves, per run, to "2pc" when the
  run touches several databases and every one allows two-phase commit (a
  PostgreSQL with prepared transactions on, a MySQL/MariaDB whose user may run
  XA RECOVER), and to "workflow" otherwise: one transaction per
  database, whose error names the databases that committed if a later COMMIT
  fails.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ._loop import shielded
from .errors import ValidationError, did_you_mean
from .transactions import ACTIVE_SCOPE, Scope

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow
    from .scheduler import RunNode
    from .workflow import Workflow

__all__ = ["Auto", "PerNode", "Saga", "Strategy", "TransactionMode", "TwoPhase", "WorkflowScoped", "strategy"]


class Run(Protocol):
    """What a mode asks of the run it runs (``runtime.Run``, whose module imports this one)."""

    @property
    def run_id(self) -> str: ...
    @property
    def workflow(self) -> Workflow | None: ...
    @property
    def concurrency(self) -> int: ...
    def scope(self, parent: Scope | None = None) -> Scope: ...
    def written_dataflows(self) -> list[DataFlow]: ...
    async def walk(self, run_node: RunNode, *, concurrency: int = 1) -> None: ...
    def node_in(self, scope: Scope) -> RunNode: ...
    def node_alone(self, saga_steps: list | None) -> RunNode: ...
    async def compensate(self, steps: list) -> list[dict[str, Any]]: ...


class TransactionMode(StrEnum):
    """The ``transaction=`` of a runtime."""

    WORKFLOW = "workflow"
    NODE = "node"
    SAGA = "saga"
    TWO_PHASE = "2pc"
    AUTO = "auto"

    @classmethod
    def of(cls, value: Any, *, owner: str = "LocalRuntime") -> TransactionMode:
        """The mode ``value`` names, or a ValidationError with a did-you-mean."""
        try:
            return cls(value)
        except ValueError:
            names = [m.value for m in cls]
            raise ValidationError(
                f"Unknown transaction mode '{value}'.{did_you_mean(str(value), names)}",
                hint=f"{owner} takes 'auto' (the default: one transaction per run, 2PC across PostgreSQL "
                "and MySQL databases), 'workflow', 'node', 'saga' or '2pc'.",
            ) from None

    @property
    def strategy(self) -> Strategy:
        return _STRATEGIES[self]


class Strategy:
    """How one mode runs an attempt of a run. Stateless: one instance per mode serves every run."""

    mode: ClassVar[TransactionMode]
    retries_whole_run: ClassVar[bool] = False  # a failed attempt rolled everything back: run it again
    per_node: ClassVar[bool] = False  # each node commits on its own (what DaskRuntime can run)
    compensates: ClassVar[bool] = False  # committed nodes record how to undo them

    def __repr__(self) -> str:
        return f"<{type(self).__name__} strategy ({self.mode!s})>"

    async def resolve(self, workflow: Workflow) -> Strategy:
        """The strategy that runs ``workflow`` (itself, except for "auto")."""
        return self

    def saga_steps(self) -> list | None:
        """A list to record committed steps in, when this mode compensates (else None)."""
        return [] if self.compensates else None

    async def run(self, run: Run, parent: Scope | None) -> None:
        raise NotImplementedError


class WorkflowScoped(Strategy):
    """One transaction per database for the whole run (inside ``parent``'s, when nested)."""

    mode = TransactionMode.WORKFLOW
    retries_whole_run = True
    prepares = False  # its transactions may be PREPAREd (two-phase commit)

    async def run(self, run: Run, parent: Scope | None) -> None:
        scope = run.scope(parent)
        scope.eager = {id(db) for db in run.written_dataflows()}
        scope.writes.may_prepare = self.prepares
        scope.alone = (
            parent is None and not self.prepares and scope.isolation is None and one_statement(run.workflow)
        )
        token = ACTIVE_SCOPE.set(scope)
        try:
            # one connection per database is shared by every node: they run one after another
            await run.walk(run.node_in(scope))
            await self.commit(scope)
        except BaseException:
            await scope.rollback()
            raise
        finally:
            ACTIVE_SCOPE.reset(token)

    async def commit(self, scope: Scope) -> None:
        await scope.commit()


class TwoPhase(WorkflowScoped):
    """As "workflow", committed with two-phase commit when the run wrote to several databases."""

    mode = TransactionMode.TWO_PHASE
    prepares = True

    async def commit(self, scope: Scope) -> None:
        await scope.commit(two_phase=True)


class PerNode(Strategy):
    """Each node in its own transaction, retried alone; a failure keeps the nodes that committed."""

    mode = TransactionMode.NODE
    per_node = True

    async def run(self, run: Run, parent: Scope | None) -> None:
        await run.walk(run.node_alone(None), concurrency=run.concurrency)


class Saga(PerNode):
    """Per node; when the run fails or is cancelled, the committed nodes are compensated."""

    mode = TransactionMode.SAGA
    compensates = True

    async def run(self, run: Run, parent: Scope | None) -> None:
        from . import saga_log  # it needs SQLAlchemy, which `import dataflow_lab` must not load

        steps: list = []  # saga.SagaStep, in the order they committed
        saga_log.begin_run(run.run_id)  # its log entries are not owed compensations while it runs
        try:
            await run.walk(run.node_alone(steps), concurrency=run.concurrency)
        except BaseException as exc:
            compensations = await shielded(run.compensate(steps))
            if isinstance(exc, Exception):
                exc.compensations = compensations  # type: ignore[attr-defined]
            raise
        else:
            await saga_log.forget_run(run.run_id, steps)
        finally:
            saga_log.end_run(run.run_id)


def one_statement(workflow: Workflow | None) -> bool:
    """Whether a run of ``workflow`` writes exactly one statement: one node, run once (no cycle), that
    says it sends one (``Node.one_statement``: a Create). Its transaction is then that statement's
    own, which a database that can keep every guarantee so commits without BEGIN and COMMIT
    (``Connection.commit_alone``: PostgreSQL, dialects/pg_alone.py; SQLite; DuckDB inline)."""
    if workflow is None or len(workflow.nodes) != 1 or workflow.cycles:
        return False
    for spec in workflow.nodes.values():
        return spec.node_class.writes and spec.node_class.one_statement()
    return False


class Auto(Strategy):
    """Chooses per run: several databases that all allow two-phase commit (PostgreSQL, MySQL) -> "2pc";
    otherwise "workflow" (one transaction per database: all or nothing up to the COMMITs, and a
    failed later COMMIT is reported with what committed where)."""

    mode = TransactionMode.AUTO

    async def resolve(self, workflow: Workflow) -> Strategy:
        dataflows = workflow.dataflows()
        if len(dataflows) <= 1:
            return _STRATEGIES[TransactionMode.WORKFLOW]
        if all(db.database.dialect.supports_two_phase for db in dataflows):
            if all([await db.database.allows_two_phase() for db in dataflows]):
                return _STRATEGIES[TransactionMode.TWO_PHASE]
        return _STRATEGIES[TransactionMode.WORKFLOW]

    async def run(self, run: Run, parent: Scope | None) -> None:  # pragma: no cover - always resolved
        assert run.workflow is not None
        await (await self.resolve(run.workflow)).run(run, parent)


_STRATEGIES: dict[TransactionMode, Strategy] = {
    s.mode: s for s in (WorkflowScoped(), TwoPhase(), PerNode(), Saga(), Auto())
}


def strategy(mode: Any, *, owner: str = "LocalRuntime") -> Strategy:
    """The strategy of ``mode`` (a TransactionMode or its string)."""
    return TransactionMode.of(mode, owner=owner).strategy
