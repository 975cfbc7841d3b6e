"""Where dataflow_lab's log lines show: the SQL ``echo`` writes, and ``log_level``.

Python shows nothing below WARNING until logging is configured, so ``echo=True`` (on in
development) used to log every statement where nobody looked. ``show(config)`` makes them
visible in a script: when nothing in the process has configured logging, a handler on the
``dataflow_lab`` logger writes to ``sys.stderr`` (``SQL: INSERT ...``, ``dataflow_lab INFO: ...``).
Where logging is configured (an application, pytest), its handlers and levels decide. In a
notebook kernel the magics show the SQL (``notebook/session.py``) and each run's summary lists
its statements (``notebook/run.py``), so nothing is written to stderr.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .config import DataFlowConfig

__all__ = ["SQL_LOGGER", "show"]

ROOT_LOGGER = "dataflow_lab"
SQL_LOGGER = "dataflow_lab.sql"


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (it may be redirected later)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name == SQL_LOGGER:
                line = f"SQL: {record.getMessage()}"
            else:
                line = f"{record.name} {record.levelname}: {record.getMessage()}"
            sys.stderr.write(line + "\n")
        except Exception:  # pragma: no cover - a broken stderr must not break a run
            self.handleError(record)


_HANDLER = _Stderr()


def show(config: DataFlowConfig) -> None:
    """Make ``config``'s echo and log_level visible (see the module's docstring). Idempotent."""
    root = logging.getLogger(ROOT_LOGGER)
    if config.log_level is not None:
        root.setLevel(config.log_level)  # asked for by name: set whatever else is configured
    if not (config.echo or config.log_level is not None) or "ipykernel" in sys.modules:
        return
    if _HANDLER not in root.handlers and root.hasHandlers():
        return  # logging is configured: its handlers decide
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    if config.echo:
        sql = logging.getLogger(SQL_LOGGER)
        if sql.level == logging.NOTSET:
            sql.setLevel(logging.INFO)
