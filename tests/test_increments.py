"""Atomic increments: fields={"balance": {"$inc": n}} in Update and BulkUpdate, on every backend."""

from __future__ import annotations

import random
import threading
from decimal import Decimal

import pytest

from dataflow_lab import DataFlow, LocalRuntime, ValidationError, WorkflowBuilder


def define(db: DataFlow, **options) -> None:
    @db.model
    class Account:
        name: str
        balance: int = 0
        rate: float = 0.0
        notes: dict = {}
        __dataflow__ = options


def run(db: DataFlow, node: str, params: dict, runtime: LocalRuntime | None = None) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(node, "n", params)
    return (runtime or LocalRuntime()).execute(wf.build())[0]["n"]


def balances(db: DataFlow) -> dict[str, int]:
    return {r["name"]: r["balance"] for r in run(db, "AccountListNode", {"order_by": ["id"]})["records"]}


def test_update_inc_adds_to_the_stored_value_in_one_statement(db):
    define(db)
    row = run(db, "AccountCreateNode", {"name": "a", "balance": 100})
    after = run(db, "AccountUpdateNode", {"id": row["id"], "fields": {"balance": {"$inc": -10}}})
    assert after["balance"] == 90
    assert after["updated_at"] >= row["updated_at"]
    sql = db.nodes["AccountUpdateNode"].sql({"id": 1, "fields": {"balance": {"$inc": -10}}})
    assert "balance=(accounts.balance +" in sql.replace(" = ", "=").replace('"', "")
    assert "-10" not in sql.split("-- parameters")[0]  # the increment is a bound parameter


def test_bulk_update_inc_adds_to_every_matching_row(db):
    define(db)
    run(
        db,
        "AccountBulkCreateNode",
        {"data": [{"name": n, "balance": b} for n, b in [("a", 1), ("b", 2), ("c", 3)]]},
    )
    done = run(
        db, "AccountBulkUpdateNode", {"filter": {"balance": {"$gte": 2}}, "fields": {"balance": {"$inc": 5}}}
    )
    assert done == {"updated": 2}
    assert balances(db) == {"a": 1, "b": 7, "c": 8}


def test_a_float_field_takes_an_int_or_float_increment(db):
    define(db)
    row = run(db, "AccountCreateNode", {"name": "a", "rate": 1.5})
    after = run(db, "AccountUpdateNode", {"id": row["id"], "fields": {"rate": {"$inc": 1}}})
    after = run(db, "AccountUpdateNode", {"id": row["id"], "fields": {"rate": {"$inc": 0.25}}})
    assert after["rate"] == 2.75


def test_inc_with_a_plain_field_sets_one_and_adds_to_the_other(db):
    define(db)
    row = run(db, "AccountCreateNode", {"name": "a", "balance": 5})
    after = run(db, "AccountUpdateNode", {"id": row["id"], "fields": {"name": "b", "balance": {"$inc": 2}}})
    assert (after["name"], after["balance"]) == ("b", 7)


def test_a_versioned_model_bumps_its_version_on_inc_and_checks_the_one_given(db):
    from dataflow_lab import ConcurrencyError

    define(db, versioned=True)
    row = run(db, "AccountCreateNode", {"name": "a", "balance": 5})
    after = run(
        db,
        "AccountUpdateNode",
        {"id": row["id"], "version": row["version"], "fields": {"balance": {"$inc": 1}}},
    )
    assert (after["balance"], after["version"]) == (6, row["version"] + 1)
    with pytest.raises(Exception) as info:
        run(
            db,
            "AccountUpdateNode",
            {"id": row["id"], "version": row["version"], "fields": {"balance": {"$inc": 1}}},
        )
    assert isinstance(info.value.__cause__ or info.value, ConcurrencyError) or "version" in str(info.value)
    assert balances(db) == {"a": 6}


def test_the_audit_log_has_the_before_and_after_of_an_inc(db):
    define(db, audit_log=True)
    row = run(db, "AccountCreateNode", {"name": "a", "balance": 5})
    run(db, "AccountUpdateNode", {"id": row["id"], "fields": {"balance": {"$inc": 3}}})
    run(db, "AccountBulkUpdateNode", {"filter": {"name": "a"}, "fields": {"balance": {"$inc": 2}}})
    changes = [(e.before["balance"], e.after["balance"]) for e in db.audit("Account", row["id"])[1:]]
    assert changes == [(5, 8), (8, 10)]


