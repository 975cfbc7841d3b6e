"""kailash-dataflow's user-level tests, ported to dataflow_lab's API, on every backend.

Each case names the kailash-dataflow test whose *behaviour* it checks (a comment
``kailash: file::test``; files are under packages/kailash-dataflow/tests/ of
terrene-foundation/kailash-py). The code is ours: where kailash spells a thing
differently (``record_id``, ``update=`` in BulkUpdate, ``success`` keys...), the
case uses our spelling, and docs/kailash.md lists the translations. Cases whose
behaviour we do not have are not here; they are recorded for the merger.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from decimal import Decimal
from typing import Optional

import pytest

from dataflow_lab import (
    AsyncLocalRuntime,
    DataFlow,
    DataFlowError,
    LocalRuntime,
    NodeExecutionError,
    NotFoundError,
    TenantRequiredError,
    ValidationError,
    WorkflowBuilder,
)

NODE_KINDS = (
    "Create",
    "Read",
    "Update",
    "Delete",
    "List",
    "Count",
    "Upsert",
    "BulkCreate",
    "BulkUpdate",
    "BulkDelete",
    "BulkUpsert",
)


# -- helpers ------------------------------------------------------------------
def run(db, *steps, connections=(), parameters=None):
    """Build one workflow of (node_type, node_id, params) steps and run it; return its results."""
    workflow = WorkflowBuilder(db)
    for node_type, node_id, params in steps:
        workflow.add_node(node_type, node_id, params)
    for connection in connections:
        workflow.add_connection(*connection)
    results, _ = LocalRuntime().execute(workflow.build(), parameters=parameters or {})
    return results


def one(db, node_type, params=None):
    return run(db, (node_type, "node", params or {}))["node"]


def define_user(db):
    @db.model
    class User:
        name: str
        email: str
        active: bool = True

    return User


def define_product(db):
    @db.model
    class Product:
        name: str
        category: str = "general"
        price: float = 0.0
        stock: int = 0
        active: bool = False

    return Product


def seed_products(db, rows):
    one(db, "ProductBulkCreateNode", {"data": rows})


def define_account(db, unique=("email",)):
    """A string-id model with a natural key, as kailash's upsert tests use."""

    @db.model
    class Account:
        id: str
        email: str
        name: str
        status: str = "active"
        score: int = 0

        __dataflow__ = {"unique": [list(unique)]}

    return Account


def define_doc(db, soft_delete=True):
    @db.model
    class Doc:
        id: str
        title: str
        status: str = "active"
        slug: str = ""

        __dataflow__ = {"soft_delete": soft_delete}

    return Doc


def names(listing):
    return [row["name"] for row in listing["records"]]


# -- create, read, update, delete in workflows ---------------------------------
def test_create_then_read_through_a_connection_returns_the_same_integer_id(db):
    # kailash: integration/core_engine/test_dataflow_crud_integration.py::test_create_and_read_workflow
    define_user(db)
    results = run(
        db,
        ("UserCreateNode", "create_user", {"name": "Test User", "email": "test@example.com"}),
        ("UserReadNode", "read_user", {}),
        connections=[("create_user", "id", "read_user", "id")],
    )
    assert results["create_user"]["name"] == "Test User"
    assert isinstance(results["create_user"]["id"], int)
    assert results["read_user"]["id"] == results["create_user"]["id"]


def test_update_through_connections_changes_only_the_given_field(db):
    # kailash: integration/core_engine/test_dataflow_crud_integration.py::test_update_workflow
    define_user(db)
    results = run(
        db,
        ("UserCreateNode", "create_user", {"name": "Original Name", "email": "original@example.com"}),
        ("UserUpdateNode", "update_user", {"fields": {"name": "Updated Name"}}),
        ("UserReadNode", "read_user", {}),
        connections=[("create_user", "id", "update_user", "id"), ("update_user", "id", "read_user", "id")],
    )
    assert results["read_user"]["name"] == "Updated Name"
    assert results["read_user"]["email"] == "original@example.com"


def test_list_with_a_filter_and_order_returns_only_matching_rows(db):
    # kailash: integration/core_engine/test_dataflow_crud_integration.py::test_list_with_filters
    define_user(db)
    users = [
        {"name": "Alice Smith", "email": "alice@example.com", "active": True},
        {"name": "Bob Jones", "email": "bob@example.com", "active": True},
        {"name": "Charlie Brown", "email": "charlie@example.com", "active": False},
    ]
    steps = [("UserCreateNode", f"create_user_{i}", user) for i, user in enumerate(users)]
    steps.append(("UserListNode", "list_active", {"filter": {"active": True}, "order_by": ["name"]}))
    listing = run(db, *steps)["list_active"]
    assert names(listing) == ["Alice Smith", "Bob Jones"]
    assert all(user["active"] is True and "id" in user for user in listing["records"])


def test_bulk_create_then_list_sees_every_row(db):
    # kailash: integration/core_engine/test_dataflow_crud_integration.py::test_bulk_operations
    define_user(db)
    data = [{"name": f"User {i}", "email": f"user{i}@example.com"} for i in range(10)]
    results = run(
        db, ("UserBulkCreateNode", "bulk", {"data": data, "batch_size": 3}), ("UserListNode", "all", {})
    )
    assert results["bulk"]["inserted"] == 10
    assert results["all"]["count"] == 10


def test_delete_in_a_workflow_removes_the_row(db):
    # kailash: integration/core_engine/test_dataflow_crud_integration.py::test_delete_workflow
    define_user(db)
    results = run(
        db,
        ("UserCreateNode", "create", {"name": "Gone", "email": "gone@example.com"}),
        ("UserDeleteNode", "delete", {}),
        connections=[("create", "id", "delete", "id")],
    )
    assert results["delete"] == {"id": results["create"]["id"], "deleted": True}
    assert one(db, "UserReadNode", {"id": results["create"]["id"], "raise_on_not_found": False}) is None


def test_a_failing_node_rolls_back_the_whole_workflow(db):
    # kailash: integration/core_engine/test_dataflow_crud_integration.py::test_transaction_workflow
    define_user(db)
    with pytest.raises(NodeExecutionError):
        run(
            db,
            ("UserCreateNode", "create", {"name": "Temp", "email": "temp@example.com"}),
            ("UserReadNode", "missing", {"id": 999}),
            connections=[],
        )
    assert one(db, "UserCountNode")["count"] == 0


def test_related_rows_are_joined_through_a_foreign_key_field(db):
    # kailash: integration/core_engine/test_dataflow_crud_integration.py::test_relationship_loading
    define_user(db)

    @db.model
    class Post:
        title: str
        author_id: int

    results = run(
        db,
        ("UserCreateNode", "author", {"name": "Writer", "email": "w@example.com"}),
        ("PostCreateNode", "post1", {"title": "One"}),
        ("PostCreateNode", "post2", {"title": "Two"}),
        ("PostListNode", "posts", {"order_by": ["title"]}),
        connections=[("author", "id", "post1", "author_id"), ("author", "id", "post2", "author_id")],
    )
    author_id = results["author"]["id"]
    assert [p["author_id"] for p in results["posts"]["records"]] == [author_id, author_id]
    assert one(db, "PostCountNode", {"filter": {"author_id": author_id}})["count"] == 2


# -- first contact ------------------------------------------------------------
def test_zero_to_first_query_creates_a_row_with_defaults_and_an_id(db):
    # kailash: integration/core_engine/test_zero_to_first_query.py::test_complete_zero_to_first_query_under_5_minutes
    define_user(db)
    user = one(db, "UserCreateNode", {"name": "Sarah Startup", "email": "sarah@startup.com"})
    assert (user["name"], user["email"], user["active"]) == ("Sarah Startup", "sarah@startup.com", True)
    assert isinstance(user["id"], int)


def test_crud_discovery_create_read_update_list_in_one_workflow(db):
    # kailash: integration/core_engine/test_zero_to_first_query.py::test_crud_operations_discovery
    @db.model
    class Widget:
        name: str
        price: float
        in_stock: bool = True

    results = run(
        db,
        ("WidgetCreateNode", "create", {"name": "Widget", "price": 19.99, "in_stock": True}),
        ("WidgetReadNode", "read", {}),
        ("WidgetUpdateNode", "update", {"fields": {"price": 24.99}}),
        ("WidgetListNode", "list", {"filter": {"in_stock": True}, "limit": 10}),
        connections=[("create", "id", "read", "id"), ("read", "id", "update", "id")],
    )
    assert results["create"]["price"] == 19.99
    assert results["read"]["name"] == "Widget"
    assert results["update"]["price"] == 24.99
    assert any(p["name"] == "Widget" for p in results["list"]["records"])


def test_a_wrong_type_is_refused_naming_the_field(db):
    # kailash: integration/core_engine/test_zero_to_first_query.py::test_error_handling_is_beginner_friendly
    @db.model
    class Signup:
        email: str
        age: int

    with pytest.raises(ValidationError, match="age"):
        one(db, "SignupCreateNode", {"email": "a@example.com", "age": "not a number"})


def test_two_models_with_a_relationship_field_work_in_one_workflow(db):
    # kailash: integration/core_engine/test_zero_to_first_query.py::test_multiple_model_relationships
    @db.model
    class Author:
        name: str
        email: str

    @db.model
    class Article:
        title: str
        content: str
        author_id: int
        published: bool = False

    results = run(
        db,
        ("AuthorCreateNode", "author", {"name": "Sarah Writer", "email": "sarah@writer.com"}),
        ("ArticleCreateNode", "post", {"title": "Getting Started", "content": "...", "published": True}),
        connections=[("author", "id", "post", "author_id")],
    )
    assert results["post"]["author_id"] == results["author"]["id"]
    assert results["post"]["published"] is True


# -- generated nodes ----------------------------------------------------------
def test_a_model_generates_its_eleven_nodes(db):
    # kailash: unit/nodes/test_count_node.py::test_count_node_11th_node_for_model
    define_user(db)
    for kind in NODE_KINDS:
        node_class = getattr(db.nodes, f"User{kind}Node")
        assert node_class.model_name == "User"


def test_each_model_gets_its_own_count_node(db):
    # kailash: unit/nodes/test_count_node.py::test_multiple_models_generate_separate_count_nodes
    define_user(db)

    @db.model
    class Order:
        total: float

    assert db.nodes.UserCountNode is not db.nodes.OrderCountNode
    assert db.nodes.OrderCountNode.model_name == "Order"


def test_generated_node_classes_have_docstrings(db):
    # kailash: unit/nodes/test_count_node.py::test_count_node_has_docstring
    define_user(db)
    assert db.nodes.UserCountNode.__doc__


def test_the_count_nodes_filter_is_an_optional_dict_defaulting_to_empty(db):
    # kailash: unit/nodes/test_count_node.py::test_count_node_filter_optional (and ::test_count_node_default_filter)
    define_user(db)
    (filter_param,) = [p for p in db.nodes.UserCountNode.describe() if p["name"] == "filter"]
    assert (filter_param["type"], filter_param["required"], filter_param["default"]) == ("dict", False, {})


def test_generated_node_parameters_have_descriptions(db):
    # kailash: unit/nodes/test_count_node.py::test_count_node_parameters_have_descriptions
    define_user(db)
    for kind in ("Count", "List", "BulkCreate", "Upsert"):
        assert all(p["description"] for p in getattr(db.nodes, f"User{kind}Node").describe())


def test_count_without_filter_counts_every_row(db):
    # kailash: unit/nodes/test_count_node.py::test_count_node_without_filter
    define_user(db)
    one(db, "UserBulkCreateNode", {"data": [{"name": str(i), "email": f"{i}@x"} for i in range(4)]})
    assert one(db, "UserCountNode") == {"count": 4}


def test_count_with_a_simple_filter(db):
    # kailash: unit/nodes/test_count_node.py::test_count_node_with_simple_filter
    define_user(db)
    one(
        db,
        "UserBulkCreateNode",
        {"data": [{"name": "a", "email": "a", "active": False}, {"name": "b", "email": "b"}]},
    )
    assert one(db, "UserCountNode", {"filter": {"active": True}})["count"] == 1


