"""Delete of a versioned model takes an optional expected ``version`` (same rule as Update)."""

from __future__ import annotations

import pytest

from dataflow_lab import ConcurrencyError, DataFlow, LocalRuntime, ValidationError, WorkflowBuilder


def run(db, *steps):
    workflow = WorkflowBuilder(db)
    for node_type, node_id, params in steps:
        workflow.add_node(node_type, node_id, params)
    return LocalRuntime().execute(workflow.build())[0]


def one(db, node_type, params=None):
    return run(db, (node_type, "node", params or {}))["node"]


def define_doc(db, **options):
    @db.model
    class Doc:
        title: str
        body: str = ""
        __dataflow__ = {"versioned": True, **options}

    return Doc


def titles(db, **params) -> list[str]:
    return [r["title"] for r in one(db, "DocListNode", params)["records"]]


def test_delete_with_a_stale_version_raises_and_deletes_nothing(db):
    define_doc(db)
    one(db, "DocBulkCreateNode", {"data": [{"title": "a"}, {"title": "b"}]})
    one(db, "DocUpdateNode", {"id": 1, "version": 1, "fields": {"body": "moved on"}})
    with pytest.raises(ConcurrencyError) as info:
        one(db, "DocDeleteNode", {"id": 1, "version": 1})
    error = info.value
    assert (error.model, error.id, error.expected, error.actual) == ("Doc", 1, 1, 2)
    assert "Nothing was deleted" in str(error)
    assert titles(db) == ["a", "b"]
    assert one(db, "DocReadNode", {"id": 1})["body"] == "moved on"


def test_delete_with_the_current_version_deletes(db):
    define_doc(db)
    one(db, "DocBulkCreateNode", {"data": [{"title": "a"}, {"title": "b"}]})
    one(db, "DocUpdateNode", {"id": 2, "version": 1, "fields": {"body": "x"}})
    assert one(db, "DocDeleteNode", {"id": 2, "version": 2}) == {"id": 2, "deleted": True}
    assert one(db, "DocDeleteNode", {"id": 1}) == {"id": 1, "deleted": True}  # without version: no check
    assert titles(db) == []


def test_delete_of_a_missing_row_with_a_version_is_not_a_conflict(db):
    define_doc(db)
    assert one(db, "DocDeleteNode", {"id": 99, "version": 1}) == {"id": 99, "deleted": False}


def test_a_stale_delete_rolls_back_the_whole_workflow(db):
    define_doc(db)
    one(db, "DocCreateNode", {"title": "a"})
    one(db, "DocUpdateNode", {"id": 1, "version": 1, "fields": {"body": "moved on"}})
    with pytest.raises(ConcurrencyError):
        run(db, ("DocCreateNode", "new", {"title": "b"}), ("DocDeleteNode", "stale", {"id": 1, "version": 1}))
    assert titles(db) == ["a"]


def test_soft_and_hard_delete_check_the_version_too(db):
    define_doc(db, soft_delete=True)
    one(db, "DocBulkCreateNode", {"data": [{"title": "a"}, {"title": "b"}]})
    one(db, "DocUpdateNode", {"id": 1, "version": 1, "fields": {"body": "x"}})
    with pytest.raises(ConcurrencyError):
        one(db, "DocDeleteNode", {"id": 1, "version": 1})  # a soft delete
    assert titles(db) == ["a", "b"]
    assert one(db, "DocDeleteNode", {"id": 1, "version": 2})["deleted"] is True
    assert titles(db) == ["b"] and titles(db, include_deleted=True) == ["a", "b"]
    with pytest.raises(ConcurrencyError, match="Nothing was deleted"):
        one(db, "DocDeleteNode", {"id": 1, "version": 1, "hard": True})  # the marked row, for good
    assert titles(db, include_deleted=True) == ["a", "b"]
    assert one(db, "DocDeleteNode", {"id": 1, "version": 2, "hard": True})["deleted"] is True
    assert titles(db, include_deleted=True) == ["b"]


def test_the_version_parameter_is_optional_and_checked_and_shown_in_sql():
    db = DataFlow()
    define_doc(db)

    @db.model
    class Plain:
        text: str

    params = {p["name"]: p for p in db.nodes["DocDeleteNode"].describe()}
    assert params["version"]["required"] is False
    assert "version" not in db.nodes["PlainDeleteNode"].param_map()
    builder = WorkflowBuilder(db)
    builder.add_node("DocDeleteNode", "d", {"id": 1, "version": -1})
    with pytest.raises(ValidationError, match="version"):
        builder.build()
    sql = db.nodes["DocDeleteNode"].sql({"id": 1, "version": 3})
    assert "version =" in sql and "[1, 3]" in sql
    assert "version =" not in db.nodes["DocDeleteNode"].sql({"id": 1})
    db.close()
