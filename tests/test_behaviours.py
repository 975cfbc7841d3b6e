"""Behaviours of one's own (behaviours/base.py): a fifth option, defined here, applies to every
node of its model, on every backend, without any node knowing it."""

from __future__ import annotations

import pytest

from dataflow_lab import DataFlow, LocalRuntime, NotFoundError, ValidationError, WorkflowBuilder
from dataflow_lab.behaviours import Behaviour
from dataflow_lab.model import Field
from dataflow_lab.types import LOGICAL_TYPES


class Provenance(Behaviour):
    """Stamps each new row with where it came from, in a column of its own that callers cannot write."""

    name = "provenance"
    fields = (Field("source", LOGICAL_TYPES[str], generated=True),)

    def __init__(self, source: str):
        self.source = source

    def insert_values(self, node, now):
        return {"source": self.source}


class LockedRowsStay(Behaviour):
    """A business rule: a row marked ``locked`` is never updated or deleted."""

    name = "locked_rows_stay"

    def update_where(self, node, table):
        return [table.c.locked.is_(False)]


def run(db, *steps):
    workflow = WorkflowBuilder(db)
    for node_type, node_id, params in steps:
        workflow.add_node(node_type, node_id, params)
    results, _ = LocalRuntime().execute(workflow.build())
    return results


def one(db, node_type, params=None):
    return run(db, (node_type, "node", params or {}))["node"]


@pytest.fixture
def ledger(db):
    @db.model
    class Entry:
        code: str
        amount: int = 0
        locked: bool = False
        __dataflow__ = {
            "unique": [["code"]],
            "behaviours": [Provenance("etl"), LockedRowsStay()],
        }

    return db


def sources(db):
    return {r["code"]: r["source"] for r in one(db, "EntryListNode")["records"]}


def test_a_behaviour_stamps_every_insert_path(ledger):
    one(ledger, "EntryCreateNode", {"code": "a"})
    one(ledger, "EntryBulkCreateNode", {"data": [{"code": "b"}, {"code": "c"}]})
    one(ledger, "EntryUpsertNode", {"where": {"code": "d"}, "create": {"amount": 4}})
    one(ledger, "EntryBulkUpsertNode", {"data": [{"code": "e"}], "conflict_on": ["code"]})
    assert sources(ledger) == dict.fromkeys("abcde", "etl")
    assert one(ledger, "EntryReadNode", {"id": 1})["source"] == "etl"


def test_a_behaviours_column_is_managed_and_kept_by_upserts(ledger):
    assert "source" not in ledger.nodes["EntryCreateNode"].param_map()
    with pytest.raises(ValidationError, match="source"):
        one(ledger, "EntryBulkCreateNode", {"data": [{"code": "x", "source": "me"}]})
    one(ledger, "EntryCreateNode", {"code": "a"})
    result = one(
        ledger, "EntryBulkUpsertNode", {"data": [{"code": "a", "amount": 9}], "conflict_on": ["code"]}
    )
    assert result == {"inserted": 0, "updated": 1}
    row = one(ledger, "EntryReadNode", {"id": 1})
    assert (row["amount"], row["source"]) == (9, "etl")


def test_a_behaviours_write_rule_holds_for_single_and_bulk_writes(ledger):
    one(ledger, "EntryBulkCreateNode", {"data": [{"code": "open"}, {"code": "shut", "locked": True}]})
    assert one(ledger, "EntryBulkUpdateNode", {"fields": {"amount": 5}, "confirmed": True}) == {"updated": 1}
    with pytest.raises(NotFoundError):
        one(ledger, "EntryUpdateNode", {"id": 2, "fields": {"amount": 7}})
    assert one(ledger, "EntryUpdateNode", {"id": 1, "fields": {"amount": 6}})["amount"] == 6
    assert one(ledger, "EntryDeleteNode", {"id": 2}) == {"id": 2, "deleted": False}
    assert one(ledger, "EntryBulkDeleteNode", {"confirmed": True}) == {"deleted": 1}
    rows = one(ledger, "EntryListNode")["records"]
    assert [(r["code"], r["amount"]) for r in rows] == [("shut", 0)]


def test_sql_shows_what_a_behaviour_adds(ledger):
    sql = ledger.nodes["EntryBulkUpdateNode"].sql({"fields": {"amount": 1}, "confirmed": True})
    assert "locked" in sql
    assert "etl" in ledger.nodes["EntryCreateNode"].sql({"code": "a"})


def test_a_behaviour_class_instead_of_an_instance_is_refused():
    db = DataFlow()
    with pytest.raises(ValidationError, match="not a behaviour object"):

        @db.model
        class Entry:
            code: str
            __dataflow__ = {"behaviours": [Provenance]}


def test_the_built_in_options_are_behaviours_in_a_fixed_order():
    db = DataFlow()

    @db.model
    class Doc:
        title: str
        __dataflow__ = {"audit_log": True, "versioned": True, "soft_delete": True, "multi_tenant": True,
                        "behaviours": [Provenance("api")]}  # fmt: skip

    names = [b.name for b in db.nodes["DocCreateNode"].behaviours]
    assert names == ["timestamps", "multi_tenant", "soft_delete", "versioned", "provenance", "audit_log"]