def test_count_with_a_complex_filter(db):
    # kailash: unit/nodes/test_count_node.py::test_count_node_with_complex_filter
    define_product(db)
    seed_products(
        db,
        [
            {"name": n, "price": p, "category": c}
            for n, p, c in [("a", 5, "x"), ("b", 50, "y"), ("c", 500, "x")]
        ],
    )
    count = one(db, "ProductCountNode", {"filter": {"price": {"$gte": 10}, "category": {"$in": ["x", "z"]}}})
    assert count["count"] == 1


def test_a_built_workflow_holds_its_nodes_and_connections(db):
    # kailash: integration/core_engine/test_generated_node_integration.py::test_basic_crud_node_generation_and_execution
    define_user(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node("UserCreateNode", "create_user", {"name": "A", "email": "a@example.com"})
    workflow.add_node("UserListNode", "list_users", {"filter": {"active": True}})
    workflow.add_connection("create_user", "active", "list_users", "filter.active")
    built = workflow.build()
    assert len(built.nodes) == 2
    assert len(built.connections) == 1


def test_execute_returns_results_keyed_by_node_id_and_a_run_id(db):
    # kailash: integration/core_engine/test_generated_node_integration.py::test_workflow_execution_with_generated_nodes
    define_product(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node("ProductCreateNode", "create_product", {"name": "Widget", "price": 9.5})
    workflow.add_node("ProductReadNode", "read_product", {})
    workflow.add_connection("create_product", "id", "read_product", "id")
    results, run_id = LocalRuntime().execute(workflow.build())
    assert run_id
    assert set(results) >= {"create_product", "read_product"}
    assert results["read_product"]["price"] == 9.5


def test_bulk_create_and_list_nodes_in_one_workflow(db):
    # kailash: integration/core_engine/test_generated_node_integration.py::test_bulk_operations_node_generation
    define_product(db)
    data = [{"name": f"P{i}", "price": float(i)} for i in range(5)]
    results = run(
        db, ("ProductBulkCreateNode", "bulk", {"data": data}), ("ProductListNode", "list", {"limit": 3})
    )
    assert results["bulk"]["inserted"] == 5
    assert len(results["list"]["records"]) == 3


def test_a_model_with_datetime_json_and_decimal_fields(db):
    # kailash: integration/core_engine/test_generated_node_integration.py::test_complex_model_node_generation
    @db.model
    class Invoice:
        customer: str
        amount: Decimal
        due_date: dt.datetime
        line_items: list
        metadata_: dict

    due = dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC)
    row = one(
        db,
        "InvoiceCreateNode",
        {
            "customer": "Acme Corp",
            "amount": "1500.00",
            "due_date": due,
            "line_items": [{"sku": "A", "qty": 2}],
            "metadata_": {"industry": "technology"},
        },
    )
    read = one(db, "InvoiceReadNode", {"id": row["id"]})
    assert read["amount"] == Decimal("1500.00")
    assert read["due_date"] == due
    assert read["line_items"] == [{"sku": "A", "qty": 2}]
    assert read["metadata_"] == {"industry": "technology"}


def test_a_model_with_tenancy_soft_delete_and_audit_runs_inside_a_tenant(db):
    # kailash: integration/core_engine/test_generated_node_integration.py::test_enterprise_features_node_integration
    @db.model
    class SecretDoc:
        title: str
        owner_id: int

        __dataflow__ = {"multi_tenant": True, "soft_delete": True, "audit_log": True}

    with db.tenant("tenant_abc"):
        row = one(db, "SecretDocCreateNode", {"title": "Secret Document", "owner_id": 123})
        assert one(db, "SecretDocDeleteNode", {"id": row["id"]})["deleted"] is True
        assert one(db, "SecretDocCountNode")["count"] == 0
    assert row["tenant_id"] == "tenant_abc"
    assert len(db.audit("SecretDoc", row["id"], tenant="tenant_abc")) == 2


def test_a_row_with_an_optional_field_left_out_is_created(db):
    # kailash: integration/core_engine/test_generated_node_integration.py::test_generated_node_error_handling
    @db.model
    class Note:
        required_field: str
        optional_field: Optional[str] = None  # noqa: UP045 - kailash models spell it this way

    assert one(db, "NoteCreateNode", {"required_field": "x"})["optional_field"] is None


def test_eleven_nodes_build_fast(db):
    # kailash: integration/core_engine/test_generated_node_integration.py::test_performance_with_generated_nodes
    define_user(db)
    start = time.perf_counter()
    workflow = WorkflowBuilder(db)
    for i in range(10):
        workflow.add_node("UserCreateNode", f"create_{i}", {"name": f"U{i}", "email": f"u{i}@x"})
    workflow.add_node("UserBulkCreateNode", "bulk", {"data": [{"name": "B", "email": "b@x"}]})
    built = workflow.build()
    assert time.perf_counter() - start < 1.0
    assert len(built.nodes) == 11


def test_generated_nodes_are_found_by_name_for_any_model(db):
    # kailash: integration/core_engine/test_generated_node_integration.py::test_node_discovery_and_availability
    define_user(db)
    workflow = WorkflowBuilder(db)
    for node_type in ("UserCreateNode", "UserListNode", "UserCountNode"):
        workflow.add_node(
            node_type,
            f"test_{node_type.lower()}",
            {"name": "n", "email": "e"} if "Create" in node_type else {},
        )
    assert len(workflow.build().nodes) == 3


def test_three_related_models_chained_by_connections(db):
    # kailash: integration/core_engine/test_generated_node_integration.py::test_cross_model_relationship_workflows
    @db.model
    class Writer:
        name: str

    @db.model
    class Book:
        title: str
        writer_id: int
        isbn: str

    @db.model
    class Review:
        book_id: int
        reviewer_name: str
        rating: int

    results = run(
        db,
        ("WriterCreateNode", "writer", {"name": "Famous Author"}),
        ("BookCreateNode", "book", {"title": "The Great Novel", "isbn": "978-0123456789"}),
        ("ReviewCreateNode", "review", {"reviewer_name": "Book Critic", "rating": 5}),
        ("ReviewListNode", "reviews", {}),
        connections=[
            ("writer", "id", "book", "writer_id"),
            ("book", "id", "review", "book_id"),
            ("book", "id", "reviews", "filter.book_id"),
        ],
    )
    assert results["book"]["writer_id"] == results["writer"]["id"]
    assert results["reviews"]["records"][0]["rating"] == 5


# -- Read ---------------------------------------------------------------------
def test_read_of_a_missing_id_raises_not_found(db):
    # kailash: integration/core_engine/test_dataflow_real_database.py::test_crud_operations_real_database
    define_user(db)
    with pytest.raises(NodeExecutionError, match="not found") as error:
        one(db, "UserReadNode", {"id": 404})
    assert isinstance(error.value.__cause__, NotFoundError)


def test_read_of_a_missing_id_can_return_none(db):
    # kailash: integration/test_v0106_features.py::test_read_treats_soft_deleted_as_not_found_by_default
    define_user(db)
    assert one(db, "UserReadNode", {"id": 404, "raise_on_not_found": False}) is None


# -- Update -------------------------------------------------------------------
def test_update_by_filter_on_a_string_id_keeps_the_id_type(db):
    # kailash: integration/test_type_aware_operations.py::test_update_preserves_string_id_type
    @db.model
    class Member:
        id: str
        name: str
        status: str

    one(db, "MemberCreateNode", {"id": "upd-user-001", "name": "Original", "status": "active"})
    updated = one(
        db,
        "MemberUpdateNode",
        {"filter": {"id": "upd-user-001"}, "fields": {"name": "Updated", "status": "inactive"}},
    )
    assert updated["id"] == "upd-user-001"
    assert (updated["name"], updated["status"]) == ("Updated", "inactive")


def test_update_refuses_managed_timestamps(db):
    # kailash: integration/test_parameter_validation_integration.py::test_update_node_auto_managed_fields_in_fields_rejected
    define_user(db)
    one(db, "UserCreateNode", {"name": "A", "email": "a"})
    with pytest.raises(ValidationError, match="updated_at"):
        one(db, "UserUpdateNode", {"id": 1, "fields": {"updated_at": dt.datetime.now(dt.UTC)}})


def test_update_moves_updated_at_and_keeps_created_at(db):
    # kailash: integration/test_v0106_features.py::test_update_without_timestamps_no_warning
    define_user(db)
    created = one(db, "UserCreateNode", {"name": "A", "email": "a"})
    time.sleep(0.01)
    updated = one(db, "UserUpdateNode", {"id": created["id"], "fields": {"name": "B"}})
    assert updated["created_at"] == created["created_at"]
    assert updated["updated_at"] > created["updated_at"]


def test_update_without_fields_is_refused_before_anything_runs(db):
    # kailash: integration/test_parameter_validation_integration.py::test_update_node_missing_fields_parameter
    define_user(db)
    with pytest.raises(ValidationError, match="fields"):
        one(db, "UserUpdateNode", {"id": 1})


def test_update_without_an_id_or_filter_is_refused(db):
    # kailash: integration/test_parameter_validation_integration.py::test_update_node_missing_filter_parameter
    define_user(db)
    with pytest.raises(ValidationError, match="id"):
        one(db, "UserUpdateNode", {"fields": {"name": "x"}})


# -- Create validation --------------------------------------------------------
def test_create_validates_types_in_a_real_workflow(db):
    # kailash: integration/test_parameter_validation_integration.py::test_create_node_type_validation_with_model_fields
    define_user(db)
    with pytest.raises(ValidationError, match="name"):
        one(db, "UserCreateNode", {"name": 123, "email": "a"})


def test_create_refuses_managed_timestamps(db):
    # kailash: integration/test_parameter_validation_integration.py::test_create_node_auto_managed_fields_rejected
    define_user(db)
    with pytest.raises(ValidationError, match="created_at"):
        one(db, "UserCreateNode", {"name": "A", "email": "a", "created_at": dt.datetime.now(dt.UTC)})


def test_create_of_a_string_id_model_without_an_id_is_refused(db):
    # kailash: integration/test_parameter_validation_integration.py::test_create_node_missing_id_with_workflow_context
    define_account(db)
    with pytest.raises(ValidationError, match="id"):
        one(db, "AccountCreateNode", {"email": "a@x", "name": "A"})


def test_a_valid_create_in_a_real_workflow(db):
    # kailash: integration/test_parameter_validation_integration.py::test_create_node_validation_with_real_workflow
    define_account(db)
    row = one(db, "AccountCreateNode", {"id": "acc-1", "email": "a@x", "name": "A"})
    assert row["id"] == "acc-1"


def test_a_misspelled_parameter_gets_a_did_you_mean(db):
    # kailash: integration/test_parameter_validation_integration.py::test_all_validators_work_together_with_workflows
    define_user(db)
    with pytest.raises(ValidationError, match="Did you mean 'name'"):
        one(db, "UserCreateNode", {"nmae": "A", "email": "a"})


def test_build_reports_every_problem_at_once(db):
    # kailash: integration/test_parameter_validation_integration.py::test_validation_with_multiple_errors_detected
    define_user(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node("UserCreateNode", "create", {"name": "A", "email": "a"})
    workflow.add_node("UserReadNode", "read", {})
    workflow.add_connection("create", "nope", "read", "id")
    workflow.add_connection("ghost", "id", "read", "id")
    with pytest.raises(DataFlowError) as error:
        workflow.build()
    assert "nope" in str(error.value) and "ghost" in str(error.value)


# -- List: filters, order, pagination -----------------------------------------
def test_list_validation_in_a_real_workflow(db):
    # kailash: integration/test_parameter_validation_integration.py::test_list_node_validation_with_real_workflow
    define_user(db)
    assert one(db, "UserListNode", {"filter": {}, "limit": 10, "offset": 0}) == {"records": [], "count": 0}


def test_list_refuses_a_filter_that_is_not_a_dict(db):
    # kailash: integration/test_parameter_validation_integration.py::test_list_node_filters_not_dict
    define_user(db)
    with pytest.raises(ValidationError, match="dict"):
        one(db, "UserListNode", {"filter": "active = 1"})


def test_list_refuses_a_negative_limit(db):
    # kailash: integration/test_parameter_validation_integration.py::test_list_node_invalid_limit
    define_user(db)
    with pytest.raises(ValidationError, match="limit"):
        one(db, "UserListNode", {"limit": -1})


def test_list_refuses_a_negative_offset(db):
    # kailash: integration/test_parameter_validation_integration.py::test_list_node_invalid_offset
    define_user(db)
    with pytest.raises(ValidationError, match="offset"):
        one(db, "UserListNode", {"offset": -5})


@pytest.fixture
def people(db):
    @db.model
    class Person:
        name: str
        age: int
        city: Optional[str] = None  # noqa: UP045

    rows = [
        {"name": "Ann", "age": 30, "city": "Paris"},
        {"name": "Bob", "age": 20, "city": "Rome"},
        {"name": "Cid", "age": 40},
        {"name": "Dee", "age": 25, "city": "Paris"},
        {"name": "Eve", "age": 35, "city": "Oslo"},
    ]
    one(db, "PersonBulkCreateNode", {"data": rows})
    return db


def list_people(db, **params):
    return one(db, "PersonListNode", params)


def test_list_limit_and_offset_page_through_rows(people):
    # kailash: unit/features/test_express_pagination.py::test_list_with_offset
    assert names(list_people(people, order_by=["id"], limit=2, offset=2)) == ["Cid", "Dee"]


def test_list_limit_alone_takes_the_first_rows(people):
    # kailash: unit/features/test_express_pagination.py::test_list_with_limit
    assert names(list_people(people, order_by=["id"], limit=2)) == ["Ann", "Bob"]


def test_list_pages_cover_every_row_once(people):
    # kailash: unit/features/test_express_pagination.py::test_paginate_through_all_records
    seen = []
    for offset in range(0, 10, 2):
        seen += names(list_people(people, order_by=["id"], limit=2, offset=offset))
    assert seen == ["Ann", "Bob", "Cid", "Dee", "Eve"]


def test_list_offset_past_the_end_is_empty(people):
    # kailash: unit/features/test_express_pagination.py::test_offset_beyond_records
    assert list_people(people, offset=50) == {"records": [], "count": 0}


def test_list_count_is_the_number_of_records_returned(people):
    # kailash: integration/core_engine/test_dataflow_crud_integration.py::test_list_with_filters
    assert list_people(people, limit=3)["count"] == 3


def test_list_order_by_descending(people):
    # kailash: integration/core_engine/test_dataflow_real_database.py::test_query_performance
    assert names(list_people(people, order_by=["-age"])) == ["Cid", "Eve", "Ann", "Dee", "Bob"]


def test_list_order_by_several_keys(people):
    # kailash: integration/query_features/test_dataflow_query_integration.py (multi-column sort)
    listing = list_people(people, filter={"city": {"$ne": None}}, order_by=["city", {"age": -1}])
    assert names(listing) == ["Eve", "Ann", "Dee", "Bob"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"age": {"$gt": 30}}, ["Cid", "Eve"]),
        ({"age": {"$gte": 30}}, ["Ann", "Cid", "Eve"]),
        ({"age": {"$lt": 25}}, ["Bob"]),
        ({"age": {"$lte": 25}}, ["Bob", "Dee"]),
        ({"age": {"$ne": 30}}, ["Bob", "Cid", "Dee", "Eve"]),
        ({"city": {"$in": ["Paris", "Oslo"]}}, ["Ann", "Dee", "Eve"]),
        (
            {"city": {"$nin": ["Paris"]}},
            ["Bob", "Cid", "Eve"],
        ),  # a NULL is "not in" (ours; kailash's SQL drops it)
        ({"name": {"$like": "%e%"}}, ["Dee", "Eve"]),
        ({"city": None}, ["Cid"]),
        ({"$or": [{"age": {"$lt": 21}}, {"city": "Oslo"}]}, ["Bob", "Eve"]),
        ({"age": {"$gte": 25, "$lte": 35}}, ["Ann", "Dee", "Eve"]),
    ],
    ids=["gt", "gte", "lt", "lte", "ne", "in", "nin", "like", "is-null", "or", "range"],
)
def test_list_filter_operators(people, query, expected):
    # kailash: integration/query_builder/test_query_builder_sqlite.py (the MongoDB-style operators)
    assert names(list_people(people, filter=query, order_by=["name"])) == expected


