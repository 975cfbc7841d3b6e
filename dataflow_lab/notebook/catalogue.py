"""The node catalogue: each model's twelve nodes, their parameters, and the SQL they run.

The SQL comes from ``ModelNode.sql(params)`` with example parameters made
from the model's fields, so what you read is what the node would send.
Displayed as an ipywidgets accordion while the kernel lives (in a JupyterLab whose server
saves it as its static twin, see saving.py), and as HTML with disclosures and as text
everywhere else, and in the saved notebook.
"""

from __future__ import annotations

import datetime as dt
import enum
import html
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import viz
from ..errors import DataFlowError, ValidationError, did_you_mean
from ..model import MISSING, Field, ModelSchema
from .display import bundle, widgets, widgets_available
from .saving import saves_static, widget_bundle

if TYPE_CHECKING:  # pragma: no cover
    from ..dataflow import DataFlow

__all__ = ["Catalogue", "NodeEntry", "example_params"]

_EXAMPLES: dict[type, Any] = {
    int: 1,
    float: 1.5,
    bool: True,
    dt.datetime: dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    dt.date: dt.date(2024, 1, 1),
    Decimal: Decimal("1.00"),
    bytes: b"\x00",
    uuid.UUID: uuid.UUID(int=1),
    dict: {},
    list: [],
}


def _example(field: Field) -> Any:
    if field.default is not MISSING and field.default is not None:
        return field.default
    kind = field.type.python
    if kind is str:
        return f"<{field.name}>"
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return next(iter(kind))
    return _EXAMPLES.get(kind)


def example_params(model: ModelSchema) -> dict[str, dict[str, Any]]:
    """Example parameters for each operation of ``model`` (keyed by Node.operation)."""
    row = {f.name: _example(f) for f in model.user_fields if f.required or f.primary_key}
    first = next((f for f in model.user_fields if not f.primary_key), None)
    change = {first.name: _example(first)} if first is not None else {}
    key = _example(model.id_field)
    return {
        "create": row,
        "read": {"id": key},
        "update": {"id": key, "fields": change, **({"version": 1} if model.versioned else {})},
        "delete": {"id": key},
        "list": {"limit": 10},
        "count": {},
        "upsert": {"where": {"id": key}, "create": row, "update": change},
        "bulk_create": {"data": [row, row]},
        "bulk_update": {"filter": {"id": {"$in": [key]}}, "fields": change},
        "bulk_delete": {"filter": {"id": {"$in": [key]}}},
        "bulk_upsert": {"data": [{"id": key, **row}]},
        "aggregate": _aggregate_example(model),
    }


def _aggregate_example(model: ModelSchema) -> dict[str, Any]:
    """Rows per value of the first field that groups well, and a sum of the first numeric one."""
    fields = [f for f in model.user_fields if not f.primary_key]
    key = next((f for f in fields if f.type.name in ("text", "enum", "boolean", "date")), None)
    number = next((f for f in fields if f.type.name in ("integer", "float", "decimal")), None)
    metrics: dict[str, Any] = {"rows": "count"}
    if number is not None:
        metrics[f"total_{number.name}"] = ("sum", number.name)
    return {"group_by": [key.name] if key is not None else [], "metrics": metrics}


REQUIRED_NOTE = (
    "A required parameter comes from add_node, from a connection, or from each run: build() "
    'records one left open as a workflow input, passed as execute(wf, parameters={"node_id": {...}}).'
)


@dataclass(frozen=True)
class NodeEntry:
    """One generated node, as the catalogue shows it."""

    model: str
    name: str
    description: str
    parameters: tuple[dict[str, Any], ...]
    example: dict[str, Any]
    sql: str  # the SQL for ``example``, or why there is none

    def signature(self) -> str:
        return f"{self.name}({', '.join(_param_text(p) for p in self.parameters)})"

    def call(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.example.items())})"


def _param_text(p: dict[str, Any]) -> str:
    text = f"{p['name']}: {p['type']}"
    return text if p["required"] else f"{text} = {p['default']!r}"


def _entry(node_cls: Any, examples: dict[str, dict[str, Any]]) -> NodeEntry:
    example = examples.get(node_cls.operation, {})
    try:
        sql = node_cls.sql(example)
    except DataFlowError as exc:
        sql = f"-- depends on the data: {exc.message}"
    return NodeEntry(
        model=node_cls.model.name,
        name=node_cls.type_name,
        description=node_cls.description,
        parameters=tuple(node_cls.describe()),
        example=example,
        sql=sql,
    )


