"""What a saved notebook keeps of our widgets: their static twin, never a dead widget view.

A widget view stored in a notebook names a model that lives in the kernel. Reopened later, a
trusted notebook renders it with the widget renderer, which has no fallback: it reads "Error
displaying widget: model not found" (jupyterlab_widgets' ``WidgetRenderer.renderModel``), even
when the same output carries text/html. The kernel cannot tell when the frontend saves, so this
is a Jupyter server extension: a pre-save hook that drops the widget view from each output we
marked, leaving the text/html and text/plain that were displayed alongside it.

The extension also tells the kernels its server starts (``SAVES_STATIC`` in their environment)
that their widgets will be saved this way. A kernel that does not see it (VS Code, nbclient, a
server from another environment) displays the static form only, so nothing it shows can be
saved as a dead widget.

``pip install dataflow-lab`` enables the extension through
``etc/jupyter/jupyter_server_config.d/dataflow_lab.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MARK", "SAVES_STATIC", "WIDGET_VIEW", "saves_static", "static_saved_form", "widget_bundle"]

MARK = "dataflow_lab"  # output metadata: {"dataflow_lab": {"saved": "static"}}
SAVES_STATIC = "DATAFLOW_LAB_SAVES_STATIC"  # set to "1" by the server extension for its kernels
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def saves_static() -> bool:
    """Whether this kernel's notebook server stores our widgets as their static twins."""
    return os.environ.get(SAVES_STATIC) == "1"


def widget_bundle(data: dict[str, Any], widget: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` (text/plain + text/html) plus ``widget``'s view, marked to be saved without it."""
    view = {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}
    return {**data, WIDGET_VIEW: view}, {MARK: {"saved": "static"}}


def _outputs(notebook: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    for cell in notebook.get("cells", ()):
        if cell.get("cell_type") == "code":
            yield from cell.get("outputs", ())


def static_saved_form(notebook: Mapping[str, Any]) -> int:
    """Drop the widget view from every output we marked (in place); returns how many."""
    dropped = 0
    for output in _outputs(notebook):
        mark = (output.get("metadata") or {}).get(MARK) or {}
        data = output.get("data") or {}
        if mark.get("saved") == "static" and WIDGET_VIEW in data and len(data) > 1:
            del data[WIDGET_VIEW]
            dropped += 1
    return dropped


def pre_save_hook(model: dict[str, Any], **_kwargs: Any) -> None:
    """A ContentsManager pre-save hook: notebooks are written with our widgets' static twins."""
    if model.get("type") == "notebook" and isinstance(model.get("content"), Mapping):
        static_saved_form(model["content"])


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": __name__}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.contents_manager.register_pre_save_hook(pre_save_hook)
    os.environ[SAVES_STATIC] = "1"  # kernels inherit the server's environment
    serverapp.log.info("dataflow_lab: notebooks are saved with static twins of its widgets")
