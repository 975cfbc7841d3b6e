"""MonitorPanel: per-node progress, the pool gauge, transactions, retries and rows/s.

Fed by RunObserver snapshots. ``widget()`` builds the live ipywidgets panel
(one progress bar per node); ``html()`` and ``text()`` give the same picture
statically, for the run summary and for frontends without widgets.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .. import viz
from .display import bundle, duration, widgets
from .observer import NodeStatus, RunSnapshot

__all__ = ["MonitorPanel"]

_BAR_STYLE = {"done": "success", "failed": "danger", "rolled back": "warning", "compensated": "info"}
_NOTABLE = ("waiting", "overflow", "failures", "invalidated")  # pool figures worth a line when above 0
_LAST_EVENTS = 8


def node_fraction(status: NodeStatus) -> float:
    """How far a node is, 0..1 (bulk nodes report chunks; others jump from 0 to 1)."""
    if status.state in ("pending", "skipped", "cancelled"):  # it never ran (or never finished)
        return 0.0
    if status.state == "running":
        return min(status.done / status.total, 1.0) if status.done is not None and status.total else 0.0
    return 1.0


def node_seconds(snapshot: RunSnapshot) -> float:
    """Time spent inside the nodes that moved rows (setup and waiting left out)."""
    return sum(n.duration or 0.0 for n in snapshot.nodes.values() if n.rows)


def headline(snapshot: RunSnapshot) -> str:
    busy = node_seconds(snapshot)
    rate = f" · {snapshot.total_rows / busy:,.0f} rows/s" if snapshot.total_rows and busy > 0 else ""
    return (
        f"Run '{snapshot.name}' {snapshot.status} · {duration(snapshot.elapsed)} · "
        f"{snapshot.total_rows:,} rows{rate}"
    )


def pool_text(pool: Mapping[str, Any]) -> str:
    figures = [f"{k.replace('_', ' ')} {v}" for k, v in pool.items() if k != "pool"]
    return f"{pool.get('pool', 'pool')}: {', '.join(figures) or 'no figures'}"


def pool_notable(pool: Mapping[str, Any]) -> bool:
    """Whether the pool is worth a line: something waits, overflows, failed, or the probe worries."""
    if any(isinstance(pool.get(k), int) and pool[k] > 0 for k in _NOTABLE):
        return True
    return "error" in pool or pool.get("health_status") in ("degraded", "down")


def pool_html(url: str, pool: Mapping[str, Any]) -> str:
    size = pool.get("size")
    gauge = ""
    if isinstance(size, int) and size > 0:
        capacity = size + max(int(pool.get("overflow") or 0), 0)
        gauge = f'<meter min="0" max="{capacity}" value="{int(pool.get("checked_out") or 0)}"></meter> '
    return f"<div>{gauge}<code>{html.escape(url)}</code> {html.escape(pool_text(pool))}</div>"


def cache_text(cache: Mapping[str, Any]) -> str:
    """'result cache: 12 hits, 3 misses (80% hits), 2 invalidations, 5 entries', or why it is off."""
    if not cache.get("on"):
        return f"result cache OFF: {cache.get('off_reason')}"
    rate = cache.get("cache_hit_rate")
    shown = f" ({rate:.0%} hits)" if rate is not None else ""
    return (
        f"result cache: {cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses{shown}, "
        f"{cache.get('invalidations', 0)} invalidations, {cache.get('entries', 0)} entries"
    )


def slow_line(statement: Any) -> str:
    """'slow 1.20 s in debit: UPDATE accounts SET ...' (the SQL binds its values: none shown)."""
    where = f" in {statement.node_id}" if statement.node_id else ""
    failed = f" (failed: {statement.error})" if statement.error else ""
    sql = statement.sql if len(statement.sql) <= 120 else statement.sql[:117] + "..."
    return f"slow {statement.seconds:.2f} s{where}: {sql}{failed}"


def _headline_html(snapshot: RunSnapshot) -> str:
    return f'<b style="color:{viz.themed("text")}">{html.escape(headline(snapshot), quote=False)}</b>'


class MonitorPanel:
    """The live monitor of one run."""

    def __init__(self, snapshot: RunSnapshot):
        self.snapshot = snapshot
        self._widget: Any = None
        self._bars: dict[str, tuple[Any, Any]] = {}
        self._parts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return self.text()

    # -- static ----------------------------------------------------------------
    def text(self) -> str:
        s = self.snapshot
        lines = [headline(s)]
        for status in s.nodes.values():
            lines.append(f"  {status.node_id}: {status.label() or status.state}")
        lines += [f"  pool {url}: {pool_text(p)}" for url, p in s.pool.items() if pool_notable(p)]
        lines += [f"  {url}: {cache_text(c)}" for url, c in s.cache.items()]
        lines += [f"  {e}" for e in s.events[-_LAST_EVENTS:]]
        lines += [f"  retry {r}" for r in s.retries[-_LAST_EVENTS:]]
        lines += [f"  {slow_line(statement)}" for statement in s.slow[-_LAST_EVENTS:]]
        return "\n".join(lines)

    def html(self) -> str:
        s = self.snapshot
        rows = "".join(
            f"<tr><td>{html.escape(n.node_id)}</td>"
            f'<td><progress max="1" value="{node_fraction(n):.3f}"></progress></td>'
            f'<td style="{viz.state_style(n.state)}">{html.escape(n.label() or n.state)}</td></tr>'
            for n in s.nodes.values()
        )
        return (
            f'<div class="df-monitor">{_headline_html(s)}<table>{rows}</table>'
            f"{self._pool_html()}{self.events_html()}{self.slow_html()}</div>"
        )

    def slow_html(self) -> str:
        """This run's slow statements, each with its plan one click away ('' when there are none)."""
        items = []
        for statement in self.snapshot.slow[-_LAST_EVENTS:]:
            line = html.escape(slow_line(statement))
            if statement.plan:
                items.append(
                    f"<details><summary>{line}</summary><pre>{html.escape(statement.plan)}</pre></details>"
                )
            else:
                items.append(f"<div>{line}</div>")
        return f'<div class="df-slow">{"".join(items)}</div>' if items else ""

    def _pool_html(self) -> str:
        pools = "".join(pool_html(url, p) for url, p in self.snapshot.pool.items() if pool_notable(p))
        caches = "".join(
            f'<div class="df-cache"><code>{html.escape(url)}</code> {html.escape(cache_text(c))}</div>'
            for url, c in self.snapshot.cache.items()
        )
        return pools + caches

    def events_html(self) -> str:
        s = self.snapshot
        items = [html.escape(e) for e in s.events[-_LAST_EVENTS:]]
        items += [f"retry {html.escape(r)}" for r in s.retries[-_LAST_EVENTS:]]
        if not items:
            quiet = "no writes, so no transaction" if s.finished else "no transaction yet"
            return f'<div class="df-events"{viz.muted_style()}><i>{quiet}</i></div>'
        return '<div class="df-events">' + " → ".join(items) + "</div>"

    # -- live ------------------------------------------------------------------
    def widget(self) -> Any:
        """The live ipywidgets panel (built on first call)."""
        if self._widget is not None:
            return self._widget
        w = widgets()
        rows = []
        for node_id in self.snapshot.nodes:
            bar = w.FloatProgress(min=0.0, max=1.0, value=0.0, layout=w.Layout(width="160px"))
            label = w.Label(value="pending")
            self._bars[node_id] = (bar, label)
            name = w.Label(value=node_id, layout=w.Layout(width="140px"))
            rows.append(w.HBox([name, bar, label]))
        self._parts = {"head": w.HTML(), "pool": w.HTML(), "events": w.HTML()}
        self._widget = w.VBox([self._parts["head"], *rows, self._parts["pool"], self._parts["events"]])
        self._widget.add_class("df-monitor")
        self._refresh()
        return self._widget

    def update(self, snapshot: RunSnapshot) -> None:
        self.snapshot = snapshot
        if self._widget is not None:
            self._refresh()

    def _refresh(self) -> None:
        s = self.snapshot
        self._parts["head"].value = _headline_html(s)
        for node_id, (bar, label) in self._bars.items():
            status = s.nodes[node_id]
            bar.value = node_fraction(status)
            bar.bar_style = _BAR_STYLE.get(status.state, "info" if status.state == "running" else "")
            label.value = status.label() or status.state
        self._parts["pool"].value = self._pool_html()
        self._parts["events"].value = self.events_html() + self.slow_html()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return bundle(self.text(), self.html())
