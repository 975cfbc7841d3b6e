"""WorkflowBuilder -> an immutable Workflow, validated as a whole at build().

``add_node`` resolves the node type and checks the parameters, but what it finds
wrong (an unknown type or parameter, a value of the wrong type) is kept, not
raised: ``build`` reports it with everything else in one WorkflowValidationError:
dangling connections, unknown inputs and outputs, a connection whose output type
the input can never take (``nodes/outputs.py``), and cycles that were not declared
(``add_connection(..., cycle=True, max_iterations=N)``, see ``cycles.py``).

A bare node name belongs to the builder's DataFlow (``WorkflowBuilder(db)``); a
builder given none takes it from the one live DataFlow that defines it
(``nodes/registry.py``).

A required input that no parameter and no connection supplies is a workflow
input (``Workflow.workflow_inputs``): each run passes it in ``parameters``, and
``check_parameters`` refuses a run without it before anything runs.
"""

from __future__ import annotations

import datetime as dt
import graphlib
import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from .access import check_nodes
from .cycles import Cycle, find_cycles, plan, stable_order
from .errors import (
    DataFlowError,
    NodeNotFoundError,
    UnknownNodeTypeError,
    ValidationError,
    WorkflowValidationError,
    did_you_mean,
)
from .nodes.base import Node, NodeOwner
from .nodes.registry import resolve
from .wiring import Connection, Problem, check_connection

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow

__all__ = [
    "Connection",
    "NodeSpec",
    "Problem",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowInput",
    "check_parameters",
    "prepare",
]


@dataclass(frozen=True)
class NodeSpec:
    """One node of a workflow: its id, class, and parameters (as given, and as checked).

    ``metadata`` holds ``added_at`` (UTC), and for a generated node its ``model_name``
    and ``operation`` ('create', 'bulk_upsert', ...); both are None for other nodes.
    """

    node_id: str
    node_class: type[Node]
    params: Mapping[str, Any]
    checked: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    # add_node(timeout=): seconds this node may run (inf: no limit); None: the runtime's node_timeout
    timeout: float | None = None

    @property
    def type_name(self) -> str:
        return self.node_class.type_name


class WorkflowInput(NamedTuple):
    """A required input of a node that no parameter and no connection supplies: each run passes it.

    ``execute(workflow, parameters={node_id: {name: value}})`` gives it; a run without it is
    refused before anything runs.
    """

    node_id: str
    name: str
    type_name: str

    def __str__(self) -> str:
        return f"{self.node_id}.{self.name}"


