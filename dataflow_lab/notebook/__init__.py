"""The notebook workbench: ``%load_ext dataflow_lab`` for the %dataflow magics, plus the views.

Importing this package loads IPython's magic machinery, nothing heavier:
pandas, ipywidgets and graphviz load when a view first needs them.
"""

from __future__ import annotations

from typing import Any

from .._warmup import warm_imports
from .catalogue import Catalogue
from .dag import DagView
from .magics import DataFlowMagics
from .monitor import MonitorPanel
from .observer import NodeStatus, RunObserver, RunSnapshot
from .run import NotebookRun, start_run
from .session import Session

__all__ = [
    "Catalogue",
    "DagView",
    "DataFlowMagics",
    "MonitorPanel",
    "NodeStatus",
    "NotebookRun",
    "RunObserver",
    "RunSnapshot",
    "Session",
    "load_ipython_extension",
    "start_run",
    "unload_ipython_extension",
]

_SESSIONS: dict[int, Session] = {}  # per shell, so %reload_ext keeps the notebook's database


def load_ipython_extension(ip: Any) -> DataFlowMagics:
    """Register the %dataflow magics on ``ip`` and list their settings under %config.

    Also starts importing what the first run needs, in the background (``_warmup.py``).
    """

    warm_imports()
    session = _SESSIONS.setdefault(id(ip), Session())
    magics = DataFlowMagics(shell=ip, session=session)
    ip.register_magics(magics)
    ip.configurables[:] = [c for c in ip.configurables if not isinstance(c, DataFlowMagics)] + [magics]
    return magics


def unload_ipython_extension(ip: Any) -> None:
    """Remove the magics (the session's database stays open for a later load)."""
    for kind in ("line", "cell"):
        ip.magics_manager.magics[kind].pop("dataflow", None)
    ip.configurables[:] = [c for c in ip.configurables if not isinstance(c, DataFlowMagics)]