def test_count_with_the_same_filter_operators_as_list(people):
    # kailash: unit/nodes/test_count_node.py::test_count_node_filter_parameter_types
    assert one(people, "PersonCountNode", {"filter": {"city": "Paris", "age": {"$gt": 26}}})["count"] == 1


# -- Delete -------------------------------------------------------------------
@pytest.fixture
def items(db):
    @db.model
    class Gadget:
        name: str
        is_critical: bool = False

    one(
        db, "GadgetBulkCreateNode", {"data": [{"name": f"g{i}", "is_critical": i == 1} for i in range(1, 11)]}
    )
    return db


def test_delete_without_an_id_is_refused_and_deletes_nothing(items):
    # kailash: integration/core_engine/test_delete_node_validation.py::test_delete_node_missing_id_raises_error
    with pytest.raises(ValidationError, match="id"):
        one(items, "GadgetDeleteNode", {})
    assert one(items, "GadgetCountNode")["count"] == 10


def test_delete_never_defaults_to_the_first_row(items):
    # kailash: integration/core_engine/test_delete_node_validation.py::test_delete_node_does_not_default_to_id_1
    with pytest.raises(ValidationError):
        one(items, "GadgetDeleteNode", {})
    assert one(items, "GadgetReadNode", {"id": 1})["is_critical"] is True


def test_delete_with_an_id_deletes_only_that_row(items):
    # kailash: integration/core_engine/test_delete_node_validation.py::test_delete_node_with_valid_id_succeeds
    assert one(items, "GadgetDeleteNode", {"id": 5}) == {"id": 5, "deleted": True}
    assert one(items, "GadgetReadNode", {"id": 5, "raise_on_not_found": False}) is None
    assert one(items, "GadgetCountNode")["count"] == 9


def test_delete_id_parameter(items):
    # kailash: integration/core_engine/test_delete_node_validation.py::test_delete_node_id_parameter_works
    one(items, "GadgetDeleteNode", {"id": 7})
    remaining = [r["id"] for r in one(items, "GadgetListNode", {"order_by": ["id"]})["records"]]
    assert remaining == [1, 2, 3, 4, 5, 6, 8, 9, 10]


def test_delete_through_a_connection_deletes_the_new_row_only(items):
    # kailash: integration/core_engine/test_delete_node_validation.py::test_delete_node_workflow_connection_pattern
    results = run(
        items,
        ("GadgetCreateNode", "create", {"name": "Temporary Product"}),
        ("GadgetDeleteNode", "delete", {}),
        connections=[("create", "id", "delete", "id")],
    )
    assert results["delete"]["id"] == 11
    assert one(items, "GadgetCountNode")["count"] == 10
    assert one(items, "GadgetReadNode", {"id": 1})["name"] == "g1"


def test_delete_of_a_missing_id_deletes_nothing(items):
    # kailash: integration/core_engine/test_delete_node_validation.py::test_delete_node_with_nonexistent_id
    assert one(items, "GadgetDeleteNode", {"id": 999}) == {"id": 999, "deleted": False}
    assert one(items, "GadgetCountNode")["count"] == 10


def test_delete_with_a_string_id(db):
    # kailash: integration/test_delete_node_without_workaround.py::test_delete_node_with_string_id_works
    define_account(db)
    one(db, "AccountCreateNode", {"id": "acc-1", "email": "a", "name": "A"})
    assert one(db, "AccountDeleteNode", {"id": "acc-1"}) == {"id": "acc-1", "deleted": True}


def test_delete_keeps_the_id_type_in_its_output(db):
    # kailash: integration/test_delete_node_without_workaround.py::test_delete_node_preserves_id_type
    define_user(db)
    one(db, "UserCreateNode", {"name": "A", "email": "a"})
    assert isinstance(one(db, "UserDeleteNode", {"id": 1})["id"], int)


def test_a_node_id_named_like_a_field_does_not_interfere(db):
    # kailash: integration/test_delete_node_without_workaround.py::test_node_id_does_not_interfere_with_user_id
    define_user(db)
    results = run(
        db, ("UserCreateNode", "id", {"name": "A", "email": "a"}), ("UserReadNode", "user_id", {"id": 1})
    )
    assert results["user_id"]["name"] == "A"


def test_create_read_delete_in_one_workflow(db):
    # kailash: integration/test_delete_node_without_workaround.py::test_create_read_delete_workflow
    define_user(db)
    results = run(
        db,
        ("UserCreateNode", "create", {"name": "A", "email": "a"}),
        ("UserReadNode", "read", {}),
        ("UserDeleteNode", "delete", {}),
        connections=[("create", "id", "read", "id"), ("read", "id", "delete", "id")],
    )
    assert results["read"]["name"] == "A" and results["delete"]["deleted"] is True
    assert one(db, "UserCountNode")["count"] == 0


# -- Upsert -------------------------------------------------------------------
def upsert(db, where, update, create, **extra):
    return one(db, "AccountUpsertNode", {"where": where, "update": update, "create": create, **extra})


def test_upsert_creates_when_nothing_matches(db):
    # kailash: integration/test_single_upsert_node.py::test_postgresql_upsert_insert_path
    define_account(db)
    result = upsert(
        db,
        {"id": "user-1"},
        {"name": "Alice Updated"},
        {"id": "user-1", "email": "alice@example.com", "name": "Alice New"},
    )
    assert result["created"] is True
    assert result["record"]["name"] == "Alice New"
    assert result["record"]["email"] == "alice@example.com"


def test_upsert_updates_when_the_row_exists(db):
    # kailash: integration/test_single_upsert_node.py::test_postgresql_upsert_update_path
    define_account(db)
    one(db, "AccountCreateNode", {"id": "user-2", "email": "bob@example.com", "name": "Bob"})
    result = upsert(
        db,
        {"id": "user-2"},
        {"name": "Bob Updated"},
        {"id": "user-2", "email": "bob@example.com", "name": "x"},
    )
    assert result["created"] is False
    assert (result["record"]["id"], result["record"]["name"]) == ("user-2", "Bob Updated")
    assert one(db, "AccountCountNode")["count"] == 1


def test_upsert_keeps_a_string_id_a_string(db):
    # kailash: integration/test_single_upsert_node.py::test_postgresql_string_id_preservation
    @db.model
    class Session:
        id: str
        user_id: str
        token: str

    result = one(
        db,
        "SessionUpsertNode",
        {
            "where": {"id": "sess-abc"},
            "update": {"token": "t2"},
            "create": {"id": "sess-abc", "user_id": "user-456", "token": "t1"},
        },
    )
    assert result["record"]["id"] == "sess-abc"
    assert isinstance(result["record"]["id"], str)


def test_upsert_manages_timestamps(db):
    # kailash: integration/test_single_upsert_node.py::test_postgresql_auto_timestamp_management
    define_account(db)
    first = upsert(db, {"id": "a1"}, {"name": "Updated"}, {"id": "a1", "email": "e", "name": "New"})["record"]
    time.sleep(0.01)
    second = upsert(db, {"id": "a1"}, {"name": "Updated Again"}, {"id": "a1", "email": "e", "name": "New"})[
        "record"
    ]
    assert first["created_at"] and first["updated_at"]
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]


