"""NotebookRun: one workflow run started from a notebook, in the foreground or background.

The run goes to the runtime's background loop (a sync ``asyncio.run`` would
fail inside a kernel). A foreground cell waits for it; live widgets are made
only when the run outlasts ``live_after`` (about one throttle interval), so a
quick run shows just its static summary. A background run returns at once;
its handle shows the live view and can be cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import html
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .. import _loop, viz
from .._panel import PANEL_PROGRESS, SQL_IN_SUMMARY
from ..errors import DataFlowError, ValidationError, did_you_mean
from ..runtime import LocalRuntime
from ..workflow import check_parameters
from .dag import DagView
from .display import (
    bundle,
    duration,
    frame,
    is_list_output,
    records_html,
    rows,
    value_html,
    widgets_available,
)
from .monitor import MonitorPanel
from .observer import RunObserver, RunSnapshot
from .plot import Plot, plot
from .widgets import LiveView

if TYPE_CHECKING:  # pragma: no cover
    from ..workflow import Workflow

__all__ = ["NotebookRun", "start_run"]

log = logging.getLogger(__name__)

_WIND_DOWN = 5.0  # seconds to wait for a cancelled run to roll back before showing it
_ERROR_STYLE = f"color:{viz.themed('error')}"  # one line in the theme's error colour
_OPEN_TABLES = 2  # node tables shown open in a summary; the others sit behind their disclosure


class NotebookRun:
    """A run's handle. ``.results`` and ``.run_id`` match ``LocalRuntime.execute``; it also unpacks:
    ``results, run_id = run``. List outputs come back as DataFrames from ``run.frame(node_id)``.
    """

    def __init__(
        self,
        workflow: Workflow,
        observer: RunObserver,
        future: concurrent.futures.Future,
        *,
        background: bool = False,
        display_limit: int = 10,
        show_sql: bool = False,
    ):
        self.workflow = workflow
        self.show_sql = show_sql  # the summary lists each node's statements (echo on)
        self.observer = observer
        self.background = background
        self.display_limit = display_limit
        self.live: Any = None  # the LiveView, once made
        self.show_error = True  # False when the caller reports the error itself (the magic does)
        self._future = future
        self._task: asyncio.Task | None = None  # set on the loop thread when the run starts
        self._ended = threading.Event()  # set once the run's task has really finished (rollback included)
        self._slot: Any = None  # a background run's own display, replaced by the summary at the end

    # -- state -------------------------------------------------------------
    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> NotebookRun:
        """Block until the run ends (or ``timeout`` seconds pass); returns the run."""
        try:
            self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise
        except (Exception, concurrent.futures.CancelledError):
            pass  # the outcome is in .status / .error
        self._ended.wait(_WIND_DOWN)
        return self

    def cancel(self) -> bool:
        """Stop the run and wait for its rollback. Returns False if it had already ended."""
        if self._future.done():
            return False
        _loop.loop().call_soon_threadsafe(lambda: self._task is not None and self._task.cancel())
        self._ended.wait(_WIND_DOWN)
        return self.status == "cancelled"

    def _launch(self, coro: Any, context: contextvars.Context | None = None) -> None:
        """On the loop thread: start the run as a task whose end settles the handle's future."""
        self._task = asyncio.get_running_loop().create_task(coro, context=context)
        self._task.add_done_callback(self._settle)

    def _settle(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self._future.cancel()
            self.observer.settle("cancelled")
        elif task.exception() is not None:
            self._future.set_exception(task.exception())
            self.observer.settle("failed", task.exception())
        else:
            self._future.set_result(task.result())
        if self._slot is None:
            self._ended.set()
        else:  # off the loop (drawing runs graphviz); wait() and cancel() return once it is shown
            asyncio.get_running_loop().run_in_executor(None, self._replace_slot)

    def show_in_place(self, show: Callable[..., Any]) -> None:
        """Display the live view in a slot of its own (``show`` is IPython's ``display``); when the
        run ends the slot is replaced in place by the static summary, so a saved notebook holds the
        outcome as pictures and tables, never a widget that needs the kernel, never "running"."""
        data, metadata = self.start_live(cancel=True)._repr_mimebundle_()
        data["text/plain"] = f"Live view: run '{self.observer.name}' in the background"  # steady first frame
        self._slot = show(data, raw=True, metadata=metadata, display_id=True)
        if self.done():
            self._replace_slot()

    def _replace_slot(self) -> None:
        try:
            self._slot.update(self._static_bundle(), raw=True)
        except Exception:  # a display must never break the run's handle
            log.warning("could not replace the live view of run '%s'", self.observer.name, exc_info=True)
        finally:
            self._ended.set()

    @property
    def status(self) -> str:
        """'running', 'done', 'failed' or 'cancelled'."""
        if not self._future.done():
            return "running"
        if self._future.cancelled():
            return "cancelled"
        if self._future.exception() is not None:
            return "cancelled" if self.observer.status == "cancelled" else "failed"
        return "done"

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the run (None while running or when it succeeded)."""
        if not self._future.done() or self._future.cancelled():
            return None
        return self._future.exception()

    @property
    def results(self) -> dict[str, Any]:
        """Each node's output by node id; waits for the run, and raises its error if it failed."""
        return self._outcome()[0]

    @property
    def run_id(self) -> str:
        return self._outcome()[1]

    def _outcome(self) -> tuple[dict[str, Any], str]:
        try:
            return self._future.result()
        except concurrent.futures.CancelledError:
            raise DataFlowError(
                f"Run '{self.observer.name}' was cancelled; its writes were rolled back.",
                hint="run the workflow again.",
            ) from None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._outcome())

    def __getitem__(self, node_id: str) -> Any:
        results = self.results
        if node_id not in results:
            raise KeyError(f"no result for '{node_id}'.{did_you_mean(node_id, results)}")
        return results[node_id]

    def snapshot(self) -> RunSnapshot:
        return self.observer.snapshot(pool=True)

    @property
    def events(self) -> tuple[str, ...]:
        """Transaction and compensation events, in order ('BEGIN on sqlite', 'COMMIT on sqlite', ...)."""
        return self.observer.snapshot().events

    # -- data --------------------------------------------------------------
    def frame(self, node_id: str) -> Any:
        """A List node's records as a pandas DataFrame."""
        value = self[node_id]
        if not is_list_output(value):
            raise ValidationError(
                f"'{node_id}' is not a List output (it returned {type(value).__name__}).",
                hint=f"List outputs here: {', '.join(self.frames()) or 'none'}.",
            )
        return frame(value["records"])

    def plot(
        self, node_id: str, kind: str, x: str | None = None, y: str | None = None, *, title: str | None = None
    ) -> Plot:
        """A List node's records as a chart: ``run.plot("counts", "bar", x="station", y="trips")``."""
        return plot(self.frame(node_id), kind, x, y, title=title)

    def frames(self) -> dict[str, Any]:
        """Every List output of the run, as DataFrames by node id."""
        return {n: frame(v["records"]) for n, v in self.results.items() if is_list_output(v)}

    def metrics(self) -> Any:
        """Per node: state, duration, rows, rows/s, retries (a DataFrame when pandas is there)."""
        table = []
        for s in self.observer.snapshot().nodes.values():
            rate = s.rows / s.duration if s.rows and s.duration else None
            table.append(
                {"node": s.node_id, "type": s.node_type, "state": s.state, "duration_ms": _ms(s.duration),
                 "rows": s.rows, "rows_per_s": rate, "retries": s.retries, "error": s.error}
            )  # fmt: skip
        try:
            metrics = frame(table)
        except DataFlowError:
            return table
        metrics["rows"] = metrics["rows"].astype("Int64")  # whole numbers, with <NA> for non-database nodes
        return metrics

    # -- display -----------------------------------------------------------
    def start_live(self, *, cancel: bool = False) -> Any:
        """Make the live view and attach it to the run (from then on it updates ~10 times a second)."""

        if self.live is None:
            self.live = LiveView(
                self.workflow, self.observer.snapshot(), cancel=self.cancel if cancel else None
            )
            self.observer.attach(self.live.update)
        return self.live

    def summary(self) -> str:
        """The static summary as text: the outcome, then one line per node."""
        s = self.observer.snapshot()
        head = f"Run '{s.name}' {self.status}"
        if s.finished:
            head += f" in {duration(s.elapsed)}"
        lines = [head + (f" (run id {s.run_id})" if s.run_id else "")]
        if self.show_error and self.status in ("failed", "cancelled") and self.error is not None:
            lines.append(f"  error: {_error_line(self.error)}")
        for n in s.nodes.values():
            tail = " · ".join(p for p in (rows(n.rows), duration(n.duration)) if p)
            lines.append(f"  {n.node_id} ({n.node_type}): {n.state}" + (f", {tail}" if tail else ""))
            lines.extend(f"    SQL: {statement}" for statement in (n.sql if self.show_sql else ()))
        if s.events:
            lines.append("  transactions: " + " -> ".join(s.events))
        if self.status == "done":
            lists = [n for n, v in self.results.items() if is_list_output(v)]
            if lists:
                lines.append(f"  List outputs as DataFrames: {', '.join(f'run.frame({n!r})' for n in lists)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def summary_html(self) -> str:
        s = self.observer.snapshot()
        head = f"<b>Run '{html.escape(s.name)}' {self.status}</b>"
        if s.finished:
            head += f" in {duration(s.elapsed)}"
        if s.run_id:
            head += f" · run id <code>{s.run_id}</code>"
        parts = [f'<div style="color:{viz.themed("text")}">{head}</div>']
        if self.show_error and self.status in ("failed", "cancelled") and self.error is not None:
            parts.append(_error_html(self.error))
        parts.append(DagView(self.workflow, s).html())
        panel = MonitorPanel(s)
        parts.append(panel.events_html() + panel.slow_html())
        if self.show_sql:
            parts.append(_sql_html(s))
        if self.status == "done":
            parts.append(self._results_html())
        return f'<div class="df-run df-run-{self.status}">{"".join(parts)}</div>'

    def _results_html(self) -> str:
        out = []
        for position, (node_id, value) in enumerate(self.results.items()):
            kind = self.workflow.nodes[node_id].type_name
            if is_list_output(value):
                body = records_html(value["records"], self.display_limit)
                title = f"{node_id} · {kind} · {rows(len(value['records']))}"
            else:
                body, title = value_html(value), f"{node_id} · {kind}"
            opened = " open" if position < _OPEN_TABLES else ""  # a long run stays short: the rest fold
            out.append(f"<details{opened}><summary>{html.escape(title)}</summary>{body}</details>")
        return "".join(out)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        if self._slot is not None and not self.done():  # its live view is already on the page
            line = f"Run '{self.observer.name}' {self.status} in the background (its live view is above)."
            return {"text/plain": line + " .wait() waits for it, .cancel() stops it."}
        if self.live is not None and not self.done():
            return self.live._repr_mimebundle_()
        return self._static_bundle()

    def _static_bundle(self) -> dict[str, Any]:
        data = bundle(self.summary(), self.summary_html())
        picture = DagView(self.workflow, self.observer.snapshot()).bundle()
        data.update({k: v for k, v in picture.items() if k.startswith("image/")})
        return data


def start_run(
    workflow: Workflow,
    *,
    parameters: Mapping[str, Any] | None = None,
    name: str | None = None,
    transaction: str = "auto",
    user: Any = None,
    interval: float = 0.1,
    display_limit: int = 10,
    background: bool = False,
    show_sql: bool = False,
    timeout: float | None = 300.0,
    node_timeout: float | None = 30.0,
) -> NotebookRun:
    """Submit a run to the runtime's loop and return its handle at once.

    ``timeout`` and ``node_timeout``: LocalRuntime's time limits for the run and for each node.

    The run starts in a copy of the caller's context, so ``with db.tenant(...):`` around the
    cell reaches it although it runs on the loop thread. ``show_sql``: its summary lists the SQL
    each node sent (when its DataFlow has ``echo`` on, as the notebook's does).
    """
    parameters = check_parameters(workflow, parameters)
    observer = RunObserver(workflow, name=name or workflow.name, interval=interval)
    runtime = LocalRuntime(
        transaction=transaction, hooks=[observer], user=user, timeout=timeout, node_timeout=node_timeout
    )
    run = NotebookRun(
        workflow,
        observer,
        concurrent.futures.Future(),
        background=background,
        display_limit=display_limit,
        show_sql=show_sql,
    )
    coro = runtime.execute_async(workflow, parameters)
    context = contextvars.copy_context()
    context.run(PANEL_PROGRESS.set, True)  # the live panel shows bulk progress: no second (tqdm) bar
    context.run(SQL_IN_SUMMARY.set, show_sql)  # listed in the summary: not printed as well
    _loop.loop().call_soon_threadsafe(run._launch, coro, context)
    return run


def wait_in_cell(run: NotebookRun, *, live_after: float | None, show: Any = None) -> NotebookRun:
    """Wait for a foreground run. After ``live_after`` seconds, make the live view and ``show`` it.

    On KeyboardInterrupt (the kernel's interrupt) the run is cancelled, its
    rollback awaited, and the interrupt re-raised.
    """
    try:
        if live_after is not None and widgets_available():
            try:
                run.wait(live_after)
            except concurrent.futures.TimeoutError:
                live = run.start_live()
                if show is not None:
                    show(live)
        run.wait()
    except KeyboardInterrupt:
        run.cancel()
        raise
    return run


def _sql_html(s: RunSnapshot) -> str:
    """Each node's statements, as the text summary lists them (empty when none were kept)."""
    lines = [f"{n.node_id}: {statement}" for n in s.nodes.values() for statement in n.sql]
    if not lines:
        return ""
    count = f"{len(lines)} statement{'s' if len(lines) != 1 else ''}"
    return f"<details><summary>SQL · {count}</summary><pre>{html.escape(chr(10).join(lines))}</pre></details>"


def _error_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _error_html(error: BaseException) -> str:
    """One line; a long message (rebuild SQL, say) sits behind a disclosure."""
    line = _error_line(error)
    if len(line) <= 160:
        return f'<div class="df-error" style="{_ERROR_STYLE}">{html.escape(line)}</div>'
    return (
        f'<details class="df-error" style="{_ERROR_STYLE}"><summary>{html.escape(line[:150])}…</summary>'
        f"<pre>{html.escape(str(error))}</pre></details>"
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
