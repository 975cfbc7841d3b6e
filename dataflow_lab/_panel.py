"""Context flags shared by the notebook's runs and the lower layers (no imports: cheap).

``PANEL_PROGRESS``: True inside a notebook run whose live panel draws bulk progress from the
hooks: a node's own tqdm bar would be a second bar with other numbers. ``progress=True`` on the
node still forces it.

``SQL_IN_SUMMARY``: True inside a notebook run whose summary lists its SQL (echo on): the
session's echo does not print those statements a second time.
"""

from __future__ import annotations

import contextvars

PANEL_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dataflow_panel_progress", default=False
)

SQL_IN_SUMMARY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dataflow_sql_in_summary", default=False
)