def test_concurrent_upserts_of_one_key_leave_one_row(db, backend):
    # kailash: integration/test_single_upsert_node.py::test_postgresql_concurrent_upserts_race_condition_safety
    @db.model
    class Counter:
        id: str
        name: str
        hits: int

    runtime = LocalRuntime()
    errors = []

    def upsert_counter(n):
        workflow = WorkflowBuilder(db)
        workflow.add_node(
            "CounterUpsertNode",
            "up",
            {
                "where": {"id": "c1"},
                "update": {"hits": n},
                "create": {"id": "c1", "name": "test_counter", "hits": n},
            },
        )
        try:
            runtime.execute(workflow.build())
        except DataFlowError as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=upsert_counter, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert one(db, "CounterCountNode")["count"] == 1


def test_upsert_full_cycle_on_a_product(db):
    # kailash: integration/test_single_upsert_node.py::test_sqlite_upsert_full_cycle
    @db.model
    class Sku:
        id: str
        sku: str
        name: str
        price: float

    params = {
        "where": {"id": "prod-123"},
        "update": {"name": "Updated Widget", "price": 24.99},
        "create": {"id": "prod-123", "sku": "WIDGET-001", "name": "Widget", "price": 19.99},
    }
    first = one(db, "SkuUpsertNode", params)
    second = one(db, "SkuUpsertNode", params)
    assert first["created"] is True and first["record"]["price"] == 19.99
    assert second["created"] is False
    assert (second["record"]["name"], second["record"]["price"], second["record"]["sku"]) == (
        "Updated Widget",
        24.99,
        "WIDGET-001",
    )


def test_upsert_without_where_is_refused_naming_where(db):
    # kailash: integration/test_single_upsert_node.py::test_missing_where_parameter_raises_error
    define_account(db)
    with pytest.raises(ValidationError, match="where"):
        one(db, "AccountUpsertNode", {"update": {"name": "Test"}})


def test_upsert_without_update_or_create_is_refused(db):
    # kailash: integration/test_single_upsert_node.py::test_missing_update_and_create_raises_error
    define_account(db)
    with pytest.raises(DataFlowError, match="create"):
        one(db, "AccountUpsertNode", {"where": {"id": "user-1"}})


def test_upsert_in_a_workflow_returns_its_record_and_a_run_id(db):
    # kailash: integration/test_single_upsert_node.py::test_upsert_node_in_workflow
    @db.model
    class Setting:
        id: str
        key: str
        value: str

    workflow = WorkflowBuilder(db)
    workflow.add_node(
        "SettingUpsertNode",
        "upsert_setting",
        {
            "where": {"id": "setting-1"},
            "update": {"value": "dark"},
            "create": {"id": "setting-1", "key": "theme", "value": "light"},
        },
    )
    results, run_id = LocalRuntime().execute(workflow.build())
    assert results["upsert_setting"]["record"]["key"] == "theme"
    assert run_id


def test_upsert_output_connects_to_a_read(db):
    # kailash: integration/test_single_upsert_node.py::test_upsert_node_with_connection_chaining
    define_account(db)
    results = run(
        db,
        (
            "AccountUpsertNode",
            "upsert",
            {
                "where": {"id": "user-1"},
                "update": {"name": "Updated"},
                "create": {"id": "user-1", "email": "t@x", "name": "New"},
            },
        ),
        ("AccountReadNode", "read", {}),
        connections=[("upsert", "record.id", "read", "id")],
    )
    assert results["read"]["name"] == "New"


def test_upsert_return_shape_on_create(db):
    # kailash: integration/test_single_upsert_node.py::test_upsert_return_structure_on_create
    define_account(db)
    result = upsert(db, {"id": "u1"}, {"name": "x"}, {"id": "u1", "email": "e", "name": "Alice"})
    assert result["created"] is True
    assert isinstance(result["record"], dict) and "id" in result["record"]


def test_upsert_return_shape_on_update(db):
    # kailash: integration/test_single_upsert_node.py::test_upsert_return_structure_on_update
    define_account(db)
    upsert(db, {"id": "u1"}, {"name": "x"}, {"id": "u1", "email": "e", "name": "Alice"})
    result = upsert(db, {"id": "u1"}, {"name": "Alice Updated"}, {"id": "u1", "email": "e", "name": "Alice"})
    assert result["created"] is False and result["record"]["name"] == "Alice Updated"


def test_upsert_with_typed_fields(db):
    # kailash: integration/test_type_aware_operations.py::test_upsert_handles_typed_fields
    define_account(db)
    result = upsert(
        db, {"id": "upsert-001"}, {"score": 2}, {"id": "upsert-001", "email": "e", "name": "New", "score": 1}
    )
    assert result["created"] is True and result["record"]["score"] == 1


def test_upsert_conflict_on_email_updates_the_row_that_holds_it(db):
    # kailash: integration/test_single_upsert_conflict_fields.py::test_postgresql_upsert_email_conflict
    define_account(db)
    create = {"id": "user-1", "email": "alice@example.com", "name": "Alice"}
    upsert(db, {"email": "alice@example.com"}, {"name": "Alice"}, create, conflict_on=["email"])
    result = upsert(
        db,
        {"email": "alice@example.com"},
        {"name": "Alice Updated"},
        {"id": "user-999", "email": "alice@example.com", "name": "Alice"},
        conflict_on=["email"],
    )
    assert result["created"] is False
    assert (result["record"]["id"], result["record"]["name"]) == ("user-1", "Alice Updated")


def test_upsert_conflict_on_a_composite_key(db):
    # kailash: integration/test_single_upsert_conflict_fields.py::test_postgresql_upsert_composite_conflict
    @db.model
    class OrderLine:
        id: str
        order_id: str
        product_id: str
        quantity: int

        __dataflow__ = {"unique": [["order_id", "product_id"]]}

    key = {"order_id": "o1", "product_id": "p1"}
    params = {"where": key, "conflict_on": ["order_id", "product_id"], "update": {"quantity": 9}}
    one(db, "OrderLineUpsertNode", {**params, "create": {"id": "l1", **key, "quantity": 1}})
    result = one(db, "OrderLineUpsertNode", {**params, "create": {"id": "l2", **key, "quantity": 1}})
    assert (result["created"], result["record"]["id"], result["record"]["quantity"]) == (False, "l1", 9)
    assert one(db, "OrderLineCountNode")["count"] == 1


def test_upsert_conflict_on_a_sku(db):
    # kailash: integration/test_single_upsert_conflict_fields.py::test_sqlite_upsert_sku_conflict
    @db.model
    class Stock:
        id: str
        sku: str
        qty: int

        __dataflow__ = {"unique": [["sku"]]}

    params = {
        "where": {"sku": "S-1"},
        "conflict_on": ["sku"],
        "update": {"qty": 5},
        "create": {"id": "x1", "sku": "S-1", "qty": 1},
    }
    assert one(db, "StockUpsertNode", params)["created"] is True
    assert one(db, "StockUpsertNode", params)["record"]["qty"] == 5


def test_upsert_without_conflict_on_matches_on_where(db):
    # kailash: integration/test_single_upsert_conflict_fields.py::test_backward_compatibility_no_conflict_on
    define_account(db)
    upsert(db, {"id": "k"}, {"name": "b"}, {"id": "k", "email": "e", "name": "a"})
    assert (
        upsert(db, {"id": "k"}, {"name": "b"}, {"id": "k", "email": "e", "name": "a"})["record"]["name"]
        == "b"
    )


def test_upsert_refuses_an_unknown_conflict_field(db):
    # kailash: integration/test_single_upsert_conflict_fields.py::test_invalid_conflict_field
    define_account(db)
    with pytest.raises(ValidationError, match="nonexistent"):
        upsert(
            db,
            {"id": "k"},
            {"name": "b"},
            {"id": "k", "email": "e", "name": "a"},
            conflict_on=["nonexistent"],
        )


def test_upsert_refuses_an_empty_conflict_on(db):
    # kailash: integration/test_single_upsert_conflict_fields.py::test_empty_conflict_on_list
    define_account(db)
    with pytest.raises(ValidationError, match="conflict_on"):
        upsert(db, {"id": "k"}, {"name": "b"}, {"id": "k", "email": "e", "name": "a"}, conflict_on=[])


# -- BulkUpdate ----------------------------------------------------------------
@pytest.fixture
def catalogue(db):
    define_product(db)
    seed_products(
        db,
        [
            {"name": "Widget A", "category": "electronics", "price": 10.0, "stock": 100},
            {"name": "Widget B", "category": "electronics", "price": 20.0, "stock": 50},
            {"name": "Gadget C", "category": "electronics", "price": 30.0, "stock": 75},
            {"name": "Tool X", "category": "tools", "price": 12.0, "stock": 10},
            {"name": "Tool Y", "category": "tools", "price": 14.0, "stock": 20},
        ],
    )
    return db


def test_bulk_update_with_a_filter_updates_the_matching_rows(catalogue):
    # kailash: integration/bulk_operations/test_bulk_update_real_operations.py::test_bulk_update_with_specific_filter
    result = one(
        catalogue,
        "ProductBulkUpdateNode",
        {"filter": {"category": "electronics"}, "fields": {"price": 19.99}},
    )
    assert result == {"updated": 3}
    assert one(catalogue, "ProductCountNode", {"filter": {"price": 19.99}})["count"] == 3


def test_bulk_update_with_an_empty_filter_and_confirmed_updates_all(catalogue):
    # kailash: integration/bulk_operations/test_bulk_update_real_operations.py::test_bulk_update_with_empty_filter_confirmed
    assert one(
        catalogue, "ProductBulkUpdateNode", {"filter": {}, "fields": {"active": True}, "confirmed": True}
    ) == {"updated": 5}
    assert one(catalogue, "ProductCountNode", {"filter": {"active": True}})["count"] == 5


def test_bulk_update_with_an_empty_filter_needs_confirmation(catalogue):
    # kailash: integration/bulk_operations/test_bulk_update_real_operations.py::test_bulk_update_empty_filter_without_confirmation_fails
    with pytest.raises(ValidationError) as error:
        one(catalogue, "ProductBulkUpdateNode", {"filter": {}, "fields": {"stock": 0}})
    assert "confirmed" in str(error.value).lower() and "empty filter" in str(error.value).lower()
    assert one(catalogue, "ProductCountNode", {"filter": {"stock": 0}})["count"] == 0


def test_bulk_update_matching_nothing_updates_nothing(catalogue):
    # kailash: integration/bulk_operations/test_bulk_update_real_operations.py::test_bulk_update_filter_no_matches
    assert one(
        catalogue,
        "ProductBulkUpdateNode",
        {"filter": {"category": "nonexistent"}, "fields": {"price": 999.99}},
    ) == {"updated": 0}


def test_bulk_update_of_a_single_row(catalogue):
    # kailash: integration/bulk_operations/test_bulk_update_real_operations.py::test_bulk_update_single_record
    assert one(
        catalogue,
        "ProductBulkUpdateNode",
        {"filter": {"id": 5}, "fields": {"name": "Updated Tool Y", "price": 15.99}},
    ) == {"updated": 1}
    row = one(catalogue, "ProductReadNode", {"id": 5})
    assert (row["name"], row["price"]) == ("Updated Tool Y", 15.99)


def test_bulk_update_of_a_large_batch(db):
    # kailash: integration/bulk_operations/test_bulk_update_real_operations.py::test_bulk_update_large_batch
    define_product(db)
    seed_products(db, [{"name": f"p{i}", "category": f"category_{i % 5}", "price": 1.0} for i in range(1000)])
    assert one(
        db, "ProductBulkUpdateNode", {"filter": {"category": "category_0"}, "fields": {"price": 5.99}}
    ) == {"updated": 200}


# -- BulkCreate ----------------------------------------------------------------
def test_bulk_create_inserts_every_row(db):
    # kailash: integration/bulk_operations/test_bulk_operations_integration.py::test_dataflow_bulk_create
    define_product(db)
    result = one(
        db,
        "ProductBulkCreateNode",
        {"data": [{"name": f"p{i}", "price": i * 1.5} for i in range(25)], "batch_size": 10},
    )
    assert result == {"inserted": 25}
    assert one(db, "ProductCountNode")["count"] == 25


