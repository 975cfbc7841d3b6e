"""Turning a flag option on for a table that already has rows (multi_tenant, versioned, soft_delete)."""

from __future__ import annotations

import pytest

from dataflow_lab import (
    BackfillRequiredError,
    DataFlowError,
    LocalRuntime,
    MigrationError,
    ValidationError,
    WorkflowBuilder,
    _loop,
)
from dataflow_lab.migrations.live import read_table


def one(db, node_type, params=None, **execute):
    workflow = WorkflowBuilder(db)
    workflow.add_node(node_type, "node", params or {})
    return LocalRuntime().execute(workflow.build(), **execute)[0]["node"]


def live(db, table: str = "seats"):
    async def read():
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            return await read_table(dialect, conn, table)
        finally:
            await dialect.release(conn)

    return _loop.run(read())


def unique_groups(db) -> set[tuple[str, ...]]:
    return {i.columns for i in live(db).indexes if i.unique}


def define_seat(db, **options):
    @db.model
    class Seat:
        room: str
        number: int
        __dataflow__ = {"unique": [("room", "number")], **options}

    return Seat


def seed(db, **options) -> None:
    define_seat(db, **options)
    data = [{"room": "a", "number": 1}, {"room": "a", "number": 2}, {"room": "b", "number": 1}]
    one(db, "SeatBulkCreateNode", {"data": data})


def seats(db, **execute) -> list[tuple[str, int]]:
    return [
        (r["room"], r["number"]) for r in one(db, "SeatListNode", {"order_by": ["id"]}, **execute)["records"]
    ]


ROWS = [("a", 1), ("a", 2), ("b", 1)]


# -- multi_tenant -----------------------------------------------------------------------
def test_turning_on_multi_tenant_with_rows_is_refused_naming_the_model_and_the_rows(db):
    seed(db)
    define_seat(db, multi_tenant=True)
    with pytest.raises(BackfillRequiredError) as info:
        one(db, "SeatCountNode", tenant="acme")  # first use migrates (development): refused
    error = info.value
    assert (error.model, error.table, error.columns, error.rows) == ("Seat", "seats", ["tenant_id"], 3)
    assert "Model 'Seat' turns on multi_tenant" in str(error) and "3 rows" in str(error)
    assert "backfill={'tenant_id': 'acme'}" in str(error)
    with pytest.raises(BackfillRequiredError):
        db.migrations.apply()
    assert "tenant_id" not in live(db).columns  # nothing was changed
    assert unique_groups(db) == {("room", "number")}


def test_backfill_gives_existing_rows_a_tenant_and_uniqueness_becomes_per_tenant(db):
    seed(db)
    define_seat(db, multi_tenant=True)
    plan = db.migrations.plan(backfill={"tenant_id": "acme"})
    assert "acme" in plan.sql
    (applied,) = db.migrations.apply(backfill={"tenant_id": "acme"})
    assert any("acme" in sql for sql in applied.up)
    assert seats(db, tenant="acme") == ROWS
    assert seats(db, tenant="globex") == []
    # the unique group was rebuilt with tenant_id first: per tenant, not across tenants
    assert unique_groups(db) == {("tenant_id", "room", "number")}
    assert live(db).columns["tenant_id"].nullable is False
    assert one(db, "SeatCreateNode", {"room": "a", "number": 1}, tenant="globex")["tenant_id"] == "globex"
    with pytest.raises(DataFlowError):
        one(db, "SeatCreateNode", {"room": "a", "number": 1}, tenant="acme")
    assert seats(db, tenant="acme") == ROWS
    assert not db.migrations.plan()


@pytest.mark.parametrize("unique", [True, False])
def test_a_backfilled_tenant_is_no_default_for_later_rows(db, unique):
    groups = {} if unique else {"unique": []}
    seed(db, **groups)
    define_seat(db, multi_tenant=True, **groups)
    db.migrations.apply(backfill={"tenant_id": "acme"})
    default = live(db).columns["tenant_id"].default
    assert default is None or "acme" not in default  # SQLite keeps an ADD COLUMN's DEFAULT for good
    assert seats(db, tenant="acme") == ROWS


