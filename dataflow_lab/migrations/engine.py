"""Plan, apply, record and roll back migrations, one locked transaction at a time.

Every path that changes a schema (a model's first use, ``db.migrations.apply``,
``rollback``, files from a directory) runs in one transaction that first takes
the migration lock: a PostgreSQL advisory transaction lock, SQLite's write
lock (``BEGIN IMMEDIATE``), DuckDB's single writer. The plan is made *inside*
the lock, so of two processes applying at once, the second finds nothing left
to do. Each applied migration is a row of ``dataflow_migrations`` with its up
and down SQL, dated by the DataFlow's clock.

A column added NOT NULL to a table with rows needs a value for those rows: the
field's default, or a ``backfill`` value given to apply/plan/generate (turning
on ``multi_tenant``: whose rows they are). Without either, BackfillRequiredError.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from ..declarations import declared_column
from ..dialects import Connection, Dialect
from ..errors import BackfillRequiredError, DestructiveMigrationError, MigrationError, MigrationRequiredError
from ..model import MISSING, check_value
from .live import model_shape, read_table
from .ops import DATA_STEP, Step, create_steps, literal, slug, table_steps

__all__ = ["DATA_STEP", "HISTORY_TABLE", "AppliedMigration", "MigrationPlan", "ensure_table", "execute"]

HISTORY_TABLE = "dataflow_migrations"
log = logging.getLogger("dataflow_lab.migrations")


class Clock(Protocol):  # the DataFlow's clock (clock.py): the testing preset's is reproducible
    def peek(self) -> Any: ...


def history_table() -> sa.Table:
    return sa.Table(
        HISTORY_TABLE,
        sa.MetaData(),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("checksum", sa.Text, nullable=False),
        sa.Column("up_sql", sa.Text, nullable=False),  # a JSON list of statements
        sa.Column("down_sql", sa.Text, nullable=False),
        sa.Column("destructive", sa.Integer, nullable=False),
        sa.Column("down_destructive", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),  # auto | api | the file it came from
        sa.Column("applied_at", sa.Text, nullable=False),
        sa.Column("rolled_back_at", sa.Text),
    )


_HISTORY = history_table()


def checksum(up: Sequence[str], down: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([list(up), list(down)]).encode()).hexdigest()


@dataclass(frozen=True)
class MigrationPlan:
    """What applying would do: steps with their up and down SQL."""

    steps: tuple[Step, ...]

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def destructive(self) -> bool:
        return any(s.destructive for s in self.steps)

    @property
    def up(self) -> list[str]:
        return [sql for s in self.steps for sql in s.up]

    @property
    def down(self) -> list[str]:
        return [sql for s in reversed(self.steps) for sql in s.down]

    @property
    def sql(self) -> str:
        return "".join(f"{sql};\n" for sql in self.up)

    def describe(self) -> list[str]:
        return [s.description + (" [destructive]" if s.destructive else "") for s in self.steps]

    def _repr_html_(self) -> str:
        import html  # here: its entity table is no cost of a first run's migration check

        if not self.steps:
            return "<p>MigrationPlan: nothing to do.</p>"
        rows = []
        for s in self.steps:
            sql = html.escape("".join(f"{statement};\n" for statement in s.up))
            flag = "<b>destructive</b>" if s.destructive else "additive"
            rows.append(
                f"<tr><td>{html.escape(s.description)}</td><td>{flag}</td><td><pre>{sql}</pre></td></tr>"
            )
        head = "<tr><th>step</th><th>kind</th><th>up SQL</th></tr>"
        return f"<table>{head}{''.join(rows)}</table>"

    def __repr__(self) -> str:
        if not self.steps:
            return "MigrationPlan(nothing to do)"
        return "MigrationPlan(\n" + "".join(f"  {line}\n" for line in self.describe()) + ")"


@dataclass(frozen=True)
class AppliedMigration:
    """One row of the migration history (its times come from the DataFlow's clock, in ISO 8601)."""

    seq: int
    name: str
    checksum: str
    up: tuple[str, ...]
    down: tuple[str, ...]
    destructive: bool
    down_destructive: bool
    source: str
    applied_at: str
    rolled_back_at: str | None


# -- planning ------------------------------------------------------------------------
async def table_plan(conn: Connection, mt: Any, backfill: Mapping[str, Any] | None = None) -> list[Step]:
    """Steps that bring ``mt``'s table (a ModelTable) to its model's shape.

    A column added NOT NULL gives existing rows its field's default, else its ``backfill`` value
    (which wins over the default); with neither, a table with rows raises BackfillRequiredError.
    """
    dialect: Dialect = mt.dialect
    live = await read_table(dialect, conn, mt.table.name)
    if live is None:
        return create_steps(dialect, mt.table)
    from .diff import diff  # a table that exists is compared with its model (a new one is only created)
    from .sealing import data_steps, recasts  # so are its encrypted columns

    changes, casts = recasts(mt, diff(live, model_shape(dialect, mt.table)))
    before, after = await data_steps(conn, mt, live)  # rows to decrypt, encrypt or index (sealing.py)
    if not changes:
        return [*before, *after]
    return [*before, *await _ddl_steps(conn, mt, live, changes, backfill, casts), *after]


async def _ddl_steps(
    conn: Connection, mt: Any, live: Any, changes: Any, backfill: Mapping[str, Any] | None, casts: Any
) -> list[Step]:
    dialect: Dialect = mt.dialect
    added = {c.name for c in changes if c.kind == "add_column"}
    backfill = {k: v for k, v in (backfill or {}).items() if k in added}
    defaults = {}
    for f in mt.model.fields:
        if f.name in backfill:
            value = backfill_value(mt, f, backfill[f.name])
            defaults[f.name] = literal(dialect, mt.to_db(f.name, value), mt.table.c[f.name])
        elif f.name in added and f.default is not MISSING:
            defaults[f.name] = literal(dialect, mt.to_db(f.name, f.default), mt.table.c[f.name])
    required = sorted(n for n in added if not mt.table.c[n].nullable and n not in defaults)
    if required:
        count = await _row_count(conn, dialect, mt.table.name)
        if count:
            raise backfill_error(mt, required, count)
    return table_steps(dialect, mt.table, live, changes, defaults, casts)


def backfill_value(mt: Any, f: Any, value: Any) -> Any:
    """``value`` checked as a value of field ``f`` (as an option declares it: a tenant, a non-empty string)."""
    found = declared_column(mt.model.options, f.name)
    if found is not None and found[1].backfill is not None:
        return found[1].backfill.check(value)
    return check_value(mt.model, f, value, node="backfill")


def backfill_error(mt: Any, required: Sequence[str], count: int) -> BackfillRequiredError:
    model, table, rows = mt.model.name, mt.table.name, f"{count} row{'s' if count != 1 else ''}"
    found = declared_column(mt.model.options, required[0]) if len(required) == 1 else None
    if found is not None and found[1].backfill is not None:  # an option's column (multi_tenant's tenant)
        (option, column), backfill = (found[0].option, found[1].name), found[1].backfill
        what = (f"Model '{model}' turns on {option}, and table '{table}' already has {rows}: each "
                f"needs a {column}, or {backfill.why}.")  # fmt: skip
        example = f"{{{column!r}: {backfill.example!r}}}"
        how = backfill.how
    else:
        names = ", ".join(f"'{n}'" for n in required)
        what = f"Model '{model}' adds required field(s) {names} to table '{table}', which already has {rows}."
        example = "{" + ", ".join(f"'{n}': ..." for n in required) + "}"
        how = f"give {names} a default or make it Optional, or fill the existing rows once"
    return BackfillRequiredError(
        f"{what} Nothing was changed.",
        model=model,
        table=table,
        columns=list(required),
        rows=count,
        hint=f"{how}: db.migrations.apply(backfill={example}) sets it on the existing rows in the "
        "migration's own transaction (db.migrations.generate(..., backfill=...) writes it into the file).",
    )


async def _row_count(conn: Connection, dialect: Dialect, table: str) -> int:
    sql, params = dialect.compile(sa.select(sa.func.count()).select_from(sa.table(table)))
    return int((await conn.fetch(sql, params))[0][0])


# -- locking, running, recording -----------------------------------------------------------
async def lock(conn: Connection, dialect: Dialect) -> None:
    """Take the migration lock in the connection's open transaction; make sure history exists."""
    sql = dialect.ddl_lock_sql(HISTORY_TABLE)
    if sql:
        await conn.fetch(sql)
    await conn.execute(dialect.ddl(CreateTable(_HISTORY, if_not_exists=True)))


# A statement that rewrites a column's rows in Python, with the key (sealing.rewrite_column):
# ``DATAFLOW_LAB ENCRYPT COLUMN patients.ssn`` (or DECRYPT, INDEX). Any other tool refuses it.
_DATA = re.compile(r"^DATAFLOW_LAB (ENCRYPT|DECRYPT|INDEX) COLUMN (\w+)\.(\w+)$")


async def execute(conn: Connection, sql: str, tables: Mapping[str, Any]) -> None:
    """Run one statement of a migration: SQL, or a data step on the table of one of ``tables``."""
    found = _DATA.match(sql.strip())
    if found is None:
        await conn.execute(sql)
        return
    action, table, column = found.groups()
    mt = tables.get(table)
    if mt is None:
        raise MigrationError(
            f"The migration step '{sql}' rewrites column '{column}' of table '{table}' in Python (it needs "
            "the encryption key), and no model of this DataFlow has that table. Nothing was changed.",
            hint=f"define the model of table '{table}' on this DataFlow, then apply or roll back again.",
        )
    from .sealing import rewrite_column

    await rewrite_column(conn, mt, action.lower(), column)


async def run_and_record(
    conn: Connection,
    dialect: Dialect,
    steps: Sequence[Step],
    *,
    source: str,
    clock: Clock,
    tables: Mapping[str, Any] | None = None,
) -> AppliedMigration:
    plan = MigrationPlan(tuple(steps))
    for sql in plan.up:
        await execute(conn, sql, tables or {})
    return await record(conn, dialect, plan.up, plan.down, plan.destructive, _down_destructive(steps),
                        source=source, name=file_slug(steps), clock=clock)  # fmt: skip


async def record(
    conn: Connection,
    dialect: Dialect,
    up: Sequence[str],
    down: Sequence[str],
    destructive: bool,
    down_destructive: bool,
    *,
    source: str,
    name: str,
    clock: Clock,
) -> AppliedMigration:
    sql, params = dialect.compile(sa.select(sa.func.coalesce(sa.func.max(_HISTORY.c.seq), 0)))
    seq = int((await conn.fetch(sql, params))[0][0]) + 1
    if not re.match(r"^\d{4}_", name):
        name = f"{seq:04d}_{name}"
    row = AppliedMigration(seq, name, checksum(up, down), tuple(up), tuple(down), destructive,
                           down_destructive, source, clock.peek().isoformat(), None)  # fmt: skip
    values = {
        "seq": row.seq, "name": row.name, "checksum": row.checksum, "up_sql": json.dumps(list(up)),
        "down_sql": json.dumps(list(down)), "destructive": int(destructive),
        "down_destructive": int(down_destructive), "source": source, "applied_at": row.applied_at,
    }  # fmt: skip
    await conn.execute(*dialect.compile(sa.insert(_HISTORY).values(values)))
    return row


def _down_destructive(steps: Sequence[Step]) -> bool:
    return any(s.down_destructive for s in steps)


def file_slug(steps: Sequence[Step]) -> str:
    """The slug of a migration's name and file: ``slug`` with only [A-Za-z0-9_]."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", slug(steps))


async def history(conn: Connection, dialect: Dialect) -> list[AppliedMigration]:
    sql, params = dialect.compile(sa.select(*_HISTORY.c).order_by(_HISTORY.c.seq))
    rows = await conn.fetch(sql, params)
    return [
        AppliedMigration(
            int(r[0]),
            r[1],
            r[2],
            tuple(json.loads(r[3])),
            tuple(json.loads(r[4])),
            bool(r[5]),
            bool(r[6]),
            r[7],
            r[8],
            r[9],
        )  # fmt: skip
        for r in rows
    ]


async def has_history(conn: Connection, dialect: Dialect) -> bool:
    return await read_table(dialect, conn, HISTORY_TABLE) is not None


async def mark_rolled_back(conn: Connection, dialect: Dialect, seq: int, clock: Clock) -> None:
    stmt = sa.update(_HISTORY).where(_HISTORY.c.seq == seq)
    await conn.execute(*dialect.compile(stmt.values(rolled_back_at=clock.peek().isoformat())))


# -- a model's first use -----------------------------------------------------------------
async def ensure_table(
    conn: Connection,
    mt: Any,
    *,
    auto_migrate: bool,
    existing_schema: bool,
    clock: Clock,
    create: bool = False,
) -> None:
    """Bring one model's table up to date in the connection's open transaction, as policy allows.

    - existing_schema: never any DDL; a missing table or a difference is an error.
    - auto_migrate (development, testing): a missing table is created, additive changes are
      applied, both recorded; destructive ones raise DestructiveMigrationError showing the SQL.
    - otherwise (production, staging): any difference raises MigrationRequiredError, a missing
      table too, unless ``create`` (``db.create_tables()``, the explicit command, and
      dataflow_lab's own tables) asks for it to be made; except missing or stale server DEFAULTs
      alone, which our own writes never need: a warning says how to add them.
    """
    dialect: Dialect = mt.dialect
    if existing_schema:
        await check_untouched(conn, mt)
        return
    if not await table_plan(conn, mt):  # the usual case: nothing to do, and no lock taken
        return
    await lock(conn, dialect)
    steps = await table_plan(conn, mt)  # again, under the lock: another process may have migrated
    if not steps:
        return
    creating = steps[0].description.startswith("create table")
    if creating and not (auto_migrate or create):
        raise MigrationRequiredError(
            f"Table '{mt.table.name}' of model '{mt.model.name}' does not exist, and this DataFlow "
            "(auto_migrate=False) does not create tables at first use. Nothing was run.",
            hint="create it with db.create_tables(), or review it as a file: "
            "db.migrations.generate('migrations'), then db.migrations.apply(directory='migrations').",
        )
    if not creating and not auto_migrate and all(s.defaults_only for s in steps):
        _warn_defaults(mt, steps)  # our own writes need no DEFAULT: runs go on until it is applied
        return
    if not creating and not auto_migrate:
        raise MigrationRequiredError(
            f"Table '{mt.table.name}' does not match model '{mt.model.name}': "
            f"{'; '.join(s.description for s in steps)}. This environment does not migrate by itself.",
            hint="generate the migration with db.migrations.generate('migrations'), review the file, "
            "then run db.migrations.apply(directory='migrations').",
        )
    if any(s.destructive for s in steps):
        raise destructive_error(f"Model '{mt.model.name}'", steps)
    await run_and_record(conn, dialect, steps, source="auto", clock=clock, tables={mt.table.name: mt})


def _warn_defaults(mt: Any, steps: Sequence[Step]) -> None:
    """Once per table and process: the table lacks server DEFAULTs the model gives (a table made before
    dataflow_lab wrote them), which only rows other tools insert need."""
    key = (mt.dialect.url, mt.table.name)
    if key in _WARNED:
        return
    _WARNED.add(key)
    log.warning(
        "Table '%s' of model '%s' lacks server defaults: %s. Rows that other tools insert without "
        "these columns are refused until you generate the migration with "
        "db.migrations.generate('migrations'), review it and run db.migrations.apply(directory='migrations').",
        mt.table.name, mt.model.name, "; ".join(s.description for s in steps),
    )  # fmt: skip


_WARNED: set[tuple[str, str]] = set()


def destructive_error(subject: str, steps: Sequence[Step]) -> DestructiveMigrationError:
    plan = MigrationPlan(tuple(steps))
    what = "; ".join(s.description for s in steps if s.destructive)
    return DestructiveMigrationError(
        f"{subject} needs a destructive change: {what}. Nothing was changed. It would run:\n{plan.sql}",
        sql=plan.up,
        hint="if you mean it, run db.migrations.apply(confirm_destructive=True): dropped and narrowed "
        "values are kept in a backup table, and db.migrations.rollback() puts them back. Otherwise "
        "change the model back.",
    )


async def check_untouched(conn: Connection, mt: Any) -> None:
    live = await read_table(mt.dialect, conn, mt.table.name)
    if live is None:
        raise MigrationError(
            f"Table '{mt.table.name}' of model '{mt.model.name}' does not exist, and this DataFlow was "
            "opened with existing_schema=True, which never creates or alters tables.",
            hint="create the table with your own migration tool, or drop existing_schema=True.",
        )
    missing = [c for c in mt.columns if c not in live.columns]
    if missing:
        raise MigrationError(
            f"Table '{mt.table.name}' has no column(s) {', '.join(missing)} that model '{mt.model.name}' "
            "declares, and existing_schema=True never alters tables.",
            hint="remove the field(s) from the model, or use db.reflect() to model the table as it is.",
        )
