"""Run tracking: a bounded record of the recent runs, always on, in every environment.

Each DataFlow and each runtime holds a ``RunTracker``, subscribed to its own
hooks (``db.hooks``, ``runtime.hooks``). It takes one ``after_workflow`` call
per run, like the MetricsCollector, and appends one tuple; ``db.runs()`` and
``runtime.runs()`` turn the tuples into ``RunRecord``s when they are read, and
``.frame()`` into a pandas DataFrame. A run that touches two DataFlows is in
both their records, built once (the trackers share the last record made).

A record keeps names, figures and first lines of errors only, never a node
class, a result or an exception, so a runtime's record never keeps a DataFlow
(or its pool) alive, and a failed run's frames are freed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import deque
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from .errors import DataFlowError, ValidationError
from .hooks import RunHooks

if TYPE_CHECKING:  # pragma: no cover
    from .records import RunRecord

__all__ = ["RUN_HISTORY", "RunRecord", "RunTracker", "Runs", "check_history"]

RUN_HISTORY = 1000  # runs a tracker keeps (a DataFlow's: its ``run_history`` setting)


class Runs(list["RunRecord"]):
    """Recent runs, oldest first: a list of ``RunRecord``, with ``frame()`` for a DataFrame."""

    def frame(self) -> Any:
        """One row per run (columns as RunRecord's fields; ``nodes`` holds each node's status)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DataFlowError(
                "runs().frame() needs pandas.", hint="pip install 'dataflow-lab[pandas]'"
            ) from exc
        from .records import RunRecord

        columns = [f.name for f in fields(RunRecord)]
        frame = pd.DataFrame.from_records([asdict(r) for r in self], columns=columns)
        return frame.astype({"duration_ms": "float64"})


# The last record built, shared by the trackers of one run: (run id, id of its error, the record).
# Never the error itself, whose frames must be freed with it.
_last: tuple[str, int, tuple] = ("", 0, ())


class RunTracker(RunHooks):
    """Keeps the last ``keep`` runs of the hooks it is subscribed to."""

    node_records = False  # node statuses come from the results and the error: no NodeRecord per node

    def __init__(self, keep: int = RUN_HISTORY):
        self.keep = check_history(keep)
        self._log: deque[tuple] = deque(maxlen=self.keep)
        self._skipped: dict[str, list[str]] = {}  # run id -> nodes a route skipped, until it ends

    def __repr__(self) -> str:
        return f"<RunTracker: {len(self._log)} of at most {self.keep} run(s)>"

    def node_skipped(self, *, run_id: str, node_id: str, **future: Any) -> None:
        self._skipped.setdefault(run_id, []).append(node_id)

    def after_workflow(
        self,
        *,
        run_id: str,
        workflow: Any,
        results: Any,
        error: BaseException | None,
        duration: float,
        mode: Any = "",
        **future: Any,
    ) -> None:
        global _last
        skipped = self._skipped.pop(run_id, None) if self._skipped else None
        last = _last
        if last[0] == run_id and last[1] == id(error):
            self._log.append(last[2])  # the same run, seen through another of its hooks
            return
        record = _record(run_id, workflow, results, error, duration, mode, skipped)
        _last = (run_id, id(error), record)
        self._log.append(record)

    def runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int | None = None
    ) -> Runs:
        """The recent runs, oldest first; ``status``/``workflow`` keep only matching ones, ``limit`` the newest."""
        log = list(self._log)  # one C-level copy: the loop thread may append meanwhile
        records = [_view(entry) for entry in log]
        if status is not None:
            records = [r for r in records if r.status == status]
        if workflow is not None:
            records = [r for r in records if r.workflow == workflow]
        if limit is not None:
            records = records[-limit:] if limit > 0 else []
        return Runs(records)

    def clear(self) -> None:
        self._log.clear()


def check_history(keep: object) -> int:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValidationError(
            f"run_history must be a positive number of runs to keep, got {keep!r}.",
            hint=f"e.g. run_history={RUN_HISTORY} (the default); tracking is always on, so it cannot be 0.",
        )
    return keep


def _record(
    run_id: str,
    workflow: Any,
    results: Any,
    error: BaseException | None,
    duration: float,
    mode: Any,
    skipped: list[str] | None,
) -> tuple:
    """The tuple kept per run (``_view`` makes the RunRecord): names, figures and messages only.

    A successful run's nodes all succeeded but the skipped ones; a failed run's finished nodes
    are those in its results, the failed one is the error's ``node_id``.
    """
    order = workflow.order if workflow is not None else ()
    name = workflow.name if workflow is not None else ""
    wall = time.time() - duration
    if error is None:
        return (run_id, name, "success", wall, duration, None, None, None, None, skipped, order, str(mode))
    done = tuple(results) if results else ()
    failed = getattr(error, "node_id", None)
    return (run_id, name, _status(error), wall, duration, first_line(error), type(error).__name__,
            failed if isinstance(failed, str) else None, done, skipped, order, str(mode))  # fmt: skip


def _view(entry: tuple) -> RunRecord:
    from .records import RunRecord

    run_id, name, status, wall, duration, text, kind, failed, done, skipped, order, mode = entry
    if done is None:  # it succeeded
        nodes = dict.fromkeys(order, "success")
    else:
        rest = "cancelled" if status == "cancelled" else "not run"
        nodes = dict.fromkeys(order, rest)
        nodes.update(dict.fromkeys(done, "success"))
        if failed is not None:
            nodes[failed] = status
    for node_id in skipped or ():
        nodes[node_id] = "skipped"
    return RunRecord(
        run_id, name, status, dt.datetime.fromtimestamp(wall, dt.UTC), round(duration * 1000.0, 3),
        text, kind, failed, nodes, mode,
    )  # fmt: skip


def _status(error: BaseException | str) -> str:
    return "cancelled" if isinstance(error, asyncio.CancelledError | KeyboardInterrupt) else "error"


def first_line(error: BaseException | str) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:500]


def __getattr__(name: str) -> Any:
    if name == "RunRecord":  # made at the first read, in records.py
        from .records import RunRecord

        return RunRecord
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
