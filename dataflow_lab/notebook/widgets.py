"""LiveView: the DAG view and the monitor panel of a running workflow, in one widget.

A RunObserver calls ``update`` from the runtime's loop thread (throttled);
widget changes made from that thread reach the frontend while the cell
blocks. Clicks (Cancel) only arrive once the cell has returned, so the
Cancel button is shown for background runs only.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import viz
from .dag import DagView
from .display import bundle, widgets
from .monitor import MonitorPanel, headline
from .saving import widget_bundle

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import Workflow
    from .observer import RunSnapshot

__all__ = ["LiveView"]

_ENDED_TEXT = {"done": "Finished", "failed": "Failed", "cancelled": "Cancelled"}
_ENDED_ICON = {"done": "check", "failed": "times", "cancelled": "ban"}


class LiveView:
    """DAG + monitor panel (+ Cancel for background runs), updated from snapshots."""

    def __init__(self, workflow: Workflow, snapshot: RunSnapshot, *, cancel: Callable[[], Any] | None = None):
        self.dag = DagView(workflow, snapshot)
        self.monitor = MonitorPanel(snapshot)
        self.snapshot = snapshot
        self.updates = 0
        w = widgets()
        children = [self.dag.widget(), self.monitor.widget()]
        self.button = None
        if cancel is not None:
            self.button = w.Button(description="Cancel run", button_style="danger", icon="stop")
            self.button.on_click(lambda _button: cancel())
            children.append(self.button)
        self.widget = w.VBox(children)
        self.widget.add_class("df-live")

    def update(self, snapshot: RunSnapshot) -> None:
        """Show ``snapshot`` (the observer's sink; runs on the loop thread)."""
        self.snapshot = snapshot
        self.updates += 1
        self.dag.update(snapshot)
        self.monitor.update(snapshot)
        if self.button is not None and snapshot.finished:
            self.button.disabled = True
            self.button.button_style = ""  # neutral: the run is over, nothing is in danger
            self.button.icon = _ENDED_ICON.get(snapshot.status, "")
            self.button.description = _ENDED_TEXT.get(snapshot.status, snapshot.status)
            self.button.tooltip = f"Run '{snapshot.name}' {snapshot.status}"

    def text(self) -> str:
        return f"Live view: {headline(self.snapshot)}"

    def __repr__(self) -> str:
        return self.text()

    def saved_html(self) -> str:
        """What a notebook saved mid-run keeps in the widget's place (see saving.py)."""
        note = f"Run '{self.snapshot.name}' had not ended when this notebook was saved: run the cell again."
        return f'<div class="df-run"><i style="color:{viz.themed("muted")}">{html.escape(note)}</i></div>'

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        # the widget while the kernel lives; a notebook saved before the run ends keeps the note
        return widget_bundle(bundle(self.text(), self.saved_html()), self.widget)
