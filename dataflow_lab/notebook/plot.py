"""Plots without boilerplate: ``%dataflow plot bar --x station --y trips``, ``run.plot(...)``.

One matplotlib figure of a DataFrame (or a list of records), with the axes labelled by the
column names. The figure is made without pyplot, so no global figure state leaks between
cells. A ``Plot`` shows itself as a PNG in any frontend, and as one line of text where images
are not shown (nbval compares that line).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from ..errors import DataFlowError, ValidationError, did_you_mean

__all__ = ["KINDS", "Plot", "plot"]

KINDS = ("bar", "line", "hist", "scatter")


class Plot:
    """A drawn figure: ``.figure`` is the matplotlib Figure, to adjust or ``savefig``."""

    def __init__(self, figure: Any, description: str):
        self.figure = figure
        self.description = description

    def __repr__(self) -> str:
        return f"<Plot: {self.description}>"

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()

    def savefig(self, *args: Any, **kwargs: Any) -> None:
        self.figure.savefig(*args, **kwargs)


def plot(
    data: Any, kind: str, x: str | None = None, y: str | None = None, *, title: str | None = None
) -> Plot:
    """Draw ``data`` (a DataFrame or records) as a bar, line, hist or scatter chart.

    ``x`` and ``y`` name columns. With a two-column frame, a missing one is the other column; a
    histogram takes one column (``x``, or the only numeric one).
    """
    if kind not in KINDS:
        raise ValidationError(
            f"no plot kind '{kind}'.{did_you_mean(kind, KINDS)}", hint=f"kinds: {', '.join(KINDS)}."
        )
    frame = _frame(data)
    if frame.empty:
        raise ValidationError("nothing to plot: the data has no rows.")
    columns = [str(c) for c in frame.columns]
    for name in (x, y):
        if name is not None and name not in columns:
            raise ValidationError(
                f"no column '{name}' to plot.{did_you_mean(name, columns)}",
                hint=f"columns: {', '.join(columns)}.",
            )
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DataFlowError("Plots need matplotlib.", hint="pip install 'dataflow-lab[notebook]'") from exc
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.subplots()
    if kind == "hist":
        column = x or y or _only_numeric(frame, columns)
        axes.hist(frame[column].dropna(), bins="auto", color="#4C72B0", edgecolor="white")
        axes.set_xlabel(column)
        axes.set_ylabel("count")
        described = f"hist of {column}, {len(frame)} values"
    else:
        x, y = _pair(columns, x, y, kind)
        if kind == "bar":
            labels = [str(v) for v in frame[x]]
            axes.bar(labels, frame[y], color="#4C72B0")
            if sum(len(label) for label in labels) > 48:  # they would run into each other: slant them
                for label in axes.get_xticklabels():
                    label.set(rotation=30, horizontalalignment="right")
        elif kind == "line":
            axes.plot(frame[x], frame[y], marker="o" if len(frame) <= 50 else None, color="#4C72B0")
        else:
            axes.scatter(frame[x], frame[y], s=18, color="#4C72B0")
        if kind != "bar" and _is_time(frame[x]):
            figure.autofmt_xdate()  # dates slanted, so they do not overlap
        axes.set_xlabel(x)
        axes.set_ylabel(y)
        described = f"{kind} of {y} by {x}, {len(frame)} rows"
    if title:
        axes.set_title(title)
    return Plot(figure, described)


def _frame(data: Any) -> Any:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.reset_index()
    if isinstance(data, Sequence) and not isinstance(data, str):
        return pd.DataFrame.from_records(list(data))
    raise ValidationError(
        f"cannot plot a {type(data).__name__}.",
        hint="plot a DataFrame (a SQL cell's result, run.frame('node')) or a list of records.",
    )


def _pair(columns: list[str], x: str | None, y: str | None, kind: str) -> tuple[str, str]:
    if x is None and y is None and len(columns) == 2:
        return columns[0], columns[1]
    if x is not None and y is None and len(columns) == 2:
        return x, next(c for c in columns if c != x)
    if y is not None and x is None and len(columns) == 2:
        return next(c for c in columns if c != y), y
    if x is None or y is None:
        raise ValidationError(
            f"a {kind} plot needs --x and --y: this data has {len(columns)} columns.",
            hint=f"e.g. --x {columns[0]} --y {columns[-1]}; columns: {', '.join(columns)}.",
        )
    return x, y


def _is_time(column: Any) -> bool:
    import datetime as dt

    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    first = column.dropna().head(1).tolist()
    return bool(first) and isinstance(first[0], dt.date)


def _only_numeric(frame: Any, columns: list[str]) -> str:
    numeric = [str(c) for c in frame.select_dtypes("number").columns]
    if len(numeric) != 1:
        raise ValidationError(
            "a hist plot needs --x: which column?", hint=f"numeric columns: {', '.join(numeric) or 'none'}."
        )
    return numeric[0]
