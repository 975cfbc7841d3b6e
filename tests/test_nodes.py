"""The generated nodes, one operation at a time, on every backend (Aggregate: test_aggregate.py).

Each test builds real workflows with WorkflowBuilder and runs them with
LocalRuntime().execute against a fresh database (the ``db`` fixture).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Optional

import pytest
from conftest import spy_on_opens

from dataflow_lab import (
    DataFlowError,
    LocalRuntime,
    NodeExecutionError,
    NotFoundError,
    ValidationError,
    WorkflowBuilder,
)
from dataflow_lab.nodes.base import Param

USER_COLUMNS = {"id", "name", "email", "age", "active", "nickname", "created_at", "updated_at"}


# -- helpers ------------------------------------------------------------------
def run(db, *steps, connections=()):
    """Build one workflow of (node_type, node_id, params) steps and run it."""
    workflow = WorkflowBuilder(db)
    for node_type, node_id, params in steps:
        workflow.add_node(node_type, node_id, params)
    for connection in connections:
        workflow.add_connection(*connection)
    results, _ = LocalRuntime().execute(workflow.build())
    return results


def one(db, node_type, params=None):
    """Run a single node; return its output."""
    return run(db, (node_type, "node", params or {}))["node"]


def define_user(db):
    @db.model
    class User:
        name: str
        email: str
        age: int = 0
        active: bool = True
        nickname: Optional[str] = None  # noqa: UP045 - Optional is part of what is tested

        __dataflow__ = {"unique": [["email"]]}

    return User


def add_users(db, count, **extra):
    data = [
        {"name": f"user{i}", "email": f"u{i}@example.com", "age": i, **extra} for i in range(1, count + 1)
    ]
    assert one(db, "UserBulkCreateNode", {"data": data}) == {"inserted": count}
    return data


def all_users(db):
    return one(db, "UserListNode", {})["records"]


def count_users(db, where=None):
    return one(db, "UserCountNode", {"filter": where or {}})["count"]


@pytest.fixture
def users(db):
    define_user(db)
    return db


# -- Create -------------------------------------------------------------------
def test_create_returns_the_created_row_with_every_column(users):
    row = one(users, "UserCreateNode", {"name": "Alice", "email": "alice@example.com"})
    assert set(row) == USER_COLUMNS
    assert row["id"] == 1
    assert row["name"] == "Alice"
    assert row["email"] == "alice@example.com"
    assert row["age"] == 0
    assert row["active"] is True
    assert row["nickname"] is None


def test_create_sets_created_at_and_updated_at_to_the_same_aware_utc_time(users):
    before = dt.datetime.now(dt.UTC)
    row = one(users, "UserCreateNode", {"name": "Alice", "email": "alice@example.com"})
    after = dt.datetime.now(dt.UTC)
    assert isinstance(row["created_at"], dt.datetime)
    assert row["created_at"].utcoffset() == dt.timedelta(0)
    assert row["created_at"] == row["updated_at"]
    assert before - dt.timedelta(seconds=1) <= row["created_at"] <= after + dt.timedelta(seconds=1)


def test_create_assigns_ids_counting_from_one(users):
    ids = [one(users, "UserCreateNode", {"name": f"n{i}", "email": f"e{i}"})["id"] for i in range(3)]
    assert ids == [1, 2, 3]


def test_create_stores_the_row_so_a_later_read_returns_it(users):
    created = one(users, "UserCreateNode", {"name": "Bob", "email": "bob@example.com", "age": 41})
    assert one(users, "UserReadNode", {"id": created["id"]}) == created


def test_create_without_a_required_field_is_refused_before_running(users, monkeypatch):
    # build() records the missing field as a workflow input; a run that does not pass it is refused
    workflow = WorkflowBuilder(users)
    workflow.add_node("UserCreateNode", "create", {"name": "Alice"})
    built = workflow.build()
    assert [str(i) for i in built.workflow_inputs] == ["create.email"]
    opens = spy_on_opens(monkeypatch, users)
    with pytest.raises(DataFlowError, match="create.email"):
        LocalRuntime().execute(built)
    assert opens == []
    assert count_users(users) == 0


def test_create_refuses_an_unknown_field_and_suggests_the_close_one(users):
    workflow = WorkflowBuilder(users)
    workflow.add_node("UserCreateNode", "create", {"name": "A", "emial": "a@example.com"})
    with pytest.raises(ValidationError, match="emial") as info:
        workflow.build()
    assert "Did you mean 'email'" in str(info.value)


# -- Read ---------------------------------------------------------------------
def test_read_returns_the_row_for_an_id_wired_from_create(users):
    results = run(
        users,
        ("UserCreateNode", "create", {"name": "Alice", "email": "alice@example.com"}),
        ("UserReadNode", "read", {}),
        connections=[("create", "id", "read", "id")],
    )
    assert results["read"] == results["create"]
    assert set(results["read"]) == USER_COLUMNS


def test_read_of_a_missing_id_raises_not_found_naming_the_model_and_id(users):
    with pytest.raises(NotFoundError) as info:
        one(users, "UserReadNode", {"id": 424242})
    error = info.value
    assert "User" in str(error)
    assert "424242" in str(error)
    assert error.model == "User"
    assert error.id == 424242


def test_read_of_a_missing_id_returns_none_when_raise_on_not_found_is_false(users):
    assert one(users, "UserReadNode", {"id": 7, "raise_on_not_found": False}) is None


def test_errors_inside_execute_are_node_execution_errors_that_keep_the_original_class(users):
    with pytest.raises(NodeExecutionError) as info:
        one(users, "UserReadNode", {"id": 5})
    error = info.value
    assert isinstance(error, NotFoundError)
    assert error.node_id == "node"
    assert "UserReadNode" in str(error)


def test_read_finds_only_the_requested_row(users):
    add_users(users, 3)
    row = one(users, "UserReadNode", {"id": 2})
    assert row["id"] == 2
    assert row["email"] == "u2@example.com"


# -- Update -------------------------------------------------------------------
def test_update_by_id_returns_the_row_after_the_update(users):
    created = one(users, "UserCreateNode", {"name": "Alice", "email": "alice@example.com", "age": 30})
    time.sleep(0.01)
    updated = one(users, "UserUpdateNode", {"id": created["id"], "fields": {"age": 31, "nickname": "Al"}})
    assert set(updated) == USER_COLUMNS
    assert updated["id"] == created["id"]
    assert updated["age"] == 31
    assert updated["nickname"] == "Al"
    assert updated["name"] == "Alice"
    assert updated["created_at"] == created["created_at"]
    assert updated["updated_at"] > created["updated_at"]
    assert updated["updated_at"] >= updated["created_at"]


def test_update_is_persisted(users):
    created = one(users, "UserCreateNode", {"name": "Alice", "email": "alice@example.com"})
    updated = one(users, "UserUpdateNode", {"id": created["id"], "fields": {"active": False}})
    assert one(users, "UserReadNode", {"id": created["id"]}) == updated
    assert updated["active"] is False


def test_update_accepts_a_filter_on_id_instead_of_id(users):
    add_users(users, 2)
    updated = one(users, "UserUpdateNode", {"filter": {"id": 2}, "fields": {"name": "Second"}})
    assert updated["id"] == 2
    assert updated["name"] == "Second"
    assert [r["name"] for r in all_users(users)] == ["user1", "Second"]


def test_update_changes_only_the_given_row(users):
    add_users(users, 3)
    one(users, "UserUpdateNode", {"id": 2, "fields": {"age": 99}})
    assert [r["age"] for r in all_users(users)] == [1, 99, 3]


def test_update_of_a_missing_id_raises_not_found(users):
    with pytest.raises(NotFoundError) as info:
        one(users, "UserUpdateNode", {"id": 99, "fields": {"age": 1}})
    assert info.value.model == "User"
    assert info.value.id == 99
    assert "99" in str(info.value)


def test_update_of_a_missing_id_returns_none_when_raise_on_not_found_is_false(users):
    result = one(users, "UserUpdateNode", {"id": 99, "fields": {"age": 1}, "raise_on_not_found": False})
    assert result is None
    assert count_users(users) == 0


def test_update_without_id_or_filter_is_refused_before_running(users, monkeypatch):
    add_users(users, 1, age=7)
    workflow = WorkflowBuilder(users)
    workflow.add_node("UserUpdateNode", "update", {"fields": {"age": 1}})
    built = workflow.build()
    assert [str(i) for i in built.workflow_inputs] == ["update.id"]
    opens = spy_on_opens(monkeypatch, users)
    with pytest.raises(DataFlowError, match="update.id"):
        LocalRuntime().execute(built)
    assert opens == []
    assert [r["age"] for r in all_users(users)] == [7]


def test_update_with_a_filter_on_another_field_is_refused_and_points_to_bulk_update(users):
    add_users(users, 2)
    workflow = WorkflowBuilder(users)
    with pytest.raises(ValidationError, match="UserBulkUpdateNode"):
        workflow.add_node("UserUpdateNode", "update", {"filter": {"age": 1}, "fields": {"age": 5}})
        workflow.build()
    assert [r["age"] for r in all_users(users)] == [1, 2]


def test_update_refuses_a_wrong_type_in_fields_at_build(users):
    workflow = WorkflowBuilder(users)
    workflow.add_node("UserUpdateNode", "update", {"id": 1, "fields": {"age": "old"}})
    with pytest.raises(ValidationError, match="age"):
        workflow.build()


# -- Delete -------------------------------------------------------------------
def test_delete_returns_the_id_and_deleted_true_and_removes_the_row(users):
    add_users(users, 2)
    assert one(users, "UserDeleteNode", {"id": 1}) == {"id": 1, "deleted": True}
    assert one(users, "UserReadNode", {"id": 1, "raise_on_not_found": False}) is None
    assert [r["id"] for r in all_users(users)] == [2]


def test_delete_of_a_missing_id_returns_deleted_false(users):
    add_users(users, 1)
    assert one(users, "UserDeleteNode", {"id": 5}) == {"id": 5, "deleted": False}
    assert count_users(users) == 1


def test_delete_accepts_a_filter_on_id_instead_of_id(users):
    add_users(users, 2)
    assert one(users, "UserDeleteNode", {"filter": {"id": 2}}) == {"id": 2, "deleted": True}
    assert [r["id"] for r in all_users(users)] == [1]


def test_delete_twice_reports_true_then_false(users):
    add_users(users, 1)
    results = run(users, ("UserDeleteNode", "first", {"id": 1}), ("UserDeleteNode", "second", {"id": 1}))
    assert results["first"]["deleted"] is True
    assert results["second"]["deleted"] is False


# -- List ---------------------------------------------------------------------
def test_list_returns_records_and_their_count(users):
    add_users(users, 3)
    result = one(users, "UserListNode", {})
    assert set(result) == {"records", "count"}
    assert result["count"] == 3
    assert len(result["records"]) == 3
    assert all(set(r) == USER_COLUMNS for r in result["records"])
    assert [r["email"] for r in result["records"]] == ["u1@example.com", "u2@example.com", "u3@example.com"]


def test_list_of_an_empty_table_is_empty(users):
    assert one(users, "UserListNode", {}) == {"records": [], "count": 0}


def test_list_orders_by_id_ascending_by_default_even_after_updates(users):
    add_users(users, 6)
    # Updating rows moves them physically on some engines (PostgreSQL's MVCC).
    one(users, "UserBulkUpdateNode", {"filter": {"id": {"$in": [1, 3]}}, "fields": {"age": 100}})
    one(users, "UserUpdateNode", {"id": 2, "fields": {"name": "zz"}})
    assert [r["id"] for r in all_users(users)] == [1, 2, 3, 4, 5, 6]
    filtered = one(users, "UserListNode", {"filter": {"age": {"$gte": 4}}})["records"]
    assert [r["id"] for r in filtered] == [1, 3, 4, 5, 6]


def test_list_has_no_silent_default_limit(users):
    add_users(users, 1500)
    result = one(users, "UserListNode", {})
    assert result["count"] == 1500
    assert [r["id"] for r in result["records"]] == list(range(1, 1501))


def test_list_filters_rows(users):
    add_users(users, 5)
    result = one(users, "UserListNode", {"filter": {"age": {"$gt": 3}}})
    assert [r["age"] for r in result["records"]] == [4, 5]
    assert result["count"] == 2


def test_list_limit_and_offset_page_through_rows(users):
    add_users(users, 7)
    pages = [
        [r["id"] for r in one(users, "UserListNode", {"limit": 3, "offset": offset})["records"]]
        for offset in (0, 3, 6, 9)
    ]
    assert pages == [[1, 2, 3], [4, 5, 6], [7], []]


def test_list_count_is_the_number_of_records_returned_under_a_limit(users):
    add_users(users, 5)
    assert one(users, "UserListNode", {"limit": 2})["count"] == 2


def test_list_limit_zero_returns_no_rows(users):
    add_users(users, 2)
    assert one(users, "UserListNode", {"limit": 0}) == {"records": [], "count": 0}


def test_list_orders_by_the_given_field_with_limit_and_offset(users):
    add_users(users, 5)
    result = one(users, "UserListNode", {"order_by": ["-age"], "limit": 2, "offset": 1})
    assert [r["age"] for r in result["records"]] == [4, 3]


def test_list_offset_without_a_limit_returns_the_rest(users):
    add_users(users, 5)
    result = one(users, "UserListNode", {"offset": 2})
    assert [r["id"] for r in result["records"]] == [3, 4, 5]
    assert result["count"] == 3


def test_list_refuses_a_negative_limit(users):
    builder = WorkflowBuilder(users)
    builder.add_node("UserListNode", "list", {"limit": -1})
    with pytest.raises(ValidationError, match="limit"):
        builder.build()


# -- Count --------------------------------------------------------------------
def test_count_of_an_empty_table_is_zero(users):
    assert one(users, "UserCountNode", {}) == {"count": 0}


def test_count_counts_every_row_without_a_filter(users):
    add_users(users, 4)
    assert one(users, "UserCountNode", {}) == {"count": 4}


def test_count_counts_only_rows_matching_the_filter(users):
    add_users(users, 6)
    assert one(users, "UserCountNode", {"filter": {"age": {"$lte": 2}}}) == {"count": 2}
    assert one(users, "UserCountNode", {"filter": {"name": "nobody"}}) == {"count": 0}


# -- Upsert -------------------------------------------------------------------
def test_upsert_creates_the_row_when_nothing_matches(users):
    result = one(
        users,
        "UserUpsertNode",
        {
            "where": {"email": "alice@example.com"},
            "create": {"name": "Alice", "age": 30},
            "update": {"age": 31},
            "conflict_on": ["email"],
        },
    )
    assert set(result) == {"created", "record"}
    assert result["created"] is True
    record = result["record"]
    assert set(record) == USER_COLUMNS
    assert record["email"] == "alice@example.com"
    assert record["name"] == "Alice"
    assert record["age"] == 30
    assert record["id"] == 1
    assert count_users(users) == 1


def test_upsert_updates_the_matching_row(users):
    created = one(users, "UserCreateNode", {"name": "Alice", "email": "alice@example.com", "age": 30})
    time.sleep(0.01)
    result = one(
        users,
        "UserUpsertNode",
        {
            "where": {"email": "alice@example.com"},
            "create": {"name": "Someone else", "age": 1},
            "update": {"age": 31},
            "conflict_on": ["email"],
        },
    )
    assert result["created"] is False
    record = result["record"]
    assert record["id"] == created["id"]
    assert record["age"] == 31
    assert record["name"] == "Alice"
    assert record["created_at"] == created["created_at"]
    assert record["updated_at"] > created["updated_at"]
    assert count_users(users) == 1
    assert one(users, "UserReadNode", {"id": created["id"]}) == record


def test_upsert_twice_creates_then_updates(users):
    params = {
        "where": {"email": "bob@example.com"},
        "create": {"name": "Bob"},
        "update": {"nickname": "Bobby"},
        "conflict_on": ["email"],
    }
    first = one(users, "UserUpsertNode", params)
    second = one(users, "UserUpsertNode", params)
    assert (first["created"], second["created"]) == (True, False)
    assert first["record"]["nickname"] is None
    assert second["record"]["nickname"] == "Bobby"
    assert second["record"]["id"] == first["record"]["id"]


def test_upsert_on_id_updates_an_existing_row(users):
    add_users(users, 2)
    result = one(
        users, "UserUpsertNode", {"where": {"id": 2}, "update": {"name": "Two"}, "conflict_on": ["id"]}
    )
    assert result["created"] is False
    assert result["record"]["id"] == 2
    assert result["record"]["name"] == "Two"
    assert count_users(users) == 2


def test_upsert_refuses_a_conflict_on_that_is_not_unique(users):
    workflow = WorkflowBuilder(users)
    workflow.add_node(
        "UserUpsertNode",
        "upsert",
        {"where": {"name": "Alice"}, "create": {"email": "a@example.com"}, "conflict_on": ["name"]},
    )
    with pytest.raises(ValidationError, match="name"):
        workflow.build()


def test_upsert_refuses_a_non_unique_conflict_on_before_anything_is_written(users):
    def conflict_fields() -> dict:
        return {"fields": ["name"]}

    workflow = WorkflowBuilder(users)
    workflow.add_node("UserCreateNode", "create", {"name": "Early", "email": "early@example.com"})
    workflow.add_node(conflict_fields, "fields", {})
    workflow.add_node(
        "UserUpsertNode", "upsert", {"where": {"name": "Alice"}, "create": {"email": "a@example.com"}}
    )
    workflow.add_connection("fields", "fields", "upsert", "conflict_on")
    with pytest.raises(ValidationError, match="name"):
        LocalRuntime().execute(workflow.build())
    assert count_users(users) == 0


# -- BulkCreate ---------------------------------------------------------------
def test_bulk_create_returns_the_number_inserted(users):
    data = [{"name": f"n{i}", "email": f"e{i}"} for i in range(10)]
    assert one(users, "UserBulkCreateNode", {"data": data}) == {"inserted": 10}
    assert count_users(users) == 10


def test_bulk_create_assigns_ids_from_one_in_input_order_across_batches(users):
    names = [f"name-{i:02d}" for i in reversed(range(23))]
    data = [{"name": n, "email": f"{n}@example.com"} for n in names]
    assert one(users, "UserBulkCreateNode", {"data": data, "batch_size": 5}) == {"inserted": 23}
    records = all_users(users)
    assert [r["id"] for r in records] == list(range(1, 24))
    assert [r["name"] for r in records] == names


def test_bulk_create_fills_defaults_and_timestamps(users):
    one(users, "UserBulkCreateNode", {"data": [{"name": "A", "email": "a"}, {"name": "B", "email": "b"}]})
    for row in all_users(users):
        assert row["age"] == 0
        assert row["active"] is True
        assert row["nickname"] is None
        assert isinstance(row["created_at"], dt.datetime)
        assert row["created_at"].utcoffset() == dt.timedelta(0)
        assert row["updated_at"] == row["created_at"]


def test_bulk_create_rows_may_omit_different_optional_fields(users):
    data = [
        {"name": "a", "email": "a", "nickname": "Ace"},
        {"name": "b", "email": "b", "age": 5},
        {"email": "c", "active": False, "name": "c"},
        {"name": "d", "email": "d", "nickname": None, "age": 7, "active": True},
    ]
    assert one(users, "UserBulkCreateNode", {"data": data}) == {"inserted": 4}
    got = [(r["name"], r["email"], r["age"], r["active"], r["nickname"]) for r in all_users(users)]
    assert got == [
        ("a", "a", 0, True, "Ace"),
        ("b", "b", 5, True, None),
        ("c", "c", 0, False, None),
        ("d", "d", 7, True, None),
    ]


def test_bulk_create_of_no_rows_inserts_nothing(users):
    assert one(users, "UserBulkCreateNode", {"data": []}) == {"inserted": 0}
    assert count_users(users) == 0


def test_bulk_create_ids_continue_after_existing_rows(users):
    one(users, "UserCreateNode", {"name": "first", "email": "first"})
    one(users, "UserBulkCreateNode", {"data": [{"name": "x", "email": "x"}, {"name": "y", "email": "y"}]})
    assert [(r["id"], r["name"]) for r in all_users(users)] == [(1, "first"), (2, "x"), (3, "y")]
    assert one(users, "UserCreateNode", {"name": "last", "email": "last"})["id"] == 4


def test_bulk_create_rolls_back_the_whole_batch_on_a_bad_row(users):
    data = [{"name": f"n{i}", "email": f"e{i}", "age": i} for i in range(3000)]
    data[2500]["age"] = "not a number"
    with pytest.raises(ValidationError) as info:
        one(users, "UserBulkCreateNode", {"data": data, "batch_size": 1000})
    message = str(info.value)
    assert "2500" in message
    assert "age" in message
    assert count_users(users) == 0


def test_bulk_create_rolls_back_every_batch_when_the_database_refuses_a_row(users):
    data = [{"name": f"n{i}", "email": f"e{i}"} for i in range(3000)]
    data[2500]["email"] = "e3"  # duplicates row 3's unique email, in the third batch
    with pytest.raises(DataFlowError):
        one(users, "UserBulkCreateNode", {"data": data, "batch_size": 1000})
    assert count_users(users) == 0


def test_bulk_create_names_the_row_missing_a_required_field(users):
    data = [{"name": "a", "email": "a"}, {"name": "b", "email": "b"}, {"name": "c"}]
    with pytest.raises(ValidationError) as info:
        one(users, "UserBulkCreateNode", {"data": data})
    assert "row 2" in str(info.value)
    assert "email" in str(info.value)
    assert count_users(users) == 0


def test_bulk_create_refuses_an_unknown_field_naming_the_row(users):
    data = [{"name": "a", "email": "a"}, {"name": "b", "email": "b", "colour": "red"}]
    with pytest.raises(ValidationError) as info:
        one(users, "UserBulkCreateNode", {"data": data})
    assert "row 1" in str(info.value)
    assert "colour" in str(info.value)
    assert count_users(users) == 0


# -- BulkUpdate ---------------------------------------------------------------
def test_bulk_update_changes_matching_rows_and_reports_how_many(users):
    add_users(users, 5)
    before = {r["id"]: r for r in all_users(users)}
    time.sleep(0.01)
    result = one(users, "UserBulkUpdateNode", {"filter": {"age": {"$gte": 3}}, "fields": {"active": False}})
    assert result == {"updated": 3}
    after = {r["id"]: r for r in all_users(users)}
    assert [after[i]["active"] for i in range(1, 6)] == [True, True, False, False, False]
    for i in (3, 4, 5):
        assert after[i]["updated_at"] > before[i]["updated_at"]
        assert after[i]["created_at"] == before[i]["created_at"]
    for i in (1, 2):
        assert after[i] == before[i]


def test_bulk_update_matching_nothing_reports_zero(users):
    add_users(users, 2)
    assert one(users, "UserBulkUpdateNode", {"filter": {"age": 50}, "fields": {"age": 0}}) == {"updated": 0}
    assert [r["age"] for r in all_users(users)] == [1, 2]


def test_bulk_update_with_an_empty_filter_needs_confirmed_true(users):
    add_users(users, 3)
    workflow = WorkflowBuilder(users)
    workflow.add_node("UserBulkUpdateNode", "all", {"filter": {}, "fields": {"age": 0}})
    with pytest.raises(ValidationError, match="confirmed=True"):
        workflow.build()
    assert [r["age"] for r in all_users(users)] == [1, 2, 3]


def test_bulk_update_without_a_filter_needs_confirmed_true(users):
    add_users(users, 3)
    with pytest.raises(ValidationError, match="confirmed=True"):
        one(users, "UserBulkUpdateNode", {"fields": {"age": 0}})
    assert [r["age"] for r in all_users(users)] == [1, 2, 3]


def test_bulk_update_refuses_an_empty_filter_given_at_execute(users):
    add_users(users, 2)
    workflow = WorkflowBuilder(users)
    workflow.add_node("UserBulkUpdateNode", "bulk", {"filter": {"age": 1}, "fields": {"age": 0}})
    with pytest.raises(ValidationError, match="confirmed=True"):
        LocalRuntime().execute(workflow.build(), parameters={"bulk": {"filter": {}}})
    assert [r["age"] for r in all_users(users)] == [1, 2]


def test_bulk_update_with_confirmed_true_and_no_filter_changes_every_row(users):
    add_users(users, 4)
    result = one(users, "UserBulkUpdateNode", {"filter": {}, "fields": {"age": 7}, "confirmed": True})
    assert result == {"updated": 4}
    assert [r["age"] for r in all_users(users)] == [7, 7, 7, 7]


# -- BulkDelete ---------------------------------------------------------------
def test_bulk_delete_removes_matching_rows_and_reports_how_many(users):
    add_users(users, 5)
    assert one(users, "UserBulkDeleteNode", {"filter": {"age": {"$in": [2, 4]}}}) == {"deleted": 2}
    assert [r["id"] for r in all_users(users)] == [1, 3, 5]


def test_bulk_delete_matching_nothing_reports_zero(users):
    add_users(users, 2)
    assert one(users, "UserBulkDeleteNode", {"filter": {"name": "nobody"}}) == {"deleted": 0}
    assert count_users(users) == 2


def test_bulk_delete_with_an_empty_filter_needs_confirmed_true(users):
    add_users(users, 3)
    builder = WorkflowBuilder(users)
    builder.add_node("UserBulkDeleteNode", "all", {"filter": {}})
    with pytest.raises(ValidationError, match="confirmed=True"):
        builder.build()
    assert count_users(users) == 3


def test_bulk_delete_without_a_filter_needs_confirmed_true(users):
    add_users(users, 3)
    with pytest.raises(ValidationError, match="confirmed=True"):
        one(users, "UserBulkDeleteNode", {})
    assert count_users(users) == 3


def test_bulk_delete_with_confirmed_true_and_no_filter_removes_every_row(users):
    add_users(users, 4)
    assert one(users, "UserBulkDeleteNode", {"filter": {}, "confirmed": True}) == {"deleted": 4}
    assert count_users(users) == 0


# -- BulkUpsert ---------------------------------------------------------------
def test_bulk_upsert_on_id_inserts_new_rows_and_updates_existing_ones(users):
    add_users(users, 2)
    before = {r["id"]: r for r in all_users(users)}
    time.sleep(0.01)
    data = [
        {"id": 2, "name": "two", "email": "u2@example.com", "age": 22},
        {"id": 3, "name": "three", "email": "u3@example.com", "age": 33},
    ]
    assert one(users, "UserBulkUpsertNode", {"data": data}) == {"inserted": 1, "updated": 1}
    rows = {r["id"]: r for r in all_users(users)}
    assert sorted(rows) == [1, 2, 3]
    assert rows[1] == before[1]
    assert (rows[2]["name"], rows[2]["age"]) == ("two", 22)
    assert rows[2]["created_at"] == before[2]["created_at"]
    assert rows[2]["updated_at"] > before[2]["updated_at"]
    assert (rows[3]["name"], rows[3]["age"]) == ("three", 33)


def test_bulk_upsert_without_ids_inserts_every_row(users):
    data = [{"name": f"n{i}", "email": f"e{i}"} for i in range(4)]
    assert one(users, "UserBulkUpsertNode", {"data": data}) == {"inserted": 4, "updated": 0}
    assert [r["id"] for r in all_users(users)] == [1, 2, 3, 4]


def test_bulk_upsert_on_a_declared_unique_field(users):
    add_users(users, 2)
    data = [
        {"name": "first", "email": "u1@example.com", "age": 10},
        {"name": "new", "email": "new@example.com", "age": 20},
    ]
    result = one(users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"]})
    assert result == {"inserted": 1, "updated": 1}
    rows = {r["email"]: r for r in all_users(users)}
    assert len(rows) == 3
    assert (rows["u1@example.com"]["id"], rows["u1@example.com"]["name"]) == (1, "first")
    assert rows["u2@example.com"]["name"] == "user2"
    assert rows["new@example.com"]["age"] == 20


def test_bulk_upsert_with_duplicate_keys_in_the_input_keeps_the_last(users):
    data = [
        {"name": "first", "email": "same@example.com", "age": 1},
        {"name": "other", "email": "other@example.com", "age": 2},
        {"name": "last", "email": "same@example.com", "age": 3},
    ]
    result = one(users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"]})
    assert result == {"inserted": 2, "updated": 0}
    rows = {r["email"]: r for r in all_users(users)}
    assert len(rows) == 2
    assert (rows["same@example.com"]["name"], rows["same@example.com"]["age"]) == ("last", 3)


def test_bulk_upsert_with_duplicate_keys_of_an_existing_row_keeps_the_last(users):
    add_users(users, 1)
    data = [
        {"name": "a", "email": "u1@example.com", "age": 5},
        {"name": "b", "email": "u1@example.com", "age": 6},
    ]
    result = one(users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"]})
    assert result == {"inserted": 0, "updated": 1}
    [row] = all_users(users)
    assert (row["name"], row["age"]) == ("b", 6)


def test_bulk_upsert_update_fields_limits_what_an_update_changes(users):
    add_users(users, 1)
    data = [
        {"name": "renamed", "email": "u1@example.com", "age": 50},
        {"name": "fresh", "email": "fresh@example.com", "age": 60},
    ]
    result = one(
        users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"], "update_fields": ["age"]}
    )
    assert result == {"inserted": 1, "updated": 1}
    rows = {r["email"]: r for r in all_users(users)}
    assert rows["u1@example.com"]["age"] == 50
    assert rows["u1@example.com"]["name"] == "user1"
    assert (rows["fresh@example.com"]["name"], rows["fresh@example.com"]["age"]) == ("fresh", 60)


def test_bulk_upsert_counts_correctly_across_batches(users):
    add_users(users, 3)
    data = [{"name": f"n{i}", "email": f"u{i}@example.com", "age": 10 * i} for i in (5, 1, 6, 3, 7)]
    result = one(users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"], "batch_size": 2})
    assert result == {"inserted": 3, "updated": 2}
    ages = {r["email"]: r["age"] for r in all_users(users)}
    assert ages == {
        "u1@example.com": 10,
        "u2@example.com": 2,
        "u3@example.com": 30,
        "u5@example.com": 50,
        "u6@example.com": 60,
        "u7@example.com": 70,
    }


def test_create_after_a_bulk_upsert_with_explicit_new_ids_does_not_collide(users):
    add_users(users, 2)
    data = [{"id": 10, "name": "ten", "email": "ten@example.com"}]
    assert one(users, "UserBulkUpsertNode", {"data": data}) == {"inserted": 1, "updated": 0}
    created = one(users, "UserCreateNode", {"name": "next", "email": "next@example.com"})
    assert created["id"] not in (1, 2, 10)
    assert count_users(users) == 4


def test_bulk_upsert_refuses_a_conflict_on_that_is_not_unique(users):
    builder = WorkflowBuilder(users)
    builder.add_node(
        "UserBulkUpsertNode", "bulk", {"data": [{"name": "a", "email": "a"}], "conflict_on": ["name"]}
    )
    with pytest.raises(ValidationError) as info:
        builder.build()
    assert "name" in str(info.value)
    assert "unique" in str(info.value)


def test_bulk_upsert_refuses_a_non_unique_conflict_on_before_anything_is_written(users):
    workflow = WorkflowBuilder(users)
    workflow.add_node("UserCreateNode", "create", {"name": "early", "email": "early@example.com"})
    workflow.add_node("UserBulkUpsertNode", "bulk", {"data": [{"name": "a", "email": "a"}]})
    with pytest.raises(ValidationError, match="name"):
        LocalRuntime().execute(workflow.build(), parameters={"bulk": {"conflict_on": ["name"]}})
    assert count_users(users) == 0


def test_bulk_upsert_refuses_a_non_unique_conflict_on_arriving_through_a_connection(users):
    def conflict_fields() -> dict:
        return {"fields": ["name"]}

    workflow = WorkflowBuilder(users)
    workflow.add_node("UserCreateNode", "create", {"name": "early", "email": "early@example.com"})
    workflow.add_node(conflict_fields, "fields", {})
    workflow.add_node("UserBulkUpsertNode", "bulk", {"data": [{"name": "a", "email": "a"}]})
    workflow.add_connection("fields", "fields", "bulk", "conflict_on")
    with pytest.raises(ValidationError, match="name"):
        LocalRuntime().execute(workflow.build())
    assert count_users(users) == 0


# -- models with id: str -------------------------------------------------------
@pytest.fixture
def tags(db):
    @db.model
    class Tag:
        id: str
        label: str

    return db


def test_a_str_id_model_creates_and_reads_with_the_callers_id(tags):
    created = one(tags, "TagCreateNode", {"id": "py", "label": "Python"})
    assert created["id"] == "py"
    assert set(created) == {"id", "label", "created_at", "updated_at"}
    assert one(tags, "TagReadNode", {"id": "py"}) == created


def test_a_str_id_model_requires_the_callers_id_on_create(tags, monkeypatch):
    workflow = WorkflowBuilder(tags)
    workflow.add_node("TagCreateNode", "create", {"label": "no id"})
    built = workflow.build()
    assert [str(i) for i in built.workflow_inputs] == ["create.id"]
    opens = spy_on_opens(monkeypatch, tags)
    with pytest.raises(DataFlowError, match="create.id"):
        LocalRuntime().execute(built)
    assert opens == []
    assert one(tags, "TagCountNode", {}) == {"count": 0}


def test_a_str_id_model_requires_an_id_in_every_bulk_create_row(tags):
    with pytest.raises(ValidationError) as info:
        one(tags, "TagBulkCreateNode", {"data": [{"id": "a", "label": "A"}, {"label": "B"}]})
    assert "row 1" in str(info.value)
    assert "id" in str(info.value)
    assert one(tags, "TagCountNode", {}) == {"count": 0}


def test_a_str_id_model_bulk_creates_lists_updates_and_deletes_by_id(tags):
    data = [{"id": k, "label": k.upper()} for k in ("b", "a", "c")]
    assert one(tags, "TagBulkCreateNode", {"data": data}) == {"inserted": 3}
    assert [r["id"] for r in one(tags, "TagListNode", {})["records"]] == ["a", "b", "c"]
    assert one(tags, "TagUpdateNode", {"id": "a", "fields": {"label": "Alpha"}})["label"] == "Alpha"
    assert one(tags, "TagDeleteNode", {"id": "b"}) == {"id": "b", "deleted": True}
    assert one(tags, "TagReadNode", {"id": "zz", "raise_on_not_found": False}) is None
    with pytest.raises(NotFoundError, match="zz"):
        one(tags, "TagReadNode", {"id": "zz"})


def test_a_str_id_model_bulk_upserts_on_its_id(tags):
    one(tags, "TagCreateNode", {"id": "a", "label": "old"})
    result = one(
        tags, "TagBulkUpsertNode", {"data": [{"id": "a", "label": "new"}, {"id": "b", "label": "B"}]}
    )
    assert result == {"inserted": 1, "updated": 1}
    labels = {r["id"]: r["label"] for r in one(tags, "TagListNode", {})["records"]}
    assert labels == {"a": "new", "b": "B"}


# -- introspection -------------------------------------------------------------
EXPECTED_PARAMETERS = {
    "UserCreateNode": {"name", "email", "age", "active", "nickname"},
    "UserReadNode": {"id", "raise_on_not_found"},
    "UserUpdateNode": {"id", "filter", "fields", "raise_on_not_found"},
    "UserDeleteNode": {"id", "filter"},
    "UserListNode": {"filter", "order_by", "limit", "offset"},
    "UserCountNode": {"filter"},
    "UserUpsertNode": {"where", "create", "update", "conflict_on"},
    "UserBulkCreateNode": {"data", "batch_size"},
    "UserBulkUpdateNode": {"filter", "fields", "confirmed"},
    "UserBulkDeleteNode": {"filter", "confirmed"},
    "UserBulkUpsertNode": {"data", "conflict_on", "update_fields"},
    "UserAggregateNode": {"group_by", "metrics", "filter", "having", "order_by", "limit"},
}


def test_a_model_generates_the_twelve_nodes(users):
    assert set(users.nodes) == set(EXPECTED_PARAMETERS)


@pytest.mark.parametrize("node_name", sorted(EXPECTED_PARAMETERS))
def test_each_node_class_exposes_its_parameters(users, node_name):
    cls = users.nodes[node_name]
    assert isinstance(cls.parameters, tuple)
    assert all(isinstance(p, Param) for p in cls.parameters)
    names = {p.name for p in cls.parameters}
    assert names >= EXPECTED_PARAMETERS[node_name]
    for p in cls.parameters:
        assert isinstance(p.required, bool)
        assert p.description
    described = cls.describe()
    assert [d["name"] for d in described] == [p.name for p in cls.parameters]
    for entry in described:
        assert set(entry) >= {"name", "type", "required", "default", "description"}


def test_parameter_defaults_match_the_documented_ones(users):
    def params(node):
        return {p.name: p for p in users.nodes[node].parameters}

    read = params("UserReadNode")
    assert read["id"].required is True
    assert read["raise_on_not_found"].default is True
    assert params("UserUpdateNode")["fields"].required is True
    assert params("UserUpdateNode")["raise_on_not_found"].default is True
    listing = params("UserListNode")
    assert (listing["filter"].default, listing["order_by"].default) == ({}, [])
    assert (listing["limit"].default, listing["offset"].default) == (None, 0)
    assert params("UserCountNode")["filter"].default == {}
    assert params("UserUpsertNode")["where"].required is True
    assert params("UserBulkCreateNode")["data"].required is True
    assert params("UserBulkUpdateNode")["confirmed"].default is False
    assert params("UserBulkDeleteNode")["confirmed"].default is False
    assert params("UserBulkUpsertNode")["conflict_on"].default == ["id"]
    create = params("UserCreateNode")
    assert create["name"].required is True
    assert create["age"].required is False
    assert create["age"].default == 0
    assert create["nickname"].required is False


def test_describe_reports_required_and_defaults_as_plain_values(users):
    described = {d["name"]: d for d in users.nodes["UserListNode"].describe()}
    assert described["limit"]["default"] is None
    assert described["offset"]["default"] == 0
    assert described["offset"]["required"] is False
    read = {d["name"]: d for d in users.nodes["UserReadNode"].describe()}
    assert read["id"]["required"] is True
    assert isinstance(read["id"]["type"], str)


# -- natural-key Upsert on a model with a caller-supplied id (issue 12) ------------------------
def define_product(db):
    @db.model
    class Product:
        id: str
        sku: str
        name: str = ""

        __dataflow__ = {"unique": [["sku"]]}

    return Product


def test_upsert_with_supplied_id_in_create_creates_then_updates_by_natural_key(db):
    define_product(db)
    first = one(
        db,
        "ProductUpsertNode",
        {
            "where": {"sku": "A-1"},
            "create": {"id": "p1", "name": "One"},
            "update": {"name": "One"},
            "conflict_on": ["sku"],
        },
    )
    assert first["created"] is True
    assert first["record"]["id"] == "p1"
    second = one(
        db,
        "ProductUpsertNode",
        {
            "where": {"sku": "A-1"},
            "create": {"id": "other", "name": "Two"},
            "update": {"name": "Two"},
            "conflict_on": ["sku"],
        },
    )
    assert second["created"] is False
    assert second["record"]["id"] == "p1"  # the id never changes on update
    assert second["record"]["name"] == "Two"
    assert one(db, "ProductCountNode", {}) == {"count": 1}


def test_upsert_still_refuses_an_id_in_update_and_a_generated_id_in_create(db, users):
    define_product(db)
    with pytest.raises(ValidationError, match="cannot be set in 'update'"):
        one(db, "ProductUpsertNode", {"where": {"sku": "A"}, "update": {"id": "x"}})
    with pytest.raises(ValidationError, match="cannot be set in 'create'"):
        one(users, "UserUpsertNode", {"where": {"email": "a@b"}, "create": {"id": 5, "name": "A"}})


def test_bulk_upsert_on_natural_key_keeps_the_stored_id(db):
    define_product(db)
    params = {"conflict_on": ["sku"]}
    one(db, "ProductBulkUpsertNode", {**params, "data": [{"id": "p1", "sku": "A", "name": "One"}]})
    result = one(db, "ProductBulkUpsertNode", {**params, "data": [{"id": "p9", "sku": "A", "name": "Two"}]})
    assert (result["inserted"], result["updated"]) == (0, 1)
    rows = one(db, "ProductListNode", {})
    assert [(r["id"], r["sku"], r["name"]) for r in rows["records"]] == [("p1", "A", "Two")]


# -- compiled SQL is kept per statement shape ------------------------------------------
def test_create_read_update_and_count_compile_their_sql_once_per_shape(db, monkeypatch):
    define_user(db)
    add_users(db, 3)
    dialect = db.database.dialect
    compiled: list[str] = []
    for name in ("compile", "compile_named"):
        real = getattr(dialect, name)
        monkeypatch.setattr(dialect, name, lambda stmt, real=real: compiled.append(str(stmt)) or real(stmt))

    def every_op(n: int) -> list:
        return [
            one(db, "UserCreateNode", {"name": f"new {n}", "email": f"new{n}@x", "age": n})["age"],
            one(db, "UserReadNode", {"id": 1 + n})["name"],
            one(db, "UserUpdateNode", {"id": 1 + n, "fields": {"age": 40 + n}})["age"],
            one(db, "UserCountNode", {"filter": {"age": {"$gte": 40 + n}, "active": True}})["count"],
        ]

    assert every_op(0) == [0, "user1", 40, 1]
    first = len(compiled)
    assert first >= 4  # each shape compiled once, at its first run
    assert every_op(1) == [1, "user2", 41, 1]  # other values: each run's own
    assert every_op(2) == [2, "user3", 42, 1]
    assert compiled[first:] == []


def test_filtered_bulk_update_and_bulk_delete_compile_their_sql_once_per_shape(db, monkeypatch):
    """Each run takes its own values (filter, SET, increments) into the SQL compiled at the first."""
    define_user(db)
    add_users(db, 6)
    dialect = db.database.dialect
    compiled: list[str] = []
    for name in ("compile", "compile_named"):
        real = getattr(dialect, name)
        monkeypatch.setattr(dialect, name, lambda stmt, real=real: compiled.append(str(stmt)) or real(stmt))

    def every_op(n: int) -> list:
        where = {"age": {"$gte": n}, "active": True}
        return [
            one(db, "UserBulkUpdateNode", {"filter": where, "fields": {"nickname": f"n{n}"}})["updated"],
            one(db, "UserBulkUpdateNode", {"filter": {"age": n}, "fields": {"age": {"$inc": 10}}})["updated"],
            one(db, "UserBulkDeleteNode", {"filter": {"age": 10 + n}})["deleted"],
        ]

    assert every_op(1) == [6, 1, 1]
    first = len(compiled)
    assert first >= 3  # each shape compiled once, at its first run
    assert every_op(4) == [3, 1, 1]  # other values: each run's own
    assert every_op(5) == [2, 1, 1]
    assert compiled[first:] == []
    rows = {r["email"]: (r["age"], r["nickname"]) for r in all_users(db)}
    assert rows == {"u2@example.com": (2, "n1"), "u3@example.com": (3, "n1"), "u6@example.com": (6, "n5")}
