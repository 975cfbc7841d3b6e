"""Server DEFAULTs (schema.py, migrations/): rows that other tools insert get the model's defaults.

Each test writes with the raw driver (sqlite3, asyncpg, duckdb), leaving the columns out, and
reads the row back through a node.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import re
import sqlite3
from decimal import Decimal
from typing import Optional

import pytest
import sqlalchemy as sa
from conftest import SCHEMA, postgres_url
from sqlalchemy.schema import CreateTable

from dataflow_lab import DataFlow, LocalRuntime, MigrationRequiredError, WorkflowBuilder, _loop
from dataflow_lab.audit import audit_table

BACKENDS = ("sqlite_file", "duckdb_file", "postgres")


class Tier(enum.Enum):
    FREE = "free"
    PRO = "pro"


def define(db):
    @db.model
    class Gadget:
        name: str
        qty: int = 3
        active: bool = True
        note: Optional[str] = "n/a"  # noqa: UP045 - as users write it
        price: float = 0.25
        cost: Decimal = Decimal("9.99")
        tier: Tier = Tier.PRO
        since: dt.date = dt.date(2024, 2, 29)
        seen: dt.datetime = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        blob: bytes = b"\x00\xff"
        tags: dict = {"bb": 1, "a": [1, 2]}  # noqa: RUF012 - a model default, copied per row
        label: Optional[str] = None  # noqa: UP045

    return Gadget


DEFAULTS = {
    "qty": 3, "active": True, "note": "n/a", "price": 0.25, "cost": Decimal("9.99"), "tier": Tier.PRO,
    "since": dt.date(2024, 2, 29), "seen": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    "blob": b"\x00\xff", "tags": {"bb": 1, "a": [1, 2]}, "label": None,
}  # fmt: skip


@pytest.fixture(params=BACKENDS)
def place(request, tmp_path) -> tuple[str, str]:
    """(backend, URL) of a database that another client can open too."""
    if request.param == "postgres":
        return "postgres", postgres_url()
    suffix = "db" if request.param == "sqlite_file" else "duckdb"
    return request.param, f"{request.param.split('_')[0]}:///{tmp_path / f'shared.{suffix}'}"


def raw_execute(backend: str, url: str, sql: str) -> list:
    """Run one statement with the database's own driver, outside dataflow_lab; its rows, if any."""
    if backend == "sqlite_file":
        con = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    if backend == "duckdb_file":
        import duckdb

        con = duckdb.connect(url.split("///", 1)[1])  # this process's instance: the DataFlow's database
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    import asyncpg

    async def go() -> list:
        con = await asyncpg.connect(url.split("?", 1)[0], server_settings={"search_path": SCHEMA})
        try:
            return list(await con.fetch(sql))
        finally:
            await con.close()

    return asyncio.run(go())


def run(db, node_type: str, params: dict) -> dict:
    workflow = WorkflowBuilder(dataflow=db)
    workflow.add_node(node_type, "n", params)
    return LocalRuntime().execute(workflow.build())[0]["n"]


def only_row(db) -> dict:
    (row,) = run(db, "GadgetListNode", {})["records"]
    return row


def check_filled(row: dict, before: dt.datetime) -> None:
    assert {k: row[k] for k in DEFAULTS} == DEFAULTS
    for stamp in ("created_at", "updated_at"):  # aware, in UTC, the moment the row went in
        value = row[stamp]
        assert value.utcoffset() == dt.timedelta(0)
        assert before - dt.timedelta(seconds=1) <= value <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)


def test_a_row_inserted_by_another_tool_gets_the_models_defaults_and_timestamps(place):
    backend, url = place
    db = DataFlow(url)
    define(db)
    db.create_tables()
    before = dt.datetime.now(dt.UTC)
    raw_execute(backend, url, "INSERT INTO gadgets (name) VALUES ('from psql')")
    row = only_row(db)
    assert row["name"] == "from psql"
    check_filled(row, before)
    db.close()


def test_timestamps_a_database_fills_are_stored_as_ours_are(place):
    backend, url = place
    db = DataFlow(url)
    define(db)
    run(db, "GadgetCreateNode", {"name": "ours"})
    raw_execute(backend, url, "INSERT INTO gadgets (name) VALUES ('theirs')")
    if backend == "sqlite_file":  # TEXT, ISO 8601 in UTC with six digits after the second
        stored = raw_execute(backend, url, "SELECT created_at, typeof(created_at) FROM gadgets ORDER BY id")
        pattern = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
        assert [kind for _, kind in stored] == ["text", "text"]
        assert pattern.fullmatch(stored[1][0]), stored
    else:  # the column's own type: timestamp with time zone, to the microsecond
        kind = "pg_typeof" if backend == "postgres" else "typeof"
        stored = raw_execute(backend, url, f"SELECT {kind}(created_at)::text FROM gadgets")
        assert {r[0].lower() for r in stored} == {"timestamp with time zone"}
    ours, theirs = run(db, "GadgetListNode", {"order_by": ["id"]})["records"]
    assert type(ours["created_at"]) is type(theirs["created_at"]) is dt.datetime
    assert ours["created_at"] <= theirs["created_at"]
    db.close()


