"""Generated row shaping (row_code.py), on its own and through BulkCreate on every database."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Optional

import pytest

from dataflow_lab import LocalRuntime, ValidationError, WorkflowBuilder
from dataflow_lab.dialects.arrow_columns import Same, column_builder
from dataflow_lab.row_code import FieldCode, _compiled_rows, column_function, row_function

NAME = FieldCode("name", (str,), False, None, False, False)
QTY = FieldCode("qty", (int,), True, None, True, False)
PRICE = FieldCode("price", (float,), False, None, False, True)


def slow_collector():
    seen: list[int] = []

    def slow(record, offset, rows):
        seen.append(offset)

    return seen, slow


def test_a_row_function_shapes_good_rows_and_hands_every_other_row_to_slow():
    shape = row_function((NAME, QTY, PRICE), ("t", "t"), None)
    seen, slow = slow_collector()
    rows = shape(
        [
            {"name": "a", "qty": 1, "price": 2.0},
            {"name": "b", "qty": None, "price": 3.5},
            {"name": 1, "qty": 1, "price": 1.0},  # a wrong type
            {"name": "c", "qty": 2**63, "price": 1.0},  # beyond 64 bits
            {"name": "d", "qty": 1, "price": float("nan")},  # NaN
            {"name": "e", "qty": 1},  # a field missing
            {"name": "f", "qty": 1, "price": 1.0, "extra": 1},  # a field more
            {"name": "g", "qty": True, "price": 1.0},  # a bool is not an int here
            ["h", 1, 1.0],  # not a dict
        ],
        slow,
    )
    assert rows == [("a", 1, 2.0, "t", "t"), ("b", None, 3.5, "t", "t")]
    assert seen == [2, 3, 4, 5, 6, 7, 8]


def test_row_functions_of_one_shape_share_their_compiled_code():
    before = _compiled_rows.cache_info().hits
    first = row_function((NAME, QTY), ("x",), None)
    second = row_function((NAME, QTY), ("y",), None)  # other values, the same shape
    assert _compiled_rows.cache_info().hits > before
    assert first([{"name": "a", "qty": 1}], None) == [("a", 1, "x")]
    assert second([{"name": "a", "qty": 1}], None) == [("a", 1, "y")]


def test_a_converter_runs_on_values_and_a_refusing_converter_sends_the_row_to_slow():
    def double(v):
        if v > 10:
            raise ValueError("too big")
        return v * 2

    shape = row_function((FieldCode("qty", (int,), True, double, True, False),), (), None)
    seen, slow = slow_collector()
    assert shape([{"qty": 2}, {"qty": None}, {"qty": 11}], slow) == [(4,), (None,)]
    assert seen == [2]


def test_values_made_per_row_go_between_the_given_fields_and_the_tail():
    counter = iter(range(100))
    shape = row_function((NAME,), ("t",), lambda: (next(counter),))
    assert shape([{"name": "a"}, {"name": "b"}], None) == [("a", 0, "t"), ("b", 1, "t")]


def test_a_column_function_makes_columns_or_none_when_any_value_misses_its_checks():
    shape = column_function((NAME, QTY, PRICE), ("t",), None)
    good = [{"name": "a", "qty": 1, "price": 2.0}, {"name": "b", "qty": None, "price": 3.0}]
    assert shape(good) == [["a", "b"], [1, None], [2.0, 3.0], Same("t")]
    assert shape([*good, {"name": "c", "qty": 2**64, "price": 1.0}]) is None
    assert shape([*good, {"name": "c", "qty": 1, "price": float("nan")}]) is None
    assert shape([*good, {"name": "c", "qty": "1", "price": 1.0}]) is None
    assert shape([*good, {"name": "c", "qty": 1}]) is None
    assert shape([*good, {"name": "c", "qty": 1, "prize": 1.0}]) is None


def test_a_column_function_asks_fresh_for_one_list_per_made_column_of_the_chunks_rows():
    asked: list[int] = []

    def fresh(n):
        asked.append(n)
        return [list(range(100, 100 + n)), ["x"] * n]

    shape = column_function((NAME,), ("t",), fresh)
    assert shape([{"name": "a"}, {"name": "b"}, {"name": "c"}]) == [
        ["a", "b", "c"], [100, 101, 102], ["x", "x", "x"], Same("t")
    ]  # fmt: skip
    assert shape([{"name": "a"}, {"name": 2}]) is None  # refused before anything is made
    assert asked == [3]


# -- through BulkCreate, on every database ------------------------------------------
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def run(db, node, params):
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node(node, "n", {"progress": False, **params} if "Bulk" in node else params)
    return LocalRuntime().execute(wf.build())[0]["n"]


@pytest.fixture
def things(db):
    @db.model
    class Thing:
        name: str
        qty: int
        price: float
        flag: bool
        colour: Colour
        note: Optional[str] = None  # noqa: UP045
        when: Optional[dt.datetime] = None  # noqa: UP045

    return db


def test_bulk_create_stores_every_type_the_generated_code_shapes(things):
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    data = [
        {"name": f"thing é {i}", "qty": i, "price": i / 4, "flag": i % 2 == 0, "colour": Colour.RED,
         "note": None if i % 3 else f"n{i}", "when": when if i % 2 else None}
        for i in range(2_000)
    ]  # fmt: skip
    assert run(things, "ThingBulkCreateNode", {"data": data}) == {"inserted": 2_000}
    got = run(things, "ThingListNode", {"order_by": ["qty"], "limit": 3000})["records"]
    assert [(r["name"], r["qty"], r["price"], r["flag"], r["colour"], r["note"], r["when"]) for r in got] == [
        (d["name"], d["qty"], d["price"], d["flag"], d["colour"], d["note"], d["when"]) for d in data
    ]
    assert len({r["created_at"] for r in got}) == 1  # one timestamp for the whole write


def test_bulk_create_coerces_a_lossless_value_and_names_a_bad_one_in_a_generated_chunk(things):
    row = {"name": "a", "qty": 1, "price": 1.0, "flag": True, "colour": Colour.BLUE}
    coerced = run(things, "ThingBulkCreateNode", {"data": [row, {**row, "name": "b", "qty": "42"}]})
    assert coerced == {"inserted": 2}
    assert run(things, "ThingCountNode", {"filter": {"qty": 42}})["count"] == 1
    with pytest.raises(ValidationError, match=r"row 2.*qty"):
        run(
            things,
            "ThingBulkCreateNode",
            {"data": [row, row | {"name": "c"}, row | {"name": "d", "qty": "x"}]},
        )
    assert run(things, "ThingCountNode", {})["count"] == 2  # nothing of the failed write stayed


def test_bulk_create_returns_ids_in_input_order_from_a_generated_chunk(things):
    row = {"qty": 1, "price": 1.0, "flag": True, "colour": Colour.BLUE}
    out = run(
        things,
        "ThingBulkCreateNode",
        {"data": [{**row, "name": str(i)} for i in range(50)], "return_ids": True},
    )
    got = {r["id"]: r["name"] for r in run(things, "ThingListNode", {"limit": 100})["records"]}
    assert [got[i] for i in out["ids"]] == [str(i) for i in range(50)]


def test_a_column_function_builds_the_dialects_columns_as_it_checks_them():
    text, integer = column_builder("text"), column_builder("integer")
    name, qty = NAME._replace(build=text), QTY._replace(build=integer)
    shape = column_function((name, qty, PRICE), (), None)
    made = shape([{"name": "a", "qty": 1, "price": 2.0}, {"name": "b", "qty": None, "price": 3.0}])
    assert [made[0].to_pylist(), made[1].to_pylist(), made[2]] == [["a", "b"], [1, None], [2.0, 3.0]]
    assert shape([{"name": "a", "qty": 2**63, "price": 1.0}]) is None  # the build refuses it: no min/max pass
    assert shape([{"name": 1, "qty": 1, "price": 1.0}]) is None  # so does the text build, for its types
    assert shape([{"name": "a", "qty": True, "price": 1.0}]) is None  # a bool is not an int here
    assert shape([{"name": "a", "qty": 1, "price": 1.0}, 5]) is None  # not a dict: the rows name it


def test_bulk_create_names_a_row_that_is_not_a_dict_or_does_not_fit_and_writes_nothing(things):
    row = {"name": "a", "qty": 1, "price": 1.0, "flag": True, "colour": Colour.BLUE}
    for bad, where in ((5, r"row 2 is int, not a dict"), (row | {"qty": 2**63}, r"row 2.*qty.*64 bits"),
                       (row | {"name": 7}, r"row 2.*name.*str")):  # fmt: skip
        with pytest.raises(ValidationError, match=where):
            run(things, "ThingBulkCreateNode", {"data": [row, row, bad]})
    assert run(things, "ThingCountNode", {})["count"] == 0
