"""Small display helpers shared by the notebook views: formatting, HTML, optional imports.

Nothing heavy is imported here: pandas and ipywidgets load on first use.
"""

from __future__ import annotations

import datetime as dt
import html
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from .. import viz
from ..errors import DataFlowError

__all__ = [
    "duration",
    "frame",
    "is_list_output",
    "rows",
    "table_html",
    "value_html",
    "widgets",
    "widgets_available",
]

_AS_STR = (dt.date, dt.time, Decimal, uuid.UUID)  # shown as their plain text, not their repr
_WIDGETS: Any = None  # the ipywidgets module once imported; False when it is missing


def widgets_available() -> bool:
    """Whether ipywidgets can be imported (the static HTML displays are used otherwise)."""
    global _WIDGETS
    if _WIDGETS is None:
        try:
            import ipywidgets
        except ImportError:
            _WIDGETS = False
        else:
            _WIDGETS = ipywidgets
    return _WIDGETS is not False


def widgets() -> Any:
    """The ipywidgets module; raises a DataFlowError naming the install when it is missing."""
    if not widgets_available():
        raise DataFlowError("Live panels need ipywidgets.", hint="pip install 'dataflow-lab[notebook]'")
    return _WIDGETS


def duration(seconds: float | None) -> str:
    """'0.4 ms', '12.3 ms', '1.25 s' (always a number and a unit, so one regex finds it)."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def rows(count: int | None) -> str:
    if count is None:
        return ""
    return f"{count:,} row{'' if count == 1 else 's'}"


def is_list_output(value: Any) -> bool:
    """A List node's output: {'records': [...], 'count': n}."""
    return isinstance(value, Mapping) and isinstance(value.get("records"), list)


def frame(records: Sequence[Mapping[str, Any]]) -> Any:
    """Row dicts -> a pandas DataFrame."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise DataFlowError("DataFrames need pandas.", hint="pip install 'dataflow-lab[pandas]'") from exc
    return pd.DataFrame.from_records(list(records))


def records_html(records: Sequence[Mapping[str, Any]], limit: int) -> str:
    """A List output as a DataFrame's HTML (first ``limit`` rows; 0 means all)."""
    shown = list(records) if limit <= 0 else list(records[:limit])
    more = len(records) - len(shown)
    try:
        body = _to_seconds(frame(shown)).to_html(index=False, border=0, max_cols=20)
    except DataFlowError:
        body = table_html(shown)
    more_rows = f"… {more:,} more row{'s' if more != 1 else ''} (run.frame(...) has them all)"
    note = f"<p{viz.muted_style()}><i>{more_rows}</i></p>"
    return body + (note if more > 0 else "")


def _to_seconds(df: Any) -> Any:
    """Timestamp columns shown to the second (the stored values keep their microseconds)."""
    for column in df.columns:
        if str(df[column].dtype).startswith("datetime64"):
            df[column] = df[column].dt.floor("s")
        elif df[column].dtype == object and any(isinstance(v, dt.datetime) for v in df[column].head(5)):
            df[column] = [_short(v) if isinstance(v, dt.datetime) else v for v in df[column]]
    return df


def table_html(records: Sequence[Mapping[str, Any]]) -> str:
    """Row dicts as a plain HTML table, without pandas."""
    columns: list[str] = []
    for row in records:
        columns += [c for c in row if c not in columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_short(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in records
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def value_html(value: Any) -> str:
    """A node's output: a row dict as a one-row table, anything else as its short repr."""
    if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
        return table_html([value])
    return f"<pre>{html.escape(_short(value, 400))}</pre>"


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ", timespec="seconds")  # to the second: a table, not a log
    elif isinstance(value, str):
        text = value
    else:
        text = str(value) if isinstance(value, _AS_STR) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bundle(text: str, html_text: str | None = None, widget: Any = None) -> dict[str, Any]:
    """A display bundle: text/plain always, text/html and a widget view when given."""
    data: dict[str, Any] = {"text/plain": text}
    if html_text is not None:
        data["text/html"] = html_text
    if widget is not None:
        data["application/vnd.jupyter.widget-view+json"] = {
            "version_major": 2,
            "version_minor": 0,
            "model_id": widget.model_id,
        }
    return data
