"""Reflection reads column server defaults: such a column is optional, and the database fills it."""

from __future__ import annotations

import pytest
from conftest import spy_on_opens, url_for

from dataflow_lab import DataFlow, LocalRuntime, ValidationError, WorkflowBuilder, _loop

ID = {
    "sqlite": "id INTEGER PRIMARY KEY",
    "postgresql": "id SERIAL PRIMARY KEY",
    "duckdb": "id INTEGER PRIMARY KEY DEFAULT nextval('tickets_seq')",
    "mysql": "id INTEGER AUTO_INCREMENT PRIMARY KEY",
}


def create_schema(db) -> None:
    statements = ["CREATE SEQUENCE tickets_seq"] if db.dialect == "duckdb" else []
    statements.append(
        f"CREATE TABLE tickets ({ID[db.dialect]}, title VARCHAR(40) NOT NULL UNIQUE, "
        "status VARCHAR(20) NOT NULL DEFAULT 'open', priority INTEGER NOT NULL DEFAULT 3, "
        "note TEXT DEFAULT 'none', owner TEXT)"
    )

    async def go() -> None:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await dialect.release(conn)

    _loop.run(go())
    assert db.reflect() == ["Ticket"]


def run(db, node_type, params):
    workflow = WorkflowBuilder(dataflow=db)
    workflow.add_node(node_type, "n", params)
    return LocalRuntime().execute(workflow.build())[0]["n"]


def fields(row: dict) -> tuple:
    return row["title"], row["status"], row["priority"], row["note"], row["owner"]


def test_columns_with_a_server_default_are_optional_in_create(db, monkeypatch):
    create_schema(db)
    params = {p["name"]: p for p in db.nodes["TicketCreateNode"].describe()}
    assert params["title"]["required"] is True
    assert params["status"]["required"] is False and params["priority"]["required"] is False
    assert "<database default>" in params["status"]["description"]
    workflow = WorkflowBuilder(db)
    workflow.add_node("TicketCreateNode", "c", {"status": "x"})
    built = workflow.build()  # title alone is left for the run to pass
    assert [str(i) for i in built.workflow_inputs] == ["c.title"]
    opens = spy_on_opens(monkeypatch, db)
    with pytest.raises(ValidationError, match="c.title"):
        LocalRuntime().execute(built)
    assert opens == []


def test_create_without_them_lets_the_database_fill_them(db):
    create_schema(db)
    made = run(db, "TicketCreateNode", {"title": "printer jam"})
    assert fields(made) == ("printer jam", "open", 3, "none", None)
    given = run(db, "TicketCreateNode", {"title": "fire", "status": "urgent", "priority": 1, "note": None})
    assert fields(given) == ("fire", "urgent", 1, None, None)
    stored = run(db, "TicketListNode", {"order_by": ["id"]})["records"]
    assert [fields(r) for r in stored] == [fields(made), fields(given)]


def test_bulk_create_without_them_lets_the_database_fill_them(db):
    create_schema(db)
    run(db, "TicketBulkCreateNode", {"data": [{"title": "a"}, {"title": "b", "owner": None}]})
    run(db, "TicketBulkCreateNode", {"data": [{"title": "c", "status": "done", "priority": 5}]})
    stored = run(db, "TicketListNode", {"order_by": ["id"]})["records"]
    assert [fields(r) for r in stored] == [
        ("a", "open", 3, "none", None),
        ("b", "open", 3, "none", None),
        ("c", "done", 5, "none", None),
    ]


def test_upserts_that_create_let_the_database_fill_them(db):
    create_schema(db)
    out = run(db, "TicketUpsertNode", {"where": {"title": "a"}})
    assert out["created"] is True and fields(out["record"]) == ("a", "open", 3, "none", None)
    out = run(db, "TicketBulkUpsertNode", {"data": [{"title": "a", "owner": "ann"}, {"title": "b"}],
                                             "conflict_on": ["title"]})  # fmt: skip
    assert (out["inserted"], out["updated"]) == (1, 1)
    stored = run(db, "TicketListNode", {"order_by": ["id"]})["records"]
    assert [fields(r) for r in stored] == [("a", "open", 3, "none", "ann"), ("b", "open", 3, "none", None)]


def test_a_table_dataflow_made_is_reflected_with_its_defaults_left_to_the_database(backend, tmp_path):
    url = url_for({"sqlite": "sqlite_file", "duckdb": "duckdb_file"}.get(backend, backend), tmp_path)
    maker = DataFlow(url)

    @maker.model
    class Ticket:
        title: str
        status: str = "open"
        priority: int = 3

    maker.create_tables()
    maker.close()
    db = DataFlow(url)
    assert db.reflect() == ["Ticket"]
    params = {p["name"]: p for p in db.nodes["TicketCreateNode"].describe()}
    assert params["title"]["required"] is True
    assert "<database default>" in params["status"]["description"]
    assert params["priority"]["required"] is False
    made = run(db, "TicketCreateNode", {"title": "printer jam"})
    assert (made["status"], made["priority"]) == ("open", 3)
    assert made["created_at"] is not None  # on SQLite a TEXT column, reflected as text
    db.close()
