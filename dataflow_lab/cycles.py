"""Declared cycles: which nodes a cycle repeats, and the run order around them.

A cycle is declared on the connection that closes it::

    builder.add_connection("step", "value", "step", "x", cycle=True,
                           max_iterations=20, converge_when=lambda out: out["delta"] < 1e-6)

The cycle's *body* is every node on a path from the connection's target to its
source (both included). The runtime runs the body in order, then feeds the
source's output through the cycle connection into the next iteration, until
``converge_when(source output)`` is true or ``max_iterations`` have run. Without
``converge_when`` the body simply runs ``max_iterations`` times. In the first
iteration the cycle connection carries nothing: the target's parameter (or its
default) is the starting value.

Every cycle must be declared: any other cycle in the connections is a build error.
Declared cycles may not share nodes (no nesting).
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

__all__ = ["Cycle", "find_cycles", "plan"]


class Cycle(NamedTuple):
    """One declared cycle: its closing connection, its body (in run order) and its limits."""

    source: str
    target: str
    body: tuple[str, ...]
    max_iterations: int
    converge_when: Callable[[Any], bool] | None = None

    def __str__(self) -> str:
        return " -> ".join((*self.body, self.body[0]))


def _reachable(start: str, edges: Mapping[str, set[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def find_cycles(
    order: Iterable[str], forward: Iterable[tuple[str, str]], closing: Iterable[Any]
) -> tuple[list[Cycle], list[str]]:
    """The cycles the ``closing`` connections declare, and the problems found declaring them.

    ``order`` is a topological order of the nodes along the ``forward`` (source, target) edges.
    """
    order = list(order)
    down: dict[str, set[str]] = {}
    up: dict[str, set[str]] = {}
    for source, target in forward:
        down.setdefault(source, set()).add(target)
        up.setdefault(target, set()).add(source)
    cycles: list[Cycle] = []
    problems: list[str] = []
    owner: dict[str, Cycle] = {}
    for c in closing:
        members = _reachable(c.target, down) & _reachable(c.source, up)
        if c.source not in members:
            problems.append(
                f"cycle connection {c}: '{c.target}' does not lead back to '{c.source}', so nothing repeats."
                " Declare cycle=True only on the connection that closes a loop."
            )
            continue
        body = tuple(n for n in order if n in members)
        cycle = Cycle(c.source, c.target, body, c.max_iterations, c.converge_when)
        shared = sorted({owner[n].target for n in members if n in owner})
        if shared:
            problems.append(
                f"cycle connection {c}: its cycle shares nodes with the cycle entered at "
                f"{', '.join(repr(s) for s in shared)}; cycles may not overlap or nest."
            )
            continue
        owner.update({n: cycle for n in members})
        cycles.append(cycle)
    return cycles, problems


def plan(order: Iterable[str], forward: Iterable[tuple[str, str]], cycles: list[Cycle]) -> tuple:
    """The run order with each cycle as one step: node ids and Cycle objects, dependencies first."""

    unit = {n: n for n in order}
    for cycle in cycles:
        unit.update({n: cycle.target for n in cycle.body})
    depends: dict[str, list[str]] = {u: [] for u in dict.fromkeys(unit.values())}
    for source, target in forward:
        if unit[source] != unit[target]:
            depends[unit[target]].append(unit[source])
    by_target = {cycle.target: cycle for cycle in cycles}
    return tuple(by_target.get(u, u) for u in stable_order(depends))


def stable_order(depends_on: dict[str, list[str]]) -> tuple[str, ...]:
    """Topological order that keeps insertion order among independent nodes.

    The ready nodes wait in a heap keyed by insertion rank, so each step costs O(log n): the
    earlier version re-sorted the whole ready list per step, quadratic on a wide fan-out.
    """
    sorter = graphlib.TopologicalSorter(depends_on)
    sorter.prepare()  # raises CycleError
    rank = {node: i for i, node in enumerate(depends_on)}
    order: list[str] = []
    ready: list[tuple[int, str]] = []
    while sorter.is_active():
        for node in sorter.get_ready():
            heapq.heappush(ready, (rank[node], node))
        _, node = heapq.heappop(ready)
        order.append(node)
        sorter.done(node)
    return tuple(order)
