"""The worker side of DaskRuntime: one node per task, against DataFlows rebuilt from descriptions.

Nothing here imports dask: a task is a plain function call. A DataFlow arrives
pickled as its description (``DataFlow.__reduce__``: URL, configuration, model
schemas); ``dataflow_from_description`` rebuilds it once per worker process and
keeps it, so its connection pool serves every later task on that worker.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

from . import _loop, tenancy
from .errors import EncryptionError
from .model import ModelSchema
from .modes import TransactionMode
from .nodes import registry
from .retry import RetryPolicy
from .routing import Skipped, live_connections
from .runtime import LocalRuntime
from .transit import Envelope, Transit
from .workflow import Connection, NodeSpec, Workflow

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow
    from .nodes.model_node import ModelNode

__all__ = ["NodeTask", "Outcome", "compensate", "dataflow_from_description", "opened", "run_node", "sealed"]

_KEEP = 16  # rebuilt DataFlows kept per worker process (the oldest is closed beyond this)
_REBUILT: OrderedDict[str, Any] = OrderedDict()
_LOCK = threading.Lock()


def dataflow_from_description(
    cls: Callable[..., DataFlow],
    token: str,
    url: str,
    options: dict[str, Any],
    schemas: tuple[ModelSchema, ...],
    reflected: frozenset[str] = frozenset(),
) -> DataFlow:
    """The DataFlow a description names: the original in its own process, else one rebuilt here
    (``cls``: DataFlow, passed by its pickle so that this module need not import it)."""
    with _LOCK:
        for live in registry.live_dataflows():
            if live.database.token == token:
                _add_missing_models(live, schemas, reflected)
                return live
        db = _REBUILT.pop(token, None)
        if db is None or db.database.closed:
            # monitoring stays off on workers (nobody reads their collectors); the models arrive with the
            # description, so nothing is reflected at start
            db = cls(url, **_worker_options(options))
            db.database.token = token
        _REBUILT[token] = db
        while len(_REBUILT) > _KEEP:
            _REBUILT.popitem(last=False)[1].close()
        _add_missing_models(db, schemas, reflected)
        return db


def _worker_options(options: dict[str, Any]) -> dict[str, Any]:
    """The original's options, for a copy in a worker process: monitoring off (nobody reads its
    collectors), and no result cache that trusts ``sole_writer``: the original's process writes
    too, and a database without a change feed (MySQL) would never tell the worker's cache."""
    options = {**options, "monitoring": False, "existing_schema": False}
    cache = options.get("cache")
    if isinstance(cache, dict) and cache.get("sole_writer"):
        options["cache"] = None
    return options


def _add_missing_models(db: Any, schemas: tuple[ModelSchema, ...], reflected: frozenset) -> None:
    """Install the models this process's copy lacks, as model() or reflect() did in the original."""
    from .migrations.reflect import ReflectedTable
    from .schema import ModelTable

    for schema in schemas:
        known = db.database.models.get(schema.name)
        if known is None or known.signature() != schema.signature():
            table: ModelTable
            if schema.name in reflected:
                table = ReflectedTable(schema, db.database.dialect)
            else:  # encrypted fields: sealed with this process's key (from its environment)
                try:
                    cipher = db.cipher_for(schema)
                except EncryptionError:  # no key here: its sealed task says so (Transit.on_worker),
                    continue  # rather than this unpickling failing, which Dask would retry
                table = ModelTable(schema, db.database.dialect, cipher)
            db.database.install(schema, table, reflected=schema.name in reflected)


@dataclass(frozen=True)
class NodeTask:
    """Everything a worker needs to run one node of one run."""

    node_id: str
    ref: tuple  # registry.node_ref of the node class
    params: dict[str, Any] | Envelope  # as given to add_node (sealed: an Envelope)
    incoming: tuple[Connection, ...]
    routers: frozenset[str]
    override: dict[str, Any] | Envelope | None
    run_id: str
    mode: TransactionMode  # one whose strategy runs each node on its own (node, saga)
    retry: RetryPolicy
    isolation: str | None = None
    user: str | None = None  # the audit log's "who" (grants were checked on the client)
    tenants: dict[Any, str] = field(default_factory=dict)  # tenancy.captured(): DataFlow (or None) -> tenant
    node_timeout: float | None = None  # seconds the node may run here (None: no limit)
    sealed: bool = False  # params, override, upstream results and the outcome travel as Envelopes


