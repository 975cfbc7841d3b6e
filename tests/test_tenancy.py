"""multi_tenant models: every node keeps to the current tenant, on every backend."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dataflow_lab import (
    LocalRuntime,
    NotFoundError,
    TenantRequiredError,
    ValidationError,
    WorkflowBuilder,
)
from dataflow_lab.dialects.arrow_columns import Same


def run(db, *steps, **execute):
    workflow = WorkflowBuilder(db)
    for node_type, node_id, params in steps:
        workflow.add_node(node_type, node_id, params)
    results, _ = LocalRuntime().execute(workflow.build(), **execute)
    return results


def one(db, node_type, params=None, **execute):
    return run(db, (node_type, "node", params or {}), **execute)["node"]


def define_item(db):
    @db.model
    class Item:
        name: str
        qty: int = 0
        __dataflow__ = {"multi_tenant": True, "unique": ["name"], "indexes": ["qty"]}

    return Item


def seed(db):
    """acme: a (id 1), b (id 2); globex: a (id 3), c (id 4). Unique names hold per tenant."""
    define_item(db)
    with db.tenant("acme"):
        one(db, "ItemBulkCreateNode", {"data": [{"name": "a", "qty": 1}, {"name": "b", "qty": 2}]})
    with db.tenant("globex"):
        one(db, "ItemCreateNode", {"name": "a", "qty": 3})
        one(db, "ItemUpsertNode", {"where": {"name": "c"}, "create": {"qty": 4}})


def acme_rows(db):
    with db.tenant("acme"):
        return [(r["id"], r["name"], r["qty"], r["tenant_id"]) for r in one(db, "ItemListNode")["records"]]


ACME = [(1, "a", 1, "acme"), (2, "b", 2, "acme")]


def test_rows_are_stamped_with_the_tenant_and_unique_holds_per_tenant(db):
    seed(db)
    assert acme_rows(db) == ACME
    with db.tenant("globex"):
        rows = one(db, "ItemListNode")["records"]
        assert [(r["name"], r["tenant_id"]) for r in rows] == [("a", "globex"), ("c", "globex")]
        with pytest.raises(Exception, match="(?i)unique|duplicate|constraint"):
            one(db, "ItemCreateNode", {"name": "a"})
    names = {i.name for i in db.table("Item").table.indexes}
    assert names == {"ix_items_tenant_id", "ix_items_tenant_id_qty"}


def test_no_tenant_is_refused_before_anything_runs(db):
    define_item(db)

    @db.model
    class Plain:
        text: str

    with pytest.raises(TenantRequiredError) as info:
        run(db, ("PlainCreateNode", "p", {"text": "x"}), ("ItemCountNode", "n", {}))
    assert "Item" in str(info.value) and "db.tenant" in str(info.value)
    assert one(db, "PlainCountNode")["count"] == 0


def test_a_tenant_cannot_reach_another_tenants_rows_through_any_node(db):
    seed(db)
    with db.tenant("globex"):
        with pytest.raises(NotFoundError):  # Read
            one(db, "ItemReadNode", {"id": 1})
        with pytest.raises(NotFoundError):  # Update
            one(db, "ItemUpdateNode", {"id": 1, "fields": {"qty": 100}})
        assert one(db, "ItemDeleteNode", {"id": 2})["deleted"] is False  # Delete
        listed = one(db, "ItemListNode", {"filter": {"tenant_id": "acme"}})  # List
        assert listed["count"] == 0
        assert one(db, "ItemCountNode", {"filter": {"name": "b"}})["count"] == 0  # Count
        with pytest.raises(ValidationError):  # Create: tenant_id is not a parameter
            one(db, "ItemCreateNode", {"name": "x", "tenant_id": "acme"})
        with pytest.raises(ValidationError, match="tenant_id"):  # BulkCreate: nor a field of data
            one(db, "ItemBulkCreateNode", {"data": [{"name": "x", "tenant_id": "acme"}]})
        out = one(db, "ItemUpsertNode", {"where": {"name": "b"}, "update": {"qty": 100}})  # Upsert
        assert out["created"] is True and out["record"]["tenant_id"] == "globex"
        with pytest.raises(ValidationError, match="another tenant"):  # Upsert onto acme's id
            one(db, "ItemUpsertNode", {"where": {"id": 1}, "create": {"name": "z"}, "update": {"qty": 100}})
        assert one(db, "ItemBulkUpdateNode", {"fields": {"qty": 7}, "confirmed": True}) == {"updated": 3}
        with pytest.raises(ValidationError, match="another tenant"):  # BulkUpsert onto acme's ids
            one(db, "ItemBulkUpsertNode", {"data": [{"id": 1, "name": "hijack"}, {"id": 2, "name": "b"}]})
        out = one(db, "ItemBulkUpsertNode", {"data": [{"name": "a", "qty": 9}], "conflict_on": ["name"]})
        assert (out["inserted"], out["updated"]) == (0, 1)  # globex's own 'a', not acme's
        assert one(db, "ItemBulkDeleteNode", {"confirmed": True}) == {"deleted": 3}
        assert one(db, "ItemCountNode")["count"] == 0
    assert acme_rows(db) == ACME


def test_execute_takes_the_tenant_and_it_wins_over_db_tenant(db):
    seed(db)
    assert one(db, "ItemCountNode", tenant="acme")["count"] == 2
    with db.tenant("globex"):
        assert one(db, "ItemListNode", tenant="acme")["records"][0]["tenant_id"] == "acme"
    with pytest.raises(ValidationError, match="non-empty string"):
        one(db, "ItemCountNode", tenant="")


def test_the_tenant_is_per_thread_and_reaches_the_background_loop(db):
    seed(db)
    counts: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def count(tenant: str) -> None:
        with db.tenant(tenant):
            barrier.wait()
            counts[tenant] = one(db, "ItemCountNode", {"filter": {"name": "a"}})["count"]
            counts[tenant + "-all"] = one(db, "ItemCountNode")["count"]

    threads = [threading.Thread(target=count, args=(t,)) for t in ("acme", "globex")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert counts == {"acme": 1, "acme-all": 2, "globex": 1, "globex-all": 2}


def test_execute_async_captures_the_tenant(db):
    seed(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node("ItemListNode", "l", {})

    async def main():
        with db.tenant("acme"):
            results, _ = await LocalRuntime().execute_async(workflow.build())
        return results["l"]["records"]

    assert {r["tenant_id"] for r in asyncio.run(main())} == {"acme"}


def test_sql_shows_the_tenant_predicate(db):
    define_item(db)
    with db.tenant("acme"):
        text = db.nodes["ItemListNode"].sql({"filter": {"qty": 1}})
        assert "tenant_id = " in text and "'acme'" in text
    assert "'<tenant>'" in db.nodes["ItemReadNode"].sql({"id": 1})
    assert "tenant_id" in db.nodes["ItemBulkUpsertNode"].sql({"data": [], "conflict_on": ["name"]})


def test_saga_compensation_stays_within_the_tenant(db):
    seed(db)
    workflow = WorkflowBuilder(db)
    workflow.add_node(
        "ItemBulkUpsertNode",
        "up",
        {"data": [{"name": "a", "qty": 50}, {"name": "b", "qty": 60}], "conflict_on": ["name"]},
    )
    workflow.add_node("ItemBulkUpdateNode", "all", {"fields": {"qty": 70}, "confirmed": True})
    workflow.add_node("ItemReadNode", "missing", {"id": 999})
    with db.tenant("globex"), pytest.raises(NotFoundError):
        LocalRuntime(transaction="saga").execute(workflow.build())
    assert acme_rows(db) == ACME
    with db.tenant("globex"):
        rows = one(db, "ItemListNode")["records"]
    assert [(r["name"], r["qty"]) for r in rows] == [("a", 3), ("c", 4)]


def test_caller_supplied_ids_never_cross_tenants(db):
    @db.model
    class Key:
        id: str
        label: str = ""
        __dataflow__ = {"multi_tenant": True}

    with db.tenant("acme"):
        one(db, "KeyCreateNode", {"id": "k1", "label": "acme's"})
    with db.tenant("globex"):
        with pytest.raises(Exception, match="(?i)unique|duplicate|constraint|primary"):
            one(db, "KeyCreateNode", {"id": "k1", "label": "mine"})
        with pytest.raises(ValidationError, match="another tenant"):
            one(db, "KeyBulkUpsertNode", {"data": [{"id": "k1", "label": "mine"}]})
        with pytest.raises(ValidationError, match="another tenant"):
            one(db, "KeyUpsertNode", {"where": {"id": "k1"}, "update": {"label": "mine"}})
        assert one(db, "KeyBulkUpsertNode", {"data": [{"id": "k2", "label": "g"}]})["inserted"] == 1
    with db.tenant("acme"):
        assert [(r["id"], r["label"]) for r in one(db, "KeyListNode")["records"]] == [("k1", "acme's")]


def test_a_tenants_bulk_upsert_keeps_the_last_row_of_a_repeated_name_and_leaves_the_others_rows(db):
    seed(db)
    data = [{"name": "a", "qty": 5}, {"name": "d", "qty": 6}, {"name": "a", "qty": 7}]
    with db.tenant("globex"):  # one chunk; its key is (tenant, name), the tenant one value for all
        out = one(db, "ItemBulkUpsertNode", {"data": data, "conflict_on": ["name"]})
        assert (out["inserted"], out["updated"]) == (1, 1)
        got = sorted((r["name"], r["qty"]) for r in one(db, "ItemListNode")["records"])
        assert got == [("a", 7), ("c", 4), ("d", 6)]
        out = one(db, "ItemBulkUpsertNode", {"data": data[:2], "conflict_on": ["name"]})
        assert (out["inserted"], out["updated"]) == (0, 2)
    assert acme_rows(db) == ACME


def test_bulk_create_stamps_the_tenant_through_the_dialects_fast_path(db, monkeypatch):
    define_item(db)
    dialect_cls = type(db.database.dialect)
    real = dialect_cls.bulk_insert
    calls = []

    async def spy(self, conn, table, columns, rows):
        calls.append((tuple(columns), len(rows)))
        return await real(self, conn, table, columns, rows)

    real_columns = dialect_cls.bulk_insert_columns

    async def spy_columns(self, conn, table, columns, by_column, *, ids):  # DuckDB's path: by column
        calls.append((tuple(columns), max(len(c) for c in by_column if not isinstance(c, Same))))
        return await real_columns(self, conn, table, columns, by_column, ids=ids)

    monkeypatch.setattr(dialect_cls, "bulk_insert", spy)
    monkeypatch.setattr(dialect_cls, "bulk_insert_columns", spy_columns)
    with db.tenant("acme"):
        out = one(db, "ItemBulkCreateNode", {"data": [{"name": f"n{i}", "qty": i} for i in range(500)]})
        assert out["inserted"] == 500
        assert one(db, "ItemCountNode", {"filter": {"qty": {"$gte": 0}}})["count"] == 500
    assert sum(n for _, n in calls) == 500
    assert all("tenant_id" in columns for columns, _ in calls)
    assert one(db, "ItemCountNode", tenant="globex")["count"] == 0


def test_concurrent_bulk_upserts_with_ids_never_overwrite_another_tenants_rows(pg_url):
    """Two tenants race BulkUpserts onto the same fresh ids (issue 13, item 3).

    A check-then-write let the second writer's ON CONFLICT update the first one's row;
    the tenant condition now sits in the statement, so the loser is refused instead.
    """
    from dataflow_lab import DataFlow

    db = DataFlow(pg_url)
    try:

        @db.model
        class Slot:
            label: str
            __dataflow__ = {"multi_tenant": True}

        rounds, width = 30, 20
        barrier = threading.Barrier(2)
        refused: dict[str, int] = {"acme": 0, "globex": 0}
        failures: list[BaseException] = []

        def writer(tenant: str) -> None:
            try:
                for r in range(rounds):
                    data = [{"id": r * width + i + 1, "label": tenant} for i in range(width)]
                    barrier.wait(timeout=60)
                    try:
                        one(db, "SlotBulkUpsertNode", {"data": data}, tenant=tenant)
                    except ValidationError as exc:
                        assert "another tenant" in str(exc)
                        refused[tenant] += 1
            except BaseException as exc:  # surfaced below, not lost in the thread
                failures.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=writer, args=(t,)) for t in ("acme", "globex")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not failures, failures
        rows = [
            r
            for t in ("acme", "globex")
            for r in one(db, "SlotListNode", {"limit": 10_000}, tenant=t)["records"]
        ]
        foreign = [r for r in rows if r["label"] != r["tenant_id"]]
        assert foreign == []  # 0 rows overwritten by the other tenant
        assert len(rows) == rounds * width  # every batch was written whole by exactly one tenant
        assert refused["acme"] + refused["globex"] == rounds
    finally:
        db.close()