def test_rolling_back_multi_tenant_restores_the_table_and_its_unique_group(db):
    seed(db)
    define_seat(db, multi_tenant=True)
    db.migrations.apply(backfill={"tenant_id": "acme"})
    db.migrations.rollback(confirm_destructive=True)
    assert "tenant_id" not in live(db).columns
    assert unique_groups(db) == {("room", "number")}
    define_seat(db)
    assert seats(db) == ROWS


@pytest.mark.parametrize("bad", ["", 7, None])
def test_a_bad_backfill_tenant_is_refused_and_changes_nothing(db, bad):
    seed(db)
    define_seat(db, multi_tenant=True)
    with pytest.raises(ValidationError, match="tenant must be a non-empty string"):
        db.migrations.apply(backfill={"tenant_id": bad})
    assert "tenant_id" not in live(db).columns


def test_a_backfill_for_an_unknown_column_is_refused(db):
    seed(db)
    define_seat(db, multi_tenant=True)
    with pytest.raises(MigrationError, match="'tenant'"):
        db.migrations.apply(backfill={"tenant": "acme"})
    assert "tenant_id" not in live(db).columns


def test_an_empty_table_turns_on_multi_tenant_without_a_backfill(db):
    define_seat(db)
    assert one(db, "SeatCountNode") == {"count": 0}
    define_seat(db, multi_tenant=True)
    assert one(db, "SeatCountNode", tenant="acme") == {"count": 0}
    assert unique_groups(db) == {("tenant_id", "room", "number")}


def test_a_generated_file_carries_the_backfill(db, tmp_path):
    seed(db)
    define_seat(db, multi_tenant=True)
    path = db.migrations.generate(tmp_path, backfill={"tenant_id": "acme"})
    assert "'acme'" in path.read_text()
    with pytest.raises(MigrationError, match="already holds its values"):
        db.migrations.apply(directory=tmp_path, backfill={"tenant_id": "acme"})
    db.migrations.apply(directory=tmp_path)
    assert seats(db, tenant="acme") == ROWS


def test_backfill_fills_any_added_required_field(db):
    seed(db)

    @db.model
    class Seat:
        room: str
        number: int
        row: str  # required, no default
        __dataflow__ = {"unique": [("room", "number")]}

    with pytest.raises(BackfillRequiredError, match="'row'") as info:
        db.migrations.apply()
    assert "backfill={'row': ...}" in str(info.value)
    with pytest.raises(ValidationError, match="'row'"):
        db.migrations.apply(backfill={"row": 5})  # not a str
    assert "row" not in live(db).columns
    db.migrations.apply(backfill={"row": "front"})
    assert [r["row"] for r in one(db, "SeatListNode")["records"]] == ["front"] * 3


# -- versioned and soft_delete --------------------------------------------------------------
def test_turning_on_versioned_gives_existing_rows_version_one(db):
    seed(db)
    define_seat(db, versioned=True)
    assert [r["version"] for r in one(db, "SeatListNode")["records"]] == [1, 1, 1]
    assert live(db).columns["version"].nullable is False
    updated = one(db, "SeatUpdateNode", {"id": 1, "version": 1, "fields": {"number": 9}})
    assert updated["version"] == 2


def test_turning_on_soft_delete_leaves_every_row_live(db):
    seed(db)
    define_seat(db, soft_delete=True)
    assert seats(db) == ROWS
    assert [r["deleted_at"] for r in one(db, "SeatListNode")["records"]] == [None] * 3
    one(db, "SeatDeleteNode", {"id": 1})
    assert seats(db) == ROWS[1:]


def test_backfill_also_fills_an_added_optional_field(db):
    seed(db)

    @db.model
    class Seat:
        room: str
        number: int
        label: str | None = None
        __dataflow__ = {"unique": [("room", "number")]}

    db.migrations.apply(backfill={"label": "legacy"})
    assert [r["label"] for r in one(db, "SeatListNode")["records"]] == ["legacy"] * 3
    assert one(db, "SeatCreateNode", {"room": "c", "number": 1})["label"] is None  # new rows: the model's