@dataclass
class Outcome:
    """A node's output as a task result, with what the client needs to report and undo it."""

    result: Any
    duration: float = 0.0
    finished: float = field(default_factory=time.time)  # orders saga steps across workers
    saga_steps: list = field(default_factory=list)


def run_node(task: NodeTask, sources: tuple[str, ...], *upstream: Outcome) -> Outcome:
    """The task body: skip by the routing rule, or run the node in its own transaction here.

    A sealed task (its workflow touches encrypted fields) is opened here with this worker's key,
    and its outcome sealed again before it leaves (``transit.Transit``)."""
    transit = Transit.on_worker(task.run_id) if task.sealed else None
    if transit is not None:
        task = replace(task, params=transit.open(task.params), override=transit.open(task.override))
    results = {name: opened(transit, outcome).result for name, outcome in zip(sources, upstream, strict=True)}
    live = live_connections(task.incoming, results, task.routers)
    if isinstance(live, str):
        return sealed(transit, Outcome(Skipped(live)))
    from .access import run_as

    run = tenancy.run_with(MappingProxyType(task.tenants), _run(task, tuple(live), results))
    return sealed(transit, _loop.run(run_as(task.user, run)))


def sealed(transit: Transit | None, outcome: Outcome) -> Outcome:
    """``outcome`` with its result and saga steps sealed (as it is without a transit)."""
    if transit is None:
        return outcome
    return replace(
        outcome, result=transit.seal(outcome.result), saga_steps=[transit.seal(outcome.saga_steps)]
    )


def opened(transit: Transit | None, outcome: Outcome) -> Outcome:
    """``outcome`` with its result and saga steps opened (as it is without a transit)."""
    if transit is None or not isinstance(outcome.result, Envelope):
        return outcome
    steps = transit.open(outcome.saga_steps[0]) if outcome.saga_steps else []
    return replace(outcome, result=transit.open(outcome.result), saga_steps=steps)


async def _run(task: NodeTask, live: tuple[Connection, ...], results: dict[str, Any]) -> Outcome:
    cls = registry.resolve_ref(task.ref)
    params = cast("dict[str, Any]", task.params)  # opened by run_node
    checked = cls.check(params, node_id=task.node_id, partial=True)
    spec = NodeSpec(task.node_id, cls, MappingProxyType(dict(params)), MappingProxyType(checked))
    workflow = Workflow(
        workflow_id=task.run_id,
        name=task.node_id,
        nodes=MappingProxyType({task.node_id: spec}),
        connections=(),
        order=(task.node_id,),
        inputs=MappingProxyType({}),
    )
    if cls.dataflow is not None and cls.model is not None:
        await cls.dataflow.database.ensure_table(cast("type[ModelNode]", cls).mt)  # a node with a model
    runtime = LocalRuntime(
        transaction=task.mode,
        retry=task.retry,
        isolation=task.isolation,
        timeout=None,  # the client's run has no limit on Dask (see DaskRuntime)
        node_timeout=task.node_timeout,
    )
    override = cast("dict[str, Any] | None", task.override)
    overrides = {task.node_id: override} if override is not None else None
    run = runtime.open_run(workflow, overrides, run_id=task.run_id, results=results)
    steps = runtime.strategy.saga_steps()  # a list when the mode compensates
    started = time.perf_counter()
    result = await run.node_in_own_transaction(task.node_id, live, steps)
    return Outcome(result, time.perf_counter() - started, time.time(), steps or [])


def compensate(steps: Any, run_id: str, retry: RetryPolicy, sealed: bool = False) -> list[dict[str, Any]]:
    """Undo committed saga steps newest first, on this worker (see ``saga.compensate_steps``);
    ``sealed``: they arrive as an Envelope (their before-images hold encrypted fields' values)."""
    if sealed:
        steps = Transit.on_worker(run_id).open(steps)
    runtime = LocalRuntime(transaction=TransactionMode.SAGA, retry=retry)
    return _loop.run(runtime.open_run(None, run_id=run_id).compensate(steps))
