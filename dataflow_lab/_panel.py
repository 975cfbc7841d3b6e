"""A context flag shared by the notebook's live panel and the bulk nodes (no imports: cheap).

True inside a notebook run whose live panel draws bulk progress from the hooks: a node's own
tqdm bar would be a second bar with other numbers. ``progress=True`` on the node still forces it.
"""

from __future__ import annotations

import contextvars

PANEL_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dataflow_panel_progress", default=False
)
