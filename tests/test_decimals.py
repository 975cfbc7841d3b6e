"""Decimals are stored and compared exactly on every backend, within declared digits."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Optional

import pytest

from dataflow_lab import LocalRuntime, ValidationError, WorkflowBuilder
from dataflow_lab.migrations.diff import widens

D = Decimal


def run_one(db, node_type, params):
    workflow = WorkflowBuilder(db)
    workflow.add_node(node_type, "node", params)
    results, _ = LocalRuntime().execute(workflow.build())
    return results["node"]


# Negative numbers, different scales and the ends of Decimal(38, 18): text order is not numeric order.
AMOUNTS = {
    "tiny": D("0.1000000000000000001"),  # needs 19 decimals: only in the declared (38, 19) field
    "tenth": D("0.1"),
    "nine": D("9.99"),
    "ten": D("10"),
    "hundred": D("100.000"),
    "neg_tenth": D("-0.1"),
    "neg_nine": D("-9.99"),
    "neg_ten": D("-10.5"),
    "zero": D("0"),
    "big": D("9999999999999999999.9999999999999999999"),
    "neg_big": D("-9999999999999999999.9999999999999999999"),
}


@pytest.fixture
def ledger(db):
    @db.model
    class Entry:
        label: str
        amount: Annotated[Decimal, 38, 19]

    rows = [{"label": k, "amount": v} for k, v in AMOUNTS.items()]
    assert run_one(db, "EntryBulkCreateNode", {"data": rows}) == {"inserted": len(rows)}
    return db


def labels(db, where, order_by="label"):
    records = run_one(db, "EntryListNode", {"filter": where, "order_by": order_by, "limit": 1000})["records"]
    return [r["label"] for r in records]


def expected(predicate):
    return sorted(k for k, v in AMOUNTS.items() if predicate(v))


def test_decimal_equality_is_exact(ledger):
    assert labels(ledger, {"amount": D("0.1")}) == ["tenth"]
    assert labels(ledger, {"amount": D("0.1000000000000000001")}) == ["tiny"]
    assert labels(ledger, {"amount": D("100")}) == ["hundred"]  # 100 == 100.000, whatever the scale
    assert labels(ledger, {"amount": {"$ne": D("0.1")}}) == expected(lambda v: v != D("0.1"))


@pytest.mark.parametrize(
    "bound", [D("0.1"), D("0.1000000000000000001"), D("-0.1"), D("-10"), D("9.990"), D("0"), D("1E+30")]
)
def test_decimal_ranges_are_exact(ledger, bound):
    assert labels(ledger, {"amount": {"$gt": bound}}) == expected(lambda v: v > bound)
    assert labels(ledger, {"amount": {"$gte": bound}}) == expected(lambda v: v >= bound)
    assert labels(ledger, {"amount": {"$lt": bound}}) == expected(lambda v: v < bound)
    assert labels(ledger, {"amount": {"$lte": bound}}) == expected(lambda v: v <= bound)


def test_decimal_in_and_between_are_exact(ledger):
    assert labels(ledger, {"amount": {"$in": [D("0.1"), D("-9.99"), D("10.0")]}}) == [
        "neg_nine",
        "ten",
        "tenth",
    ]
    assert labels(ledger, {"amount": {"$nin": [D("0.1"), D("0.1000000000000000001")]}}) == expected(
        lambda v: v not in (D("0.1"), D("0.1000000000000000001"))
    )
    between = {"amount": {"$gte": D("-9.99"), "$lte": D("0.1")}}
    assert labels(ledger, between) == expected(lambda v: D("-9.99") <= v <= D("0.1"))


def test_order_by_a_decimal_is_numeric_order(ledger):
    by_amount = [k for k, _ in sorted(AMOUNTS.items(), key=lambda kv: kv[1])]
    assert labels(ledger, {}, order_by="amount") == by_amount
    assert labels(ledger, {}, order_by="-amount") == by_amount[::-1]


def test_bulk_delete_by_a_decimal_deletes_only_that_number(ledger):
    assert run_one(ledger, "EntryBulkDeleteNode", {"filter": {"amount": D("0.1")}}) == {"deleted": 1}
    assert "tiny" in labels(ledger, {}) and "tenth" not in labels(ledger, {})


def test_bulk_update_by_a_decimal_updates_only_that_number(ledger):
    result = run_one(
        ledger,
        "EntryBulkUpdateNode",
        {"filter": {"amount": D("0.1000000000000000001")}, "fields": {"label": "x"}},
    )
    assert result == {"updated": 1}
    assert labels(ledger, {"label": "x"}) == ["x"]
    assert labels(ledger, {"amount": D("0.1")}) == ["tenth"]


def test_a_declared_decimal_comes_back_with_its_scale(db):
    @db.model
    class Price:
        amount: Annotated[Decimal, 10, 2]

    created = run_one(db, "PriceCreateNode", {"amount": D("1.5")})
    stored = run_one(db, "PriceReadNode", {"id": created["id"]})["amount"]
    assert str(stored) == "1.50" and str(created["amount"]) == "1.50"


@pytest.mark.parametrize(
    "value, says",
    [
        (D("1.234"), "more than 2 digit"),
        (D("123456789"), "9 digit(s) before the point"),
        (D("-0.001"), "rounded"),
    ],
)
def test_a_decimal_that_does_not_fit_its_digits_is_refused_naming_model_and_field(db, value, says):
    @db.model
    class Price:
        amount: Annotated[Decimal, 10, 2]

    with pytest.raises(ValidationError, match=f"Price.*'amount'.*{re.escape(says)}"):
        run_one(db, "PriceCreateNode", {"amount": value})
    with pytest.raises(
        ValidationError, match=f"Price.*'amount'.*{re.escape(says)}"
    ):  # the bulk fast path checks too
        run_one(db, "PriceBulkCreateNode", {"data": [{"amount": D("1")}, {"amount": value}]})
    assert run_one(db, "PriceListNode", {})["records"] == []


def test_an_undeclared_decimal_holds_38_digits_18_after_the_point_on_every_backend(db):
    @db.model
    class Money:
        amount: Decimal

    exact = D("12345678901234567890.123456789012345678")
    created = run_one(db, "MoneyCreateNode", {"amount": exact})
    assert run_one(db, "MoneyReadNode", {"id": created["id"]})["amount"] == exact
    with pytest.raises(ValidationError, match="Money.*'amount'.*Annotated\\[Decimal"):
        run_one(db, "MoneyCreateNode", {"amount": D("0.1000000000000000001")})  # would round on DuckDB
    with pytest.raises(ValidationError, match="Money.*'amount'"):
        run_one(db, "MoneyCreateNode", {"amount": D("1E+20")})


def test_a_nonsense_declaration_is_refused_at_the_model(db):
    with pytest.raises(ValidationError, match="Bad.*'amount'.*precision"):

        @db.model
        class Bad:
            amount: Annotated[Decimal, 2, 5]

    with pytest.raises(ValidationError, match="Bad.*'amount'.*precision and a scale"):

        @db.model
        class Bad:  # noqa: F811
            amount: Annotated[Decimal, 10]


def test_duckdb_refuses_more_than_38_digits_naming_the_field(tmp_path):
    from dataflow_lab import DataFlow

    db = DataFlow(f"duckdb:///{tmp_path / 'x.duckdb'}")
    try:
        with pytest.raises(ValidationError, match="Wide.*'amount'.*38 digits"):

            @db.model
            class Wide:
                amount: Annotated[Decimal, 50, 10]

            run_one(db, "WideCreateNode", {"amount": D("1")})
    finally:
        db.close()


def test_a_changed_precision_is_a_retype_in_the_migration_plan(db, backend):
    @db.model
    class Item:
        amount: Annotated[Decimal, 10, 2]

    run_one(db, "ItemCreateNode", {"amount": D("12.34")})
    assert not db.migrations.plan()  # the declared type reads back as itself

    @db.model
    class Item:  # noqa: F811
        amount: Annotated[Decimal, 12, 4]

    plan = " ".join(db.migrations.plan().describe())
    if backend == "sqlite":
        assert plan == ""  # SQLite stores Decimals as TEXT: only the check changes
    else:
        assert "retype column 'amount'" in plan and "widening" in plan
        db.migrations.apply(confirm_destructive=True)
        assert run_one(db, "ItemListNode", {})["records"][0]["amount"] == D("12.34")


def test_decimal_widening_knows_precision_and_scale():
    assert widens("DECIMAL(10,2)", "DECIMAL(12,4)")
    assert widens("DECIMAL(10,2)", "DECIMAL")
    assert not widens("DECIMAL(12,4)", "DECIMAL(10,2)")
    assert not widens("DECIMAL(10,2)", "DECIMAL(10,4)")  # fewer digits before the point
    assert not widens("DECIMAL", "DECIMAL(38,18)")


def test_a_long_decimal_in_list_is_exact(ledger):
    many = [D(i).scaleb(-19) for i in range(2, 700)] + [D("0.1000000000000000001"), D("-10.5")]
    assert labels(ledger, {"amount": {"$in": many}}) == ["neg_ten", "tiny"]


def test_random_decimals_sort_and_compare_as_python_does(db):
    import random

    @db.model
    class Sample:
        amount: Decimal

    rng = random.Random(13)
    values = [D(rng.randint(-(10**12), 10**12)).scaleb(rng.randint(-18, 8)) for _ in range(300)]
    values += [D("0E-5"), D("1E+3"), D("-1E-18"), D("1000.000")]
    run_one(db, "SampleBulkCreateNode", {"data": [{"amount": v} for v in values]})
    listed = run_one(db, "SampleListNode", {"order_by": ["amount", "id"], "limit": 1000})["records"]
    assert [r["amount"] for r in listed] == sorted(values)
    for bound in rng.sample(values, 5):
        found = run_one(db, "SampleCountNode", {"filter": {"amount": {"$lte": bound}}})["count"]
        assert found == sum(v <= bound for v in values)
        equal = run_one(db, "SampleCountNode", {"filter": {"amount": bound}})["count"]
        assert equal == values.count(bound)


def test_optional_may_wrap_a_declared_decimal_or_be_wrapped_by_it(db):
    @db.model
    class Quote:
        bid: Optional[Annotated[Decimal, 6, 3]]  # noqa: UP045
        ask: Annotated[Optional[Decimal], 6, 3]  # noqa: UP045

    for name in ("bid", "ask"):
        field = db.models["Quote"].by_name[name]
        assert field.nullable and field.type.digits == (6, 3)
    created = run_one(db, "QuoteCreateNode", {"bid": None, "ask": D("1.5")})
    assert created["bid"] is None and str(created["ask"]) == "1.500"
