"""How a workflow's nodes are wired: a Connection, and whether it holds together.

``check_connection`` is build()'s check of one connection: both nodes exist, the
target has the input and the source the output, and the output's type is one the
input can take (``nodes/outputs.py``: a row's ``id`` into an id input, never an int
into a str field). Each finding is a ``Problem``: its text and the node it is about.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import did_you_mean
from .nodes import outputs

__all__ = ["Connection", "Problem", "check_connection", "listing"]


@dataclass(frozen=True)
class Connection:
    """``source``'s output at ``source_output`` feeds ``target``'s ``target_input``.

    ``cycle=True`` marks the connection that closes a declared cycle (see ``cycles.py``).
    """

    source: str
    source_output: str
    target: str
    target_input: str
    cycle: bool = False
    max_iterations: int | None = None
    converge_when: Callable[[Any], bool] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.source}.{self.source_output} -> {self.target}.{self.target_input}"


class Problem(str):
    """One problem ``build()`` reports: its text, and the node it is about (None: the workflow's)."""

    node_id: str | None

    def __new__(cls, text: str, node_id: str | None = None) -> Problem:
        problem = super().__new__(cls, text)
        problem.node_id = node_id
        return problem

    def __reduce__(self) -> tuple:
        return Problem, (str(self), self.node_id)


def check_connection(c: Connection, nodes: Mapping[str, Any], unresolved: Collection[str]) -> list[Problem]:
    """What is wrong with ``c`` among ``nodes`` (NodeSpecs by id); ``unresolved``: ids of nodes of unknown type."""
    if c.source in unresolved or c.target in unresolved:
        return []  # the node's unknown type is the problem already reported
    problems = []
    for end in (c.source, c.target):
        if end not in nodes:
            problems.append(
                f"connection {c}: there is no node '{end}'.{did_you_mean(end, nodes)}"
                f" The workflow's nodes: {listing(nodes)}."
            )
    if not problems and c.source == c.target and not c.cycle:
        problems.append(
            f"connection {c}: a node cannot feed itself, unless the connection is a declared cycle "
            "(cycle=True, max_iterations=N)."
        )
    if not problems:
        problems = _check_ends(c, nodes)
    return [Problem(p, c.target) for p in problems]


def _check_ends(c: Connection, nodes: Mapping[str, Any]) -> list[str]:
    """The target has the input, the source the output, and the output's type fits the input's."""
    problems = []
    target, source = nodes[c.target].node_class, nodes[c.source]
    root = c.target_input.split(".", 1)[0]
    if root not in target.param_map():
        problems.append(
            f"connection {c}: {target.type_name} has no input '{root}'."
            f"{did_you_mean(root, target.param_map())} Its inputs: {listing(target.param_map())}."
        )
    typed_for = getattr(source.node_class, "output_type_for", None)  # an output shaped by the params
    output_type = typed_for(source.checked) if typed_for else source.node_class.output_type()
    outputs_for = getattr(source.node_class, "outputs_for", None)
    names = outputs_for(source.checked) if outputs_for else outputs.keys(output_type)
    head = c.source_output.split(".", 1)[0]
    if names is not None and head not in names:
        problems.append(
            f"connection {c}: {source.type_name} has no output '{head}'."
            f"{did_you_mean(head, names)} Its outputs: {listing(sorted(names))}."
        )
    if problems or outputs_for:
        return problems
    arrives, walked, missing = outputs.walk(output_type, c.source_output)
    if missing is not None:
        return [_missing_output(c, source, walked, missing)]
    expects = target.input_type(c.target_input)
    if expects is not None and not expects.admits(arrives):
        return [_mismatch(c, source, nodes[c.target], arrives, expects)]
    return []


def _missing_output(c: Connection, source: Any, walked: str, missing: Any) -> str:
    owner, part = missing.owner, missing.part
    what = f"'{walked}' of {source.type_name} '{c.source}'" if walked else f"the output of '{c.source}'"
    names = outputs.keys(owner)
    if names is None:  # a list: the runtime indexes it
        return (
            f"connection {c}: {what} is {outputs.label(owner)}, a list, so it has no '{part}'. "
            f"Name an index: '{'.'.join(filter(None, (walked, '0', part)))}' is the first one's."
        )
    return (
        f"connection {c}: {what} is {outputs.label(owner)}, which has no '{part}'."
        f"{did_you_mean(part, names)} It has: {listing(names)}."
    )


def _mismatch(c: Connection, source: Any, target: Any, arrives: Any, expects: Any) -> str:
    given = outputs.label(arrives)
    arg = c.source_output.rsplit(".", 1)[-1]
    arg = arg if arg.isidentifier() else "value"
    key = c.target_input.rsplit(".", 1)[-1]
    wanted = expects.types[0] if expects.types else None
    convert = f"{wanted.__name__}({arg})" if wanted in (str, int, float) else "..."
    return (
        f"connection {c}: {source.type_name} '{c.source}' outputs '{c.source_output}' as {given}, but "
        f"{target.type_name} '{c.target}' takes '{c.target_input}' as {expects}: no {given} passes that "
        f"check, so the run would stop at '{c.target}' after the nodes before it had written. Connect an "
        f"output of type {expects}, or convert the value in a Python node between the two: "
        f"add_node(lambda {arg}: {{'{key}': {convert}}}, 'convert'), then connect "
        f"{c.source}.{c.source_output} -> convert.{arg} and convert.{key} -> {c.target}.{c.target_input}."
    )


def listing(names: Any) -> str:
    return ", ".join(names) or "none"
