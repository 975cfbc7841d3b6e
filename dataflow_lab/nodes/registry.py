"""Which node classes exist: per-DataFlow registries and name resolution.

Every live DataFlow keeps its own node classes, and a node name belongs to one
of them. ``resolve`` looks a bare name up in the DataFlow a builder is given
(``WorkflowBuilder(db)``). A builder given none looks across the live
DataFlows: the one that defines the name, or, when two or more do, an error
that lists them and says how to scope the name. A lookup never collects
garbage: a DataFlow counts until it is closed (or freed).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from ..errors import NodeNotFoundError, ValidationError, did_you_mean
from .base import Node, NodeOwner, node_ref, resolve_ref
from .switch import SwitchNode

__all__ = ["NodeClasses", "NodeNamespace", "live_dataflows", "node_ref", "register", "resolve", "resolve_ref",
           "unregister"]  # fmt: skip

_LIVE: weakref.WeakValueDictionary[int, NodeOwner] = weakref.WeakValueDictionary()  # by registration
_ORDER = itertools.count()


class UnknownNodeError(NodeNotFoundError, AttributeError):
    """``db.nodes.UserCreatNode``: an attribute lookup of a node name that this DataFlow lacks."""


class _Later:
    """A node class not made yet: ``make()`` makes it (``NodeClasses.later``)."""

    __slots__ = ("make", "model_name")

    def __init__(self, make: Callable[[], type[Node]], model_name: str):
        self.make, self.model_name = make, model_name


class NodeClasses(MutableMapping[str, type[Node]]):
    """A database's generated node classes by name, in the order they were installed.

    A class may be registered ``later``: it is made at its first lookup (a model's bulk and
    Aggregate nodes, whose modules are a sixth of the package and which a first run rarely
    uses). Every lookup, ``values()`` and ``items()`` see made classes only.
    """

    __slots__ = ("_classes",)

    def __init__(self) -> None:
        self._classes: dict[str, type[Node] | _Later] = {}

    def later(self, name: str, model_name: str, make: Callable[[], type[Node]]) -> None:
        self._classes[name] = _Later(make, model_name)

    def names_of(self, model_name: str) -> list[str]:
        """The names of ``model_name``'s classes, made or not (none is made to tell)."""
        return [
            name
            for name, cls in self._classes.items()
            if (cls.model_name if isinstance(cls, _Later) else cls.model_name) == model_name
        ]

    def __getitem__(self, name: str) -> type[Node]:
        cls = self._classes[name]
        if isinstance(cls, _Later):
            cls = self._classes[name] = cls.make()
        return cls

    def __setitem__(self, name: str, cls: type[Node]) -> None:
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)


class NodeNamespace(Mapping[str, type[Node]]):
    """A DataFlow's generated node classes, by name: ``db.nodes.UserCreateNode`` or ``db.nodes["..."]``.

    A live, read-only view: models defined later appear in it. ``dir()`` lists the node
    names, so notebooks tab-complete them.
    """

    __slots__ = ("_owner", "_classes")

    def __init__(self, owner: NodeOwner, classes: Mapping[str, type[Node]]):
        self._owner, self._classes = owner, classes

    def __getitem__(self, name: str) -> type[Node]:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __getattr__(self, name: str) -> type[Node]:
        if name.startswith("_"):  # dunder probes (copy, pickle, IPython) must fail as usual
            raise AttributeError(name)
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(sorted(self._classes)[:6]) or "none: define a model with @db.model first"
            raise UnknownNodeError(
                f"{self._owner!r} has no node '{name}'.{did_you_mean(name, self._classes)}",
                hint=f"its nodes are {known}{', ...' if len(self._classes) > 6 else ''}.",
            ) from None

    def __dir__(self) -> list[str]:
        return sorted({*self._classes, *super().__dir__()})

    def __repr__(self) -> str:
        return f"<nodes of {self._owner!r}: {', '.join(self._classes) or 'none'}>"


def register(dataflow: NodeOwner) -> None:
    if dataflow not in live_dataflows():
        _LIVE[next(_ORDER)] = dataflow


def unregister(dataflow: NodeOwner) -> None:
    for key, db in list(_LIVE.items()):
        if db is dataflow:
            del _LIVE[key]


def live_dataflows() -> list[NodeOwner]:
    """The DataFlows not closed (nor freed), oldest first."""
    return [db for _, db in sorted(_LIVE.items(), key=lambda item: item[0])]


def resolve(node_type: Any, dataflow: NodeOwner | None = None) -> type[Node]:
    """A node name, a Node class or a callable -> a Node class."""
    if isinstance(node_type, type) and issubclass(node_type, Node):
        return node_type
    if isinstance(node_type, str):
        return _by_name(node_type, dataflow)
    if callable(node_type):
        from .python import python_node  # loaded with the first Python node

        return python_node(node_type)
    raise ValidationError(f"Node type {node_type!r} is not a node name, Node class or callable.")


def builtin_nodes() -> dict[str, type[Node]]:
    """Node types every workflow can use by name, whatever its DataFlow."""

    return {"SwitchNode": SwitchNode}


def _by_name(name: str, dataflow: NodeOwner | None) -> type[Node]:
    builtin = builtin_nodes().get(name)
    if builtin is not None:
        return builtin
    if dataflow is not None:
        return _in(dataflow, name)
    found = [db for db in live_dataflows() if name in db.nodes]
    if len(found) == 1:
        return found[0].nodes[name]
    if found:
        listing = "; ".join(f"{i}. {db!r}" for i, db in enumerate(found, 1))
        raise NodeNotFoundError(
            f"Node type '{name}' is defined by {len(found)} live DataFlow instances, oldest first: {listing}. "
            "A bare name must belong to one.",
            hint=f"scope the name: WorkflowBuilder(dataflow=db) (or WorkflowBuilder(db)), or pass the node "
            f"class itself (db.nodes.{name}). A notebook cell run again leaves its old DataFlow alive "
            "until the garbage collector frees it: close the one you no longer use (old_db.close()).",
        )
    known = sorted({n for db in live_dataflows() for n in db.nodes})
    raise NodeNotFoundError(
        f"Node type '{name}' is not defined by any live DataFlow.{did_you_mean(name, [*known, *builtin_nodes()])}",
        hint=_known_hint(known),
    )


def _in(dataflow: NodeOwner, name: str) -> type[Node]:
    """``name`` among the nodes of ``dataflow``; the error says which other DataFlow defines it, if one does."""
    if name in dataflow.nodes:
        return dataflow.nodes[name]
    known = sorted(dataflow.nodes)
    elsewhere = [db for db in live_dataflows() if db is not dataflow and name in db.nodes]
    hint = (
        f"it is a node of {elsewhere[0]!r}: build with WorkflowBuilder(that DataFlow), or pass its class "
        f"(other_db.nodes.{name})."
        if elsewhere
        else _known_hint(known)
    )
    raise NodeNotFoundError(
        f"Node type '{name}' is not defined by this DataFlow ({dataflow!r})."
        f"{did_you_mean(name, [*known, *builtin_nodes()])}",
        hint=hint,
    )


def _known_hint(known: list[str]) -> str:
    if not known:
        return "define the model with @db.model first; generated names look like 'UserCreateNode'."
    return f"known node types: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}."
