"""Node: the unit a workflow runs. Parameters are declared, checked, introspectable.

A node class declares ``parameters`` (a tuple of ``Param``). ``check`` validates
a parameter dict at ``add_node`` time (``partial=True``: connections may still
supply the rest) and again, completely, just before the node runs. It also
declares what it returns (``output_type``) and what a connection into each input
must carry (``input_type``), so that ``build()`` can check connections
(``outputs.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, NamedTuple, Protocol

from ..errors import ValidationError, did_you_mean
from ..interfaces import DataFlow
from ..model import MISSING, ModelSchema
from .outputs import Expects

__all__ = [
    "MISSING",
    "Node",
    "NodeOwner",
    "NodeRef",
    "Param",
    "RunContext",
    "Undo",
    "node_ref",
    "rebuild_node",
    "resolve_ref",
]

# (function, arguments): calling it gives a node class back, in this process or another (pickle).
NodeRef = tuple[Callable[..., "type[Node]"], tuple[Any, ...]]


class Param(NamedTuple):
    """One declared node parameter, for tools and widgets to introspect."""

    name: str
    type: Any
    required: bool = False
    default: Any = MISSING
    description: str = ""
    check: Callable[[Any], Any] | None = None  # validates and coerces; raises ValidationError

    @property
    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        return " | ".join("None" if t is type(None) else getattr(t, "__name__", str(t)) for t in types)


class NodeOwner(DataFlow, Protocol):
    """A DataFlow as the nodes ask it (registry.py): ``interfaces.DataFlow`` and its node classes by name."""

    @property
    def nodes(self) -> Mapping[str, type[Node]]: ...


class RunContext(Protocol):
    """What a running node may ask of the runtime (transactions.Scope has it: nodes never import it)."""

    run_id: str
    now: dt.datetime

    async def connection(self, dataflow: DataFlow) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def transacting(self, dataflow: DataFlow) -> bool:  # pragma: no cover - interface
        """Whether a read of ``dataflow`` now is inside a transaction (it never uses the result cache)."""
        raise NotImplementedError

    def progress(self, done: int, total: int | None) -> None:  # pragma: no cover - interface
        """``done`` of ``total`` input rows are written (bulk nodes report it as they go)."""


class Undo:
    """How to reverse what one node did: what ``Node.undo`` returns (``nodes/undo.py``: model rows).

    ``apply`` runs on the node's database connection (None for a node without a
    database), inside a transaction the caller commits. It must be idempotent: a
    compensation may be retried, or resumed after a crash.
    """

    async def apply(self, conn: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Node:
    """Base of every node class: generated CRUD/bulk nodes and Python callables."""

    type_name: ClassVar[str] = "Node"
    parameters: ClassVar[tuple[Param, ...]] = ()
    dataflow: ClassVar[DataFlow | None] = None
    model: ClassVar[ModelSchema | None] = None
    model_name: ClassVar[str | None] = None  # a generated node's model, e.g. 'User'
    operation: ClassVar[str] = ""  # a generated node's operation: 'create', 'bulk_upsert', ...
    writes: ClassVar[bool] = False
    description: ClassVar[str] = ""
    _param_map: ClassVar[dict[str, Param]]  # each class's own, made at first use (param_map)

    def __init__(self, node_id: str, params: Mapping[str, Any]):
        self.node_id = node_id
        self.params = dict(params)

    def __repr__(self) -> str:
        return f"<{self.type_name} {self.node_id!r}>"

    def __reduce__(self) -> tuple:
        # generated node classes are not importable: pickle a reference to the class instead
        return rebuild_node, (node_ref(type(self)), self.node_id, self.params)

    @classmethod
    def pickle_ref(cls) -> NodeRef:
        """A picklable reference to this class: a function and the arguments that give it back.

        A generated class is named through its DataFlow; PythonNode overrides this.
        """
        if cls.dataflow is not None and cls.model is not None:
            return _generated_class, (cls.dataflow, cls.type_name)
        return _same_class, (cls,)

    @classmethod
    def one_statement(cls) -> bool:
        """Whether a run of this (writing) node sends exactly one statement, whatever its parameters:
        a one-node run of it may then commit that statement on its own (``modes.one_statement``)."""
        return False

    @classmethod
    def written_tables(cls) -> tuple[str, ...]:
        """The tables a run of this (writing) node may change, whose cached results go when it
        commits; ``("*",)``: any table of its database (your own SQL)."""
        return ("*",)

    @classmethod
    def param_map(cls) -> dict[str, Param]:
        cached = cls.__dict__.get("_param_map")
        if cached is None:
            cached = {p.name: p for p in cls.parameters}
            cls._param_map = cached
        return cached

    @classmethod
    def check(
        cls, params: Mapping[str, Any] | None, *, node_id: str, partial: bool = False
    ) -> dict[str, Any]:
        """Validate params; unless ``partial``, require every required one and fill defaults."""
        params = dict(params or {})
        declared = cls.param_map()
        where = f"{cls.type_name} '{node_id}'"
        for name in params:
            if name not in declared:
                raise ValidationError(
                    f"{where}: unknown parameter '{name}'.{did_you_mean(name, declared)}",
                    hint=f"{cls.type_name} takes: {', '.join(declared) or 'no parameters'}.",
                )
        out = {name: cls._check_one(declared[name], value, where) for name, value in params.items()}
        if partial:
            cls.check_together(out, node_id=node_id, partial=True)
            return out
        return cls.complete(out, node_id=node_id)

    @classmethod
    def complete(cls, checked: Mapping[str, Any], *, node_id: str) -> dict[str, Any]:
        """Already-checked params -> a full set: required ones present, defaults filled."""
        out = dict(checked)
        missing = [p.name for p in cls.parameters if p.required and p.name not in out]
        if missing:
            raise ValidationError(
                f"{cls.type_name} '{node_id}': missing required parameter(s) {', '.join(missing)}.",
                hint="pass them in add_node(...), connect another node's output to them, "
                'or pass them at run: execute(workflow, parameters={"node_id": {...}}).',
            )
        for p in cls.parameters:
            if p.name not in out and p.default is not MISSING:
                out[p.name] = _fresh(p.default)
        cls.check_together(out, node_id=node_id, partial=False)
        return out

    @classmethod
    def _check_one(cls, p: Param, value: Any, where: str) -> Any:
        if p.check is not None:
            try:
                return p.check(value)
            except ValidationError as exc:
                raise ValidationError(
                    f"{where}: parameter '{p.name}': {exc.message}", hint=exc.hint
                ) from None
        if p.type is Any or isinstance(value, p.type):
            if isinstance(value, bool) and p.type is int:
                raise ValidationError(f"{where}: parameter '{p.name}' must be int, got bool.")
            return value
        if p.type is int and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise ValidationError(
            f"{where}: parameter '{p.name}' must be {p.type_name}, got {type(value).__name__} {value!r:.60}.",
            hint=p.description or None,
        )

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        """Checks that involve several parameters (overridden by node kinds)."""

    @classmethod
    def required_names(cls) -> list[str]:
        return [p.name for p in cls.parameters if p.required]

    @classmethod
    def open_inputs(cls, supplied: Collection[str]) -> list[str]:
        """What a run must still pass when ``supplied`` are given or connected (workflow inputs)."""
        return [name for name in cls.required_names() if name not in supplied]

    @classmethod
    def output_type(cls) -> Any:
        """What ``run`` returns, as a type: a model row, Records, int, a TypedDict of named outputs...

        ``Any`` (the default) when the node cannot say: a connection from it is not type-checked.
        """
        return Any

    @classmethod
    def input_type(cls, path: str) -> Expects | None:
        """What a connection into ``path`` ('x', 'fields.email') must carry; None when unchecked.

        A parameter without a ``check`` of its own takes what ``_check_one`` takes: its type.
        """
        root, _, rest = path.partition(".")
        p = cls.param_map().get(root)
        if p is None or rest or p.check is not None or p.type is Any:
            return None
        return Expects(p.type if isinstance(p.type, tuple) else (p.type,))

    async def run(self, ctx: RunContext) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def tables(cls) -> tuple[Any, ...]:
        """The model tables (schema.ModelTable) a run must create or migrate before this node runs."""
        return ()

    # -- compensation: asked by the saga and by nested scopes without SAVEPOINT (nodes/undo.py) --
    async def before_image(self, conn: Any) -> Any:
        """What this node is about to change, read on ``conn`` (its database's, in its transaction;
        None without a database) just before it runs. Passed to ``undo`` afterwards."""
        return None

    async def undo(self, conn: Any, before: Any, result: Any) -> Undo | None:
        """How to reverse what this node did, asked right after it ran, on the same ``conn``.

        ``before`` is what ``before_image`` read, ``result`` what ``run`` returned. None
        (the default: reads, pure functions) means there is nothing to undo.
        """
        return None

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Parameters as plain dicts: name, type, required, default, description."""
        return [
            {
                "name": p.name,
                "type": p.type_name,
                "required": p.required,
                "default": None if p.default is MISSING else p.default,
                "description": p.description,
            }
            for p in cls.parameters
        ]


def _fresh(value: Any) -> Any:
    if isinstance(value, dict | list):
        import copy

        return copy.deepcopy(value)
    return value


def node_ref(cls: type[Node]) -> NodeRef:
    """A picklable reference to a node class (``resolve_ref`` turns it back into the class)."""
    return cls.pickle_ref()


def resolve_ref(ref: NodeRef) -> type[Node]:
    function, args = ref
    return function(*args)


def rebuild_node(ref: NodeRef, node_id: str, params: dict[str, Any]) -> Node:
    return resolve_ref(ref)(node_id, params)


def _generated_class(dataflow: NodeOwner, type_name: str) -> type[Node]:
    return dataflow.nodes[type_name]


def _same_class(cls: type[Node]) -> type[Node]:
    return cls