def test_bulk_nodes_are_registered_for_a_model(db):
    # kailash: integration/bulk_operations/test_bulk_operations_integration.py::test_dataflow_node_registration
    define_product(db)
    for kind in ("BulkCreate", "BulkUpdate", "BulkDelete", "BulkUpsert"):
        assert getattr(db.nodes, f"Product{kind}Node").operation


def test_bulk_create_with_string_ids_validates_types(db):
    # kailash: integration/test_type_aware_operations.py::test_bulk_create_validates_types
    @db.model
    class Part:
        id: str
        name: str
        quantity: int

    rows = [{"id": f"bulk-00{i}", "name": f"Item{i}", "quantity": 10 * i} for i in (1, 2, 3)]
    assert one(db, "PartBulkCreateNode", {"data": rows}) == {"inserted": 3}
    assert one(db, "PartReadNode", {"id": "bulk-002"})["quantity"] == 20
    with pytest.raises(ValidationError, match="quantity"):
        one(db, "PartBulkCreateNode", {"data": [{"id": "bad", "name": "x", "quantity": "many"}]})
    assert one(db, "PartCountNode")["count"] == 3


def test_bulk_create_is_all_or_nothing(db):
    # kailash: integration/core_engine/test_dataflow_real_database.py::test_bulk_operations_real_database
    define_account(db)
    rows = [{"id": "a", "email": "same", "name": "A"}, {"id": "b", "email": "same", "name": "B"}]
    with pytest.raises(DataFlowError):
        one(db, "AccountBulkCreateNode", {"data": rows})
    assert one(db, "AccountCountNode")["count"] == 0


def test_bulk_create_then_bulk_delete(db):
    # kailash: integration/core_engine/test_database_operations.py::test_bulk_operations
    define_product(db)
    seed_products(db, [{"name": f"p{i}", "category": "old" if i % 2 else "new"} for i in range(10)])
    assert one(db, "ProductBulkDeleteNode", {"filter": {"category": "old"}}) == {"deleted": 5}
    assert one(db, "ProductCountNode")["count"] == 5


def test_bulk_delete_with_an_empty_filter_needs_confirmation(db):
    # kailash: integration/bulk_operations/test_bulk_parameter_mapping_integration.py (safe empty filter)
    define_product(db)
    seed_products(db, [{"name": "p"}])
    with pytest.raises(ValidationError, match="confirmed"):
        one(db, "ProductBulkDeleteNode", {"filter": {}})
    assert one(db, "ProductBulkDeleteNode", {"filter": {}, "confirmed": True}) == {"deleted": 1}


# -- BulkUpsert ----------------------------------------------------------------
def bulk_upsert(db, rows, **extra):
    return one(db, "AccountBulkUpsertNode", {"data": rows, **extra})


ACCOUNTS = [
    {"id": "user-001", "email": "alice@example.com", "name": "Alice", "status": "active", "score": 100},
    {"id": "user-002", "email": "bob@example.com", "name": "Bob", "status": "active", "score": 200},
    {"id": "user-003", "email": "charlie@example.com", "name": "Charlie", "status": "inactive", "score": 150},
]


