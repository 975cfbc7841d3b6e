"""Migrations (migrations/): diff, auto-migrate policy, plan/apply/rollback, files, locks."""

from __future__ import annotations

import datetime as dt
import enum
import threading
from decimal import Decimal
from typing import Optional

import pytest

from dataflow_lab import (
    DataFlow,
    DestructiveMigrationError,
    LocalRuntime,
    MigrationError,
    MigrationRequiredError,
    WorkflowBuilder,
    _loop,
)
from dataflow_lab.migrations.diff import widens
from dataflow_lab.migrations.live import read_table, table_names


def execute(db, build) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    build(wf)
    return LocalRuntime().execute(wf.build())[0]


def rows(db) -> list[dict]:
    records = execute(db, lambda wf: wf.add_node("UserListNode", "l", {"order_by": ["id"]}))["l"]["records"]
    return [{k: v for k, v in r.items() if k not in ("created_at", "updated_at")} for r in records]


def live(db, table: str = "users"):
    async def read():
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            return await read_table(dialect, conn, table)
        finally:
            await dialect.release(conn)

    return _loop.run(read())


def tables(db) -> list[str]:
    async def read():
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            return await table_names(dialect, conn)
        finally:
            await dialect.release(conn)

    return _loop.run(read())


def define_v1(db):
    @db.model
    class User:
        name: str
        email: str
        score: float
        __dataflow__ = {"indexes": ["email"]}

    return User


def define_v2(db):
    @db.model
    class User:  # email dropped, score narrowed to int, age added
        name: str
        score: int
        age: int = 30

    return User


V1_ROWS = [
    {"name": "Alice", "email": "alice@x", "score": 2.5},
    {"name": "Bob", "email": "bob@x", "score": 7.25},
    {"name": "Cy", "email": "cy@x", "score": -1.0},
]


def seed(db) -> list[dict]:
    define_v1(db)
    if not db.config.auto_migrate:  # production creates no table at first use: this is its command
        db.create_tables()
    execute(db, lambda wf: wf.add_node("UserBulkCreateNode", "b", {"data": V1_ROWS}))
    return rows(db)


# ---------------------------------------------------------------------------- the round trip


def test_plan_apply_rollback_round_trip_keeps_every_row_and_value(db):
    before = seed(db)
    live_score_type = live(db).columns["score"].type
    define_v2(db)

    plan = db.migrations.plan()
    assert plan.destructive
    described = " ".join(plan.describe())
    assert "email" in described and "score" in described and "age" in described
    assert plan.down  # every step can be undone
    assert live(db).columns.keys() >= {"email", "score"}  # planning changed nothing

    applied = db.migrations.apply(confirm_destructive=True)
    assert len(applied) == 1 and applied[0].destructive
    after = rows(db)
    assert [(r["id"], r["name"], r["age"]) for r in after] == [
        (1, "Alice", 30),
        (2, "Bob", 30),
        (3, "Cy", 30),
    ]
    assert [r["score"] for r in after] == [2, 7, -1]
    assert "email" not in live(db).columns

    rolled = db.migrations.rollback(confirm_destructive=True)
    assert [m.name for m in rolled] == [applied[0].name]
    shape = live(db)
    assert "age" not in shape.columns and "email" in shape.columns
    assert not shape.columns["email"].nullable and shape.columns["score"].type == live_score_type
    assert any(i.columns == ("email",) for i in shape.indexes)  # the index came back too
    define_v1(db)
    assert rows(db) == before  # emails and exact scores restored from the backup
    assert not [t for t in tables(db) if "backup" in t]  # and the backup table is gone
    assert not db.migrations.plan()


def test_history_records_each_migration_with_its_sql_and_rollback(db):
    seed(db)
    define_v2(db)
    db.migrations.apply(confirm_destructive=True)
    db.migrations.rollback(confirm_destructive=True)
    history = db.migrations.history()
    assert [m.seq for m in history] == [1, 2]
    create, change = history
    assert create.name == "0001_create_users" and create.source == "auto"
    assert change.name.startswith("0002_users") and change.source == "api"
    assert change.rolled_back_at is not None and create.rolled_back_at is None
    assert any("email" in sql for sql in change.up) and change.down
    assert len(create.checksum) == 64


# ---------------------------------------------------------------------------- development policy


def test_an_additive_change_is_applied_at_first_use_and_recorded(db):
    seed(db)

    @db.model
    class User:
        name: str
        email: str
        score: float
        nickname: Optional[str] = None  # noqa: UP045
        __dataflow__ = {"indexes": ["email", "name"]}

    assert [r["nickname"] for r in rows(db)] == [None, None, None]
    assert any(i.columns == ("name",) for i in live(db).indexes)
    last = db.migrations.history()[-1]
    assert last.source == "auto" and not last.destructive
    assert "nickname" in last.name


