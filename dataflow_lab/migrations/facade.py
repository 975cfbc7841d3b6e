"""``db.migrations``: the ``Migrations`` object of one DataFlow (the package's docstring shows its use).

It lives here, not in ``migrations/__init__.py``, because every first run imports
``migrations.engine``, which runs the package's ``__init__`` first; this module loads at
the first ``db.migrations``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import _loop
from ..errors import DestructiveMigrationError, MigrationError
from ..transactions import ACTIVE_SCOPE
from . import engine
from .engine import AppliedMigration, MigrationPlan

__all__ = ["AppliedMigration", "MigrationPlan", "Migrations"]


class Migrations:
    """The migrations of one DataFlow's models (reach it as ``db.migrations``)."""

    def __init__(self, dataflow: Any):
        self._db = dataflow

    def __repr__(self) -> str:
        return f"<migrations of {self._db!r}>"

    # -- public API (blocking; runs on the background loop) ---------------------------
    def plan(self, *, backfill: Mapping[str, Any] | None = None) -> MigrationPlan:
        """What ``apply()`` would do now, for every model: steps with up and down SQL."""
        fill = self._backfill(backfill)
        return self._run(lambda conn, d: self._plan(conn, d, fill), write=False)

    def apply(
        self,
        *,
        confirm_destructive: bool = False,
        directory: str | Path | None = None,
        backfill: Mapping[str, Any] | None = None,
    ) -> list[AppliedMigration]:
        """Apply the plan (or the pending files of ``directory``); returns what was applied.

        Destructive steps (drops, narrowing retypes, NOT NULL) run only with
        ``confirm_destructive=True``; files in ``directory`` count as reviewed.
        ``backfill`` maps a column to the value its existing rows get when a migration adds it
        NOT NULL (``{"tenant_id": "acme"}`` when turning on multi_tenant), in the same transaction.
        """
        if directory is not None:
            if backfill:
                raise MigrationError(
                    "apply(directory=..., backfill=...): a migration file already holds its values.",
                    hint="pass backfill= to db.migrations.generate(...) instead, then apply the file.",
                )
            return self._run(lambda conn, d: self._apply_files(conn, d, Path(directory)))
        fill = self._backfill(backfill)
        return self._run(lambda conn, d: self._apply(conn, d, confirm_destructive, fill))

    def rollback(self, steps: int = 1, *, confirm_destructive: bool = False) -> list[AppliedMigration]:
        """Run the down SQL of the last ``steps`` applied migrations, newest first."""
        if steps < 1:
            raise MigrationError(f"rollback(steps={steps}) rolls back nothing.", hint="pass steps=1 or more.")
        return self._run(lambda conn, d: self._rollback(conn, d, steps, confirm_destructive))

    def history(self) -> list[AppliedMigration]:
        """Every recorded migration, oldest first (rolled-back ones have ``rolled_back_at``)."""
        return self._run(self._history, write=False)

    def generate(self, directory: str | Path, *, backfill: Mapping[str, Any] | None = None) -> Path | None:
        """Write the current plan as the next numbered .sql file in ``directory`` (None: nothing to do)."""
        from .files import write_file  # the files' module loads only where migration files are used

        plan = self.plan(backfill=backfill)
        if not plan:
            return None
        taken = [applied.name for applied in self.history()]
        return write_file(directory, plan, engine.file_slug(plan.steps), taken)

    # -- internals ---------------------------------------------------------------------
    def _run(self, work: Any, *, write: bool = True) -> Any:
        """Run ``work(conn, dialect)`` in a session of its own, or, for a read inside
        ``with db.transaction():``, on that block's connection (a second one could wait forever
        for the block's on SQLite and DuckDB). Changing the schema inside a block is refused."""

        scope = ACTIVE_SCOPE.get()
        if scope is not None and scope.holds(self._db):
            if write:
                raise MigrationError(
                    f"Migrations of {self._db!r} cannot be applied or rolled back inside db.transaction().",
                    hint="call db.migrations.apply() / rollback() outside the transaction block.",
                )
            return _loop.run(self._in_scope(work, scope))
        return _loop.run(self._session(work, write=write))

    async def _in_scope(self, work: Any, scope: Any) -> Any:
        dialect = await self._db.database.open()
        return await work(await scope.connection(self._db), dialect)

    async def _session(self, work: Any, *, write: bool = True) -> Any:
        db = self._db
        db.database.check_open()
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            await conn.begin()
            try:
                if write:
                    await engine.lock(conn, dialect)
                result = await work(conn, dialect)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
        finally:
            await dialect.release(conn)
        if write:
            db.database.forget_ready()  # every table is checked again at its next use
        return result

    def _model_tables(self) -> list[Any]:
        return [t for name, t in self._db.database.tables.items() if name not in self._db.database.reflected]

    def _by_table(self) -> dict[str, Any]:
        """The models' tables by name: a data step (encrypt, decrypt) runs with its table's key."""
        return {mt.table.name: mt for mt in self._model_tables()}

    def _backfill(self, backfill: Mapping[str, Any] | None) -> dict[str, Any]:
        """``backfill`` checked: every key is a field of some model (a typo must not pass silently)."""
        fields = {f.name for mt in self._model_tables() for f in mt.model.fields}
        for column in backfill or {}:
            if column not in fields:
                raise MigrationError(
                    f"backfill names '{column}', which no model of {self._db!r} has.",
                    hint=f"backfill maps a column a migration adds to the value existing rows get; "
                    f"fields: {', '.join(sorted(fields))}.",
                )
        return dict(backfill or {})

    async def _plan(
        self, conn: Any, dialect: Any, backfill: Mapping[str, Any] | None = None
    ) -> MigrationPlan:
        steps = []
        for mt in self._model_tables():
            steps += await engine.table_plan(conn, mt, backfill)
        return MigrationPlan(tuple(steps))

    async def _apply(
        self, conn: Any, dialect: Any, confirm: bool, backfill: Mapping[str, Any]
    ) -> list[AppliedMigration]:
        plan = await self._plan(conn, dialect, backfill)
        if not plan:
            return []
        if plan.destructive and not confirm:
            tables = ", ".join(sorted({s.table for s in plan.steps if s.destructive}))
            raise engine.destructive_error(f"Table(s) {tables}", plan.steps)
        if plan.destructive and self._db.config.safety.destructive_migrations == "files":
            tables = ", ".join(sorted({s.table for s in plan.steps if s.destructive}))
            raise DestructiveMigrationError(
                f"Table(s) {tables} need a destructive change, and safety_level="
                f"'{self._db.config.safety_level}' applies those only from reviewed migration files, "
                f"confirmed or not. Nothing was changed. It would run:\n{plan.sql}",
                sql=plan.up,
                hint="write it as a file with db.migrations.generate('migrations'), review it, then "
                "run db.migrations.apply(directory='migrations').",
            )
        return [await engine.run_and_record(conn, dialect, plan.steps, source="api", clock=self._db.clock,
                                            tables=self._by_table())]  # fmt: skip

    async def _apply_files(self, conn: Any, dialect: Any, directory: Path) -> list[AppliedMigration]:
        from .files import read_directory

        applied = {m.name: m for m in await engine.history(conn, dialect) if m.rolled_back_at is None}
        done = []
        for file in read_directory(directory):
            known = applied.get(file.name)
            if known is not None:
                if known.checksum != file.checksum:
                    raise MigrationError(
                        f"Migration file '{file.path}' was edited after it was applied.",
                        hint="never edit an applied migration; generate a new one for further changes.",
                    )
                continue
            for sql in file.up:
                await engine.execute(conn, sql, self._by_table())
            done.append(await engine.record(conn, dialect, file.up, file.down, file.destructive, True,
                                            source=str(file.path), name=file.name, clock=self._db.clock))  # fmt: skip
        return done

    async def _rollback(self, conn: Any, dialect: Any, steps: int, confirm: bool) -> list[AppliedMigration]:
        live = [m for m in await engine.history(conn, dialect) if m.rolled_back_at is None]
        chosen = list(reversed(live))[:steps]
        if not chosen:
            raise MigrationError(
                "There is no applied migration to roll back.", hint="see db.migrations.history()."
            )
        risky = [m for m in chosen if m.down_destructive]
        if risky and not confirm:
            sql = "".join(f"{s};\n" for m in risky for s in m.down)
            raise DestructiveMigrationError(
                f"Rolling back {', '.join(m.name for m in risky)} drops what it created. It would run:\n{sql}",
                sql=[s for m in risky for s in m.down],
                hint="if you mean it, call db.migrations.rollback(confirm_destructive=True).",
            )
        for m in chosen:
            for sql in m.down:
                await engine.execute(conn, sql, self._by_table())
            await engine.mark_rolled_back(conn, dialect, m.seq, self._db.clock)
        return chosen

    async def _history(self, conn: Any, dialect: Any) -> list[AppliedMigration]:
        if not await engine.has_history(conn, dialect):
            return []
        return await engine.history(conn, dialect)
