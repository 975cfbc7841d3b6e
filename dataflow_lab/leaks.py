"""Leak detection: a DataFlow collected unclosed, a connection kept past its run, a transaction open at exit.

Each leak is warned about once per place and database (a ``LeakWarning``, shown where the warning filters
show a ResourceWarning, and a WARNING on the ``dataflow_lab.leaks`` logger, which shows with no
logging set up) and counted every time: ``count()`` is the dashboard's ``safety_events.leaks``.

- ``watch(dataflow)`` (at ``DataFlow(...)``) remembers where it was created: the file and line of
  the call outside dataflow_lab. When that DataFlow is garbage-collected without ``close()`` while
  its database holds connections, the warning names that place, and its pool is closed on the
  runtime's loop.
- ``owner()`` is what a dialect records at each checkout: the run (the outermost scope's run id)
  and node the connection is checked out for. ``after_run(run_id, dataflows)`` warns for each
  connection still checked out for that run once the run has ended.
- ``open_at_exit(dataflow)`` (at interpreter exit, on the loop) warns for each transaction still
  open (a ``db.transaction()`` entered and never left) and rolls it back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import os
import threading
import time
import warnings
import weakref
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Protocol

from . import _loop
from .query_count import ACTIVE_SCOPE

if TYPE_CHECKING:  # pragma: no cover
    from .records import Leak

__all__ = ["Leak", "LeakWarning", "after_run", "count", "open_at_exit", "owner", "recent", "watch"]


class DataFlow(Protocol):
    """What leak detection asks of a DataFlow (it sits below the layers that know one)."""

    @property
    def database(self) -> Any: ...
    @property
    def url(self) -> str: ...


log = logging.getLogger("dataflow_lab.leaks")

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class LeakWarning(ResourceWarning):
    """A connection or transaction of dataflow_lab's was left behind (see leaks.py)."""


_lock = threading.Lock()
_recent: deque[Leak] = deque(maxlen=200)
_counts: Counter[str | None] = Counter()  # by database token; None: DataFlows collected unclosed
_warned: set[tuple[str, str, str]] = set()


def report(kind: str, message: str, *, site: str, database: str | None, about: str = "") -> None:
    """Count a leak, and warn about it unless one of its kind, site and ``about`` was warned about."""
    from .records import Leak

    leak = Leak(kind, message, site, database, dt.datetime.now(dt.UTC))
    key = (kind, site, about)
    with _lock:
        _recent.append(leak)
        _counts[database] += 1
        first = key not in _warned
        _warned.add(key)
    if first:
        log.warning("%s", message)
        filename, _, line = site.rpartition(":")
        if kind == "collected" and line.isdigit():
            warnings.warn_explicit(message, LeakWarning, filename, int(line))
        else:
            warnings.warn(message, LeakWarning, stacklevel=2)


def count(database: str | None = None) -> int:
    """Leaks of ``database`` (a token), plus the DataFlows collected unclosed in this process."""
    with _lock:
        return _counts[None] + (_counts[database] if database is not None else 0)


def recent() -> list[Leak]:
    """The latest leaks of this process (at most 200), oldest first."""
    with _lock:
        return list(_recent)


# -- DataFlows collected without close() ---------------------------------------------------
class Watch:
    """What the finalizer of one DataFlow needs, without holding the DataFlow itself."""

    __slots__ = ("site", "dialect", "closed", "__weakref__")

    def __init__(self, site: str):
        self.site = site
        self.dialect: Any = None  # set when the database is opened
        self.closed = False


def creation_site() -> str:
    """file:line of the nearest caller outside dataflow_lab."""
    frame = inspect.currentframe()
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE + os.sep):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "<unknown>"


def watch(dataflow: DataFlow) -> Watch:
    state = Watch(creation_site())
    finalizer = weakref.finalize(dataflow, _collected, state)
    finalizer.atexit = False  # alive at exit is not a leak: exit closes it (dataflow._close_all)
    return state


def _collected(state: Watch) -> None:
    dialect = state.dialect
    if state.closed or dialect is None:
        return
    held = dialect.held_connections()
    if not held:
        return
    report(
        "collected",
        f"DataFlow({dialect.scrub(dialect.url)!r}) created at {state.site} was garbage-collected "
        f"without close() while holding {held} connection(s); closing them now. Call db.close() "
        "(or use `with DataFlow(...) as db:`) when done with it.",
        site=state.site,
        database=None,
        about=dialect.url,  # once per place and database (a notebook cell run again, a loop)
    )
    try:
        _loop.loop().call_soon_threadsafe(_dispose, dialect)
    except RuntimeError:  # the loop is gone (interpreter exit): the process lets them go
        pass


def _dispose(dialect: Any) -> None:
    task = asyncio.ensure_future(dialect.dispose())
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "exception never retrieved"


# -- connections kept past their run ---------------------------------------------------------
def owner() -> tuple[str, str] | None:
    """(run id, node id) a connection checked out now is for: the outermost scope's run."""
    scope = ACTIVE_SCOPE.get()
    if scope is None:
        return None
    node = scope.node_id
    while scope.parent is not None:
        scope = scope.parent
    return scope.run_id, node


def after_run(run_id: str, dataflows: Any) -> None:
    """Warn about each connection still checked out for ``run_id`` (the run has ended)."""
    for db in dataflows:
        database = db.database
        if database.closed or not database.opened:
            continue
        kept = database.dialect.checked_out_for(run_id)
        for node in kept:
            where = f"node '{node}'" if node else "the run itself"
            report(
                "checked_out",
                f"Run {run_id} ended with a connection to {db!r} still checked out (by {where}). "
                "A node that acquires a connection of its own must release it (in a finally).",
                site=f"{db.url} {where}",
                database=database.token,
            )


# -- transactions open at exit -----------------------------------------------------------------
async def open_at_exit(dataflow: DataFlow) -> None:
    """Warn about, and roll back, each transaction of ``dataflow`` still open (interpreter exit)."""
    database = dataflow.database
    if database.closed:  # its connections were let go at close(); the server rolled back
        return
    for held, (run_id, node_id, started) in list(database.ledger.open.items()):
        age = time.monotonic() - started
        what = f"node '{node_id}' of run {run_id}" if node_id else run_id
        report(
            "open_transaction",
            f"A transaction on {dataflow!r} ({what}) was still open at exit, {age:.1f} s after it "
            "began; rolling it back. Leave every db.transaction() block (use `with`), and let runs finish.",
            site=f"{dataflow.url} {run_id}",
            database=database.token,
        )
        database.ledger.end(held, False)
        conn = getattr(held, "conn", None)
        if conn is not None:
            try:
                await conn.rollback()
            except Exception:  # noqa: BLE001 - at exit: the server rolls back when the connection closes
                log.debug("rolling back at exit failed", exc_info=True)


def __getattr__(name: str) -> Any:
    if name == "Leak":  # made at the first read, in records.py
        from .records import Leak

        return Leak
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
