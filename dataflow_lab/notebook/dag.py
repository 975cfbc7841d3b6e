"""DagView: a workflow's DAG coloured by node state, as static HTML or a live widget.

The SVG is rendered once (``viz.DagDrawing`` caches it per graph shape); each
update recolours the cached text and sets one HTML widget's value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import viz
from .display import widgets

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import Workflow
    from .observer import RunSnapshot

__all__ = ["DagView"]


class DagView:
    """The DAG of ``workflow``; ``update(snapshot)`` recolours it (and its widget, if made)."""

    def __init__(self, workflow: Workflow, snapshot: RunSnapshot | None = None):
        self.workflow = workflow
        self.drawing = viz.DagDrawing(workflow)
        self.snapshot = snapshot
        self._widget: Any = None

    def __repr__(self) -> str:
        return self.text()

    def _states(self) -> tuple[dict[str, str] | None, dict[str, str] | None]:
        if self.snapshot is None:
            return None, None
        return self.snapshot.states(), self.snapshot.labels()

    def html(self) -> str:
        """Static HTML: the DAG as an <img> (safe for untrusted output), then the legend."""
        return self.bundle()["text/html"]

    def bundle(self) -> dict[str, Any]:
        """image/svg+xml, image/png, text/html and text/plain: renders without kernel or trust."""
        data = viz.picture_bundle(self.drawing, *self._states())
        data["text/html"] += viz.legend_html()
        return data

    def live_html(self) -> str:
        """For the live widget (trusted): inline SVG that scales to the output, then scrolls."""
        if not viz.dot_available():
            return self.drawing.fallback_html(*self._states()) + viz.legend_html()
        try:
            svg = self.drawing.svg(*self._states())
        except viz.DataFlowError:
            return self.drawing.fallback_html(*self._states()) + viz.legend_html()
        return viz.scroller(viz.fit_svg(svg)) + viz.legend_html()

    def text(self) -> str:
        return self.drawing.text(*self._states())

    def widget(self) -> Any:
        """The live ipywidgets.HTML showing this DAG (created on first call)."""
        if self._widget is None:
            self._widget = widgets().HTML(value=self.live_html())
            self._widget.add_class("df-live-dag")
        return self._widget

    def update(self, snapshot: RunSnapshot) -> None:
        self.snapshot = snapshot
        if self._widget is not None:
            self._widget.value = self.live_html()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.bundle()
