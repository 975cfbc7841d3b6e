"""Workflow -> graphviz: DOT text, SVG coloured by node state, and fallbacks.

Rendering SVG runs Graphviz's ``dot`` binary (about 12 ms), so a drawing is
rendered once per graph shape, with a unique placeholder colour and status
line per node; showing new states is then a string join over the cached SVG.
Without ``dot`` the DAG becomes an HTML table plus its DOT text and a hint.
"""

from __future__ import annotations

import html
import re
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .errors import DataFlowError, ValidationError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from .wiring import Connection

__all__ = [
    "STATES",
    "STATE_COLOURS",
    "THEME",
    "DagDrawing",
    "dot_available",
    "legend_html",
    "muted_style",
    "state_style",
    "themed",
    "to_dot",
    "to_html",
    "to_svg",
]


class Typed(Protocol):
    """A node of a drawn workflow (``workflow.NodeSpec``), or one of its run inputs (``WorkflowInput``)."""

    @property
    def type_name(self) -> str: ...


class RunInput(Typed, Protocol):
    @property
    def name(self) -> str: ...


class Workflow(Protocol):
    """What the DAG draws of a ``workflow.Workflow`` (whose module imports this one to draw it)."""

    @property
    def name(self) -> str: ...
    @property
    def order(self) -> tuple[str, ...]: ...
    @property
    def nodes(self) -> Mapping[str, Typed]: ...
    @property
    def connections(self) -> tuple[Connection, ...]: ...
    @property
    def inputs(self) -> Mapping[str, tuple[Connection, ...]]: ...
    @property
    def workflow_inputs(self) -> tuple[RunInput, ...]: ...
    def inputs_of(self, node_id: str) -> tuple[RunInput, ...]: ...


