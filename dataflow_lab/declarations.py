"""What each model option declares of its model's table: the declarative half of a behaviour.

A model option (``__dataflow__ = {"versioned": True}``) is a behaviour (behaviours/), and
what it does to the nodes' statements lives there. What it declares of the *table* lives
here, as plain data, so that the layers below the behaviours (model.py parses the options,
schema.py builds the table) read it without knowing any option by name:

- ``option``, ``purpose``: the ``__dataflow__`` flag that turns it on, and what it does
  (for error messages);
- ``columns``: the managed columns it adds (dataflow_lab fills them; callers cannot write
  them), each with how it is filled, and what turning the option on asks of a table that
  already has rows (a ``Backfill``: db.migrations.apply(backfill=...));
- ``counters``: columns an upsert that meets a row counts up instead of overwriting;
- ``key_scope``: columns that lead every unique group and index of the table (a unique key
  holds within them, and every query filters on them), with an index of their own.

``parse_model`` composes the declarations of a model's options, and its own behaviours'
(``Behaviour.fields``, ``counters``, ``key_scope``), into its ``ModelSchema``. The internal
tables an option writes to are the behaviour's (``Behaviour.prepare``). A fifth option adds
its declaration to ``DECLARED`` and its behaviour to behaviours/: no model, schema or
database code changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ._record import Record
from .tenancy import check_tenant

__all__ = ["DECLARED", "Backfill", "Column", "Declaration", "declared_column"]


class Backfill(NamedTuple):
    """A column that existing rows must be given a value for when the option is turned on."""

    why: str  # "each needs a <column>, or <why>."
    example: Any  # in the hint: backfill={'<column>': <example>}
    how: str  # "<how>: db.migrations.apply(backfill=...) sets it on the existing rows"
    check: Callable[[Any], Any]  # the value given, checked (and coerced)


class Column(Record):
    """A managed column: ``Field(name, LOGICAL_TYPES[python], generated=True, **options)`` (model.py)."""

    __slots__ = ("name", "python", "how", "options", "backfill")
    name: str
    python: type
    how: str  # how dataflow_lab fills it: "dataflow_lab <how>", in the error that refuses a write
    options: Mapping[str, Any]  # Field's nullable, default
    backfill: Backfill | None  # existing rows need a value when the option is turned on

    def __init__(
        self,
        name: str,
        python: type,
        how: str,
        options: Mapping[str, Any] | None = None,
        backfill: Backfill | None = None,
    ):
        self._fill(name, python, how, options or {}, backfill)


class Declaration(NamedTuple):
    """What one model option declares of its model's table (see the module's docstring)."""

    option: str
    purpose: str
    columns: tuple[Column, ...] = ()
    counters: tuple[str, ...] = ()
    key_scope: tuple[str, ...] = ()

    @property
    def column(self) -> str | None:
        """The column it adds (None: none), for error messages."""
        return self.columns[0].name if self.columns else None


# In the order their columns follow the model's own fields (and their flags are checked).
DECLARED = (
    Declaration(
        "multi_tenant",
        "keep each tenant's rows apart (with db.tenant(...))",
        columns=(
            Column(
                "tenant_id",
                str,
                "fills it from `with db.tenant(...)` (multi_tenant)",
                backfill=Backfill(
                    "no tenant would ever see it again", "acme", "say whose rows they are", check_tenant
                ),
            ),
        ),
        key_scope=("tenant_id",),
    ),
    Declaration(
        "versioned",
        "make Update check and bump a version number (optimistic locking)",
        columns=(
            Column("version", int, "starts it at 1 and bumps it on every Update (versioned)", {"default": 1}),
        ),
        counters=("version",),
    ),
    Declaration(
        "soft_delete",
        "make Delete mark rows instead of removing them",
        columns=(
            Column(
                "deleted_at", dt.datetime, "sets it when Delete marks a row (soft_delete)", {"nullable": True}
            ),
        ),
    ),
    Declaration("audit_log", "log every write of this model"),
)


def declared_column(options: Iterable[str], name: str) -> tuple[Declaration, Column] | None:
    """The declaration (among those of ``options``) that adds column ``name``, and the column; or None."""
    on = set(options)
    return next(((d, c) for d in DECLARED if d.option in on for c in d.columns if c.name == name), None)
