"""Which node classes exist: per-DataFlow registries and name resolution.

Every live DataFlow keeps its own node classes. ``resolve`` finds a name
across live instances when exactly one defines it, or within one instance
when the caller scopes the lookup.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import NodeNotFoundError, ValidationError, did_you_mean
from .base import Node, node_ref, resolve_ref
from .python import python_node
from .switch import SwitchNode

if TYPE_CHECKING:  # pragma: no cover
    from ..dataflow import DataFlow

__all__ = ["NodeNamespace", "live_dataflows", "node_ref", "register", "resolve", "resolve_ref", "unregister"]

_LIVE: weakref.WeakSet[DataFlow] = weakref.WeakSet()


class UnknownNodeError(NodeNotFoundError, AttributeError):
    """``db.nodes.UserCreatNode``: an attribute lookup of a node name that this DataFlow lacks."""


class NodeNamespace(Mapping[str, type[Node]]):
    """A DataFlow's generated node classes, by name: ``db.nodes.UserCreateNode`` or ``db.nodes["..."]``.

    A live, read-only view: models defined later appear in it. ``dir()`` lists the node
    names, so notebooks tab-complete them.
    """

    __slots__ = ("_owner", "_classes")

    def __init__(self, owner: DataFlow, classes: dict[str, type[Node]]):
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


def register(dataflow: DataFlow) -> None:
    _LIVE.add(dataflow)


def unregister(dataflow: DataFlow) -> None:
    _LIVE.discard(dataflow)


def live_dataflows() -> list[DataFlow]:
    return list(_LIVE)


def resolve(node_type: Any, dataflow: DataFlow | None = None) -> type[Node]:
    """A node name, a Node class or a callable -> a Node class."""
    if isinstance(node_type, type) and issubclass(node_type, Node):
        return node_type
    if isinstance(node_type, str):
        return _by_name(node_type, dataflow)
    if callable(node_type):
        return python_node(node_type)
    raise ValidationError(f"Node type {node_type!r} is not a node name, Node class or callable.")


def builtin_nodes() -> dict[str, type[Node]]:
    """Node types every workflow can use by name, whatever its DataFlow."""

    return {"SwitchNode": SwitchNode}


def _by_name(name: str, dataflow: DataFlow | None) -> type[Node]:
    builtin = builtin_nodes().get(name)
    if builtin is not None:
        return builtin
    scopes = [dataflow] if dataflow is not None else live_dataflows()
    found = [(db, db.nodes[name]) for db in scopes if name in db.nodes]
    if len(found) > 1 and dataflow is None:
        # A notebook cell re-run leaves the old DataFlow unreferenced but alive until the
        # garbage collector breaks its reference cycles (its node classes point back at it).
        refs = [weakref.ref(db) for db, _ in found]
        del found, scopes
        gc.collect()
        found = [(db, db.nodes[name]) for ref in refs if (db := ref()) is not None and db in _LIVE]
    if len(found) == 1:
        return found[0][1]
    if len(found) > 1:
        names = ", ".join(repr(db) for db, _ in found)
        raise NodeNotFoundError(
            f"Node type '{name}' is defined by {len(found)} DataFlow instances ({names}).",
            hint="scope the lookup with WorkflowBuilder(dataflow=db), or pass the node class itself "
            f"(db.nodes['{name}']).",
        )
    known = sorted({n for db in scopes for n in db.nodes})
    where = "this DataFlow" if dataflow is not None else "any live DataFlow"
    raise NodeNotFoundError(
        f"Node type '{name}' is not defined by {where}.{did_you_mean(name, [*known, *builtin_nodes()])}",
        hint="define the model with @db.model first; generated names look like 'UserCreateNode'."
        if not known
        else f"known node types: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}.",
    )