@dataclass(frozen=True)
class Workflow:
    """A built, validated, immutable workflow. Run it with LocalRuntime().execute(workflow).

    ``metadata`` holds ``workflow_id``, ``workflow_name``, ``created_at`` (UTC, at build)
    and ``dataflow_models``, the names of the models its nodes act on.
    """

    workflow_id: str
    name: str
    nodes: Mapping[str, NodeSpec]
    connections: tuple[Connection, ...]
    order: tuple[str, ...]
    inputs: Mapping[str, tuple[Connection, ...]] = field(repr=False)
    cycles: tuple[Cycle, ...] = ()
    steps: tuple[str | Cycle, ...] = field(default=(), repr=False)  # order, each cycle one step
    workflow_inputs: tuple[WorkflowInput, ...] = ()  # what every run must pass (see WorkflowInput)
    metadata: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.steps:
            object.__setattr__(self, "steps", self.order)

    def dataflows(self) -> list[DataFlow]:
        kept = self.__dict__.get("_dataflows")  # asked several times a run; the nodes never change
        if kept is None:
            seen: dict[int, DataFlow] = {}
            for spec in self.nodes.values():
                db = spec.node_class.dataflow
                if db is not None:
                    seen.setdefault(id(db), db)
            kept = self.__dict__["_dataflows"] = tuple(seen.values())
        return list(kept)

    def models(self) -> list[tuple[DataFlow, Any]]:
        kept = self.__dict__.get("_models")  # asked at every run, as dataflows() is
        if kept is None:
            pairs: dict[tuple[int, str], tuple[DataFlow, Any]] = {}
            for spec in self.nodes.values():
                cls = spec.node_class
                if cls.dataflow is not None:
                    for mt in cls.tables():
                        pairs.setdefault((id(cls.dataflow), mt.model.name), (cls.dataflow, mt))
            kept = self.__dict__["_models"] = tuple(pairs.values())
        return list(kept)

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r}: {len(self.nodes)} node(s), {len(self.connections)} connection(s)>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Notebook display: the DAG (SVG, or a table without Graphviz) and describe() as text."""
        from .viz import workflow_bundle

        return workflow_bundle(self)

    def describe(self) -> str:
        lines = [repr(self)]
        for node_id in self.order:
            spec = self.nodes[node_id]
            lines.append(f"  {node_id}: {spec.type_name}")
            for c in self.inputs.get(node_id, ()):
                lines.append(
                    f"    <- {c}" + (f"  (closes a cycle, at most {c.max_iterations}x)" if c.cycle else "")
                )
            lines += [f"    <- {i}: {i.type_name}, a workflow input" for i in self.inputs_of(node_id)]
        if self.workflow_inputs:
            lines.append(f"  each run passes: parameters={_run_example(self.workflow_inputs)}")
        return "\n".join(lines)

    def inputs_of(self, node_id: str) -> tuple[WorkflowInput, ...]:
        """The workflow inputs of one node: what each run must pass it."""
        return tuple(i for i in self.workflow_inputs if i.node_id == node_id)


_RUNTIME_LIMIT: Any = object()  # add_node without timeout=: the runtime's node_timeout applies


def _node_limit(type_name: str, node_id: str, timeout: Any, node_class: type[Node] | None) -> float | None:
    """add_node's ``timeout=`` as NodeSpec keeps it: None (the runtime's), seconds, or inf (no limit)."""
    if timeout is _RUNTIME_LIMIT:
        return None
    if node_class is not None and any(p.name == "timeout" for p in node_class.parameters):
        raise ValidationError(
            f"{type_name} '{node_id}' has a parameter named 'timeout', so add_node(timeout=...) is ambiguous.",
            hint="pass the parameter in params ({'timeout': ...}); a time limit for such a node comes "
            "from LocalRuntime(node_timeout=...).",
        )
    if timeout is None:
        return float("inf")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValidationError(
            f"{type_name} '{node_id}': timeout must be a positive number of seconds or None, got {timeout!r}.",
            hint="e.g. add_node(..., timeout=120), or timeout=None for no limit on this node.",
        )
    return float(timeout)


class WorkflowBuilder:
    """Collects nodes and connections; ``build()`` returns an immutable Workflow.

    ``WorkflowBuilder(db)`` (or ``dataflow=db``) scopes bare node names to ``db``.
    """

    def __init__(self, dataflow: NodeOwner | None = None, *, name: str | None = None):
        self.dataflow = dataflow
        self.name = name or "workflow"
        self._nodes: dict[str, NodeSpec] = {}
        self._problems: list[Problem] = []  # what add_node found, reported by build()
        self._unresolved: set[str] = set()  # ids of nodes whose type no DataFlow in scope defines
        self._connections: list[Connection] = []
        self._counter = itertools.count(1)
        # what the spec's builder records: the models its nodes act on ('User', ...)
        self.metadata: dict[str, Any] = {"dataflow_models": set()}

    def add_node(
        self,
        node_type: Any,
        node_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: Any = _RUNTIME_LIMIT,
        **more: Any,
    ) -> str:
        """Add a node (a name like 'UserCreateNode', a Node class, or a callable). Returns its id.

        ``timeout``: seconds this node may run (None: no limit), instead of the runtime's
        ``node_timeout``. A node parameter named ``timeout`` goes in ``params``.

        An unknown node type or parameter, or a value of the wrong type, is reported by ``build()``
        together with every other problem of the workflow. A misuse of this call itself (a node id
        that is not a string or is taken, params that are not a dict) raises at once.
        """
        try:
            node_class: type[Node] | None = resolve(node_type, self.dataflow)
        except NodeNotFoundError as exc:
            node_class, unknown = None, exc
        type_name = node_class.type_name if node_class is not None else str(node_type)
        if node_id is None:
            node_id = f"{type_name.lower()}_{next(self._counter)}"
        if not isinstance(node_id, str) or not node_id:
            raise ValidationError(f"Node id {node_id!r} must be a non-empty string.")
        if node_id in self._nodes or node_id in self._unresolved:
            raise ValidationError(
                f"Node id '{node_id}' is already used in this workflow.", hint="give every node a unique id."
            )
        if params is not None and not isinstance(params, Mapping):
            raise ValidationError(
                f"{type_name} '{node_id}': params must be a dict, got {type(params).__name__}."
            )
        if node_class is None:
            self._unresolved.add(node_id)
            self._problems.append(Problem(f"node '{node_id}': {unknown}", node_id))
            return node_id
        given = {**(params or {}), **more}
        limit = _node_limit(type_name, node_id, timeout, node_class)
        checked, problems = _check_given(node_class, given, node_id)
        self._problems += problems
        metadata = {
            "added_at": dt.datetime.now(dt.UTC),
            "model_name": node_class.model_name,
            "operation": node_class.operation or None,
        }
        self._nodes[node_id] = NodeSpec(
            node_id,
            node_class,
            MappingProxyType(dict(given)),
            MappingProxyType(checked),
            MappingProxyType(metadata),
            limit,
        )
        if node_class.model_name is not None:
            self.metadata["dataflow_models"].add(node_class.model_name)
        return node_id

    def add_connection(
        self,
        source: str,
        source_output: str,
        target: str,
        target_input: str,
        *,
        cycle: bool = False,
        max_iterations: int | None = None,
        converge_when: Callable[[Any], bool] | None = None,
    ) -> WorkflowBuilder:
        """Feed ``source``'s output (a dotted path like 'records.0.id') into ``target_input``.

        ``cycle=True`` closes a loop: the nodes from ``target`` to ``source`` repeat up to
        ``max_iterations`` times, until ``converge_when(output of source)`` is true (see cycles.py).
        """
        for what, value in (("source_output", source_output), ("target_input", target_input)):
            if not isinstance(value, str) or not value:
                raise ValidationError(f"add_connection: {what} must be a non-empty string, got {value!r}.")
        where = f"add_connection({source!r}, {source_output!r}, {target!r}, {target_input!r})"
        if cycle:
            if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
                raise ValidationError(
                    f"{where}: a cycle needs max_iterations, a positive int; got {max_iterations!r}.",
                    hint="say how many times the cycle may run at most, e.g. max_iterations=50.",
                )
            if converge_when is not None and not callable(converge_when):
                raise ValidationError(
                    f"{where}: converge_when must be a callable taking the output of '{source}', "
                    f"got {type(converge_when).__name__}."
                )
        elif max_iterations is not None or converge_when is not None:
            raise ValidationError(
                f"{where}: max_iterations and converge_when apply only to a cycle connection.",
                hint="pass cycle=True on the connection that closes the loop.",
            )
        self._connections.append(
            Connection(source, source_output, target, target_input, cycle, max_iterations, converge_when)
        )
        return self

    connect = add_connection

    def build(self, *, name: str | None = None, workflow_id: str | None = None, user: Any = None) -> Workflow:
        """Validate everything, then freeze. With ``user``, also check its grants (access.py) now.

        Every problem is reported at once, in one WorkflowValidationError (an UnknownNodeTypeError,
        also a NodeNotFoundError, when a node type is unknown); each one is a ``Problem``.
        """
        problems: list[Problem] = list(self._problems)
        flawed = {p.node_id for p in problems}
        inputs: dict[str, list[Connection]] = {n: [] for n in self._nodes}
        for c in self._connections:
            problems += check_connection(c, self._nodes, self._unresolved)
            if c.target in inputs and c.source in self._nodes:
                inputs[c.target].append(c)
        workflow_inputs: list[WorkflowInput] = []
        for node_id, spec in self._nodes.items():
            open_inputs = _open_inputs(spec, inputs[node_id])
            workflow_inputs += open_inputs
            if not open_inputs and node_id not in flawed:
                problems += _check_complete(spec, inputs[node_id])
        order: tuple[str, ...] = ()
        forward = {n: [c.source for c in inputs[n] if not c.cycle] for n in self._nodes}
        try:
            order = stable_order(forward)
        except graphlib.CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            problems.append(
                Problem(
                    f"the connections form a cycle that was not declared: {cycle}. Declare it on the "
                    "connection that closes it: add_connection(..., cycle=True, max_iterations=N)."
                )
            )
        cycles: list[Cycle] = []
        steps: tuple = ()
        if order:
            edges = [(source, n) for n, sources in forward.items() for source in sources]
            closing = [c for c in self._connections if c.cycle and {c.source, c.target} <= self._nodes.keys()]
            cycles, cycle_problems = find_cycles(order, edges, closing)
            problems += [Problem(p) for p in cycle_problems]
            steps = plan(order, edges, cycles)
            order = tuple(n for step in steps for n in (step.body if isinstance(step, Cycle) else (step,)))
        if problems:
            raise (UnknownNodeTypeError if self._unresolved else WorkflowValidationError)(problems)
        if user is not None:
            check_nodes(self._nodes.values(), user)
        workflow_id = workflow_id or str(uuid.uuid4())
        metadata = {
            "workflow_id": workflow_id,
            "workflow_name": name or self.name,
            "created_at": dt.datetime.now(dt.UTC),
            "dataflow_models": frozenset(spec.node_class.model_name for spec in self._nodes.values())
            - {None},
        }
        return Workflow(
            workflow_id=workflow_id,
            name=name or self.name,
            nodes=MappingProxyType(dict(self._nodes)),
            connections=tuple(self._connections),
            order=order,
            inputs=MappingProxyType({k: tuple(v) for k, v in inputs.items() if v}),
            cycles=tuple(cycles),
            steps=steps,
            workflow_inputs=tuple(workflow_inputs),
            metadata=MappingProxyType(metadata),
        )


def _check_given(node_class: type[Node], given: dict[str, Any], node_id: str) -> tuple[dict, list[Problem]]:
    """``node_class.check(given, partial=True)``, every unknown parameter reported rather than the first."""
    declared = node_class.param_map()
    problems = []
    for name in [n for n in given if n not in declared]:
        try:  # the check's own message for this name, its did-you-mean and the names the node takes
            node_class.check({name: given[name]}, node_id=node_id, partial=True)
        except DataFlowError as exc:
            problems.append(Problem(str(exc), node_id))
    try:
        checked = node_class.check(
            {k: v for k, v in given.items() if k in declared}, node_id=node_id, partial=True
        )
    except DataFlowError as exc:
        return {}, [*problems, Problem(str(exc), node_id)]
    return checked, problems


def _supplied(spec: NodeSpec, incoming: Any) -> set[str]:
    # a cycle connection carries nothing into the first iteration: it does not supply an input
    return set(spec.checked) | {c.target_input.split(".", 1)[0] for c in incoming if not c.cycle}


def _open_inputs(spec: NodeSpec, incoming: list[Connection]) -> list[WorkflowInput]:
    """Required inputs that neither a parameter nor a connection supplies: the run must."""
    declared = spec.node_class.param_map()
    return [
        WorkflowInput(spec.node_id, name, declared[name].type_name)
        for name in spec.node_class.open_inputs(_supplied(spec, incoming))
    ]


def _check_complete(spec: NodeSpec, incoming: list[Connection]) -> list[Problem]:
    """With nothing left open and nothing connected, the parameters must pass the full check now."""
    if incoming:  # connected values arrive at run time, and are checked then
        return []
    try:
        spec.node_class.check(dict(spec.params), node_id=spec.node_id)
    except DataFlowError as exc:
        return [Problem(str(exc), spec.node_id)]
    return []


def _listing(names: Any) -> str:
    return ", ".join(names) or "none"


def output_keys(node_class: type[Node]) -> set[str] | None:
    keys = getattr(node_class, "output_keys", None)
    return keys() if callable(keys) else None


def prepare(workflow: Any, parameters: Any) -> tuple[Workflow, dict[str, dict[str, Any]]]:
    """A built Workflow and checked per-node parameter overrides: every runtime's first step."""
    if isinstance(workflow, WorkflowBuilder):
        workflow = workflow.build()
    if not isinstance(workflow, Workflow):
        raise ValidationError(
            f"execute() takes a Workflow, got {type(workflow).__name__}.",
            hint="build one with WorkflowBuilder().build().",
        )
    return workflow, check_parameters(workflow, parameters)