def test_a_widening_retype_is_additive_and_keeps_values(db):
    define_v1(db)

    @db.model
    class User:
        name: str
        email: str
        score: int

    execute(db, lambda wf: wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x", "score": 3}))
    define_v1(db)  # int -> float widens: no confirmation needed
    assert rows(db)[0]["score"] == 3.0


def test_a_destructive_change_is_refused_with_its_sql_and_changes_nothing(db):
    before = seed(db)
    define_v2(db)
    with pytest.raises(DestructiveMigrationError) as info:
        db.migrations.apply()
    assert "confirm_destructive=True" in str(info.value)
    assert any("email" in sql for sql in info.value.sql)
    assert "email" in live(db).columns
    define_v1(db)
    assert rows(db) == before


def test_rolling_back_a_table_creation_needs_confirmation(db):
    seed(db)
    with pytest.raises(DestructiveMigrationError, match="DROP TABLE"):
        db.migrations.rollback()
    assert live(db) is not None


def test_rollback_with_nothing_applied_says_so(db):
    with pytest.raises(MigrationError, match="no applied migration"):
        db.migrations.rollback()


def test_an_index_removed_from_the_model_is_dropped(db):
    seed(db)

    @db.model
    class User:
        name: str
        email: str
        score: float

    assert len(rows(db)) == 3
    assert not any(i.columns == ("email",) for i in live(db).indexes)


def test_a_unique_constraint_added_to_the_model_is_created_and_enforced(db):
    seed(db)

    @db.model
    class User:
        name: str
        email: str
        score: float
        __dataflow__ = {"indexes": ["email"], "unique": ["name"]}

    assert len(rows(db)) == 3
    assert any(i.columns == ("name",) and i.unique for i in live(db).indexes)
    with pytest.raises(Exception, match="(?i)unique|duplicate|constraint"):
        execute(
            db, lambda wf: wf.add_node("UserCreateNode", "c", {"name": "Alice", "email": "z", "score": 1})
        )


def test_ids_keep_counting_after_a_rebuild(db):
    seed(db)
    define_v2(db)
    db.migrations.apply(confirm_destructive=True)
    new = execute(db, lambda wf: wf.add_node("UserCreateNode", "c", {"name": "Dee", "score": 1}))["c"]
    assert new["id"] == 4


# ---------------------------------------------------------------------------- production: files


def test_production_refuses_to_migrate_and_applies_reviewed_files(url, tmp_path):
    db = DataFlow(url, auto_migrate=False)
    seed(db)  # db.create_tables() created the table: no table is created at first use

    @db.model
    class User:
        name: str
        email: str
        score: float
        age: int = 30
        __dataflow__ = {"indexes": ["email"]}

    with pytest.raises(MigrationRequiredError, match="generate"):
        rows(db)
    assert "age" not in live(db).columns

    path = db.migrations.generate(tmp_path / "migrations")
    assert path.name == "0002_users_add_age.sql"  # the history's 0001 created the table
    text = path.read_text()
    assert "-- +up" in text and "-- +down" in text and "age" in text
    assert db.migrations.apply(directory=tmp_path / "migrations")[0].source == str(path)
    assert [r["age"] for r in rows(db)] == [30, 30, 30]
    assert db.migrations.apply(directory=tmp_path / "migrations") == []  # applied once only
    assert db.migrations.generate(tmp_path / "migrations") is None

    path.write_text(text.replace("-- +down", "SELECT 1;\n-- +down"))
    with pytest.raises(MigrationError, match="edited after it was applied"):
        db.migrations.apply(directory=tmp_path / "migrations")
    db.close()


def test_production_refuses_a_run_on_a_missing_table_before_any_node_runs(url, tmp_path):
    db = DataFlow(url, auto_migrate=False)
    define_v1(db)
    ran = []

    def note() -> dict:
        ran.append(1)
        return {}

    def build(wf: WorkflowBuilder) -> None:
        wf.add_node(note, "first")
        wf.add_node("UserBulkCreateNode", "b", {"data": V1_ROWS})

    with pytest.raises(MigrationRequiredError) as info:
        execute(db, build)
    message = str(info.value)
    assert "model 'User'" in message and "Table 'users'" in message
    assert "db.create_tables()" in message and "db.migrations.generate" in message
    assert ran == [] and "users" not in tables(db)  # nothing ran, nothing was created

    path = db.migrations.generate(tmp_path)  # the reviewable way: a CREATE TABLE file
    assert path.name == "0001_create_users.sql" and "CREATE TABLE" in path.read_text()
    db.migrations.apply(directory=tmp_path)
    execute(db, lambda wf: wf.add_node("UserBulkCreateNode", "b", {"data": V1_ROWS}))
    assert [r["name"] for r in rows(db)] == ["Alice", "Bob", "Cy"]
    db.close()


def test_create_tables_is_the_command_that_creates_a_missing_table_in_production(url):
    db = DataFlow(url, auto_migrate=False)
    define_v1(db)
    assert db.create_tables() == ["User"]
    assert "email" in live(db).columns

    @db.model
    class User:  # noqa: F811 - one field later: create_tables() still migrates nothing
        name: str
        email: str
        score: float
        age: int = 30
        __dataflow__ = {"indexes": ["email"]}

    with pytest.raises(MigrationRequiredError, match="add column 'age'"):
        db.create_tables()
    db.close()


def test_a_reviewer_may_edit_a_generated_file_before_applying_it(url, tmp_path):
    db = DataFlow(url, auto_migrate=False)
    seed(db)

    @db.model
    class User:
        name: str
        email: str
        score: float
        level: int = 1
        __dataflow__ = {"indexes": ["email"]}

    path = db.migrations.generate(tmp_path)
    path.write_text(path.read_text().replace("-- +down", "UPDATE users SET level = 5;\n-- +down"))
    db.migrations.apply(directory=tmp_path)
    assert [r["level"] for r in rows(db)] == [5, 5, 5]
    db.close()


def test_a_missing_migration_directory_is_a_clear_error(db, tmp_path):
    with pytest.raises(MigrationError, match="does not exist"):
        db.migrations.apply(directory=tmp_path / "nowhere")


# ---------------------------------------------------------------------------- two appliers at once


@pytest.mark.parametrize("kind", ["sqlite_file", "postgres"])
def test_two_processes_applying_at_once_apply_exactly_once(kind, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'app.db'}" if kind == "sqlite_file" else request.getfixturevalue("pg_url")
    first, second = DataFlow(url), DataFlow(url)
    seed(first)
    define_v2(first)
    define_v2(second)
    results: dict[str, list] = {}
    start = threading.Barrier(2)

    def apply(name: str, db: DataFlow) -> None:
        start.wait()
        results[name] = db.migrations.apply(confirm_destructive=True)

    threads = [threading.Thread(target=apply, args=(n, d)) for n, d in (("a", first), ("b", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results.values()) == [0, 1]  # one applied; the other found it done
    (applied,) = results["a"] or results["b"]
    assert [m.name for m in second.migrations.history()] == ["0001_create_users", applied.name]
    assert [r["age"] for r in rows(second)] == [30, 30, 30]
    first.close()
    second.close()


# ---------------------------------------------------------------------------- the diff's type rules


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("INTEGER", "BIGINT", True),
        ("BIGINT", "INTEGER", False),
        ("BIGINT", "DOUBLE", True),
        ("DOUBLE", "BIGINT", False),
        ("BIGINT", "VARCHAR", True),
        ("VARCHAR", "BIGINT", False),
        ("BLOB", "VARCHAR", False),
        ("VARCHAR(10)", "VARCHAR(20)", True),
        ("VARCHAR(20)", "VARCHAR(10)", False),
        ("VARCHAR", "VARCHAR(10)", False),
        ("TIMESTAMP", "TIMESTAMPWITHTIMEZONE", True),
    ],
)
def test_widening_retypes_are_the_ones_that_keep_every_value(old, new, expected):
    assert widens(old, new) is expected


class Tier(enum.Enum):
    FREE = "free"
    PRO = "pro"


def test_added_fields_give_existing_rows_their_defaults_of_every_type(db):
    seed(db)

    @db.model
    class User:
        name: str
        email: str
        score: float
        active: bool = True
        tags: list = ["a"]  # noqa: RUF012 - a model default, copied per row
        blob: bytes = b"\x00\xff"
        since: dt.date = dt.date(2024, 2, 29)
        seen: dt.datetime = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        price: Decimal = Decimal("9.99")
        tier: Tier = Tier.PRO
        __dataflow__ = {"indexes": ["email"]}

    first = rows(db)[0]
    assert first["active"] is True and first["tags"] == ["a"] and first["blob"] == b"\x00\xff"
    assert first["since"] == dt.date(2024, 2, 29)
    assert first["seen"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert first["price"] == Decimal("9.99") and first["tier"] is Tier.PRO


def define_v1_with_age(db):
    @db.model
    class User:
        name: str
        email: str
        score: float
        age: int = 30
        __dataflow__ = {"indexes": ["email"]}


def test_an_applier_waits_for_the_sqlite_write_lock_and_then_plans_afresh(tmp_path):
    import sqlite3

    path = tmp_path / "app.db"
    db = DataFlow(f"sqlite:///{path}")
    seed(db)
    define_v1_with_age(db)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    result: list = []
    applier = threading.Thread(target=lambda: result.append(db.migrations.apply()))
    applier.start()
    applier.join(0.3)  # not a timing assertion: whichever ran first, the outcome below is the same
    holder.execute(
        "ALTER TABLE users ADD COLUMN age INTEGER NOT NULL DEFAULT 30"
    )  # the other process migrates
    holder.execute("COMMIT")
    applier.join()
    assert result == [[]]  # planned inside the lock: it found the column there, and did nothing
    assert [r["age"] for r in rows(db)] == [30, 30, 30]
    holder.close()
    db.close()


def test_an_applier_waits_for_the_postgres_advisory_lock_and_then_plans_afresh(pg_url):
    import asyncio

    import asyncpg
    from conftest import PG_URL, SCHEMA

    db = DataFlow(pg_url)
    seed(db)
    define_v1_with_age(db)
    result: list = []

    async def other_process() -> None:
        conn = await asyncpg.connect(PG_URL, server_settings={"search_path": SCHEMA})
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('dataflow_lab:dataflow_migrations'))"
                )
                applier.start()
                waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                for _ in range(500):  # until the applier waits for our lock (bounded: never hang)
                    if await conn.fetchval(waiting):
                        break
                    await asyncio.sleep(0.02)
                await conn.execute("ALTER TABLE users ADD COLUMN age BIGINT NOT NULL DEFAULT 30")
        finally:
            await conn.close()

    applier = threading.Thread(target=lambda: result.append(db.migrations.apply()))
    asyncio.run(other_process())
    applier.join()
    assert result == [[]]
    assert [r["age"] for r in rows(db)] == [30, 30, 30]
    db.close()


