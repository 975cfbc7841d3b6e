"""What the layers below the facade ask of a DataFlow, its Database, a scope and a saga step.

A lower layer is handed these objects (a node's class holds its DataFlow, a scope its
databases, the audit log the DataFlow it writes to) and annotates them with these
Protocols, never with the classes above it: no module imports a higher layer, not even
for its annotations (docs/architecture.md). ``dataflow.DataFlow``, ``database.Database``,
``transactions.Scope`` and ``saga.SagaStep`` satisfy them structurally, and mypy checks
every call a lower layer makes against them.

Each member is one a lower layer uses; a lower layer that needs more adds it here. What
needs a type of a layer above this one is a Protocol of that layer: ``nodes.base.NodeOwner``
(a DataFlow and its node classes), ``modes.Run`` (what a mode asks of the runtime's run),
``viz.Workflow`` (what the DAG draws of a workflow).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from .clock import SteppingClock, SystemClock
    from .config import DataFlowConfig
    from .dialects import Connection, Dialect
    from .hooks import Hooks
    from .ledger import TransactionLedger
    from .model import ModelSchema
    from .result_cache import ResultCache
    from .schema import ModelTable
    from .transit import Transit

__all__ = ["DataFlow", "Database", "Held", "SagaStep", "Scope", "Workflow"]


class Database(Protocol):
    """What the lower layers ask of ``db.database`` (database.py documents the whole interface)."""

    closed: bool
    pending_count: int | None  # saga compensations owed; None: count again
    token: str  # names it across processes (_remote.py)
    health: Any  # its HealthMonitor (health.py, a layer above: probes, warm connections)
    cache: ResultCache  # Read, List and Count results (result_cache.py; off unless DataFlow(cache=...))

    @property
    def dialect(self) -> Dialect: ...
    @property
    def ledger(self) -> TransactionLedger: ...
    @property
    def tables(self) -> Mapping[str, ModelTable]: ...  # by model name
    @property
    def settled(self) -> bool: ...  # opened, and its first use's recovery done
    async def open(self) -> Dialect: ...
    async def release(self, conn: Connection) -> None: ...
    async def ensure_table(self, table: ModelTable, scope: Any = None, *, create: bool = False) -> None: ...
    def is_ready(self, key: tuple[str, Any]) -> bool: ...
    def mark_ready(self, key: tuple[str, Any]) -> None: ...
    async def allows_two_phase(self) -> bool: ...


class DataFlow(Protocol):
    """What the lower layers ask of a ``dataflow.DataFlow``: its database and a few facts."""

    @property
    def database(self) -> Database: ...
    @property
    def config(self) -> DataFlowConfig: ...
    @property
    def hooks(self) -> Hooks: ...
    @property
    def clock(self) -> SystemClock | SteppingClock: ...
    @property
    def url(self) -> str: ...
    @property
    def models(self) -> Mapping[str, ModelSchema]: ...
    def table(self, model: type | str) -> ModelTable: ...
    def pool_status(self) -> dict[str, Any]: ...
    def pending_compensations(self) -> int: ...
    def transit(self, run_id: str) -> Transit | None: ...


class Workflow(Protocol):
    """What access control asks of a built workflow: its nodes (``workflow.NodeSpec`` by id)."""

    @property
    def nodes(self) -> Mapping[str, Any]: ...


class Held(Protocol):
    """One database's connection in a scope (``transactions._Held``), as two-phase commit asks it."""

    @property
    def dataflow(self) -> DataFlow: ...
    @property
    def conn(self) -> Connection: ...

    branch: str | None  # its gid in the two-phase commit, once named
    key: str | None  # its database's key (_decisions.key_of), once named


class Scope(Protocol):
    """What two-phase commit asks of the scope it commits (``transactions.Scope``)."""

    @property
    def run_id(self) -> str: ...
    @property
    def isolation(self) -> str | None: ...

    gid: str | None  # its two-phase commit's base gid, once its first branch is named
    branches: list[Any]  # its Helds in the order they were named: the coordinator first

    def record_event(self, dataflow: DataFlow, event: str, held: Any = None) -> None: ...  # held: a Held


class SagaStep(Protocol):
    """What the saga log asks of a committed step (``saga.SagaStep``)."""

    logged: tuple[str, int] | None  # (run_id, seq) of its log entry, set when logged

    @property
    def node_id(self) -> str: ...
    @property
    def undo(self) -> object: ...  # an Undo (nodes/undo.py); only a RowUndo is logged
