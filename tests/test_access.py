"""Access control: db.grant, User, and the checks in build() and before a run writes anything."""

from __future__ import annotations

import pytest

from dataflow_lab import (
    AccessDeniedError,
    DataFlow,
    LocalRuntime,
    User,
    ValidationError,
    WorkflowBuilder,
)

EDITOR = User("erin", roles=["editor"])
VIEWER = User("vic", roles=["viewer"])


def define(db):
    @db.model
    class Order:
        item: str
        qty: int = 1

    @db.model
    class Invoice:
        total: float
        __dataflow__ = {"audit_log": True}

    return Order, Invoice


def workflow(db, *steps):
    builder = WorkflowBuilder(db)
    for node_type, node_id, params in steps:
        builder.add_node(node_type, node_id, params)
    return builder


def count(db, model):
    admin = User("root", roles=["admin"])
    results, _ = LocalRuntime().execute(workflow(db, (f"{model}CountNode", "n", {})), user=admin)
    return results["n"]["count"]


def grant_all(db):
    db.grant("admin", "*", "all")
    db.grant("editor", "Order", ["read", "write"])
    db.grant("viewer", "Order", "read")


def test_without_grants_access_control_is_off(db):
    define(db)
    results, _ = LocalRuntime().execute(workflow(db, ("OrderCreateNode", "c", {"item": "pen"})))
    assert results["c"]["item"] == "pen"


def test_a_denied_write_leaves_zero_rows(db):
    define(db)
    grant_all(db)
    builder = workflow(
        db,
        ("OrderBulkCreateNode", "orders", {"data": [{"item": "pen"}, {"item": "ink"}]}),
        ("InvoiceCreateNode", "invoice", {"total": 9.5}),
    )
    with pytest.raises(AccessDeniedError) as info:
        LocalRuntime().execute(builder, user=EDITOR)
    text = str(info.value)
    for part in ("erin", "editor", "invoice", "InvoiceCreateNode", "'create' on Invoice", "admin"):
        assert part in text, part
    assert "orders" not in text  # the editor may bulk_create orders: only the denied node is listed
    assert len(info.value.denials) == 1
    assert count(db, "Order") == 0 and count(db, "Invoice") == 0


def test_a_granted_user_runs_and_the_audit_log_names_them(db):
    define(db)
    grant_all(db)
    db.grant("billing", "Invoice", "write")
    billing = User("bill", roles=["billing", "viewer"])
    results, _ = LocalRuntime(user=billing).execute(workflow(db, ("InvoiceCreateNode", "c", {"total": 3.0})))
    assert [e.user for e in db.audit("Invoice")] == ["bill"]
    results, _ = LocalRuntime().execute(workflow(db, ("OrderListNode", "l", {})), user=billing)
    assert results["l"]["count"] == 0


def test_read_is_a_group_of_read_list_and_count_and_gives_no_writes(db):
    define(db)
    grant_all(db)
    runtime = LocalRuntime()
    reads = workflow(db, ("OrderListNode", "l", {}), ("OrderCountNode", "n", {}))
    assert runtime.execute(reads, user=VIEWER)[0]["n"]["count"] == 0
    for node_type, params in (
        ("OrderCreateNode", {"item": "x"}),
        ("OrderUpsertNode", {"where": {"item": "x"}}),
        ("OrderBulkDeleteNode", {"confirmed": True}),
    ):
        with pytest.raises(AccessDeniedError):
            runtime.execute(workflow(db, (node_type, "w", params)), user=VIEWER)


def test_no_user_or_a_plain_name_is_denied_once_grants_exist(db):
    define(db)
    db.grant("viewer", "Order", "read")
    with pytest.raises(AccessDeniedError, match="no user"):
        LocalRuntime().execute(workflow(db, ("OrderCountNode", "n", {})))
    with pytest.raises(AccessDeniedError, match="plain name"):
        LocalRuntime(user="alice").execute(workflow(db, ("OrderCountNode", "n", {})))


def test_build_checks_access_when_the_user_is_known():
    db = DataFlow()
    define(db)
    db.grant("viewer", "Order", "read")
    builder = workflow(db, ("OrderCountNode", "n", {}), ("OrderDeleteNode", "d", {"id": 1}))
    with pytest.raises(AccessDeniedError, match="node 'd'"):
        builder.build(user=VIEWER)
    assert builder.build().nodes.keys() == {"n", "d"}  # no user: checked when it runs


def test_fine_grained_operations():
    db = DataFlow()
    define(db)
    db.grant("importer", "Order", "bulk_create")
    importer = User("ivy", roles="importer")
    out, _ = LocalRuntime().execute(
        workflow(db, ("OrderBulkCreateNode", "b", {"data": [{"item": "a"}]})), user=importer
    )
    assert out["b"]["inserted"] == 1
    with pytest.raises(AccessDeniedError, match="'create' on Order"):
        LocalRuntime().execute(workflow(db, ("OrderCreateNode", "c", {"item": "b"})), user=importer)


def test_grant_refuses_unknown_operations_and_models():
    db = DataFlow()
    define(db)
    with pytest.raises(ValidationError, match="Did you mean 'bulk_create'"):
        db.grant("r", "Order", "bulk_creat")
    with pytest.raises(ValidationError, match="Did you mean 'Order'"):
        db.grant("r", "Ordr", "read")
    with pytest.raises(ValidationError, match="empty"):
        db.grant("r", "Order", [])
    with pytest.raises(ValidationError, match="role"):
        db.grant("", "Order", "read")


def test_user_is_a_frozen_value():
    user = User("ann", roles=["b", "a"])
    assert user.roles == frozenset({"a", "b"})
    assert repr(user) == "User('ann', roles=['a', 'b'])"
    with pytest.raises(ValidationError):
        User("")
    with pytest.raises(ValidationError, match="roles"):
        User("ann", roles=[""])


def test_a_user_may_be_just_roles(db):
    define(db)
    db.grant("viewer", "Order", "read")
    results, _ = LocalRuntime().execute(
        workflow(db, ("OrderCountNode", "n", {})), user=User(roles=["viewer"])
    )
    assert results["n"]["count"] == 0
    with pytest.raises(AccessDeniedError, match="unnamed user"):
        LocalRuntime().execute(
            workflow(db, ("OrderCreateNode", "c", {"item": "x"})), user=User(roles=["viewer"])
        )