def test_making_an_optional_field_required_is_destructive_and_works_once_confirmed(db):
    define_v1(db)

    @db.model
    class User:
        name: str
        email: str
        score: float
        nick: Optional[str] = None  # noqa: UP045
        __dataflow__ = {"indexes": ["email"]}

    execute(
        db,
        lambda wf: wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a", "score": 1, "nick": "a"}),
    )

    @db.model
    class User:  # noqa: F811
        name: str
        email: str
        score: float
        nick: str = ""
        __dataflow__ = {"indexes": ["email"]}

    with pytest.raises(DestructiveMigrationError, match="set not null 'nick'"):
        rows(db)
    db.migrations.apply(confirm_destructive=True)
    assert rows(db)[0]["nick"] == "a"
    assert not live(db).columns["nick"].nullable


def test_a_unique_constraint_removed_from_the_model_is_dropped_and_rows_kept(db):
    @db.model
    class User:
        name: str
        __dataflow__ = {"unique": ["name"]}

    execute(db, lambda wf: wf.add_node("UserCreateNode", "c", {"name": "A"}))

    @db.model
    class User:  # noqa: F811
        name: str

    assert [r["name"] for r in rows(db)] == ["A"]
    assert not any(i.unique for i in live(db).indexes)
    execute(db, lambda wf: wf.add_node("UserCreateNode", "c", {"name": "A"}))  # duplicates are allowed now
    assert len(rows(db)) == 2


