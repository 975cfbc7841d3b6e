"""The audit log: one entry per written row, in the run's transaction, read back by db.audit()."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal

import pytest

from dataflow_lab import DataFlow, DataFlowError, LocalRuntime, ValidationError, WorkflowBuilder
from dataflow_lab.audit import AUDIT_TABLE, AuditEntry


def define_user(db: DataFlow, *, audited: bool = True) -> type:
    @db.model
    class User:
        name: str
        age: int = 0
        __dataflow__ = {"audit_log": audited, "unique": [["name"]]}

    return User


@pytest.fixture
def users(db):
    define_user(db)
    return db


def run(db: DataFlow, build, runtime: LocalRuntime | None = None) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    build(wf)
    return (runtime or LocalRuntime(user="alice")).execute(wf.build())[0]


def one(db: DataFlow, node_type: str, params: dict, runtime: LocalRuntime | None = None) -> dict:
    return run(db, lambda wf: wf.add_node(node_type, "n", params), runtime)["n"]


def boom(x: object = None) -> None:
    raise ValueError("injected failure")


def audit_rows(db: DataFlow) -> int:
    """Rows in the audit table, counted by a workflow-free raw query."""
    from dataflow_lab import _loop

    async def count() -> int:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            return (await conn.fetch(f"SELECT count(*) FROM {AUDIT_TABLE}"))[0][0]
        finally:
            await dialect.release(conn)

    return _loop.run(count())


# --------------------------------------------------------------------------- what gets logged


def test_single_row_writes_log_who_what_and_the_values_before_and_after(users):
    created = one(users, "UserCreateNode", {"name": "Ann", "age": 30})
    updated = one(users, "UserUpdateNode", {"id": created["id"], "fields": {"age": 31}})
    one(users, "UserDeleteNode", {"id": created["id"]})

    entries = users.audit("User", created["id"])
    assert [e.operation for e in entries] == ["create", "update", "delete"]
    assert all(isinstance(e, AuditEntry) for e in entries)
    assert {e.user for e in entries} == {"alice"}
    assert {e.node_id for e in entries} == {"n"}
    assert all(e.model == "User" and e.record_id == str(created["id"]) for e in entries)
    assert (entries[0].before, entries[0].after) == (None, created)
    assert (entries[1].before, entries[1].after) == (created, updated)
    assert entries[1].changes == {
        "age": (30, 31),
        "updated_at": (created["updated_at"], updated["updated_at"]),
    }
    assert (entries[2].before, entries[2].after) == (updated, None)
    assert entries[0].at <= entries[1].at <= entries[2].at
    assert entries[0].at.tzinfo is not None


def test_upsert_logs_a_create_then_an_update(users):
    first = one(
        users, "UserUpsertNode", {"where": {"name": "Ann"}, "create": {"age": 1}, "update": {"age": 2}}
    )
    second = one(
        users, "UserUpsertNode", {"where": {"name": "Ann"}, "create": {"age": 1}, "update": {"age": 2}}
    )
    entries = users.audit("User", first["record"]["id"])
    assert [(e.operation, e.before, e.after) for e in entries] == [
        ("upsert", None, first["record"]),
        ("upsert", first["record"], second["record"]),
    ]


def test_bulk_writes_log_one_entry_per_row(users):
    inserted = one(users, "UserBulkCreateNode", {"data": [{"name": f"u{i}", "age": i} for i in range(5)]})
    assert inserted == {"inserted": 5}
    assert one(users, "UserBulkUpdateNode", {"filter": {"age": {"$gte": 3}}, "fields": {"age": 99}}) == {
        "updated": 2
    }
    upserted = one(
        users,
        "UserBulkUpsertNode",
        {"data": [{"name": "u0", "age": 7}, {"name": "new", "age": 8}], "conflict_on": ["name"]},
    )
    assert upserted == {"inserted": 1, "updated": 1}
    assert one(users, "UserBulkDeleteNode", {"filter": {"name": "u1"}}) == {"deleted": 1}

    entries = users.audit("User")
    ops = [e.operation for e in entries]
    assert ops == ["bulk_create"] * 5 + ["bulk_update"] * 2 + ["bulk_upsert"] * 2 + ["bulk_delete"]
    assert [e.after["name"] for e in entries[:5]] == [f"u{i}" for i in range(5)]
    assert all(e.before is None for e in entries[:5])
    assert sorted((e.before["age"], e.after["age"]) for e in entries[5:7]) == [(3, 99), (4, 99)]
    upsert_by_name = {e.after["name"]: e for e in entries[7:9]}
    assert upsert_by_name["new"].before is None
    assert (upsert_by_name["u0"].before["age"], upsert_by_name["u0"].after["age"]) == (0, 7)
    assert (entries[9].before["name"], entries[9].after) == ("u1", None)
    rows = run(users, lambda wf: wf.add_node("UserListNode", "all", {}))["all"]["records"]
    u0 = next(r for r in rows if r["name"] == "u0")
    assert users.audit("User", u0["id"])[-1].after == u0  # the logged "after" is the row as stored


def test_bulk_create_of_caller_supplied_ids_and_upsert_of_new_rows_log_their_ids(db):
    @db.model
    class Tag:
        id: str
        label: str
        __dataflow__ = {"audit_log": True}

    one(db, "TagBulkCreateNode", {"data": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}]})
    one(db, "TagBulkUpsertNode", {"data": [{"id": "b", "label": "B2"}, {"id": "c", "label": "C"}]})
    assert [e.operation for e in db.audit(Tag, "b")] == ["bulk_create", "bulk_upsert"]
    assert db.audit(Tag, "b")[-1].changes["label"] == ("B", "B2")
    assert [e.after["label"] for e in db.audit(Tag, "c")] == ["C"]


def test_bulk_upsert_without_ids_logs_each_new_row(users):
    one(users, "UserBulkUpsertNode", {"data": [{"name": "x"}, {"name": "y"}]})
    assert sorted(e.after["name"] for e in users.audit("User")) == ["x", "y"]
    assert {e.record_id for e in users.audit("User")} == {"1", "2"}


def test_return_ids_still_works_on_an_audited_model(users):
    result = one(users, "UserBulkCreateNode", {"data": [{"name": "a"}, {"name": "b"}], "return_ids": True})
    assert result == {"inserted": 2, "ids": [1, 2]}
    assert [e.record_id for e in users.audit("User")] == ["1", "2"]


# --------------------------------------------------------------------------- transactions


def test_a_rolled_back_run_leaves_no_audit_rows(users):
    def failing(wf: WorkflowBuilder) -> None:
        wf.add_node("UserCreateNode", "create", {"name": "Ann"})
        wf.add_node("UserBulkCreateNode", "more", {"data": [{"name": f"m{i}"} for i in range(3)]})
        wf.add_node(boom, "boom", {})
        wf.add_connection("create", "id", "boom", "x")

    with pytest.raises(DataFlowError, match="injected failure"):
        run(users, failing)
    assert users.audit("User") == []
    assert audit_rows(users) == 0


def test_a_rolled_back_update_keeps_only_the_earlier_committed_entries(users):
    created = one(users, "UserCreateNode", {"name": "Ann"})

    def failing(wf: WorkflowBuilder) -> None:
        wf.add_node("UserUpdateNode", "update", {"id": created["id"], "fields": {"age": 5}})
        wf.add_node("UserBulkDeleteNode", "wipe", {"filter": {}, "confirmed": True})
        wf.add_node(boom, "boom", {})
        wf.add_connection("wipe", "deleted", "boom", "x")

    with pytest.raises(DataFlowError):
        run(users, failing)
    assert [e.operation for e in users.audit("User", created["id"])] == ["create"]
    assert audit_rows(users) == 1


def test_transaction_node_keeps_the_entries_of_the_nodes_that_committed(users):
    def build(wf: WorkflowBuilder) -> None:
        wf.add_node("UserCreateNode", "kept", {"name": "Kept"})
        wf.add_node("UserCreateNode", "dup", {"name": "Kept"})  # violates the unique name
        wf.add_connection("kept", "name", "dup", "name")

    with pytest.raises(DataFlowError):
        run(users, build, LocalRuntime(transaction="node", user="bob"))
    entries = users.audit("User")
    assert [(e.operation, e.user, e.after["name"]) for e in entries] == [("create", "bob", "Kept")]


# --------------------------------------------------------------------------- who


def test_without_a_runtime_user_the_entry_has_no_user(users):
    one(users, "UserCreateNode", {"name": "Ann"}, LocalRuntime())
    assert [e.user for e in users.audit("User", 1)] == [None]


def test_a_workflow_run_from_inside_a_node_acts_for_the_outer_runs_user(users):
    inner = LocalRuntime()  # no user of its own

    async def nested(x: object = None) -> dict:
        wf = WorkflowBuilder(dataflow=users)
        wf.add_node("UserCreateNode", "inner", {"name": "Inner"})
        return (await inner.execute_async(wf.build()))[0]["inner"]

    run(users, lambda wf: wf.add_node(nested, "outer", {}), LocalRuntime(user="carol"))
    assert [(e.user, e.node_id) for e in users.audit("User")] == [("carol", "inner")]


# --------------------------------------------------------------------------- types and errors


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_audited_values_come_back_as_the_models_types(db):
    @db.model
    class Thing:
        when: dt.datetime
        day: dt.date
        price: Decimal
        key: uuid.UUID
        color: Color
        blob: bytes
        meta: dict
        ratio: float = 0.5
        flag: bool = True
        __dataflow__ = {"audit_log": True}

    values = {
        "when": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "day": dt.date(2024, 1, 2),
        "price": Decimal("12.50"),
        "key": uuid.uuid4(),
        "color": Color.BLUE,
        "blob": b"\x00\xffbytes",
        "meta": {"a": [1, 2]},
    }
    created = one(db, "ThingCreateNode", values)
    (entry,) = db.audit(Thing, created["id"])
    assert entry.after == created


def test_an_unaudited_model_logs_nothing_and_audit_says_how_to_turn_it_on(db):
    define_user(db, audited=False)
    one(db, "UserCreateNode", {"name": "Ann"})
    with pytest.raises(ValidationError, match="not audited") as info:
        db.audit("User", 1)
    assert "audit_log" in info.value.hint


def test_audit_of_an_unknown_model_names_it(users):
    with pytest.raises(ValidationError, match="Usr"):
        users.audit("Usr", 1)


def test_audit_log_must_be_true_or_false(db):
    with pytest.raises(ValidationError, match="must be True or False"):

        @db.model
        class Bad:
            name: str
            __dataflow__ = {"audit_log": "yes"}


def test_audit_log_is_a_known_model_option(db):
    with pytest.raises(ValidationError, match="audit_log"):

        @db.model
        class Typo:
            name: str
            __dataflow__ = {"audit_logs": True}


def test_history_before_any_write_is_empty(users):
    assert users.audit("User", 1) == []


def test_audit_reads_keep_to_the_callers_tenant(db):
    """Issue 13, item 8: tenant A must not read tenant B's history or values."""
    from dataflow_lab import TenantRequiredError

    @db.model
    class Account:
        owner: str
        __dataflow__ = {"audit_log": True, "multi_tenant": True}

    rt = LocalRuntime(user="alice")
    with db.tenant("acme"):
        a = one(db, "AccountCreateNode", {"owner": "acme-secret"}, rt)["id"]
        one(db, "AccountUpdateNode", {"id": a, "fields": {"owner": "acme-secret-2"}}, rt)
    with db.tenant("globex"):
        b = one(db, "AccountCreateNode", {"owner": "globex-secret"}, rt)["id"]
        assert [e.after["owner"] for e in db.audit("Account")] == ["globex-secret"]
        assert db.audit("Account", a) == []  # acme's row: no history, no values
    assert [e.after["owner"] for e in db.audit("Account", tenant="acme")] == ["acme-secret", "acme-secret-2"]
    assert db.audit(Account, b, tenant="acme") == []
    with pytest.raises(TenantRequiredError, match="Account"):
        db.audit("Account")
