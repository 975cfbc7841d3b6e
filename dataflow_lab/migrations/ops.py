"""Changes rendered as steps: up SQL, down SQL, and whether each can lose data.

PostgreSQL alters tables in place (its DDL is transactional). SQLite and
DuckDB refuse many ALTERs (DuckDB will not drop or retype a column that an
index or constraint depends on), so there a table whose columns change is
*rebuilt*: a new table with the target shape, the rows copied across, the old
table dropped and the new one renamed, its indexes recreated. Dropped or
narrowed values are first copied to a backup table, so a rollback puts them
back.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from ..dialects import Dialect
from .live import ColumnShape, IndexShape, TableShape, column_default

if TYPE_CHECKING:  # pragma: no cover
    from .diff import Change

__all__ = ["DATA_STEP", "Recast", "Step", "create_steps", "table_steps", "typed_literal"]

DATA_STEP = "DATAFLOW_LAB"  # the first word of a data step's statement (sealing.py rewrites columns)


class Step(NamedTuple):
    """One reversible piece of a migration."""

    table: str
    description: str
    up: tuple[str, ...]
    down: tuple[str, ...]
    destructive: bool = False  # up can lose or refuse data
    down_destructive: bool = False  # down can (it drops what up created)
    slug: str = ""  # for names: "users_add_age"
    defaults_only: bool = False  # it only sets or drops server DEFAULTs (what other tools' inserts get)


class Recast(NamedTuple):
    """How a retyped column's values convert, where a CAST would not keep them (bytes to and from
    text, as hex: migrations/sealing.py): SQL templates of the column (``{0}``) to the new type and
    back, and whether the new type is the text one (MySQL converts while the column is a BLOB)."""

    to_new: str
    to_old: str
    new_is_text: bool


class _Sql:
    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self.q = dialect.sa_dialect.identifier_preparer.quote

    def type_of(self, column: sa.Column) -> str:
        return column.type.compile(dialect=self.dialect.sa_dialect)

    def cast(self, expr: str, type_sql: str) -> str:
        return f"CAST({expr} AS {type_sql})"

    def create_index(self, table: str, index: IndexShape, types: Mapping[str, str]) -> str:
        """``types``: the SQL type of each column (an index on MySQL's TEXT takes a prefix)."""
        unique = "UNIQUE " if index.unique else ""
        column = self.dialect.index_column_sql
        cols = ", ".join(column(self.q(c), types.get(c, ""), unique=index.unique) for c in index.columns)
        return f"CREATE {unique}INDEX {self.q(index.name)} ON {self.q(table)} ({cols})"


def literal(dialect: Dialect, value: object, column: sa.Column) -> str:
    """A value as an SQL literal of the column's type (for DEFAULT clauses and back-fills)."""
    return typed_literal(dialect, value, column.type)


def typed_literal(dialect: Dialect, value: object, type_: sa.types.TypeEngine) -> str:
    """A driver value as an SQL literal of ``type_`` (a model's server DEFAULTs, schema.py)."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return dialect.bytes_literal(value)
    render = {"literal_binds": True}
    try:
        return str(sa.literal(value, type_=type_).compile(dialect=dialect.sa_dialect, compile_kwargs=render))
    except sa.exc.CompileError:  # no literal form for this type (JSONB...): cast its text
        text = sa.literal(value if isinstance(value, str) else str(value), type_=sa.Text)
        kind = type_.compile(dialect=dialect.sa_dialect)
        return dialect.cast_literal(
            str(text.compile(dialect=dialect.sa_dialect, compile_kwargs=render)), kind
        )


def create_steps(dialect: Dialect, table: sa.Table) -> list[Step]:
    up = [*dialect.before_create(table), _ddl(dialect, CreateTable(table))]
    up += [_ddl(dialect, CreateIndex(index)) for index in table.indexes]
    down = [f"DROP TABLE {_Sql(dialect).q(table.name)}"]
    return [
        Step(table.name, f"create table {table.name}", tuple(up), tuple(down), down_destructive=True,
             slug=f"create_{table.name}")
    ]  # fmt: skip


def table_steps(
    dialect: Dialect,
    table: sa.Table,
    live: TableShape,
    changes: Sequence[Change],
    defaults: Mapping[str, str],
    recasts: Mapping[str, Recast] | None = None,
) -> list[Step]:
    """Steps that apply ``changes`` to ``live`` (one rebuild when the database needs it).

    ``recasts``: the columns whose retype converts their values by these expressions, not a CAST.

    ``defaults`` fill added columns of existing rows. SQLite keeps an ADD COLUMN's DEFAULT for
    good, so a column whose fill is not its server DEFAULT (a back-filled one-off value, such as a
    tenant), or whose DEFAULT is an expression (which ADD COLUMN refuses), is added by a rebuild.
    """
    in_place = dialect.alters_in_place

    def rebuilds(c: Change) -> bool:
        if c.kind == "add_index":
            return False
        if c.kind == "drop_index":
            return c.old.constraint and "drop_constraint" not in in_place  # type: ignore[union-attr]
        if c.kind == "add_column" and dialect.added_column_keeps_default:
            fill, default = defaults.get(c.name), c.new.default  # type: ignore[union-attr]
            expression = default is not None and default.startswith("(")
            return (not c.new.nullable and fill is None) or fill != default or expression  # type: ignore[union-attr]
        return c.kind not in in_place

    recasts = recasts or {}
    if any(rebuilds(c) for c in changes):  # the new table has the model's constraints and indexes
        return [_rebuild(dialect, table, live, changes, defaults, recasts)]
    sql = _Sql(dialect)
    steps = []
    for c in changes:
        if c.kind in ("add_index", "drop_index"):
            steps.append(_index_step(dialect, live, c, table))
        else:
            steps.append(_column_step(sql, table, live, c, defaults, recasts.get(c.name)))
    return steps


def _index_step(dialect: Dialect, live: TableShape, c: Change, table: sa.Table) -> Step:
    sql, t = _Sql(dialect), live.name
    types = {col.name: sql.type_of(col) for col in table.columns}
    types.update({name: col.raw_type for name, col in live.columns.items()})
    index: IndexShape = c.new if c.kind == "add_index" else c.old  # type: ignore[assignment]
    if index.constraint and c.kind == "drop_index":  # where "drop_constraint" is in place; others rebuild
        cols = ", ".join(sql.q(x) for x in index.columns)
        up = dialect.drop_constraint_sql(sql.q(t), sql.q(index.name))
        down = f"ALTER TABLE {sql.q(t)} ADD CONSTRAINT {sql.q(index.name)} UNIQUE ({cols})"
    else:
        create = sql.create_index(t, index, types)
        drop = dialect.drop_index_sql(sql.q(t), sql.q(index.name))
        up, down = (create, drop) if c.kind == "add_index" else (drop, create)
    return Step(t, f"{t}: {c.describe()}", (up,), (down,), slug=f"{t}_{c.kind}_{c.name}")


def _column_step(
    sql: _Sql,
    table: sa.Table,
    live: TableShape,
    c: Change,
    defaults: Mapping[str, str],
    recast: Recast | None,
) -> Step:
    t, col = sql.q(live.name), sql.q(c.name)
    alter = f"ALTER TABLE {t} ALTER COLUMN {col}"
    describe = f"{live.name}: {c.describe()}"
    name = f"{live.name}_{c.kind.split('_')[0]}_{c.name}"
    if c.kind == "add_column":
        column, default = table.c[c.name], c.new.default  # type: ignore[union-attr]
        clause = f"ALTER TABLE {t} ADD COLUMN {col} {sql.type_of(column)}"
        clause += "" if c.new.nullable else " NOT NULL"  # type: ignore[union-attr]
        fill = defaults.get(c.name, default)  # existing rows get it
        up = [clause + (f" DEFAULT {fill}" if fill is not None else "")]
        if fill != default and not sql.dialect.added_column_keeps_default:  # then the column keeps its own
            up.append(f"{alter} SET DEFAULT {default}" if default is not None else f"{alter} DROP DEFAULT")
        down = (f"ALTER TABLE {t} DROP COLUMN {col}",)
        return Step(live.name, describe, tuple(up), down, down_destructive=True, slug=name)
    if c.kind in ("set_default", "drop_default"):
        old, new = c.old.default, c.new.default  # type: ignore[union-attr]
        forward = f"{alter} SET DEFAULT {new}" if new is not None else f"{alter} DROP DEFAULT"
        back = f"{alter} SET DEFAULT {old}" if old is not None else f"{alter} DROP DEFAULT"
        return Step(live.name, describe, (forward,), (back,), slug=name, defaults_only=True)
    if c.kind in ("drop_not_null", "set_not_null"):
        live_column: ColumnShape = c.old  # type: ignore[assignment]
        raw, keeps = live_column.raw_type, live_column.default
        drop, add = (sql.dialect.nullability_sql(t, col, raw, n, keeps) for n in (True, False))
        forward, back = (drop, add) if c.kind == "drop_not_null" else (add, drop)
        return Step(live.name, describe, (forward,), (back,), destructive=c.destructive, slug=name)
    step = Step(live.name, describe, (), (), c.destructive, slug=name)
    return _drop_or_retype(sql, table, live, c, step, recast)


def _drop_or_retype(
    sql: _Sql, table: sa.Table, live: TableShape, c: Change, step: Step, recast: Recast | None = None
) -> Step:
    """Drop or retype a column in place; a destructive one saves its values first, for rollback."""
    t, col = sql.q(live.name), sql.q(c.name)
    old: ColumnShape = c.old  # type: ignore[assignment]
    backup = _backup_name(live.name) if c.destructive and live.primary_key else None
    up = [_backup_sql(sql, live, backup, [c.name])] if backup else []
    if c.kind == "drop_column":
        up.append(f"ALTER TABLE {t} DROP COLUMN {col}")
        down = [f"ALTER TABLE {t} ADD COLUMN {col} {old.raw_type}"]
    elif recast is not None:
        new_type = sql.type_of(table.c[c.name])
        up += _recast_sql(sql, t, col, new_type, recast.to_new, old, to_text=recast.new_is_text)
        down = _recast_sql(sql, t, col, old.raw_type, recast.to_old, old, to_text=not recast.new_is_text)
    else:  # retype
        new_type = sql.type_of(table.c[c.name])
        retype = sql.dialect.retype_sql
        up.append(retype(t, col, new_type, sql.cast(col, new_type), old.nullable, old.default))
        down = [retype(t, col, old.raw_type, sql.cast(col, old.raw_type), old.nullable, old.default)]
    restore, drop_backup = _restore_sql(sql, live, backup, [c.name]) if backup else ([], [])
    down += restore
    if c.kind == "drop_column" and not old.nullable:
        down.append(
            sql.dialect.nullability_sql(t, col, old.raw_type, False, old.default)
        )  # once the values are back
    return step._replace(up=tuple(up), down=tuple(down + drop_backup))


def _recast_sql(
    sql: _Sql, t: str, col: str, type_sql: str, convert: str, old: ColumnShape, *, to_text: bool
) -> list[str]:
    """Retype ``col`` converting each value by ``convert`` (a template of the column): in the
    ALTER's USING, or (MySQL, whose ALTER has none) by an UPDATE while the column is a BLOB."""
    dialect = sql.dialect
    alter = dialect.retype_sql(t, col, type_sql, convert.format(col), old.nullable, old.default)
    if dialect.retype_converts:
        return [alter]
    update = f"UPDATE {t} SET {col} = {convert.format(col)}"
    return [update, alter] if to_text else [alter, update]


def _ddl(dialect: Dialect, element: sa.schema.ExecutableDDLElement) -> str:
    return "\n".join(line.rstrip() for line in dialect.ddl(element).strip().splitlines() if line.strip())


def slug(steps: Sequence[Step]) -> str:
    """A file-name-friendly summary: create_users, users_add_age_drop_email..."""
    return "_".join(step.slug for step in steps)[:48].rstrip("_") or "migration"


def _backup_name(table: str) -> str:
    return f"_dataflow_backup_{table[:24]}_{uuid.uuid4().hex[:8]}"


def _backup_sql(sql: _Sql, live: TableShape, backup: str, columns: Sequence[str]) -> str:
    cols = ", ".join(sql.q(c) for c in (*live.primary_key, *columns))
    return f"CREATE TABLE {sql.q(backup)} AS SELECT {cols} FROM {sql.q(live.name)}"


def _restore_sql(
    sql: _Sql, live: TableShape, backup: str, columns: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Put saved values back with one UPDATE ... FROM (a join, not a subquery per row); drop the backup."""
    t, b = sql.q(live.name), sql.q(backup)
    match = " AND ".join(f"b.{sql.q(k)} = {t}.{sql.q(k)}" for k in live.primary_key)
    return [sql.dialect.update_from_sql(t, [sql.q(c) for c in columns], b, match)], [f"DROP TABLE {b}"]


_CREATE_TABLE = re.compile(r'^\s*CREATE\s+TABLE\s+(?:"(?:[^"]|"")*"|[^\s(]+)', re.IGNORECASE)


def _rebuild(
    dialect: Dialect,
    table: sa.Table,
    live: TableShape,
    changes: Sequence[Change],
    defaults: Mapping[str, str],
    recasts: Mapping[str, Recast],
) -> Step:
    """Copy the rows into a table of the new shape (up), or of the old one (down)."""
    sql, name = _Sql(dialect), live.name
    if live.ddl is None:
        raise ValueError(f"no stored CREATE TABLE for {name}")  # SQLite and DuckDB always keep one
    tmp = f"_dataflow_rebuild_{name[:40]}"
    saved = [c.name for c in changes if c.destructive and c.kind in ("drop_column", "retype")]
    backup = _backup_name(name) if saved and live.primary_key else None
    target = table.to_metadata(sa.MetaData(), name=tmp)
    up = [_backup_sql(sql, live, backup, saved)] if backup else []
    copy_up = []
    for column in table.columns:
        old = live.columns.get(column.name)
        if old is None:
            copy_up.append(defaults.get(column.name) or column_default(column) or "NULL")
        elif column.name in recasts:
            copy_up.append(recasts[column.name].to_new.format(sql.q(column.name)))
        elif old.type != dialect.declared_type(column):
            copy_up.append(sql.cast(sql.q(column.name), sql.type_of(column)))
        else:
            copy_up.append(sql.q(column.name))
    up += _swap(
        sql, name, tmp, _ddl(dialect, CreateTable(target)), [c.name for c in table.columns], copy_up, ""
    )
    up += [_ddl(dialect, CreateIndex(index)) for index in table.indexes]
    copy_down = []
    for old in live.columns.values():
        if backup and old.name in saved:
            copy_down.append(f"b.{sql.q(old.name)}")
        elif old.name not in table.c:
            copy_down.append("NULL")
        elif old.name in recasts:
            copy_down.append(recasts[old.name].to_old.format(f"{sql.q(name)}.{sql.q(old.name)}"))
        elif old.type != dialect.declared_type(table.c[old.name]):
            copy_down.append(sql.cast(f"{sql.q(name)}.{sql.q(old.name)}", old.raw_type))
        else:
            copy_down.append(f"{sql.q(name)}.{sql.q(old.name)}")
    join = ""
    if backup:
        match = " AND ".join(f"b.{sql.q(k)} = {sql.q(name)}.{sql.q(k)}" for k in live.primary_key)
        join = f" LEFT JOIN {sql.q(backup)} b ON {match}"
    old_ddl = _CREATE_TABLE.sub(f"CREATE TABLE {sql.q(tmp)}", live.ddl, count=1).rstrip().rstrip(";")
    down = _swap(sql, name, tmp, old_ddl, list(live.columns), copy_down, join)
    down += [i.sql.rstrip().rstrip(";") for i in live.indexes if i.sql and not i.constraint]
    down += [f"DROP TABLE {sql.q(backup)}"] if backup else []
    what = "; ".join(c.describe() for c in changes)
    destructive = any(c.destructive for c in changes)
    words = "_".join(f"{c.kind.split('_')[0]}_{c.name}" for c in changes if c.kind != "drop_index")
    defaults_only = all(c.kind in ("set_default", "drop_default") for c in changes)
    return Step(name, f"{name}: rebuild ({what})", tuple(up), tuple(down), destructive=destructive,
                slug=f"{name}_{words}", defaults_only=defaults_only)  # fmt: skip


def _swap(
    sql: _Sql, name: str, tmp: str, create: str, columns: list[str], exprs: list[str], join: str
) -> list[str]:
    cols = ", ".join(sql.q(c) for c in columns)
    return [
        *sql.dialect.rebuild_preamble,
        create,
        f"INSERT INTO {sql.q(tmp)} ({cols}) SELECT {', '.join(exprs)} FROM {sql.q(name)}{join}",
        f"DROP TABLE {sql.q(name)}",
        f"ALTER TABLE {sql.q(tmp)} RENAME TO {sql.q(name)}",
    ]
