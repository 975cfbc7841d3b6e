"""Session: the notebook's current DataFlow, its models, workflows and last runs.

The DataFlow is made on first use, with no configuration (in-memory SQLite,
or DATABASE_URL, or ``%config DataFlowMagics.database_url``).
``connect`` switches to another database: the models move over, the old
DataFlow is closed, and no password ever reaches the output.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import _loop
from .._panel import SQL_IN_SUMMARY
from ..config import passwords_of, redact_url
from ..dataflow import DataFlow

if TYPE_CHECKING:  # pragma: no cover
    from .run import NotebookRun

__all__ = ["Session"]

SQL_LOGGER = "dataflow_lab.sql"


async def _ping(db: DataFlow) -> None:
    """Open ``db`` and check out one connection, so a bad URL or password fails now."""
    dialect = await db.database.open()
    await dialect.release(await dialect.acquire())


class _Echo(logging.Handler):
    """Prints echoed SQL to whatever sys.stdout is when a statement runs (the cell's output).

    A magic's run lists its statements in its summary instead (SQL_IN_SUMMARY)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not SQL_IN_SUMMARY.get():
            print(f"SQL: {record.getMessage()}")


class Session:
    """What one notebook's magics share."""

    def __init__(self, default_url: str = ""):
        self.default_url = default_url
        self.current: DataFlow | None = None
        self.model_classes: dict[str, type] = {}
        self.workflow_sources: dict[str, str] = {}
        self.last_runs: dict[str, NotebookRun] = {}
        self.last_frame: Any = None  # the last %%dataflow sql result: what %dataflow plot draws by default
        self._secrets: set[str] = set()
        self._echo: _Echo | None = None

    @property
    def db(self) -> DataFlow:
        """The notebook's DataFlow, made on first use."""
        if self.current is None or self.current.database.closed:
            self.current = self._open(self.default_url or None)
            for cls in self.model_classes.values():
                self.current.model(cls)
        return self.current

    def _open(self, url: str | None) -> DataFlow:
        if url:
            self._secrets.update(passwords_of(url))
        return DataFlow(url, echo=True)  # statements are logged; the echo setting decides if they show

    def connect(self, url: str) -> tuple[DataFlow, DataFlow | None]:
        """Switch to ``url`` after checking that it opens. Returns (new, old)."""
        new = self._open(url)
        try:
            _loop.run(_ping(new))
            for cls in self.model_classes.values():
                new.model(cls)
        except BaseException:
            new.close()
            raise
        old, self.current = self.current, new
        if old is not None:
            old.close()
        return new, old

    def add_model(self, cls: type) -> None:
        self.db.model(cls)
        self.model_classes[cls.__name__] = cls

    def scrub(self, text: str) -> str:
        """Remove every password this session has seen from ``text``."""
        text = redact_url(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def echo(self, on: bool) -> None:
        """Show (or stop showing) each SQL statement in the cell output."""
        logger = logging.getLogger(SQL_LOGGER)
        if on and self._echo is None:
            self._echo = _Echo()
            logger.addHandler(self._echo)
            logger.setLevel(logging.INFO)
            logger.propagate = False
        elif not on and self._echo is not None:
            logger.removeHandler(self._echo)
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
            self._echo = None

    def describe(self) -> str:
        db = self.current
        lines = [f"DataFlow: {db.url} ({db.dialect})" if db is not None else "DataFlow: not created yet"]
        lines.append(f"models: {', '.join(self.model_classes) or 'none'}")
        lines.append(f"workflow cells: {', '.join(self.workflow_sources) or 'none'}")
        runs = [f"{name} ({run.status})" for name, run in self.last_runs.items()]
        lines.append(f"last runs: {', '.join(runs) or 'none'}")
        return "\n".join(lines)

    def close(self) -> None:
        self.echo(False)
        if self.current is not None:
            self.current.close()
            self.current = None
