"""``db.migrations``: plan, apply, roll back and generate schema migrations.

>>> plan = db.migrations.plan()            # doctest: +SKIP
>>> db.migrations.apply()                  # additive changes; destructive ones need confirming
>>> db.migrations.apply(confirm_destructive=True)
>>> db.migrations.apply(backfill={"tenant_id": "acme"})  # a value for existing rows of new columns
>>> db.migrations.rollback()               # runs the last migration's down SQL
>>> db.migrations.generate("migrations")   # production: a reviewable file ...
>>> db.migrations.apply(directory="migrations")  # ... applied from there

``Migrations`` is in ``facade.py`` and loads at the first ``db.migrations``: a first run
imports ``migrations.engine``, which runs this ``__init__`` first, so it stays small.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AppliedMigration", "MigrationPlan", "Migrations"]


def __getattr__(name: str) -> Any:
    if name == "Migrations":
        from .facade import Migrations

        return Migrations
    if name in ("AppliedMigration", "MigrationPlan"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")  # a submodule's name: imported