def test_a_plan_shows_itself_in_text_and_in_a_notebook(db):
    seed(db)
    define_v2(db)
    plan = db.migrations.plan()
    assert "users: rebuild" in repr(plan) or "drop column 'email'" in repr(plan)
    assert "[destructive]" in repr(plan)
    page = plan._repr_html_()
    assert "<table>" in page and "destructive" in page and "email" in page
    define_v1(db)
    assert repr(db.migrations.plan()) == "MigrationPlan(nothing to do)"


def test_generate_into_an_empty_directory_numbers_after_the_history(url, tmp_path):
    db = DataFlow(url, auto_migrate=False)
    seed(db)

    @db.model
    class User:
        name: str
        email: str
        score: float
        age: int = 30
        __dataflow__ = {"indexes": ["email"]}

    first = db.migrations.generate(tmp_path / "first")
    db.migrations.apply(directory=tmp_path / "first")

    @db.model
    class User:  # noqa: F811 - the model grows again
        name: str
        email: str
        score: float
        age: int = 30
        level: int = 1
        __dataflow__ = {"indexes": ["email"]}

    second = db.migrations.generate(tmp_path / "second")  # an empty directory
    names = [m.name for m in db.migrations.history()]
    assert names[-1] == first.stem and second.name.startswith(f"{len(names) + 1:04d}_")
    assert len({name[:4] for name in names + [second.stem]}) == len(names) + 1  # no number twice
    db.close()