def test_inc_keeps_to_the_tenant_and_skips_soft_deleted_rows(db):
    define(db, multi_tenant=True, soft_delete=True)
    with db.tenant("acme"):
        a = run(db, "AccountCreateNode", {"name": "a", "balance": 1})
        gone = run(db, "AccountCreateNode", {"name": "gone", "balance": 1})
        run(db, "AccountDeleteNode", {"id": gone["id"]})
    with db.tenant("globex"):
        run(db, "AccountCreateNode", {"name": "g", "balance": 1})
        assert run(db, "AccountUpdateNode", {"id": a["id"], "fields": {"balance": {"$inc": 5}},
                                             "raise_on_not_found": False}) is None  # fmt: skip
        assert run(db, "AccountBulkUpdateNode", {"filter": {}, "fields": {"balance": {"$inc": 10}},
                                                 "confirmed": True}) == {"updated": 1}  # fmt: skip
        assert balances(db) == {"g": 11}
    with db.tenant("acme"):
        assert run(db, "AccountBulkUpdateNode", {"filter": {}, "fields": {"balance": {"$inc": 1}},
                                                 "confirmed": True}) == {"updated": 1}  # fmt: skip
        assert balances(db) == {"a": 2}
        everything = run(db, "AccountListNode", {"include_deleted": True, "order_by": ["id"]})["records"]
        assert [r["balance"] for r in everything] == [2, 1]  # the deleted row was not incremented


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": {"$inc": 1}}, "field 'name' is str, and only numeric fields take '\\$inc'"),
        ({"balance": {"$inc": 1.5}}, "'\\$inc' of int field 'balance' must be int, got float"),
        ({"balance": {"$inc": True}}, "must be int, got bool"),
        ({"balance": {"$inc": "1"}}, "must be int, got str"),
        ({"rate": {"$inc": Decimal("1")}}, "must be int or float, got Decimal"),
        ({"balance": {"$inc": 1, "$set": 2}}, "an increment is exactly"),
    ],
)
def test_a_bad_increment_is_refused_at_build_naming_model_and_field(db, fields, message):
    define(db)
    wf = WorkflowBuilder(dataflow=db)
    with pytest.raises(ValidationError, match=message) as info:
        wf.add_node("AccountUpdateNode", "n", {"id": 1, "fields": fields})
        wf.build()
    assert "Account" in str(info.value)


def test_nodes_other_than_update_refuse_inc(db):
    define(db)
    wf = WorkflowBuilder(dataflow=db)
    with pytest.raises(ValidationError, match="only Update and BulkUpdate take"):
        wf.add_node("AccountUpsertNode", "n", {"where": {"name": "a"}, "update": {"balance": {"$inc": 1}}})
        wf.build()


def test_a_json_field_stores_an_inc_shaped_dict_as_its_value(db):
    define(db)
    row = run(db, "AccountCreateNode", {"name": "a"})
    after = run(db, "AccountUpdateNode", {"id": row["id"], "fields": {"notes": {"$inc": 1}}})
    assert after["notes"] == {"$inc": 1}


def test_decimal_inc_is_exact_where_decimals_are_numeric_and_refused_where_they_are_text(db):
    @db.model
    class Wallet:
        amount: Decimal = Decimal("0")

    row = run(db, "WalletCreateNode", {"amount": Decimal("0.1")})
    params = {"id": row["id"], "fields": {"amount": {"$inc": Decimal("0.2")}}}
    if db.dialect in ("postgresql", "duckdb", "mysql"):  # NUMERIC / DECIMAL(38, 18)
        assert run(db, "WalletUpdateNode", params)["amount"] == Decimal("0.3")
        assert run(db, "WalletUpdateNode", {"id": row["id"], "fields": {"amount": {"$inc": 1}}})[
            "amount"
        ] == Decimal("1.3")
    else:
        with pytest.raises(ValidationError, match=f"Decimal field 'amount' is not exact on {db.dialect}"):
            run(db, "WalletUpdateNode", params)


def test_concurrent_inc_transfers_keep_the_total_exact_on_postgres(pg_url):
    """Each transfer is two $inc updates in one run: no increment is lost, whatever the interleaving."""
    db = DataFlow(pg_url, pool_size=8)
    define(db)
    accounts, threads, transfers = 5, 8, 40
    run(db, "AccountBulkCreateNode", {"data": [{"name": f"a{i}", "balance": 1000} for i in range(accounts)]})
    errors: list[BaseException] = []
    done: list[int] = []

    def work(seed: int) -> None:
        runtime, rng = LocalRuntime(), random.Random(seed)
        for _ in range(transfers):
            src, dst = rng.sample(range(1, accounts + 1), 2)
            amount = rng.randint(1, 50) * (1 if src < dst else -1)
            src, dst = min(src, dst), max(src, dst)  # rows locked in id order: no deadlock to retry
            try:
                wf = WorkflowBuilder(dataflow=db)
                wf.add_node("AccountUpdateNode", "out", {"id": src, "fields": {"balance": {"$inc": -amount}}})
                wf.add_node("AccountUpdateNode", "in", {"id": dst, "fields": {"balance": {"$inc": amount}}})
                runtime.execute(wf.build())
                done.append(1)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not any(w.is_alive() for w in workers)
    assert not errors, errors[:3]
    assert len(done) == threads * transfers
    final = balances(db)
    assert sum(final.values()) == accounts * 1000
    assert final != {f"a{i}": 1000 for i in range(accounts)}  # the transfers did move money
    db.close()


def test_the_readme_example_of_inc_runs():
    import pathlib

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Concurrent changes", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(block, "README.md", "exec"), {})  # the block asserts what it shows