class Catalogue:
    """The generated nodes of ``dataflow`` (all models, or the named ones)."""

    def __init__(self, dataflow: DataFlow, models: list[str] | None = None):
        known = dict(dataflow.models)
        for name in models or ():
            if name not in known:
                raise ValidationError(
                    f"Model '{name}' is not defined on the notebook's DataFlow.{did_you_mean(name, known)}",
                    hint="define it in a %%dataflow model cell first."
                    if not known
                    else f"models: {', '.join(known)}.",
                )
        self.dataflow = dataflow
        self.models = list(models or known)
        self.entries: dict[str, list[NodeEntry]] = {}
        for name in self.models:
            examples = example_params(known[name])
            nodes = [c for c in dataflow.nodes.values() if c.model is not None and c.model.name == name]
            self.entries[name] = [_entry(c, examples) for c in nodes]

    def text(self) -> str:
        lines = []
        for model, entries in self.entries.items():
            table = self.dataflow.models[model].table_name
            lines.append(f"{model} · table {table} · {len(entries)} nodes")
            lines += [f"  {e.signature()}  # {e.description}" for e in entries]
        if not lines:
            return "No models yet: define one in a %%dataflow model cell."
        return "\n".join([*lines, REQUIRED_NOTE])

    def __repr__(self) -> str:
        return self.text()

    def node_html(self, entry: NodeEntry) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{html.escape(p['type'])}</td>"
            f"<td>{'yes' if p['required'] else ''}</td>"
            f"<td>{'' if p['required'] else html.escape(repr(p['default']))}</td>"
            f"<td>{html.escape(p['description'])}</td></tr>"
            for p in entry.parameters
        )
        return (
            "<table><tr><th>parameter</th><th>type</th><th>required</th><th>default</th><th></th></tr>"
            f"{rows}</table>"
            f"<p>SQL for <code>{html.escape(entry.call())}</code>:</p><pre>{html.escape(entry.sql)}</pre>"
        )

    def html(self) -> str:
        parts = []
        for model, entries in self.entries.items():
            table = self.dataflow.models[model].table_name
            parts.append(f"<h4>{html.escape(model)} · table <code>{table}</code> · {len(entries)} nodes</h4>")
            parts += [
                f"<details><summary><code>{html.escape(e.name)}</code> {html.escape(e.description)}</summary>"
                f"{self.node_html(e)}</details>"
                for e in entries
            ]
        if parts:
            parts.append(f"<p{viz.muted_style()}><i>{html.escape(REQUIRED_NOTE)}</i></p>")
        return f'<div class="df-catalogue">{"".join(parts) or html.escape(self.text())}</div>'

    def widget(self) -> Any:
        """One accordion of nodes per model (tabs when there are several models)."""
        w = widgets()
        boxes = []
        for model, entries in self.entries.items():
            accordion = w.Accordion(children=[w.HTML(self.node_html(e)) for e in entries])
            accordion.titles = tuple(f"{e.name}: {e.description}" for e in entries)
            table = self.dataflow.models[model].table_name
            head = w.HTML(f"<b>{html.escape(model)}</b> · table <code>{table}</code> · {len(entries)} nodes")
            boxes.append(w.VBox([head, accordion]))
        if len(boxes) == 1:
            view = boxes[0]
        else:
            view = w.Tab(children=boxes)
            view.titles = tuple(self.entries)
        view = w.VBox([view, w.HTML(f"<i>{html.escape(REQUIRED_NOTE)}</i>")])
        view.add_class("df-catalogue")
        return view

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        # While the kernel lives, the accordion; the saved notebook keeps the static HTML
        # (<details> disclosures, interactive with no kernel and untrusted) beside it. A widget
        # view is shown only when the notebook server saves it as that static twin (saving.py):
        # a stored view whose model is gone reads "Error displaying widget: model not found".
        data = bundle(self.text(), self.html())
        if self.entries and _live_widgets():
            return widget_bundle(data, self.widget())
        return data


def _live_widgets() -> bool:
    """A kernel, ipywidgets, and a server that saves our widgets as their static twins."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    return kernel is not None and saves_static() and widgets_available()
