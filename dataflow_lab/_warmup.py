"""Warm-up: the first ``DataFlow()`` of a process gets its database ready in the background.

Before a first run can start, SQLAlchemy, the dialect, its driver and the
schema modules must be imported, and the engine created: about 0.3 s that used
to land on the first ``execute()``. ``DataFlow()`` now checks the URL and the
driver at once (as before), then does the rest on a daemon thread and returns;
``%load_ext dataflow_lab`` starts the imports.

Why this cannot race:

- The dialect is only reachable through ``Warm.result()`` (``DataFlow.database.dialect``),
  which waits for the thread. ``db.model``, a run and ``close()`` all pass there
  first, so the first run waits for the warm-up and never sees half of it.
- An error the thread met is kept and raised by ``result()``, unchanged, to every
  caller: at the first use, with the message it would have had at ``DataFlow()``.
- Imports on two threads are safe: Python's per-module import locks make the
  second thread wait for a module the first is importing.
- Once a database's modules are loaded, ``DataFlow()`` builds its dialect at once
  (``dialect_now_or_soon``): only the first one of a process pays the thread.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import DataFlowConfig
from .dialects import check_url, dialect_for

if TYPE_CHECKING:  # pragma: no cover
    from .config import DataFlowConfig
    from .dialects import Dialect

__all__ = ["Warm", "dialect_now_or_soon", "warm_imports"]

# What a first run imports besides the dialect: its table's DDL and the migration check.
_FIRST_RUN_MODULES = ("dataflow_lab.schema", "dataflow_lab.migrations.engine", "dataflow_lab.nodes.crud")


class Warm:
    """A result being made on a daemon thread; ``result()`` waits for it (and raises its error)."""

    def __init__(self, make: Callable[[], Any], name: str = "dataflow-lab-warmup"):
        self._future: concurrent.futures.Future = concurrent.futures.Future()
        threading.Thread(target=self._run, args=(make,), name=name, daemon=True).start()

    def _run(self, make: Callable[[], Any]) -> None:
        try:
            self._future.set_result(make())
        except BaseException as exc:  # kept for whoever asks: raised at the first use
            self._future.set_exception(exc)

    def result(self) -> Any:
        return self._future.result()

    def done(self) -> bool:
        return self._future.done()


def dialect_now_or_soon(config: DataFlowConfig) -> Dialect | Warm:
    """The dialect of ``config``: built at once if its modules are loaded, else warming up."""
    module = check_url(config)  # a bad URL or a missing driver fails here, at DataFlow()
    if module in sys.modules:
        return dialect_for(config)
    return Warm(lambda: _ready_dialect(config))


def _ready_dialect(config: DataFlowConfig) -> Dialect:
    dialect = dialect_for(config)
    for name in (*dialect.warm_modules, *_FIRST_RUN_MODULES):
        importlib.import_module(name)
    dialect.prepare()
    # No more on this thread: it once went on to import pyarrow for DuckDB's first bulk write (0.1-0.2 s
    # of CPU), which shared the GIL with the first run (a DuckDB cold start's CPU: 500 ms with it, 387
    # without), and in a short script could still be importing its C++ library as the interpreter
    # exited (a cold-start process aborted once with "terminate called ... exception not rethrown").
    # The first bulk write imports it.
    return dialect


def warm_imports() -> Warm:
    """Import what a first run on SQLite needs, in the background (``%load_ext``); errors wait for use."""

    return Warm(lambda: _import_quietly(_ready_dialect, DataFlowConfig.from_env("sqlite:///:memory:")))


def _import_quietly(make: Callable[[DataFlowConfig], Any], config: DataFlowConfig) -> None:
    try:
        make(config)
    except Exception:  # pragma: no cover - the same import fails again where it is needed, and says why
        pass