STATES = ("pending", "running", "done", "failed", "cancelled", "rolled back", "compensated", "skipped")
STATE_COLOURS = {
    "pending": "#e8eaed",
    "running": "#fdd663",
    "done": "#81c995",
    "failed": "#f28b82",
    "cancelled": "#bdc1c6",
    "rolled back": "#fcad70",
    "compensated": "#c58af9",
    "skipped": "#ffffff",
}
INSTALL_HINT = (
    "Install Graphviz's `dot` to draw this DAG: apt-get install graphviz (Debian/Ubuntu), "
    "brew install graphviz (macOS), or conda install graphviz."
)
_INK = "#202124"  # on every state colour and on the card: WCAG AA (≥ 4.5:1), tested
_CARD = "#ffffff"  # the picture's own background: an <img> cannot follow the theme, so it carries one
_LINE = "#5f6368"
# The HTML parts around the pictures follow JupyterLab's theme through its CSS variables, with our
# palette as the fallback where a frontend has none. An untrusted notebook's sanitizer drops var()
# values, so there the text inherits the theme's own colour. State colours have no JupyterLab
# counterpart (and must match the picture they explain), so a state chip or cell carries its own
# background and ink: readable on any theme. All pairs pass WCAG AA in the light and dark themes
# (tests/test_viz.py reads the values from JupyterLab's theme CSS).
THEME = {
    "text": ("--jp-ui-font-color1", _INK),
    "muted": ("--jp-ui-font-color2", _LINE),
    "error": ("--jp-error-color1", "#c5221f"),
}
_STATUS_WIDTH = 22  # characters reserved for a node's status line ("12.3 ms · 1,234 rows")
_SLOT = re.compile(r"#fe([0-9a-f]{4})|QQS(\d{5})Q*")
_SVG_NOISE = re.compile(r"<\?xml.*?\?>|<!DOCTYPE.*?>|<!--.*?-->", re.DOTALL)
_CACHE: OrderedDict[tuple, tuple[list[str], list[tuple[str, int]]]] = OrderedDict()
_CACHE_SIZE = 64
_dot_path: str | None | bool = False  # False: not looked up yet


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` binary is on PATH (looked up once)."""
    global _dot_path
    if _dot_path is False:
        _dot_path = shutil.which("dot")
    return _dot_path is not None


def _check_state(state: str) -> str:
    if state not in STATE_COLOURS:
        raise ValidationError(
            f"Unknown node state '{state}'.{did_you_mean(state, STATES)}",
            hint=f"states: {', '.join(STATES)}.",
        )
    return state


class DagDrawing:
    """One workflow's DAG: DOT text, cached SVG recoloured per state, HTML with fallbacks.

    ``states`` maps node id -> one of STATES (default "pending"); ``labels``
    maps node id -> a short status line (durations, rows) under the node's type.
    """

    def __init__(self, workflow: Workflow):
        self.workflow = workflow
        self.node_ids = list(workflow.order)

    def dot(self, states: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> str:
        states, labels = states or {}, labels or {}
        fills = [STATE_COLOURS[_check_state(states.get(n, "pending"))] for n in self.node_ids]
        return self._source(fills, [labels.get(n, "") for n in self.node_ids])

    def _source(self, fills: list[str], statuses: list[str]) -> str:
        graphviz = _graphviz()
        graph = graphviz.Digraph(self.workflow.name)
        graph.attr("graph", rankdir="LR", bgcolor=_CARD, pad="0.08", nodesep="0.3", ranksep="0.45")
        graph.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10")
        graph.attr("node", color=_LINE, fontcolor=_INK, margin="0.12,0.06")
        graph.attr("edge", fontname="Helvetica", fontsize="9", color=_LINE, fontcolor=_INK, arrowsize="0.7")
        for node_id, fill, status in zip(self.node_ids, fills, statuses):
            spec = self.workflow.nodes[node_id]
            lines = [node_id, spec.type_name, *_run_inputs(self.workflow, node_id)] + (
                [status] if status else []
            )
            label = "\\n".join(_dot_text(line) for line in lines)
            graph.node(node_id, label=label, fillcolor=fill, id=f"df-node-{node_id}", tooltip=spec.type_name)
        for c in self.workflow.connections:
            label = f" {c.source}.{c.source_output} → {c.target}.{c.target_input} "
            if c.cycle:  # a declared cycle's closing edge: dashed, and left out of the ranking
                label += f"(cycle, ≤ {c.max_iterations}×) "
                graph.edge(c.source, c.target, label=label, style="dashed", constraint="false")
            else:
                graph.edge(c.source, c.target, label=label)
        for before, after in ordering_edges(self.workflow):
            graph.edge(before, after, label=" then ", style="dashed", tooltip="runs after (cell order)")
        return graph.source

    def svg(self, states: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> str:
        """The DAG as inline SVG text. Raises DataFlowError (with an install hint) without ``dot``."""
        parts, slots = self._template()
        states, labels = states or {}, labels or {}
        out = [parts[0]]
        for (kind, index), part in zip(slots, parts[1:]):
            node_id = self.node_ids[index]
            if kind == "fill":
                out.append(STATE_COLOURS[_check_state(states.get(node_id, "pending"))])
            else:
                out.append(html.escape(labels.get(node_id, "")))
            out.append(part)
        return "".join(out)

    def _shape(self) -> tuple:
        """What the drawing's layout depends on (the cache key)."""
        nodes = tuple((n, self.workflow.nodes[n].type_name) for n in self.node_ids)
        return self.workflow.name, nodes, self.workflow.connections, self.workflow.workflow_inputs

    def _template(self) -> tuple[list[str], list[tuple[str, int]]]:
        shape = self._shape()
        cached = _CACHE.get(shape)
        if cached is not None:
            _CACHE.move_to_end(shape)
            return cached
        fills = [f"#fe{i:04x}" for i in range(len(self.node_ids))]
        statuses = [f"QQS{i:05d}".ljust(_STATUS_WIDTH, "Q") for i in range(len(self.node_ids))]
        svg = _render(self._source(fills, statuses))
        parts, slots, last = [], [], 0
        for m in _SLOT.finditer(svg):
            parts.append(svg[last : m.start()])
            slots.append(("fill", int(m[1], 16)) if m[1] else ("status", int(m[2])))
            last = m.end()
        parts.append(svg[last:])
        _CACHE[shape] = (parts, slots)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return parts, slots

    def html(self, states: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> str:
        """SVG when ``dot`` is there; otherwise a table of nodes and edges, the DOT text, and a hint."""
        if dot_available():
            try:
                return f'<div class="df-dag">{self.svg(states, labels)}</div>'
            except DataFlowError:
                pass
        return self.fallback_html(states, labels)

    def fallback_html(
        self, states: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        states, labels = states or {}, labels or {}
        rows = []
        for node_id in self.node_ids:
            state = _check_state(states.get(node_id, "pending"))
            inputs = ", ".join(
                [
                    *(
                        f"{c.source}.{c.source_output} → {c.target_input}"
                        for c in self.workflow.inputs.get(node_id, ())
                    ),
                    *_run_inputs(self.workflow, node_id),
                ]
            )
            rows.append(
                f"<tr><td><b>{html.escape(node_id)}</b></td>"
                f"<td>{html.escape(self.workflow.nodes[node_id].type_name)}</td>"
                f'<td style="{state_style(state)}">{state}</td>'
                f"<td>{html.escape(labels.get(node_id, ''))}</td><td>{html.escape(inputs)}</td></tr>"
            )
        try:
            dot = f"<details><summary>DOT source</summary><pre>{html.escape(self.dot(states, labels))}</pre></details>"
        except DataFlowError as exc:  # the graphviz package itself is missing
            dot = f"<p{muted_style()}><i>{html.escape(exc.message)} {html.escape(exc.hint or '')}</i></p>"
        return (
            '<div class="df-dag df-dag-table"><table>'
            "<tr><th>node</th><th>type</th><th>state</th><th>status</th><th>inputs</th></tr>"
            f"{''.join(rows)}</table>{dot}<p{muted_style()}><i>{html.escape(INSTALL_HINT)}</i></p></div>"
        )

    def text(self, states: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> str:
        """Plain text: one line per node with its state, then its inputs."""
        states, labels = states or {}, labels or {}
        lines = [repr(self.workflow)]
        for node_id in self.node_ids:
            status = labels.get(node_id, "")
            state = states.get(node_id, "pending")
            lines.append(
                f"  {node_id}: {self.workflow.nodes[node_id].type_name} [{state}]{'  ' + status if status else ''}"
            )
            lines += [f"    <- {c}" for c in self.workflow.inputs.get(node_id, ())]
            lines += [
                f"    <- {i}: {i.type_name}, a workflow input" for i in self.workflow.inputs_of(node_id)
            ]
        return "\n".join(lines)


def _run_inputs(workflow: Workflow, node_id: str) -> list[str]:
    """'run input: id, fields' for a node whose required inputs each run passes (workflow inputs)."""
    names = [i.name for i in workflow.inputs_of(node_id)]
    return [f"run input: {', '.join(names)}"] if names else []


def ordering_edges(workflow: Workflow) -> list[tuple[str, str]]:
    """Consecutive nodes of the run order with no data path between them ("load, then count").

    The runtime runs a workflow's nodes in this order, so the second sees the first's writes;
    the DAG draws that as a dashed edge, which also lays unconnected nodes out in cell order.
    """
    downstream: dict[str, set[str]] = {n: set() for n in workflow.nodes}
    for c in workflow.connections:
        if not c.cycle:
            downstream[c.source].add(c.target)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += downstream[node]
        return False

    order = list(workflow.order)
    return [(a, b) for a, b in zip(order, order[1:]) if not reaches(a, b)]


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", " ")


def _graphviz() -> Any:
    try:
        import graphviz
    except ImportError as exc:
        raise DataFlowError(
            "Drawing a DAG needs the graphviz Python package.", hint="pip install 'dataflow-lab[notebook]'"
        ) from exc
    return graphviz


def _render(source: str) -> str:
    graphviz = _graphviz()
    if not dot_available():
        raise DataFlowError("Graphviz's `dot` program is not installed.", hint=INSTALL_HINT)
    try:
        svg = graphviz.Source(source).pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound as exc:
        raise DataFlowError("Graphviz's `dot` program is not installed.", hint=INSTALL_HINT) from exc
    except graphviz.CalledProcessError as exc:
        raise DataFlowError(f"Graphviz could not draw the workflow: {exc.stderr!r:.300}") from exc
    return _SVG_NOISE.sub("", svg).strip()


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two #rrggbb colours (1 to 21)."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def themed(role: str) -> str:
    """A CSS colour for ``role`` (a THEME key): JupyterLab's variable, our palette as fallback."""
    variable, fallback = THEME[role]
    return f"var({variable}, {fallback})"


def state_style(state: str) -> str:
    """The inline style of a chip or table cell showing ``state``: its colour with our ink on it."""
    return f"background:{STATE_COLOURS.get(state, _CARD)};color:{_INK}"


def muted_style() -> str:
    """` style="color:…"` for notes and hints (secondary text)."""
    return f' style="color:{themed("muted")}"'


def legend_html() -> str:
    """A row of coloured chips naming the node states."""
    chips = "".join(
        f'<span style="{state_style(state)};padding:0 6px;margin-right:4px;'
        f'border-radius:3px;border:1px solid {_LINE}">{state}</span>'
        for state in STATE_COLOURS
    )
    return f'<div class="df-legend" style="font-size:11px;margin:2px 0">{chips}</div>'


def to_dot(workflow: Workflow, states: Mapping[str, str] | None = None) -> str:
    """The workflow as DOT text (nodes coloured by ``states``)."""
    return DagDrawing(workflow).dot(states)


def to_svg(workflow: Workflow, states: Mapping[str, str] | None = None) -> str:
    """The workflow as SVG text; needs Graphviz's ``dot`` binary."""
    return DagDrawing(workflow).svg(states)


def to_html(workflow: Workflow, states: Mapping[str, str] | None = None) -> str:
    """SVG in a div, or the table/DOT fallback when ``dot`` is missing."""
    return DagDrawing(workflow).html(states)


def workflow_bundle(workflow: Workflow) -> dict[str, Any]:
    """The display bundle behind ``Workflow._repr_mimebundle_``: a picture that renders untrusted."""
    return picture_bundle(DagDrawing(workflow))


# -- static pictures: what survives saving, sharing and untrusted viewing ------------------------
# JupyterLab's sanitizer strips inline <svg> from untrusted HTML, and a saved widget view has no
# model once the kernel is gone. A picture (image/svg+xml, image/png, or an <img> with a data URI
# inside text/html) renders everywhere: trusted or not, with or without a kernel, in nbconvert.

_MIN_SCALE = 0.6  # a DAG shrinks to fit the output down to 60% of its natural size, then scrolls
_SIZE = re.compile(r'<svg\b([^>]*?)\swidth="([\d.]+)pt"\s+height="([\d.]+)pt"')


def svg_size(svg: str) -> tuple[float, float]:
    """The natural size of graphviz's SVG in CSS pixels (graphviz writes points)."""
    m = _SIZE.search(svg)
    return (float(m[2]) * 4 / 3, float(m[3]) * 4 / 3) if m else (0.0, 0.0)


def fit_style(width: float) -> str:
    """CSS that scales a picture to the output's width, but not below a readable minimum."""
    if width <= 0:
        return "max-width:100%"
    return f"width:100%;max-width:{width:.0f}px;min-width:{width * _MIN_SCALE:.0f}px;height:auto"


def fit_svg(svg: str) -> str:
    """Inline SVG that scales to its container (for the live widget, which is trusted)."""
    width, _ = svg_size(svg)
    return _SIZE.sub(lambda m: f'<svg{m[1]} style="{fit_style(width)}"', svg, count=1)


def scroller(inner: str) -> str:
    """A box that scrolls horizontally once its content is at its minimum width."""
    return f'<div class="df-dag" style="overflow-x:auto;max-width:100%">{inner}</div>'


def render_png(
    drawing: DagDrawing, states: Mapping[str, str] | None, labels: Mapping[str, str] | None
) -> bytes:
    graphviz = _graphviz()
    try:
        return graphviz.Source(drawing.dot(states, labels)).pipe(format="png")
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError) as exc:
        raise DataFlowError("Graphviz could not draw the workflow as PNG.", hint=INSTALL_HINT) from exc


def picture_bundle(
    drawing: DagDrawing, states: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """image/svg+xml, image/png, sanitizer-safe text/html (an <img>) and text/plain for one DAG.

    Without ``dot`` it is the HTML table plus the DOT text and a hint, and the plain text.
    """
    import base64

    data: dict[str, Any] = {"text/plain": drawing.text(states, labels)}
    try:
        svg = drawing.svg(states, labels) if dot_available() else None
        png = render_png(drawing, states, labels) if svg else None
    except DataFlowError:
        svg = png = None
    if svg is None or png is None:
        data["text/html"] = drawing.fallback_html(states, labels)
        return data
    width, _ = svg_size(svg)
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    alt = html.escape(f"DAG of workflow '{drawing.workflow.name}'")
    data["text/html"] = scroller(
        f'<img class="df-dag-img" src="{uri}" alt="{alt}" style="{fit_style(width)}">'
    )
    data["image/svg+xml"] = svg
    data["image/png"] = base64.b64encode(png).decode()
    return data
