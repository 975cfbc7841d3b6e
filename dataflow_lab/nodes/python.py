"""Plain Python callables as nodes: parameters are inputs, the return is the output."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from ..errors import ValidationError
from ..model import MISSING
from .base import Node, Param, RunContext

__all__ = ["python_node"]

_PLAIN = (str, int, float, bool, dict, list, tuple, bytes)


@functools.lru_cache(maxsize=1024)
def _node_class(fn: Callable[..., Any]) -> type[Node]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"Callable {fn!r} has no inspectable signature.", hint="wrap it in a def with named parameters."
        ) from exc
    try:
        hints = __import__("typing").get_type_hints(fn)
    except Exception:
        hints = {}
    params = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise ValidationError(
                f"Callable '{fn.__name__}' has parameter '{p.name}' of kind {p.kind.description}.",
                hint="node callables take named (keyword-capable) parameters only.",
            )
        annotation = hints.get(p.name, Any)
        kind = annotation if annotation in _PLAIN else Any
        if annotation is float:
            kind = (int, float)
        default = MISSING if p.default is p.empty else p.default
        params.append(
            Param(
                p.name,
                kind,
                required=default is MISSING,
                default=default,
                description=f"argument of {fn.__name__}",
            )
        )
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", "callable"))
    return type(
        f"PythonNode[{name}]",
        (PythonNode,),
        {
            "type_name": name,
            "parameters": tuple(params),
            "fn": staticmethod(fn),
            "description": (inspect.getdoc(fn) or "").split("\n")[0],
        },
    )


def python_node(fn: Callable[..., Any]) -> type[Node]:
    """The node class for a callable (cached per callable)."""
    try:
        return _node_class(fn)
    except TypeError:  # unhashable callable
        return _node_class.__wrapped__(fn)


class PythonNode(Node):
    operation = "python"
    fn: Callable[..., Any]

    async def run(self, ctx: RunContext) -> Any:
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**self.params)
        result = await asyncio.to_thread(self.fn, **self.params)
        if inspect.isawaitable(result):
            result = await result
        return result