def check_parameters(workflow: Workflow, parameters: Any) -> dict[str, dict[str, Any]]:
    """Run parameters ({node id: {param: value}}) checked against the workflow's nodes."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping):
        raise ValidationError(
            f"run parameters must map node ids to parameters, got {type(parameters).__name__}.",
            hint='e.g. {"create": {"name": "Bob"}}',
        )
    overrides = {}
    for node_id, values in parameters.items():
        if node_id not in workflow.nodes:
            raise ValidationError(
                f"run parameters name node '{node_id}', which workflow '{workflow.name}' does not have."
                f"{did_you_mean(node_id, workflow.nodes)}",
                hint=f"its nodes: {', '.join(workflow.nodes)}.",
            )
        if not isinstance(values, Mapping):
            raise ValidationError(f"run parameters for '{node_id}' must be a dict of parameter -> value.")
        workflow.nodes[node_id].node_class.check(values, node_id=node_id, partial=True)
        overrides[node_id] = dict(values)
    _check_workflow_inputs(workflow, overrides)
    return overrides


def _check_workflow_inputs(workflow: Workflow, overrides: dict[str, dict[str, Any]]) -> None:
    """Refuse a run that leaves a workflow input open; complete nodes now get the full check."""
    missing: list[WorkflowInput] = []
    for node_id in dict.fromkeys(i.node_id for i in workflow.workflow_inputs):
        spec, incoming = workflow.nodes[node_id], workflow.inputs.get(node_id, ())
        given = _supplied(spec, incoming) | set(overrides.get(node_id, {}))
        still_open = set(spec.node_class.open_inputs(given))
        missing += [i for i in workflow.inputs_of(node_id) if i.name in still_open]
        if not still_open and not incoming:
            spec.node_class.check({**spec.params, **overrides.get(node_id, {})}, node_id=node_id)
    if missing:
        raise ValidationError(
            f"workflow '{workflow.name}' needs run parameters it was not given: "
            f"{', '.join(f'{i} ({i.type_name})' for i in missing)}. Nothing ran.",
            hint=f"pass them to execute(): parameters={_run_example(missing)} "
            f"(in a notebook: %dataflow run NAME --params '{_run_example(missing)}').",
        )


def _run_example(inputs: Any) -> str:
    """The ``parameters=`` a run passes for ``inputs``: {"read": {"id": ...}}."""
    by_node: dict[str, list[str]] = {}
    for i in inputs:
        by_node.setdefault(i.node_id, []).append(f'"{i.name}": ...')
    return "{" + ", ".join(f'"{n}": {{{", ".join(names)}}}' for n, names in by_node.items()) + "}"
