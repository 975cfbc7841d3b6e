"""``%%dataflow sql`` / ``%dataflow sql`` and ``%dataflow plot``: SQL cells and their charts.

A SQL cell runs one statement on the notebook's database through ``db.sql`` (queries.py), with
``{var}`` and ``:var`` taken from the notebook's variables and bound as values, and returns a
DataFrame with a caption: rows, time, and the name ``-o`` kept it under. ``%dataflow plot``
draws the last such result, or ``--from NAME`` (plot.py).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.display import display

from ..dataflow import DataFlow
from ..errors import did_you_mean
from ..sqltext import braces_to_names, parameter_names
from .plot import KINDS, Plot, plot
from .run import NotebookRun

if TYPE_CHECKING:  # pragma: no cover
    from .session import Session

__all__ = ["SqlCaption", "plot_cell", "sql_cell", "sql_options"]


def sql_cell(
    session: Session,
    user_ns: MutableMapping[str, Any],
    line: str,
    cell: str | None,
    namespace: Mapping[str, Any],
    user_of: Callable[[str | None, Mapping[str, Any]], Any],
) -> Any:
    """One statement on the notebook's database, as a DataFrame (``user_of``: the magics' --user)."""
    options, query = sql_options(line)
    if cell is not None:
        if query:
            raise UsageError(
                f"%%dataflow sql: the query goes in the cell, not after the options ('{query[:30]}'). "
                "Hint: %%dataflow sql -o counts, then the SQL on the lines below."
            )
        query = cell
    if not query.strip():
        raise UsageError("which query? Hint: %dataflow sql SELECT count(*) FROM readings")
    db = _database(session, options.get("db"), namespace)
    query, values = braces_to_names(query, lambda name: _variable(name, namespace, "{" + name + "}"))
    for name in parameter_names(query):
        values.setdefault(name, _variable(name, namespace, ":" + name))
    frame = db.sql(
        query, values, write="write" in options, user=user_of(options.get("user"), namespace),
        engine="duckdb" if "duckdb" in options else None,
    )  # fmt: skip
    if "o" in options:
        user_ns[options["o"]] = frame
    session.last_frame = frame
    display(SqlCaption(frame, options.get("o")))
    return frame


def plot_cell(session: Session, args: Any, namespace: Mapping[str, Any]) -> Plot:
    """``%dataflow plot KIND``: the last SQL result, or ``--from NAME`` (a DataFrame or a run)."""
    if args.kind is None:
        raise UsageError(
            f"which kind of plot? Hint: %dataflow plot bar --x station --y trips ({', '.join(KINDS)})."
        )
    if args.source is not None:
        if args.source not in namespace:
            known = [k for k in namespace if not k.startswith("_")]
            raise UsageError(
                f"--from {args.source}: no such variable.{did_you_mean(args.source, known)} "
                "Hint: %%dataflow sql -o counts stores a result under a name."
            )
        data = namespace[args.source]
    elif session.last_frame is not None:
        data = session.last_frame
    else:
        raise UsageError("nothing to plot yet. Hint: run a %%dataflow sql cell first, or pass --from NAME.")
    if isinstance(data, NotebookRun):
        frames = data.frames()
        if len(frames) != 1:
            raise UsageError(
                f"--from {args.source}: the run has {len(frames)} List outputs. "
                "Hint: plot one: run.plot('node_id', 'bar', x=..., y=...)."
            )
        data = next(iter(frames.values()))
    return plot(data, args.kind, args.x, args.y, title=args.title)


def _database(session: Session, name: str | None, namespace: Mapping[str, Any]) -> DataFlow:
    """``--db NAME``; else the magics' database; else the notebook's one DataFlow, if it has one."""
    if name is not None:
        found = namespace.get(name)
        if not isinstance(found, DataFlow):
            known = [k for k, v in namespace.items() if isinstance(v, DataFlow) and not k.startswith("_")]
            raise UsageError(
                f"--db {name}: no DataFlow named '{name}'.{did_you_mean(name, known)} "
                f"Hint: {'DataFlows here: ' + ', '.join(known) if known else 'db = DataFlow(...) first'}."
            )
        return found
    if session.current is None:
        mine = {id(v): v for k, v in namespace.items() if isinstance(v, DataFlow) and not k.startswith("_")}
        open_ones = [db for db in mine.values() if not db.database.closed]
        if len(open_ones) == 1:
            return open_ones[0]
    return session.db


def _variable(name: str, namespace: Mapping[str, Any], written: str) -> Any:
    if name not in namespace:
        known = [k for k in namespace if not k.startswith("_")]
        raise UsageError(
            f"%dataflow sql: {written} names no variable of the notebook.{did_you_mean(name, known)} "
            f"Hint: set it first ({name} = ...); its value is bound, never pasted into the SQL."
        )
    return namespace[name]


def sql_options(line: str) -> tuple[dict[str, str], str]:
    """``-o NAME --db NAME --write --user U`` at the start of ``line``; the rest is SQL, untouched."""
    options: dict[str, str] = {}
    rest = line.strip()
    takes_value = {"-o": "o", "--out": "o", "--db": "db", "--user": "user"}
    while rest.startswith("-"):
        word, _, after = rest.partition(" ")
        if word in ("--write", "--duckdb"):
            options[word[2:]] = ""
        elif word in takes_value:
            value, _, after = after.strip().partition(" ")
            if not value or value.startswith("-"):
                raise UsageError(f"%dataflow sql: {word} needs a name. Hint: {word} counts")
            options[takes_value[word]] = value
        else:
            known = ["-o", "--db", "--write", "--duckdb", "--user"]
            raise UsageError(
                f"%dataflow sql has no option '{word}'.{did_you_mean(word, known)} Hint: options: {', '.join(known)}."
            )
        rest = after.strip()
    if "o" in options and not options["o"].isidentifier():
        raise UsageError(f"-o {options['o']}: not a Python name. Hint: -o counts")
    return options, rest


class SqlCaption:
    """The line under a SQL cell's frame: how many rows, how long, and where it was stored."""

    def __init__(self, frame: Any, stored_as: str | None):
        attrs = frame.attrs
        affected = attrs.get("rows_affected")
        what = f"{affected} row(s) affected" if affected is not None else f"{len(frame)} row(s)"
        where = f" · saved as {stored_as}" if stored_as else ""
        self.text = f"{what} · {attrs.get('elapsed_s', 0.0) * 1000:.1f} ms{where}"

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return f'<div class="dataflow-sql-caption" style="color: var(--jp-ui-font-color2, #555)">{html.escape(self.text)}</div>'