def test_bulk_upsert_inserts_new_rows(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_insert_only_new_records
    define_account(db)
    assert bulk_upsert(db, ACCOUNTS) == {"inserted": 3, "updated": 0}
    alice = one(db, "AccountReadNode", {"id": "user-001"})
    assert (alice["name"], alice["score"], alice["status"]) == ("Alice", 100, "active")


def test_bulk_upsert_of_a_thousand_rows_into_an_empty_table(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_empty_table_large_batch
    define_account(db)
    rows = [
        {"id": f"user-{i:04d}", "email": f"user{i}@example.com", "name": f"User {i}", "score": i}
        for i in range(1000)
    ]
    assert bulk_upsert(db, rows, batch_size=250) == {"inserted": 1000, "updated": 0}
    assert one(db, "AccountCountNode")["count"] == 1000


def test_bulk_upsert_updates_existing_rows(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_update_only_existing_records
    define_account(db)
    bulk_upsert(db, ACCOUNTS)
    changed = [{**row, "name": row["name"] + " UPDATED", "score": row["score"] + 10} for row in ACCOUNTS]
    assert bulk_upsert(db, changed) == {"inserted": 0, "updated": 3}
    assert one(db, "AccountReadNode", {"id": "user-002"})["score"] == 210


def test_bulk_upsert_update_keeps_the_fields_it_was_not_given(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_update_preserves_unmodified_fields
    define_account(db)
    bulk_upsert(db, ACCOUNTS)
    bulk_upsert(
        db,
        [{"id": "user-001", "email": "alice@example.com", "name": "Alice", "score": 999}],
        update_fields=["score"],
    )
    alice = one(db, "AccountReadNode", {"id": "user-001"})
    assert (alice["score"], alice["status"]) == (999, "active")


def test_bulk_upsert_mixes_inserts_and_updates(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_mixed_insert_and_update
    define_account(db)
    bulk_upsert(db, ACCOUNTS[:2])
    rows = [{**ACCOUNTS[0], "name": "Alice 2"}, ACCOUNTS[2]]
    assert bulk_upsert(db, rows) == {"inserted": 1, "updated": 1}
    assert one(db, "AccountCountNode")["count"] == 3


def test_bulk_upsert_of_a_large_mixed_batch(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_large_mixed_batch
    define_account(db)
    first = [{"id": f"u{i}", "email": f"{i}@x", "name": "old"} for i in range(300)]
    bulk_upsert(db, first)
    second = [{"id": f"u{i}", "email": f"{i}@x", "name": "new"} for i in range(150, 450)]
    assert bulk_upsert(db, second, batch_size=100) == {"inserted": 150, "updated": 150}
    assert one(db, "AccountCountNode", {"filter": {"name": "new"}})["count"] == 300


def test_bulk_upsert_in_batches(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_batch_processing_large_dataset
    define_account(db)
    rows = [{"id": f"u{i}", "email": f"{i}@x", "name": "n"} for i in range(1000)]
    assert bulk_upsert(db, rows, batch_size=300)["inserted"] == 1000


def test_bulk_upsert_with_a_key_twice_in_one_batch_keeps_the_last(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_duplicate_handling_in_batch
    define_account(db)
    rows = [{"id": "d", "email": "d@x", "name": "first"}, {"id": "d", "email": "d@x", "name": "last"}]
    bulk_upsert(db, rows)
    assert one(db, "AccountReadNode", {"id": "d"})["name"] == "last"
    assert one(db, "AccountCountNode")["count"] == 1


def test_bulk_upsert_of_no_rows_is_a_no_op(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_bug_reproduction_zero_records
    define_account(db)
    assert bulk_upsert(db, []) == {"inserted": 0, "updated": 0}


def test_bulk_upsert_keeps_tenants_apart(db):
    # kailash: integration/bulk_operations/test_bulk_upsert_comprehensive.py::test_bulk_upsert_multi_tenant_isolation
    @db.model
    class Ledger:
        id: str
        name: str

        __dataflow__ = {"multi_tenant": True}

    with db.tenant("t1"):
        one(db, "LedgerBulkUpsertNode", {"data": [{"id": "a", "name": "t1 row"}]})
    with db.tenant("t2"):
        one(db, "LedgerBulkUpsertNode", {"data": [{"id": "b", "name": "t2 row"}]})
        assert [r["name"] for r in one(db, "LedgerListNode")["records"]] == ["t2 row"]
    with db.tenant("t1"):
        assert one(db, "LedgerCountNode")["count"] == 1


def test_bulk_upsert_on_email_keeps_the_existing_id(db):
    # kailash: integration/nodes/test_bulk_upsert_conflict_on_integration.py::test_bulk_upsert_on_email
    define_account(db)
    bulk_upsert(db, ACCOUNTS[:2], conflict_on=["email"])
    rows = [{"id": "user-new", "email": "alice@example.com", "name": "Alice Updated"}, ACCOUNTS[2]]
    assert bulk_upsert(db, rows, conflict_on=["email"]) == {"inserted": 1, "updated": 1}
    alice = one(db, "AccountListNode", {"filter": {"email": "alice@example.com"}})["records"]
    assert [(a["id"], a["name"]) for a in alice] == [("user-001", "Alice Updated")]
    assert one(db, "AccountCountNode")["count"] == 3


def test_bulk_upsert_on_sku_updates_the_price(db):
    # kailash: integration/nodes/test_bulk_upsert_conflict_on_integration.py::test_bulk_upsert_on_sku
    @db.model
    class Ware:
        id: str
        sku: str
        price: float

        __dataflow__ = {"unique": [["sku"]]}

    one(db, "WareBulkUpsertNode", {"data": [{"id": "1", "sku": "W", "price": 9.99}], "conflict_on": ["sku"]})
    one(db, "WareBulkUpsertNode", {"data": [{"id": "2", "sku": "W", "price": 99.99}], "conflict_on": ["sku"]})
    assert [(r["id"], r["price"]) for r in one(db, "WareListNode")["records"]] == [("1", 99.99)]


def define_order_item(db):
    @db.model
    class OrderItem:
        id: str
        order_id: str
        product_id: str
        quantity: int

        __dataflow__ = {"unique": [["order_id", "product_id"]]}


def test_bulk_upsert_on_a_composite_key(db):
    # kailash: integration/nodes/test_bulk_upsert_conflict_on_integration.py::test_bulk_upsert_on_composite_key
    define_order_item(db)
    key = ["order_id", "product_id"]
    first = [
        {"id": "item-1", "order_id": "order-100", "product_id": "prod-A", "quantity": 5},
        {"id": "item-2", "order_id": "order-100", "product_id": "prod-B", "quantity": 3},
        {"id": "item-3", "order_id": "order-101", "product_id": "prod-A", "quantity": 2},
    ]
    assert one(db, "OrderItemBulkUpsertNode", {"data": first, "conflict_on": key}) == {
        "inserted": 3,
        "updated": 0,
    }
    second = [
        {"id": "item-1", "order_id": "order-100", "product_id": "prod-A", "quantity": 10},
        {"id": "item-4", "order_id": "order-101", "product_id": "prod-B", "quantity": 7},
    ]
    assert one(db, "OrderItemBulkUpsertNode", {"data": second, "conflict_on": key}) == {
        "inserted": 1,
        "updated": 1,
    }
    assert one(db, "OrderItemCountNode")["count"] == 4
    assert one(db, "OrderItemReadNode", {"id": "item-1"})["quantity"] == 10


def test_bulk_upsert_composite_duplicates_in_one_batch_keep_the_last(db):
    # kailash: integration/nodes/test_bulk_upsert_conflict_on_integration.py::test_composite_key_prevents_duplicates_in_batch
    define_order_item(db)
    rows = [
        {"id": "item-1", "order_id": "order-100", "product_id": "prod-A", "quantity": 5},
        {"id": "item-2", "order_id": "order-100", "product_id": "prod-B", "quantity": 3},
        {"id": "item-3", "order_id": "order-100", "product_id": "prod-A", "quantity": 10},
    ]
    one(db, "OrderItemBulkUpsertNode", {"data": rows, "conflict_on": ["order_id", "product_id"]})
    assert one(db, "OrderItemCountNode")["count"] == 2
    listing = one(db, "OrderItemListNode", {"filter": {"product_id": "prod-A"}})["records"]
    assert [row["quantity"] for row in listing] == [10]


def test_bulk_upsert_without_conflict_on_uses_the_primary_key(db):
    # kailash: integration/nodes/test_bulk_upsert_conflict_on_integration.py::test_omitting_conflict_on_uses_config_default
    define_account(db)
    bulk_upsert(db, ACCOUNTS)
    assert bulk_upsert(db, [{**ACCOUNTS[0], "name": "A2"}]) == {"inserted": 0, "updated": 1}


def test_bulk_upsert_conflict_on_given_at_run_time(db):
    # kailash: integration/nodes/test_bulk_upsert_conflict_on_integration.py::test_runtime_conflict_on_overrides_config
    @db.model
    class Login:
        id: str
        email: str
        username: str

        __dataflow__ = {"unique": [["email"], ["username"]]}

    one(
        db,
        "LoginBulkUpsertNode",
        {"data": [{"id": "1", "email": "a@x", "username": "alice"}], "conflict_on": ["username"]},
    )
    result = one(
        db,
        "LoginBulkUpsertNode",
        {"data": [{"id": "1", "email": "new@x", "username": "alice"}], "conflict_on": ["username"]},
    )
    assert result == {"inserted": 0, "updated": 1}
    assert one(db, "LoginReadNode", {"id": "1"})["email"] == "new@x"


def test_bulk_upsert_default_strategy_updates(db):
    # kailash: integration/nodes/test_bulk_upsert_conflict_on_integration.py::test_merge_strategy_update
    define_account(db)
    bulk_upsert(db, [{"id": "u", "email": "e", "name": "Alice Original"}], conflict_on=["email"])
    bulk_upsert(db, [{"id": "u", "email": "e", "name": "Alice New"}], conflict_on=["email"])
    assert one(db, "AccountReadNode", {"id": "u"})["name"] == "Alice New"


def test_bulk_upsert_of_a_thousand_rows(db):
    # kailash: integration/nodes/test_bulk_upsert_conflict_on_integration.py::test_bulk_upsert_1000_records
    define_account(db)
    rows = [{"id": f"user-{i}", "email": f"user{i}@example.com", "name": f"User {i}"} for i in range(1000)]
    assert bulk_upsert(db, rows, conflict_on=["email"], batch_size=500) == {"inserted": 1000, "updated": 0}


def test_bulk_upsert_updates_inside_a_large_dataset(db):
    # kailash: integration/nodes/test_bulk_upsert_conflict_on_integration.py::test_bulk_upsert_with_updates_in_large_dataset
    define_account(db)
    rows = [
        {"id": f"user-{i}", "email": f"user{i}@example.com", "name": f"User {i} Original"} for i in range(500)
    ]
    bulk_upsert(db, rows, conflict_on=["email"])
    changed = [{**row, "name": row["name"].replace("Original", "Updated")} for row in rows[::5]]
    assert bulk_upsert(db, changed, conflict_on=["email"]) == {"inserted": 0, "updated": 100}
    assert one(db, "AccountCountNode", {"filter": {"name": {"$like": "%Updated"}}})["count"] == 100


# -- soft delete --------------------------------------------------------------
def test_soft_delete_lifecycle(db):
    # kailash: integration/test_soft_delete_lifecycle.py::test_soft_delete_full_lifecycle_express
    define_doc(db)
    one(db, "DocCreateNode", {"id": "r1", "title": "alive"})
    assert one(db, "DocCountNode")["count"] == 1
    assert one(db, "DocDeleteNode", {"id": "r1"})["deleted"] is True
    assert one(db, "DocListNode")["records"] == []
    assert one(db, "DocReadNode", {"id": "r1", "raise_on_not_found": False}) is None
    assert one(db, "DocCountNode")["count"] == 0
    kept = one(db, "DocListNode", {"include_deleted": True})["records"]
    assert [(r["id"], r["title"]) for r in kept] == [("r1", "alive")] and kept[0]["deleted_at"] is not None
    assert one(db, "DocCountNode", {"include_deleted": True})["count"] == 1
    assert one(db, "DocReadNode", {"id": "r1", "include_deleted": True})["deleted_at"] is not None


def test_soft_delete_twice_keeps_the_first_stamp(db):
    # kailash: integration/test_soft_delete_lifecycle.py::test_soft_delete_repeat_delete_is_noop
    define_doc(db)
    one(db, "DocCreateNode", {"id": "r1", "title": "t"})
    assert one(db, "DocDeleteNode", {"id": "r1"})["deleted"] is True
    first = one(db, "DocReadNode", {"id": "r1", "include_deleted": True})["deleted_at"]
    assert one(db, "DocDeleteNode", {"id": "r1"})["deleted"] is False
    assert one(db, "DocReadNode", {"id": "r1", "include_deleted": True})["deleted_at"] == first


def test_a_model_without_soft_delete_hard_deletes(db):
    # kailash: integration/test_soft_delete_lifecycle.py::test_non_soft_delete_model_hard_deletes
    define_doc(db, soft_delete=False)
    one(db, "DocCreateNode", {"id": "r1", "title": "t"})
    assert one(db, "DocDeleteNode", {"id": "r1"})["deleted"] is True
    assert one(db, "DocListNode")["records"] == []
    with pytest.raises(ValidationError, match="include_deleted"):
        one(db, "DocListNode", {"include_deleted": True})


def test_bulk_delete_of_a_soft_delete_model_marks_rows(db):
    # kailash: integration/test_soft_delete_lifecycle.py::test_bulk_delete_tombstones_soft_delete_model
    define_doc(db)
    one(db, "DocBulkCreateNode", {"data": [{"id": f"r{i}", "title": "alive"} for i in range(3)]})
    assert one(db, "DocBulkDeleteNode", {"filter": {"id": {"$in": ["r0", "r1", "r2"]}}}) == {"deleted": 3}
    assert one(db, "DocCountNode")["count"] == 0
    kept = one(db, "DocListNode", {"include_deleted": True})["records"]
    assert len(kept) == 3 and all(r["deleted_at"] is not None and r["title"] == "alive" for r in kept)


def test_bulk_delete_of_a_plain_model_removes_rows(db):
    # kailash: integration/test_soft_delete_lifecycle.py::test_bulk_delete_hard_deletes_non_soft_delete_model
    define_doc(db, soft_delete=False)
    one(db, "DocBulkCreateNode", {"data": [{"id": f"r{i}", "title": "alive"} for i in range(3)]})
    assert one(db, "DocBulkDeleteNode", {"filter": {"title": "alive"}}) == {"deleted": 3}
    assert one(db, "DocCountNode")["count"] == 0


def test_bulk_update_skips_soft_deleted_rows(db):
    # kailash: integration/test_soft_delete_lifecycle.py::test_bulk_update_filter_skips_tombstoned_by_default
    define_doc(db)
    one(db, "DocBulkCreateNode", {"data": [{"id": f"r{i}", "title": "t"} for i in range(3)]})
    one(db, "DocDeleteNode", {"id": "r2"})
    assert one(
        db, "DocBulkUpdateNode", {"filter": {"status": "active"}, "fields": {"status": "archived"}}
    ) == {"updated": 2}
    dead = one(db, "DocReadNode", {"id": "r2", "include_deleted": True})
    assert dead["status"] == "active" and dead["deleted_at"] is not None


def test_bulk_update_of_soft_deleted_rows_only_with_include_deleted(db):
    # kailash: integration/test_soft_delete_lifecycle.py::test_bulk_update_include_deleted_undeletes (the guard half)
    define_doc(db)
    one(db, "DocCreateNode", {"id": "r1", "title": "t"})
    one(db, "DocDeleteNode", {"id": "r1"})
    assert one(db, "DocBulkUpdateNode", {"filter": {"id": "r1"}, "fields": {"status": "restored"}}) == {
        "updated": 0
    }
    assert one(
        db,
        "DocBulkUpdateNode",
        {"filter": {"id": "r1"}, "fields": {"status": "restored"}, "include_deleted": True},
    ) == {"updated": 1}
    assert one(db, "DocReadNode", {"id": "r1", "include_deleted": True})["status"] == "restored"


def test_a_soft_delete_model_has_a_nullable_deleted_at(db):
    # kailash: integration/test_soft_delete_lifecycle.py::test_soft_delete_schema_dict_includes_deleted_at
    define_doc(db)
    assert one(db, "DocCreateNode", {"id": "r1", "title": "t"})["deleted_at"] is None

    @db.model
    class HardDoc:
        id: str
        title: str

    assert "deleted_at" not in one(db, "HardDocCreateNode", {"id": "r2", "title": "t"})


def test_turning_soft_delete_on_adds_deleted_at_to_the_table(db):
    # kailash: integration/test_soft_delete_lifecycle.py::test_auto_migrate_adds_deleted_at_to_existing_table
    define_doc(db, soft_delete=False)
    one(db, "DocCreateNode", {"id": "r1", "title": "t"})
    define_doc(db, soft_delete=True)
    assert one(db, "DocDeleteNode", {"id": "r1"})["deleted"] is True
    assert one(db, "DocCountNode", {"include_deleted": True})["count"] == 1


def test_find_one_by_a_field_with_include_deleted(db):
    # kailash: integration/test_issue_1604_find_one_include_deleted.py::test_find_one_include_deleted_returns_tombstoned_row
    define_doc(db)
    one(db, "DocCreateNode", {"id": "r1", "slug": "archived", "title": "alive"})
    assert one(db, "DocListNode", {"filter": {"slug": "archived"}, "limit": 1})["records"][0]["id"] == "r1"
    one(db, "DocDeleteNode", {"id": "r1"})
    assert one(db, "DocListNode", {"filter": {"slug": "archived"}, "limit": 1})["records"] == []
    found = one(db, "DocListNode", {"filter": {"slug": "archived"}, "limit": 1, "include_deleted": True})[
        "records"
    ]
    assert found[0]["id"] == "r1" and found[0]["deleted_at"] is not None


def test_list_and_count_exclude_soft_deleted_rows_by_default(db):
    # kailash: integration/test_v0106_features.py::test_list_excludes_soft_deleted_by_default
    define_doc(db)
    one(db, "DocBulkCreateNode", {"data": [{"id": f"r{i}", "title": "t"} for i in range(4)]})
    one(db, "DocDeleteNode", {"id": "r0"})
    assert one(db, "DocListNode")["count"] == 3
    assert one(db, "DocCountNode")["count"] == 3


def test_list_and_count_include_soft_deleted_rows_when_asked(db):
    # kailash: integration/test_v0106_features.py::test_list_includes_soft_deleted_with_flag
    define_doc(db)
    one(db, "DocBulkCreateNode", {"data": [{"id": f"r{i}", "title": "t"} for i in range(4)]})
    one(db, "DocDeleteNode", {"id": "r0"})
    assert one(db, "DocListNode", {"include_deleted": True})["count"] == 4
    assert one(db, "DocCountNode", {"include_deleted": True})["count"] == 4


def test_read_of_a_soft_deleted_row_is_not_found_by_default(db):
    # kailash: integration/test_v0106_features.py::test_read_treats_soft_deleted_as_not_found_by_default
    define_doc(db)
    one(db, "DocCreateNode", {"id": "r1", "title": "t"})
    one(db, "DocDeleteNode", {"id": "r1"})
    with pytest.raises(NodeExecutionError, match="not found"):
        one(db, "DocReadNode", {"id": "r1"})


def test_read_returns_a_soft_deleted_row_when_asked(db):
    # kailash: integration/test_v0106_features.py::test_read_returns_soft_deleted_with_flag
    define_doc(db)
    one(db, "DocCreateNode", {"id": "r1", "title": "t"})
    one(db, "DocDeleteNode", {"id": "r1"})
    assert one(db, "DocReadNode", {"id": "r1", "include_deleted": True})["title"] == "t"


def test_a_model_without_soft_delete_lists_every_row(db):
    # kailash: integration/test_v0106_features.py::test_list_includes_all_records_without_soft_delete_config
    define_doc(db, soft_delete=False)
    one(db, "DocBulkCreateNode", {"data": [{"id": f"r{i}", "title": "t"} for i in range(3)]})
    assert one(db, "DocListNode")["count"] == 3


def test_soft_delete_in_a_workflow(db):
    # kailash: integration/core_engine/test_database_operations.py::test_soft_delete
    define_doc(db)
    results = run(
        db,
        ("DocCreateNode", "create", {"id": "r1", "title": "t"}),
        ("DocDeleteNode", "delete", {}),
        connections=[("create", "id", "delete", "id")],
    )
    assert results["delete"]["deleted"] is True
    assert one(db, "DocCountNode")["count"] == 0


# -- types and ids --------------------------------------------------------------
def test_a_caller_string_id_is_kept_on_create_and_read(db):
    # kailash: integration/test_type_aware_operations.py::test_string_id_preserved_in_create
    @db.model
    class Person:
        id: str
        name: str

    assert one(db, "PersonCreateNode", {"id": "user-abc123", "name": "Alice"})["id"] == "user-abc123"
    read = one(db, "PersonReadNode", {"id": "user-abc123"})
    assert read["id"] == "user-abc123" and isinstance(read["id"], str)


def test_a_uuid_id_given_as_text_round_trips(db):
    # kailash: integration/test_type_aware_operations.py::test_uuid_preserved_in_crud
    @db.model
    class Entity:
        id: uuid.UUID
        name: str

    given = uuid.uuid4()
    created = one(db, "EntityCreateNode", {"id": str(given), "name": "Test Entity"})
    assert created["id"] == given
    assert one(db, "EntityReadNode", {"id": str(given)})["name"] == "Test Entity"


def test_a_uuid_id_is_generated_when_left_out(db):
    # kailash: integration/core_engine/test_string_id_type_coercion_integration.py::test_uuid_string_id_operations
    @db.model
    class Token:
        id: uuid.UUID
        label: str

    created = one(db, "TokenCreateNode", {"label": "t"})
    assert isinstance(created["id"], uuid.UUID)
    assert one(db, "TokenReadNode", {"id": created["id"]})["label"] == "t"


def test_a_declared_integer_id_is_generated(db):
    # kailash: integration/test_type_aware_operations.py::test_integer_id_preserved
    @db.model
    class Reading:
        id: int
        value: int

    created = one(db, "ReadingCreateNode", {"value": 42})
    assert created["value"] == 42 and isinstance(created["id"], int)


def test_an_integer_id_model_accepts_an_id_given_as_text(db):
    # kailash: integration/core_engine/test_string_id_type_coercion_integration.py::test_integer_id_model_backward_compatibility
    define_user(db)
    one(db, "UserCreateNode", {"name": "A", "email": "a"})
    assert one(db, "UserReadNode", {"id": "1"})["name"] == "A"


def test_a_string_id_model_supports_every_crud_step(db):
    # kailash: integration/core_engine/test_string_id_type_coercion_integration.py::test_string_id_model_crud_operations
    define_account(db)
    one(db, "AccountCreateNode", {"id": "s-1", "email": "e", "name": "A"})
    assert one(db, "AccountUpdateNode", {"id": "s-1", "fields": {"name": "B"}})["name"] == "B"
    assert one(db, "AccountListNode", {"filter": {"id": "s-1"}})["count"] == 1
    assert one(db, "AccountDeleteNode", {"id": "s-1"})["deleted"] is True


def test_an_iso_string_becomes_a_datetime(db):
    # kailash: integration/test_type_aware_operations.py::test_iso_string_converted_to_datetime
    @db.model
    class Event:
        event_time: dt.datetime
        name: str

    created = one(db, "EventCreateNode", {"event_time": "2024-06-15T14:30:00Z", "name": "Conference"})
    assert created["event_time"] == dt.datetime(2024, 6, 15, 14, 30, tzinfo=dt.UTC)


def test_an_optional_field_defaults_to_none(db):
    # kailash: integration/test_type_aware_operations.py::test_optional_field_allows_none
    @db.model
    class Profile:
        name: str
        bio: Optional[str] = None  # noqa: UP045

    created = one(db, "ProfileCreateNode", {"name": "User1"})
    assert created["name"] == "User1" and created["bio"] is None


def test_json_fields_round_trip_and_are_updated_whole(db):
    # kailash: integration/core_engine/test_database_operations.py::test_json_field_operations
    @db.model
    class Config:
        name: str
        settings: dict
        tags: list

    row = one(
        db, "ConfigCreateNode", {"name": "c", "settings": {"theme": "dark", "n": [1, 2]}, "tags": ["a", "b"]}
    )
    assert one(db, "ConfigReadNode", {"id": row["id"]})["settings"] == {"theme": "dark", "n": [1, 2]}
    updated = one(db, "ConfigUpdateNode", {"id": row["id"], "fields": {"settings": {"theme": "light"}}})
    assert updated["settings"] == {"theme": "light"} and updated["tags"] == ["a", "b"]


def test_model_registration_creates_its_table_at_first_use(db):
    # kailash: integration/core_engine/test_database_operations.py::test_model_registration
    define_user(db)
    assert "User" in db.models
    assert one(db, "UserCountNode")["count"] == 0


def test_crud_operations_on_one_row(db):
    # kailash: integration/core_engine/test_database_operations.py::test_crud_operations
    define_user(db)
    created = one(db, "UserCreateNode", {"name": "A", "email": "a@x"})
    assert one(db, "UserReadNode", {"id": created["id"]})["email"] == "a@x"
    assert one(db, "UserUpdateNode", {"id": created["id"], "fields": {"active": False}})["active"] is False
    assert one(db, "UserListNode", {"filter": {"active": False}})["count"] == 1
    assert one(db, "UserDeleteNode", {"id": created["id"]})["deleted"] is True


def test_one_database_serves_many_workflows(db):
    # kailash: integration/core_engine/test_database_operations.py::test_connection_persistence_across_workflow
    define_user(db)
    runtime = LocalRuntime()
    for i in range(5):
        workflow = WorkflowBuilder(db)
        workflow.add_node("UserCreateNode", "c", {"name": str(i), "email": f"{i}@x"})
        runtime.execute(workflow.build())
    assert one(db, "UserCountNode")["count"] == 5


def test_many_threads_share_one_runtime(db):
    # kailash: integration/core_engine/test_database_operations.py::test_connection_pool_under_load
    define_user(db)
    runtime = LocalRuntime()
    failures = []

    def work(i):
        workflow = WorkflowBuilder(db)
        workflow.add_node("UserCreateNode", "c", {"name": str(i), "email": f"{i}@x"})
        try:
            runtime.execute(workflow.build())
        except DataFlowError as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert one(db, "UserCountNode")["count"] == 8


# -- runtime: parameters, async, tenants ----------------------------------------------
def test_run_parameters_supply_a_required_input(db):
    # kailash: integration/test_workflow_binding_integration.py (parameters={node: {...}} at execute)
    define_user(db)
    one(db, "UserCreateNode", {"name": "Alice", "email": "a"})
    workflow = WorkflowBuilder(db)
    workflow.add_node("UserReadNode", "read", {})
    results, _ = LocalRuntime().execute(workflow.build(), parameters={"read": {"id": 1}})
    assert results["read"]["name"] == "Alice"


def test_run_parameters_override_a_node_parameter(db):
    # kailash: integration/test_workflow_binding_integration.py (runtime parameters win over build-time ones)
    define_user(db)
    one(db, "UserBulkCreateNode", {"data": [{"name": "A", "email": "a"}, {"name": "B", "email": "b"}]})
    results = run(db, ("UserReadNode", "read", {"id": 1}), parameters={"read": {"id": 2}})
    assert results["read"]["name"] == "B"


def test_a_run_missing_a_workflow_input_is_refused_before_anything_runs(db):
    # kailash: integration/test_workflow_binding_integration.py (missing required parameter)
    define_user(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node("UserCreateNode", "c", {"name": "A", "email": "a"})
    workflow.add_node("UserReadNode", "read", {})
    with pytest.raises(ValidationError, match=r"read\.id"):
        LocalRuntime().execute(workflow.build())
    assert one(db, "UserCountNode")["count"] == 0


def test_each_run_has_its_own_run_id(db):
    # kailash: integration/test_single_upsert_node.py::test_upsert_node_in_workflow (run_id)
    define_user(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node("UserCountNode", "n", {})
    built = workflow.build()
    runtime = LocalRuntime()
    assert runtime.execute(built)[1] != runtime.execute(built)[1]


def test_the_async_runtime_returns_results_and_a_run_id(db):
    # kailash: integration/test_v0106_features.py::test_timestamp_stripping_async_runtime
    define_user(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node("UserCreateNode", "c", {"name": "A", "email": "a"})
    workflow.add_node("UserReadNode", "r", {})
    workflow.add_connection("c", "id", "r", "id")
    results, run_id = asyncio.run(AsyncLocalRuntime().execute_async(workflow.build()))
    assert results["r"]["name"] == "A" and run_id


def test_a_workflow_builder_without_a_database_finds_the_model(db):
    # kailash: integration/core_engine/test_dataflow_crud_integration.py::test_create_and_read_workflow (WorkflowBuilder())
    define_user(db)
    workflow = WorkflowBuilder()
    workflow.add_node("UserCreateNode", "c", {"name": "A", "email": "a"})
    results, _ = LocalRuntime().execute(workflow.build())
    assert results["c"]["id"] == 1


def define_tenant_note(db):
    @db.model
    class TenantNote:
        title: str

        __dataflow__ = {"multi_tenant": True}


def test_tenants_see_only_their_own_rows(db):
    # kailash: integration/test_multi_tenant_context.py::test_cross_tenant_isolation
    define_tenant_note(db)
    with db.tenant("tenant_a"):
        one(db, "TenantNoteCreateNode", {"title": "Secret data for tenant A"})
    with db.tenant("tenant_b"):
        one(db, "TenantNoteCreateNode", {"title": "Secret data for tenant B"})
        assert [r["title"] for r in one(db, "TenantNoteListNode")["records"]] == ["Secret data for tenant B"]
    with db.tenant("tenant_a"):
        assert one(db, "TenantNoteCountNode")["count"] == 1


def test_switching_tenant_context_switches_what_nodes_see(db):
    # kailash: integration/test_multi_tenant_context.py::test_context_switching_with_real_db_operations
    define_tenant_note(db)
    for tenant, count in (("t1", 1), ("t2", 2), ("t3", 3)):
        with db.tenant(tenant):
            one(db, "TenantNoteBulkCreateNode", {"data": [{"title": tenant}] * count})
    for tenant, count in (("t1", 1), ("t2", 2), ("t3", 3)):
        with db.tenant(tenant):
            assert one(db, "TenantNoteCountNode")["count"] == count


def test_nested_tenant_contexts_restore_the_outer_one(db):
    # kailash: integration/test_multi_tenant_context.py::test_nested_switches_with_real_data
    define_tenant_note(db)
    with db.tenant("outer"):
        one(db, "TenantNoteCreateNode", {"title": "o"})
        with db.tenant("inner"):
            one(db, "TenantNoteCreateNode", {"title": "i"})
            assert one(db, "TenantNoteCountNode")["count"] == 1
        assert [r["title"] for r in one(db, "TenantNoteListNode")["records"]] == ["o"]


def test_a_failure_inside_a_tenant_context_restores_it(db):
    # kailash: integration/test_multi_tenant_context.py::test_error_recovery_during_switch
    define_tenant_note(db)
    with db.tenant("t1"):
        with pytest.raises(RuntimeError):
            with db.tenant("t2"):
                raise RuntimeError("boom")
        assert one(db, "TenantNoteCreateNode", {"title": "x"})["tenant_id"] == "t1"


def test_a_tenant_model_run_without_a_tenant_is_refused(db):
    # kailash: unit/test_tenant_required_error_alias.py (TenantRequiredError)
    define_tenant_note(db)
    with pytest.raises(TenantRequiredError):
        one(db, "TenantNoteCreateNode", {"title": "x"})


def test_the_runtime_tenant_argument_scopes_a_run(db):
    # kailash: integration/test_multi_tenant_context.py::test_workflow_creation_in_tenant_context
    define_tenant_note(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node("TenantNoteCreateNode", "c", {"title": "x"})
    results, _ = LocalRuntime().execute(workflow.build(), tenant="acme")
    assert results["c"]["tenant_id"] == "acme"
    with db.tenant("other"):
        assert one(db, "TenantNoteCountNode")["count"] == 0


def test_tenant_contexts_are_isolated_between_threads(db):
    # kailash: integration/test_multi_tenant_context.py::test_concurrent_async_switches_isolation
    define_tenant_note(db)
    runtime = LocalRuntime()
    failures = []

    def work(tenant):
        try:
            with db.tenant(tenant):
                for _ in range(3):
                    workflow = WorkflowBuilder(db)
                    workflow.add_node("TenantNoteCreateNode", "c", {"title": tenant})
                    runtime.execute(workflow.build())
        except DataFlowError as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for i in range(3):
        with db.tenant(f"t{i}"):
            titles = {r["title"] for r in one(db, "TenantNoteListNode")["records"]}
            assert titles == {f"t{i}"}


# -- JSON fields ------------------------------------------------------------------------
def define_config(db):
    @db.model
    class Setting:
        name: str
        settings: dict

    return Setting


@pytest.mark.parametrize(
    "settings",
    [
        {"theme": "dark", "count": 3},
        {"outer": {"inner": {"deep": [1, {"x": True}]}}, "flag": False},
        {
            "message": "It's a test with 'quotes' and \"double quotes\"",
            "path": "/path/with\\backslash",
            "unicode": "Hello 世界 🌍",
        },
        {},
        {"key1": None, "key2": "value", "key3": None},
        {f"key_{i}": f"value_{i}" * 100 for i in range(100)},
        {"tags": ["a", "b"], "matrix": [[1, 2], [3, 4]], "empty": []},
    ],
    ids=["simple", "nested", "special-characters", "empty", "null-values", "large", "arrays"],
)
def test_a_dict_field_round_trips(db, settings):
    # kailash: integration/test_jsonb_bug_reproduction.py::test_simple_dict_jsonb (and ::test_nested_dict_jsonb,
    # ::test_dict_with_special_characters, ::test_empty_dict_jsonb, ::test_dict_with_null_values,
    # ::test_large_dict_jsonb, ::test_dict_with_arrays)
    define_config(db)
    created = one(db, "SettingCreateNode", {"name": "c", "settings": settings})
    assert created["settings"] == settings
    assert one(db, "SettingReadNode", {"id": created["id"]})["settings"] == settings


def test_several_json_fields_on_one_model(db):
    # kailash: integration/test_jsonb_bug_reproduction.py::test_multiple_jsonb_fields
    @db.model
    class Profile:
        name: str
        preferences: dict
        metadata_: dict
        history: list

    row = one(
        db,
        "ProfileCreateNode",
        {"name": "p", "preferences": {"lang": "en"}, "metadata_": {"v": 2}, "history": [{"at": 1}]},
    )
    read = one(db, "ProfileReadNode", {"id": row["id"]})
    assert (read["preferences"], read["metadata_"], read["history"]) == (
        {"lang": "en"},
        {"v": 2},
        [{"at": 1}],
    )


# -- ids as parameters -----------------------------------------------------------------
def test_several_nodes_with_their_own_id_parameters(db):
    # kailash: integration/test_bug_3_reserved_fields_fix.py::test_multiple_nodes_with_id_parameters
    define_user(db)
    one(db, "UserBulkCreateNode", {"data": [{"name": n, "email": n} for n in ("A", "B", "C")]})
    results = run(db, *[("UserReadNode", f"read_{i}", {"id": i}) for i in (3, 1, 2)])
    assert [results[f"read_{i}"]["name"] for i in (1, 2, 3)] == ["A", "B", "C"]


def test_a_string_id_is_a_field_not_the_node_id(db):
    # kailash: integration/test_bug_3_reserved_fields_fix.py::test_user_can_use_id_parameter
    define_account(db)
    results = run(
        db, ("AccountCreateNode", "create_account", {"id": "custom-id-1", "email": "e", "name": "n"})
    )
    assert results["create_account"]["id"] == "custom-id-1"


def test_delete_by_a_user_given_id_in_a_workflow(db):
    # kailash: integration/test_bug_3_reserved_fields_fix.py::test_deletenode_works_without_workaround
    define_account(db)
    results = run(
        db,
        ("AccountCreateNode", "create", {"id": "to-delete", "email": "e", "name": "n"}),
        ("AccountDeleteNode", "delete", {}),
        connections=[("create", "id", "delete", "id")],
    )
    assert results["delete"] == {"id": "to-delete", "deleted": True}


# -- transactions and routing ----------------------------------------------------------
def define_bank(db):
    @db.model
    class BankAccount:
        number: str
        balance: float = 0.0

    one(db, "BankAccountCreateNode", {"number": "ACC-1", "balance": 100.0})


def test_nodes_chain_data_from_one_to_the_next(db):
    # kailash: integration/transactions/test_workflow_integration.py::test_node_chaining
    define_bank(db)
    results = run(
        db,
        ("BankAccountListNode", "find", {"filter": {"number": "ACC-1"}, "limit": 1}),
        ("BankAccountUpdateNode", "credit", {"fields": {"balance": {"$inc": 50.0}}}),
        ("BankAccountReadNode", "check", {}),
        connections=[("find", "records.0.id", "credit", "id"), ("credit", "id", "check", "id")],
    )
    assert results["check"]["balance"] == 150.0


def test_a_switch_routes_a_withdrawal(db):
    # kailash: integration/transactions/test_workflow_integration.py::test_conditional_workflow
    define_bank(db)

    def withdraw(account: dict) -> dict:
        return {"balance": {"$inc": -30.0}}

    workflow = WorkflowBuilder(db)
    workflow.add_node("BankAccountReadNode", "account", {"id": 1})
    workflow.add_node(
        "SwitchNode", "enough", cases=["yes", "no"], condition=lambda v: "yes" if v["balance"] >= 30 else "no"
    )
    workflow.add_node(withdraw, "withdraw")
    workflow.add_node("BankAccountUpdateNode", "save", {"id": 1})
    workflow.add_node(lambda account: {"text": "refused"}, "refuse")
    workflow.add_connection("account", "balance", "enough", "value.balance")
    workflow.add_connection("enough", "yes", "withdraw", "account")
    workflow.add_connection("enough", "no", "refuse", "account")
    workflow.add_connection("withdraw", "balance", "save", "fields.balance")
    results, _ = LocalRuntime().execute(workflow.build())
    assert results["save"]["balance"] == 70.0
    assert results.skipped == ["refuse"]


def test_independent_nodes_run_in_parallel_with_the_same_results(db):
    # kailash: integration/transactions/test_workflow_integration.py::test_parallel_execution
    define_user(db)
    workflow = WorkflowBuilder(db)
    for i in range(5):
        workflow.add_node("UserCreateNode", f"create_{i}", {"name": f"U{i}", "email": f"u{i}@x"})
    runtime = AsyncLocalRuntime(transaction="node", max_concurrency=5)
    results, _ = asyncio.run(runtime.execute_async(workflow.build()))
    assert sorted(results[f"create_{i}"]["name"] for i in range(5)) == [f"U{i}" for i in range(5)]
    assert one(db, "UserCountNode")["count"] == 5


def test_a_transaction_block_rolls_back_every_workflow_inside_it(db):
    # kailash: integration/transactions/test_workflow_integration.py::test_workflow_transaction
    define_bank(db)
    with pytest.raises(RuntimeError):
        with db.transaction():
            one(db, "BankAccountUpdateNode", {"id": 1, "fields": {"balance": 0.0}})
            one(db, "BankAccountCreateNode", {"number": "ACC-2"})
            raise RuntimeError("transfer failed")
    assert one(db, "BankAccountReadNode", {"id": 1})["balance"] == 100.0
    assert one(db, "BankAccountCountNode")["count"] == 1


def test_a_nested_block_undoes_only_its_own_writes(db):
    # kailash: integration/transactions/test_workflow_integration.py::test_nested_transactions
    define_bank(db)
    with db.transaction():
        one(db, "BankAccountCreateNode", {"number": "OUTER"})
        with pytest.raises(NodeExecutionError):
            with db.transaction():
                run(
                    db,
                    ("BankAccountCreateNode", "inner", {"number": "INNER"}),
                    ("BankAccountReadNode", "missing", {"id": 999}),
                )
    numbers = [r["number"] for r in one(db, "BankAccountListNode", {"order_by": ["id"]})["records"]]
    assert numbers == ["ACC-1", "OUTER"]


def test_monitoring_counts_workflow_runs(url):
    # kailash: integration/transactions/test_workflow_integration.py::test_query_monitoring
    from dataflow_lab import DataFlow

    db = DataFlow(url, monitoring=True)
    try:
        define_user(db)
        for i in range(3):
            one(db, "UserCreateNode", {"name": str(i), "email": str(i)})
        dashboard = db.metrics()
        assert set(dashboard) >= {
            "workflow_executions",
            "database_operations",
            "connection_pool",
            "safety_events",
        }
        assert dashboard["workflow_executions"]["total"] >= 3
    finally:
        db.close()


def test_pool_status_reports_the_pool(db):
    # kailash: integration/transactions/test_workflow_integration.py::test_connection_pool_monitoring
    define_user(db)
    one(db, "UserCountNode")
    status = db.pool_status()
    assert {"size", "checked_out", "overflow", "acquired_total", "failures"} <= set(status)
    assert status["acquired_total"] >= 1 and status["checked_out"] == 0


# -- docs/kailash.md ----------------------------------------------------------------
def test_every_python_block_of_the_kailash_guide_runs(url):
    """docs/kailash.md's blocks run in order, in one namespace, on each backend."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "kailash.md").read_text(encoding="utf-8")
    namespace: dict = {"__name__": "kailash_guide"}
    for match in re.finditer(r"```python\n(.*?)```", text, re.DOTALL):
        code = match[1]
        if url is not None:
            code = code.replace("db = DataFlow()", f"db = DataFlow({url!r})", 1)
        line = text.count("\n", 0, match.start(1)) + 1
        exec(compile(code, f"docs/kailash.md, block at line {line}", "exec"), namespace)
    namespace["db"].close()


# kailash: integration/test_single_upsert_conflict_fields.py::test_postgresql_conflict_on_with_null_values
def test_an_upsert_on_a_null_natural_key_inserts_as_bulk_upsert_and_unique_do(db):
    @db.model
    class Ticket:
        title: str
        external_id: Optional[str] = None  # noqa: UP045

        __dataflow__ = {"unique": [["external_id"]]}

    params = {"where": {"external_id": None}, "create": {"title": "t"}, "conflict_on": ["external_id"]}
    first = one(db, "TicketUpsertNode", params)
    second = one(db, "TicketUpsertNode", {**params, "create": {"title": "u"}})
    assert (first["created"], second["created"]) == (True, True)
    assert first["record"]["id"] != second["record"]["id"]
    bulk = one(db, "TicketBulkUpsertNode", {"data": [{"title": "v", "external_id": None}],
                                            "conflict_on": ["external_id"]})  # fmt: skip
    assert bulk["inserted"] == 1
    assert one(db, "TicketCountNode", {})["count"] == 3
    # a key with a value still finds its row
    keyed = {"where": {"external_id": "x"}, "create": {"title": "w"}, "update": {"title": "w2"},
             "conflict_on": ["external_id"]}  # fmt: skip
    assert one(db, "TicketUpsertNode", keyed)["created"] is True
    assert one(db, "TicketUpsertNode", keyed)["created"] is False


# kailash: integration/test_jsonb_bug_reproduction.py and 42 other files (`await db.initialize()` first)
def test_initialize_and_create_tables_make_every_table_before_any_workflow(url):
    import asyncio

    db = DataFlow(url)
    try:

        @db.model
        class Ledger:
            title: str

        assert db.migrations.history() == []
        assert asyncio.run(db.initialize()) == ["Ledger"]
        assert [m.name for m in db.migrations.history()] == ["0001_create_ledgers"]
        assert db.create_tables() == ["Ledger"]  # again: nothing to do
        assert len(db.migrations.history()) == 1
        assert one(db, "LedgerCountNode", {})["count"] == 0
        asyncio.run(db.close_async())
        assert db.database.closed
    finally:
        db.close()
