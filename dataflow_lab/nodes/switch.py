"""SwitchNode: route a value to one of several named outputs.

``condition`` decides the case from the input ``value``:

- a callable ``condition(value)`` returning a case name (or a bool: "true" / "false");
- a declarative rule ``{"field": "total", "operator": ">", "value": 100}`` (true/false).

The output is ``{"case": <name>, <name>: value}``: only the taken case's key is
present. Connections from the other cases are *not taken*; the runtime skips the
nodes they feed (see ``routing.py`` for the exact rule).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from ..errors import ValidationError
from ..model import IDENTIFIER
from .base import Node, Param, RunContext

__all__ = ["OPERATORS", "SwitchNode"]

OPERATORS = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
    "<": operator.lt, "<=": operator.le,
    "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
    "is none": lambda a, _b: a is None, "is not none": lambda a, _b: a is not None,
}  # fmt: skip


def _check_condition(condition: Any) -> Any:
    if callable(condition):
        return condition
    if not isinstance(condition, Mapping):
        raise ValidationError(
            f"must be a callable or a rule dict, got {type(condition).__name__}.",
            hint='e.g. lambda order: "big" if order["total"] > 100 else "small", '
            'or {"field": "total", "operator": ">", "value": 100}.',
        )
    unknown = set(condition) - {"field", "operator", "value"}
    if unknown or "operator" not in condition:
        raise ValidationError(
            f"a rule takes keys field, operator and value; got {sorted(condition)}.",
            hint=f"operators: {', '.join(OPERATORS)}.",
        )
    if condition["operator"] not in OPERATORS:
        raise ValidationError(
            f"unknown operator {condition['operator']!r}.", hint=f"operators: {', '.join(OPERATORS)}."
        )
    return dict(condition)


def _check_cases(cases: Any) -> list[str]:
    if isinstance(cases, str) or not isinstance(cases, list | tuple) or not cases:
        raise ValidationError(f"must be a non-empty list of output names, got {cases!r:.60}.")
    for name in cases:
        if not isinstance(name, str) or not IDENTIFIER.fullmatch(name) or name == "case":
            raise ValidationError(
                f"case {name!r} is not a valid output name.",
                hint="use identifiers (letters, digits, underscores); 'case' is reserved for the chosen name.",
            )
    if len(set(cases)) != len(cases):
        raise ValidationError(f"cases repeat a name: {list(cases)}.")
    return list(cases)


class SwitchNode(Node):
    """Route ``value`` to the output named by ``condition``; the other outputs' nodes are skipped."""

    type_name = "SwitchNode"
    operation = "switch"
    routes = True  # the runtime treats absent case outputs as not taken
    description = "Route a value to one of several named outputs."
    parameters = (
        Param("value", Any, required=True, description="the value to route (usually connected)"),
        Param(
            "condition",
            Any,
            required=True,
            description="callable(value) -> case name or bool, or {field, operator, value}",
            check=_check_condition,
        ),
        Param(
            "cases",
            list,
            default=["true", "false"],
            description="the output names the condition may choose",
            check=_check_cases,
        ),
    )

    @classmethod
    def outputs_for(cls, params: Mapping[str, Any]) -> set[str]:
        """The outputs a connection may name, given this node's parameters."""
        return {"case", *params.get("cases", ["true", "false"])}

    def choose(self) -> str:
        condition, value = self.params["condition"], self.params["value"]
        if callable(condition):
            chosen = condition(value)
        else:
            field = condition.get("field")
            subject = value.get(field) if field is not None and isinstance(value, Mapping) else value
            if field is not None and not isinstance(value, Mapping):
                subject = getattr(value, field, None)
            chosen = OPERATORS[condition["operator"]](subject, condition.get("value"))
        if isinstance(chosen, bool):
            chosen = "true" if chosen else "false"
        if chosen not in self.params["cases"]:
            raise ValidationError(
                f"SwitchNode '{self.node_id}': the condition chose {chosen!r}, which is not one of the "
                f"cases {self.params['cases']}.",
                hint="return one of the case names (or a bool for the default true/false cases).",
            )
        return chosen

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        chosen = self.choose()
        return {"case": chosen, chosen: self.params["value"]}
