"""``%%dataflow workflow`` cells: Python syntax, parsed with ``ast``, never executed.

Each line ``node_id = NodeType(param=value, ...)`` is a node. A keyword value
that refers to another node of the cell (``create.id``,
``create.records[0].email``, or inside a dict: ``fields={"email": create.email}``)
becomes a connection; any other expression is evaluated in the notebook's
namespace, so parameters can come from variables.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import DataFlowError, NodeNotFoundError, ValidationError, WorkflowValidationError, did_you_mean
from ..nodes.base import Node
from ..nodes.registry import live_dataflows, resolve
from ..workflow import Problem, Workflow, WorkflowBuilder

if TYPE_CHECKING:  # pragma: no cover
    from ..dataflow import DataFlow

__all__ = ["CellError", "build_workflow"]

_FORM = "node_id = NodeType(param=value, ...)"


class CellError(ValidationError):
    """A mistake in a workflow cell, with the line it is on."""

    def __init__(self, line: int | None, message: str, *, hint: str | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message, hint=hint)


def build_workflow(
    source: str, *, name: str, dataflow: DataFlow | None, namespace: Mapping[str, Any]
) -> Workflow:
    """Parse a workflow cell into a built (validated) Workflow named ``name``."""
    calls = _node_lines(source)
    builder = WorkflowBuilder(dataflow, name=name)
    node_ids = {node_id for node_id, _ in calls}
    for node_id, call in calls:
        node_class = _node_type(call.func, dataflow, namespace)
        params: dict[str, Any] = {}
        links: list[tuple[str, str, str]] = []
        for keyword in call.keywords:
            if keyword.arg is None:
                params.update(_splat(keyword.value, node_ids, namespace))
            else:
                params[keyword.arg] = _value(keyword.value, keyword.arg, node_ids, namespace, links)
        params = {k: v for k, v in params.items() if v is not _LINKED}
        try:
            builder.add_node(node_class, node_id, params)
        except DataFlowError as exc:
            raise CellError(call.lineno, exc.message, hint=exc.hint) from None
        for source_id, path, target in links:
            builder.add_connection(source_id, path, node_id, target)
    try:
        return builder.build(name=name)
    except WorkflowValidationError as exc:  # each problem about a node names the line it is on
        lines = {node_id: call.lineno for node_id, call in calls}
        raise type(exc)([_on_line(p, lines) for p in exc.problems]) from None


def _on_line(problem: Any, lines: dict[str, int]) -> Problem:
    line = lines.get(getattr(problem, "node_id", None) or "")
    return Problem(f"line {line}: {problem}" if line else str(problem), getattr(problem, "node_id", None))


def _node_lines(source: str) -> list[tuple[str, ast.Call]]:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise CellError(
            exc.lineno, f"{exc.msg}: {(exc.text or '').strip()}", hint=f"each line reads {_FORM}."
        ) from None
    calls: list[tuple[str, ast.Call]] = []
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
        ):
            continue  # a docstring-like note
        if not (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and isinstance(stmt.value, ast.Call)
        ):
            raise CellError(
                stmt.lineno,
                f"`{ast.unparse(stmt)[:60]}` is not a node.",
                hint=f"a workflow cell holds only lines like {_FORM}; compute values in a normal cell first.",
            )
        node_id = stmt.targets[0].id
        if node_id in dict(calls):
            raise CellError(
                stmt.lineno, f"node id '{node_id}' is used twice.", hint="give every node its own name."
            )
        if stmt.value.args:
            raise CellError(
                stmt.lineno,
                f"pass the parameters of '{node_id}' by name, not by position.",
                hint="e.g. UserReadNode(id=create.id).",
            )
        calls.append((node_id, stmt.value))
    if not calls:
        raise CellError(None, "the workflow cell has no nodes.", hint=f"write one line per node: {_FORM}.")
    return calls


def _node_type(func: ast.expr, dataflow: DataFlow | None, namespace: Mapping[str, Any]) -> type[Node]:
    if isinstance(func, ast.Name):
        name = func.id
        if dataflow is not None and name in dataflow.nodes:
            return dataflow.nodes[name]
        if name in namespace:
            return _resolve(namespace[name], func)
        try:
            return resolve(name)
        except NodeNotFoundError:
            known = sorted({n for db in live_dataflows() for n in db.nodes})
            callables = [k for k, v in namespace.items() if callable(v) and not k.startswith("_")]
            raise CellError(
                func.lineno,
                f"unknown node type '{name}'.{did_you_mean(name, known + callables)}",
                hint="define its model in a %%dataflow model cell, or a Python function in a normal cell, first."
                if not known
                else f"node types: {', '.join(known[:11])}{' ...' if len(known) > 11 else ''}.",
            ) from None
        except DataFlowError as exc:
            raise CellError(func.lineno, exc.message, hint=exc.hint) from None
    return _resolve(_evaluate(func, namespace, set()), func)


def _resolve(value: Any, where: ast.expr) -> type[Node]:
    try:
        return resolve(value)
    except DataFlowError as exc:
        raise CellError(where.lineno, exc.message, hint=exc.hint) from None


_LINKED = object()  # a parameter wholly supplied by a connection


def _value(
    expr: ast.expr,
    target: str,
    node_ids: set[str],
    namespace: Mapping[str, Any],
    links: list[tuple[str, str, str]],
) -> Any:
    ref = _reference(expr, node_ids)
    if ref is not None:
        links.append((ref[0], ref[1], target))
        return _LINKED
    if isinstance(expr, ast.Dict) and _mentions(expr, node_ids):
        out = {}
        for key, value in zip(expr.keys, expr.values):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise CellError(expr.lineno, "a dict that holds node outputs needs plain string keys.")
            item = _value(value, f"{target}.{key.value}", node_ids, namespace, links)
            if item is not _LINKED:
                out[key.value] = item
        return out or _LINKED  # wholly linked: the connections build the dict at run time
    return _evaluate(expr, namespace, node_ids)


def _reference(expr: ast.expr, node_ids: set[str]) -> tuple[str, str] | None:
    """``create.records[0].email`` -> ('create', 'records.0.email'); None when not a node reference."""
    path: list[str] = []
    node = expr
    while isinstance(node, ast.Attribute | ast.Subscript):
        if isinstance(node, ast.Attribute):
            path.append(node.attr)
        elif isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int | str):
            path.append(str(node.slice.value))
        elif isinstance(node.slice, ast.UnaryOp) and isinstance(node.slice.op, ast.USub):
            path.append(f"-{ast.literal_eval(node.slice.operand)}")
        else:
            return None
        node = node.value
    if not (isinstance(node, ast.Name) and node.id in node_ids):
        return None
    if not path:
        raise CellError(
            expr.lineno,
            f"`{node.id}` is a whole node; connect one of its outputs.",
            hint=f"e.g. {node.id}.id or {node.id}.records[0].email.",
        )
    return node.id, ".".join(reversed(path))


def _mentions(expr: ast.expr, node_ids: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in node_ids for n in ast.walk(expr))


def _evaluate(expr: ast.expr, namespace: Mapping[str, Any], node_ids: set[str]) -> Any:
    if _mentions(expr, node_ids):
        raise CellError(
            expr.lineno,
            f"`{ast.unparse(expr)}` computes with a node's output; only plain references like create.id connect.",
            hint="compute it in a Python function node, e.g. fix = my_function(value=create.id).",
        )
    code = compile(ast.Expression(expr), "<workflow cell>", "eval", dont_inherit=True)
    try:
        scope = namespace if type(namespace) is dict else dict(namespace)
        return eval(code, scope)  # noqa: S307 - the user's own notebook expression
    except NameError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise CellError(
            expr.lineno,
            f"name '{missing}' is not defined.{did_you_mean(str(missing), [*namespace, *node_ids])}",
            hint="define it in a cell above, or refer to a node of this cell.",
        ) from None
    except Exception as exc:
        raise CellError(expr.lineno, f"`{ast.unparse(expr)}` failed: {type(exc).__name__}: {exc}") from None


def _splat(expr: ast.expr, node_ids: set[str], namespace: Mapping[str, Any]) -> dict[str, Any]:
    value = _evaluate(expr, namespace, node_ids)
    if not isinstance(value, Mapping):
        raise CellError(expr.lineno, f"`**{ast.unparse(expr)}` must be a dict, got {type(value).__name__}.")
    return dict(value)
