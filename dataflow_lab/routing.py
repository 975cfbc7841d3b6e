"""Which nodes run: the skip rule behind SwitchNode's routes, and the results a run returns.

A connection is *dead* when its source was skipped, or when its source routes
(a SwitchNode) and did not take the connection's output. A cycle connection
before its first iteration is neither dead nor live: it carries nothing.

**The rule.** Group a node's incoming connections by the input they feed. The
node runs when every such input has at least one live connection; an input fed
by several connections (a merge after a switch) takes its live one. Otherwise
the node is skipped: ``results[node_id]`` is a ``Skipped`` naming why, the
``node_skipped`` hook fires, and the rule repeats downstream, so a skipped
node's descendants are skipped unless another live connection feeds each of
their inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .workflow import Connection, Workflow

__all__ = ["RunResults", "Skipped", "live_connections", "routers"]


@dataclass(frozen=True)
class Skipped:
    """A node's entry in the results when it did not run, with the reason."""

    reason: str

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Skipped({self.reason!r})"


class RunResults(dict):
    """The results of a run: a plain dict node id -> output, plus cycle history.

    ``iterations[node_id]`` lists a cycle node's output per iteration (the dict
    itself holds the last); ``skipped`` lists the nodes that did not run.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.iterations: dict[str, list[Any]] = {}

    @property
    def skipped(self) -> list[str]:
        return [node_id for node_id, out in self.items() if isinstance(out, Skipped)]

    def clear(self) -> None:
        super().clear()
        self.iterations.clear()

    def copy(self) -> RunResults:
        return _rebuild_results(dict(self), {k: list(v) for k, v in self.iterations.items()})

    def __reduce__(self) -> tuple:
        return _rebuild_results, (dict(self), self.iterations)


def _rebuild_results(values: dict, iterations: dict) -> RunResults:
    results = RunResults(values)
    results.iterations.update(iterations)
    return results


class _Verdict:
    __slots__ = ("live", "dead")

    def __init__(self) -> None:
        self.live: list[Connection] = []
        self.dead: dict[str, str] = {}  # input -> why


def routers(workflow: Workflow) -> frozenset[str]:
    """The ids of the nodes that route (SwitchNode): their absent outputs are routes not taken."""
    return frozenset(n for n, spec in workflow.nodes.items() if getattr(spec.node_class, "routes", False))


def _dead_because(c: Connection, results: Mapping[str, Any], routing: Collection[str]) -> str | None:
    out = results[c.source]
    if isinstance(out, Skipped):
        return f"'{c.source}' was skipped"
    head = c.source_output.split(".", 1)[0]
    if c.source in routing and head != "case" and head not in out:
        return f"'{c.source}' chose {out.get('case')!r}, not {head!r}"
    return None


def live_connections(
    incoming: tuple[Connection, ...], results: Mapping[str, Any], routing: Collection[str]
) -> list[Connection] | str:
    """The connections that carry a value into a node, or (a str) why the node is skipped."""
    verdicts: dict[str, _Verdict] = {}
    for c in incoming:
        if c.cycle and c.source not in results:
            continue  # the first iteration of a cycle: the target's own parameter applies
        verdict = verdicts.setdefault(c.target_input, _Verdict())
        why = _dead_because(c, results, routing)
        if why is None:
            verdict.live.append(c)
        else:
            verdict.dead[c.target_input] = why
    live: list[Connection] = []
    for target_input, verdict in verdicts.items():
        if not verdict.live:
            return f"input '{target_input}' has no live connection: {verdict.dead[target_input]}"
        live += verdict.live
    return live