def legacy_table(db) -> None:
    """The model's table as earlier versions made it: no server DEFAULTs (and a row in it)."""
    table = db.table("Gadget").table
    bare = sa.Table(table.name, sa.MetaData(), *(c._copy() for c in table.columns))
    for column in bare.columns:
        if not column.primary_key:
            column.server_default = None

    async def create() -> None:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            for sql in dialect.before_create(bare):
                await conn.execute(sql)
            await conn.execute(dialect.ddl(CreateTable(bare)))
        finally:
            await dialect.release(conn)

    _loop.run(create())


def test_an_existing_table_without_defaults_gets_them_from_a_migration(place):
    backend, url = place
    db = DataFlow(url)
    define(db)
    legacy_table(db)
    plan = db.migrations.plan()
    assert not plan.destructive
    described = " ".join(plan.describe())
    for name in ("qty", "active", "tags", "created_at", "updated_at"):
        assert f"set default of '{name}'" in described
    assert "label" not in described  # None: no DEFAULT (NULL is implied)
    run(db, "GadgetCreateNode", {"name": "before"})  # the first use applies it (development)
    assert not db.migrations.plan()
    before = dt.datetime.now(dt.UTC)
    raw_execute(backend, url, "INSERT INTO gadgets (name) VALUES ('after')")
    first, second = run(db, "GadgetListNode", {"order_by": ["id"]})["records"]
    assert first["name"] == "before" and {k: first[k] for k in DEFAULTS} == DEFAULTS
    check_filled(second, before)

    db.migrations.rollback()  # back to no DEFAULT: another tool's insert is refused again
    assert db.migrations.plan()
    with pytest.raises(Exception, match="(?i)null"):
        raw_execute(backend, url, "INSERT INTO gadgets (name) VALUES ('refused')")
    db.close()


def test_production_keeps_running_and_warns_until_the_reviewed_defaults_migration_is_applied(
    place, tmp_path, caplog
):
    backend, url = place
    db = DataFlow(url, auto_migrate=False)
    define(db)
    legacy_table(db)
    with caplog.at_level(logging.WARNING, logger="dataflow_lab.migrations"):
        assert run(db, "GadgetCreateNode", {"name": "ours"})["qty"] == 3  # our writes need no DEFAULT
    (warning,) = [r.getMessage() for r in caplog.records if "lacks server defaults" in r.getMessage()]
    assert "set default of 'qty'" in warning and "db.migrations.generate" in warning
    path = db.migrations.generate(tmp_path / "migrations")
    assert "DEFAULT" in path.read_text()
    db.migrations.apply(directory=tmp_path / "migrations")
    raw_execute(backend, url, "INSERT INTO gadgets (name) VALUES ('theirs')")
    assert [r["qty"] for r in run(db, "GadgetListNode", {"order_by": ["id"]})["records"]] == [3, 3]
    db.close()


def test_production_still_refuses_other_changes_with_the_defaults(place):
    _backend, url = place
    db = DataFlow(url, auto_migrate=False)
    define(db)
    legacy_table(db)

    @db.model
    class Gadget:  # the legacy table, and a new field
        name: str
        qty: int = 3
        size: Optional[int] = None  # noqa: UP045

    with pytest.raises(MigrationRequiredError, match="size"):
        run(db, "GadgetCreateNode", {"name": "x"})
    db.close()


def test_dataflow_labs_own_tables_get_no_server_defaults(db):
    @db.model
    class Note:
        text: str
        __dataflow__ = {"audit_log": True}

    run_note = WorkflowBuilder(db)
    run_note.add_node("NoteCreateNode", "n", {"text": "x"})
    LocalRuntime().execute(run_note.build())
    assert db.table("Note").table.c.created_at.server_default is not None
    audit = audit_table(db).table
    assert all(c.server_default is None for c in audit.columns if not c.primary_key)


def test_defaults_read_back_from_the_database_are_not_diffed_again(place):
    """Every database spells a DEFAULT its own way ('-3'::integer, CAST(... AS TEXT), JSONB's key
    order): a table just made, or just migrated, plans nothing, also from a second DataFlow."""
    _backend, url = place
    db = DataFlow(url)
    define(db)
    db.create_tables()
    assert not db.migrations.plan()
    db.close()
    again = DataFlow(url)
    define(again)
    assert not again.migrations.plan()
    assert run(again, "GadgetCreateNode", {"name": "x"})["qty"] == 3
    again.close()


def test_a_changed_or_removed_default_is_migrated(place):
    backend, url = place
    db = DataFlow(url)
    define(db)
    db.create_tables()

    @db.model
    class Gadget:  # qty's default changed, note's removed (note stays Optional)
        name: str
        qty: int = 5
        note: Optional[str]  # noqa: UP045

    plan = db.migrations.plan()
    described = " ".join(plan.describe())
    assert "set default of 'qty' to 5" in described and "drop default 'note'" in described
    db.migrations.apply(confirm_destructive=True)  # the dropped columns of the first model
    raw_execute(backend, url, "INSERT INTO gadgets (name) VALUES ('raw')")
    row = run(db, "GadgetListNode", {})["records"][0]
    assert (row["qty"], row["note"]) == (5, None)
    assert not db.migrations.plan()
    db.close()
