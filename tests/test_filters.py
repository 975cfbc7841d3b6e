"""Filter documents and order_by, on every backend.

Every filter is checked through List (which rows, in which order) and Count
(how many), so both code paths see the same document.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Optional

import pytest

from dataflow_lab import LocalRuntime, ValidationError, WorkflowBuilder

PEOPLE = [
    # id 1..6, in this order
    {"name": "Alice", "age": 30, "city": "Paris", "active": True, "score": 7.5, "code": "X1"},
    {"name": "bob", "age": 25, "city": None, "active": False, "score": 3.0, "code": "Y22"},
    {"name": "Anne", "age": 41, "city": "Berlin", "active": True, "score": 9.25, "code": "x333"},
    {"name": "Eve", "age": 19, "city": "paris", "active": False, "score": 5.0, "code": "Z4444"},
    {"name": "Alfred", "age": None, "city": "Rome", "active": True, "score": 1.5, "code": "W"},
    {"name": "Zoe", "age": 30, "city": None, "active": True, "score": 8.0, "code": "q9"},
]
ALL = [1, 2, 3, 4, 5, 6]


def run_one(db, node_type, params):
    workflow = WorkflowBuilder(db)
    workflow.add_node(node_type, "node", params)
    results, _ = LocalRuntime().execute(workflow.build())
    return results["node"]


@pytest.fixture
def people(db):
    @db.model
    class Person:
        name: str
        age: Optional[int]  # noqa: UP045
        city: Optional[str]  # noqa: UP045
        active: bool
        score: float
        code: str

    assert run_one(db, "PersonBulkCreateNode", {"data": PEOPLE}) == {"inserted": 6}
    return db


def ids(db, where, order_by=None):
    """Ids of the rows matching ``where`` (via List), checked against Count."""
    params = {"filter": where}
    if order_by is not None:
        params["order_by"] = order_by
    listed = run_one(db, "PersonListNode", params)
    found = [r["id"] for r in listed["records"]]
    counted = run_one(db, "PersonCountNode", {"filter": where})["count"]
    assert counted == len(found), f"Count says {counted}, List returned {found} for {where}"
    return found


# -- plain values -----------------------------------------------------------------
def test_an_empty_filter_matches_every_row(people):
    assert ids(people, {}) == ALL


def test_a_plain_value_means_equality(people):
    assert ids(people, {"name": "Alice"}) == [1]
    assert ids(people, {"age": 30}) == [1, 6]
    assert ids(people, {"score": 9.25}) == [3]


def test_a_plain_boolean_value_matches_that_boolean(people):
    assert ids(people, {"active": True}) == [1, 3, 5, 6]
    assert ids(people, {"active": False}) == [2, 4]


def test_plain_equality_is_case_sensitive_for_text(people):
    assert ids(people, {"city": "Paris"}) == [1]
    assert ids(people, {"city": "paris"}) == [4]


def test_several_fields_are_anded(people):
    assert ids(people, {"age": 30, "active": True}) == [1, 6]
    assert ids(people, {"age": 30, "name": "Zoe"}) == [6]
    assert ids(people, {"age": 30, "name": "bob"}) == []


def test_none_means_is_null(people):
    assert ids(people, {"city": None}) == [2, 6]
    assert ids(people, {"age": None}) == [5]


def test_a_plain_value_is_coerced_losslessly_like_a_write(people):
    assert ids(people, {"age": "30"}) == [1, 6]


def test_a_value_of_the_wrong_type_is_refused_naming_the_field(people):
    with pytest.raises(ValidationError, match="age"):
        ids(people, {"age": "thirty"})


# -- comparison operators ---------------------------------------------------------
def test_eq_matches_equal_values(people):
    assert ids(people, {"age": {"$eq": 30}}) == [1, 6]
    assert ids(people, {"code": {"$eq": "W"}}) == [5]


def test_eq_none_means_is_null(people):
    assert ids(people, {"city": {"$eq": None}}) == [2, 6]


def test_ne_matches_every_other_value_including_missing_ones(people):
    assert ids(people, {"active": {"$ne": True}}) == [2, 4]
    assert ids(people, {"city": {"$ne": "Paris"}}) == [2, 3, 4, 5, 6]


def test_ne_none_means_is_not_null(people):
    assert ids(people, {"city": {"$ne": None}}) == [1, 3, 4, 5]


def test_gt_gte_lt_lte_compare_numbers(people):
    assert ids(people, {"age": {"$gt": 30}}) == [3]
    assert ids(people, {"age": {"$gte": 30}}) == [1, 3, 6]
    assert ids(people, {"age": {"$lt": 25}}) == [4]
    assert ids(people, {"age": {"$lte": 25}}) == [2, 4]


def test_comparisons_work_on_floats(people):
    assert ids(people, {"score": {"$gt": 7.5}}) == [3, 6]
    assert ids(people, {"score": {"$lte": 3}}) == [2, 5]


def test_comparisons_never_match_null(people):
    assert 5 not in ids(people, {"age": {"$lt": 100}})
    assert 5 not in ids(people, {"age": {"$gt": -1}})


def test_comparisons_with_none_are_refused(people):
    with pytest.raises(ValidationError, match="age"):
        ids(people, {"age": {"$gt": None}})


def test_several_operators_on_one_field_are_anded(people):
    assert ids(people, {"age": {"$gte": 25, "$lt": 41}}) == [1, 2, 6]
    assert ids(people, {"age": {"$gt": 19, "$ne": 30}}) == [2, 3]
    assert ids(people, {"score": {"$gt": 5, "$lt": 5}}) == []


# -- $in / $nin -------------------------------------------------------------------
def test_in_matches_any_listed_value(people):
    assert ids(people, {"age": {"$in": [25, 41]}}) == [2, 3]
    assert ids(people, {"name": {"$in": ["Eve", "Zoe", "nobody"]}}) == [4, 6]


def test_in_with_an_empty_list_matches_nothing(people):
    assert ids(people, {"age": {"$in": []}}) == []


def test_in_with_none_also_matches_null(people):
    assert ids(people, {"age": {"$in": [19, None]}}) == [4, 5]


def test_nin_matches_every_unlisted_value(people):
    assert ids(people, {"age": {"$nin": [30, 25]}}) == [3, 4, 5]
    assert ids(people, {"code": {"$nin": ["X1", "W"]}}) == [2, 3, 4, 6]


def test_nin_with_an_empty_list_matches_everything(people):
    assert ids(people, {"age": {"$nin": []}}) == ALL


def test_nin_with_none_excludes_null(people):
    assert ids(people, {"city": {"$nin": [None, "Rome"]}}) == [1, 3, 4]


def test_in_takes_a_list(people):
    with pytest.raises(ValidationError, match=r"\$in"):
        ids(people, {"age": {"$in": 30}})


# -- pattern operators ------------------------------------------------------------
def test_like_matches_sql_wildcards(people):
    assert ids(people, {"name": {"$like": "A%"}}) == [1, 3, 5]
    assert ids(people, {"name": {"$like": "Al_ce"}}) == [1]
    assert ids(people, {"name": {"$like": "%e"}}) == [1, 3, 4, 6]


def test_like_is_case_sensitive(people):
    assert ids(people, {"name": {"$like": "a%"}}) == []
    assert ids(people, {"city": {"$like": "paris"}}) == [4]


def test_ilike_ignores_case(people):
    assert ids(people, {"name": {"$ilike": "a%"}}) == [1, 3, 5]
    assert ids(people, {"city": {"$ilike": "PARIS"}}) == [1, 4]
    assert ids(people, {"name": {"$ilike": "BOB"}}) == [2]


def test_regex_anchors_and_wildcards(people):
    assert ids(people, {"name": {"$regex": "^A.*e$"}}) == [1, 3]


def test_regex_finds_a_match_anywhere_in_the_value(people):
    assert ids(people, {"name": {"$regex": "li"}}) == [1]
    assert ids(people, {"code": {"$regex": "33"}}) == [3]


def test_regex_character_classes_and_quantifiers(people):
    assert ids(people, {"code": {"$regex": "^[A-Z][0-9]+$"}}) == [1, 2, 4]
    assert ids(people, {"code": {"$regex": "[0-9]{3,}"}}) == [3, 4]
    assert ids(people, {"name": {"$regex": "^[a-z]"}}) == [2]


def test_regex_is_case_sensitive(people):
    assert ids(people, {"code": {"$regex": "^x"}}) == [3]
    assert ids(people, {"name": {"$regex": "^alice$"}}) == []


def test_an_invalid_regex_is_refused(people):
    with pytest.raises(ValidationError, match="regular expression"):
        ids(people, {"name": {"$regex": "(unclosed"}})


def test_pattern_operators_take_strings(people):
    with pytest.raises(ValidationError, match=r"\$like"):
        ids(people, {"name": {"$like": 5}})


# -- $exists / $null --------------------------------------------------------------
def test_exists_true_matches_non_null_values(people):
    assert ids(people, {"city": {"$exists": True}}) == [1, 3, 4, 5]


def test_exists_false_matches_null_values(people):
    assert ids(people, {"city": {"$exists": False}}) == [2, 6]


def test_null_true_matches_null_values(people):
    assert ids(people, {"age": {"$null": True}}) == [5]
    assert ids(people, {"city": {"$null": True}}) == [2, 6]


def test_null_false_matches_non_null_values(people):
    assert ids(people, {"age": {"$null": False}}) == [1, 2, 3, 4, 6]


def test_exists_and_null_take_booleans(people):
    with pytest.raises(ValidationError, match=r"\$null"):
        ids(people, {"age": {"$null": "yes"}})


# -- $and / $or / $not ------------------------------------------------------------
def test_top_level_and(people):
    assert ids(people, {"$and": [{"age": {"$gte": 25}}, {"active": True}]}) == [1, 3, 6]


def test_top_level_or(people):
    assert ids(people, {"$or": [{"name": "bob"}, {"city": "Rome"}]}) == [2, 5]
    assert ids(people, {"$or": [{"age": {"$lt": 20}}, {"score": {"$gt": 9}}]}) == [3, 4]


def test_top_level_not(people):
    assert ids(people, {"$not": {"active": True}}) == [2, 4]
    assert ids(people, {"$not": {"score": {"$gte": 5}}}) == [2, 5]


def test_or_combined_with_a_sibling_field_is_anded(people):
    assert ids(people, {"active": True, "$or": [{"city": "Paris"}, {"city": "Rome"}]}) == [1, 5]


def test_nested_logical_operators(people):
    doc = {
        "$or": [
            {"$and": [{"age": {"$gt": 20}}, {"city": "Paris"}]},
            {"$not": {"name": {"$like": "%e%"}}},
        ]
    }
    assert ids(people, doc) == [1, 2]


def test_deeply_nested_logical_operators(people):
    doc = {
        "$and": [
            {"$or": [{"active": False}, {"$and": [{"score": {"$gt": 8}}, {"$not": {"code": "q9"}}]}]},
            {"$not": {"$or": [{"name": "Eve"}, {"name": "Zoe"}]}},
        ]
    }
    assert ids(people, doc) == [2, 3]


def test_not_on_a_field_negates_its_operators(people):
    assert ids(people, {"score": {"$not": {"$gt": 5}}}) == [2, 4, 5]
    assert ids(people, {"name": {"$not": {"$regex": "^A"}}}) == [2, 4, 6]


def test_and_and_or_take_lists(people):
    with pytest.raises(ValidationError, match=r"\$or"):
        ids(people, {"$or": {"name": "bob"}})


# -- order_by ---------------------------------------------------------------------
KNOWN_AGE = {"age": {"$null": False}}  # ages 30, 25, 41, 19, 30 for ids 1, 2, 3, 4, 6


def test_order_by_a_field_name_sorts_ascending_with_ties_by_id(people):
    assert ids(people, KNOWN_AGE, "age") == [4, 2, 1, 6, 3]
    assert ids(people, KNOWN_AGE, ["age"]) == [4, 2, 1, 6, 3]


def test_order_by_a_minus_prefixed_name_sorts_descending(people):
    assert ids(people, KNOWN_AGE, ["-age"]) == [3, 1, 6, 2, 4]


def test_order_by_a_dict_direction(people):
    assert ids(people, KNOWN_AGE, [{"age": -1}]) == [3, 1, 6, 2, 4]
    assert ids(people, KNOWN_AGE, [{"age": 1}]) == [4, 2, 1, 6, 3]


def test_order_by_several_fields(people):
    assert ids(people, {}, ["-active", "-score"]) == [3, 6, 1, 5, 4, 2]
    assert ids(people, KNOWN_AGE, ["age", "-id"]) == [4, 2, 6, 1, 3]


def test_order_by_floats(people):
    assert ids(people, {}, "score") == [5, 2, 4, 1, 6, 3]


def test_order_by_an_unknown_field_is_refused_with_a_suggestion(people):
    with pytest.raises(ValidationError, match="agee") as info:
        ids(people, {}, ["-agee"])
    assert "Did you mean 'age'" in str(info.value)


def test_order_by_a_bad_direction_is_refused(people):
    with pytest.raises(ValidationError, match="age"):
        ids(people, {}, [{"age": 2}])


def test_nulls_sort_last_ascending_and_first_descending_on_every_backend(people):
    # ages: 1:30 2:25 3:41 4:19 5:None 6:30
    assert ids(people, {}, "age") == [4, 2, 1, 6, 3, 5]
    assert ids(people, {}, "-age") == [5, 3, 1, 6, 2, 4]
    assert ids(people, {}, [{"age": "desc"}]) == [5, 3, 1, 6, 2, 4]


def test_order_by_nulls_first_or_last_overrides_the_default(people):
    assert ids(people, {}, {"age": {"nulls": "first"}}) == [5, 4, 2, 1, 6, 3]
    assert ids(people, {}, [{"age": {"direction": "desc", "nulls": "last"}}]) == [3, 1, 6, 2, 4, 5]
    assert ids(people, {}, [{"age": {"direction": -1}}]) == [5, 3, 1, 6, 2, 4]
    # cities: 1:Paris 2:None 3:Berlin 4:paris 5:Rome 6:None; NULL ties broken by id
    assert ids(people, {}, [{"city": {"nulls": "first"}}, "-id"])[:2] == [6, 2]


def test_order_by_nulls_is_emulated_where_the_database_lacks_nulls_first(people, monkeypatch):
    dialect = people.table("Person").dialect
    monkeypatch.setattr(dialect, "supports_nulls_order", False)
    assert ids(people, {}, "age") == [4, 2, 1, 6, 3, 5]
    assert ids(people, {}, "-age") == [5, 3, 1, 6, 2, 4]
    assert ids(people, {}, {"age": {"direction": "asc", "nulls": "first"}}) == [5, 4, 2, 1, 6, 3]


@pytest.mark.parametrize(
    "order_by, message",
    [
        ({"age": {"nulls": "middle"}}, "'nulls' for 'age' is 'middle'"),
        ({"age": {"nulls": None}}, "'nulls' for 'age' is None"),
        ({"age": {"direction": "up"}}, "direction for 'age' is 'up'"),
        ({"age": {"nuls": "first"}}, "unknown key 'nuls'.*Did you mean 'nulls'"),
        ({"age": True}, "direction for 'age' is True"),
    ],
)
def test_order_by_a_bad_nulls_or_direction_is_refused_naming_the_field(people, order_by, message):
    with pytest.raises(ValidationError, match=message):
        ids(people, {}, order_by)


# -- unknown names ----------------------------------------------------------------
def test_an_unknown_operator_is_refused_naming_it_and_suggesting_a_close_one(people):
    with pytest.raises(ValidationError, match=r"\$gtt") as info:
        ids(people, {"age": {"$gtt": 3}})
    assert "Did you mean '$gt'" in str(info.value)


def test_an_unknown_field_is_refused_naming_it_and_suggesting_a_close_one(people):
    with pytest.raises(ValidationError, match="agee") as info:
        ids(people, {"agee": 3})
    assert "Did you mean 'age'" in str(info.value)


def test_an_unknown_field_inside_a_nested_filter_is_refused(people):
    with pytest.raises(ValidationError, match="nmae") as info:
        ids(people, {"$or": [{"age": 3}, {"$not": {"nmae": "bob"}}]})
    assert "Did you mean 'name'" in str(info.value)


def test_an_unknown_top_level_operator_is_refused_with_a_suggestion(people):
    with pytest.raises(ValidationError, match=r"\$nor") as info:
        ids(people, {"$nor": [{"age": 3}]})
    assert "Did you mean '$or'" in str(info.value)


@pytest.mark.parametrize(
    "node_type, extra",
    [
        ("PersonCountNode", {}),
        ("PersonBulkUpdateNode", {"fields": {"age": 1}}),
        ("PersonBulkDeleteNode", {}),
    ],
)
def test_every_filtering_node_refuses_an_unknown_field_at_build(people, node_type, extra):
    builder = WorkflowBuilder(people)
    builder.add_node(node_type, "node", {"filter": {"scor": 1}, **extra})
    with pytest.raises(ValidationError, match="Did you mean 'score'"):
        builder.build()


def test_in_accepts_more_values_than_a_statement_can_bind(people):
    many = [*range(100, 33_000), 19, 41]  # more than PostgreSQL's 32,767 bind parameters
    counted = run_one(people, "PersonCountNode", {"filter": {"age": {"$in": many}}})
    assert counted == {"count": 2}


# -- values are bound parameters ----------------------------------------------------
INJECTIONS = ["x' OR 1=1 --", "' OR '1'='1", "Robert'); DROP TABLE people; --", '" OR ""="', "%", "\\"]


def escape_regex(text):
    """Escape the characters every backend's regex dialect treats specially."""
    return "".join("\\" + c if c in "\\()[]{}.*+?^$|" else c for c in text)


@pytest.mark.parametrize("value", INJECTIONS)
def test_an_injection_attempt_in_a_value_matches_nothing_and_breaks_nothing(people, value):
    assert ids(people, {"name": value}) == []
    assert ids(people, {"name": {"$in": [value, "nobody"]}}) == []
    assert ids(people, {"name": {"$regex": "^" + escape_regex(value) + "$"}}) == []
    assert ids(people, {"$or": [{"name": value}, {"code": value}]}) == []
    assert ids(people, {}) == ALL


def test_an_injection_attempt_in_like_and_ilike_matches_nothing(people):
    assert ids(people, {"name": {"$like": "x' OR 1=1 --"}}) == []
    assert ids(people, {"name": {"$ilike": "' OR '1'='1"}}) == []
    assert ids(people, {}) == ALL


def test_a_stored_value_that_looks_like_sql_is_found_by_exact_match(people):
    evil = "x' OR 1=1 --"
    run_one(
        people,
        "PersonCreateNode",
        {"name": evil, "age": 1, "city": None, "active": True, "score": 0.0, "code": "e"},
    )
    assert ids(people, {"name": evil}) == [7]
    assert ids(people, {"name": {"$ne": evil}}) == ALL


def test_bulk_update_with_an_injection_attempt_changes_nothing(people):
    result = run_one(
        people, "PersonBulkUpdateNode", {"filter": {"name": "x' OR 1=1 --"}, "fields": {"age": 0}}
    )
    assert result == {"updated": 0}
    assert ids(people, {"age": 0}) == []


def test_bulk_delete_with_an_injection_attempt_deletes_nothing(people):
    assert run_one(people, "PersonBulkDeleteNode", {"filter": {"code": "' OR '1'='1"}}) == {"deleted": 0}
    assert ids(people, {}) == ALL


def test_the_same_filter_selects_the_same_rows_in_bulk_update_and_bulk_delete(people):
    doc = {"$or": [{"age": {"$lt": 26}}, {"city": {"$ilike": "rome"}}]}
    assert ids(people, doc) == [2, 4, 5]
    assert run_one(people, "PersonBulkUpdateNode", {"filter": doc, "fields": {"code": "hit"}}) == {
        "updated": 3
    }
    assert ids(people, {"code": "hit"}) == [2, 4, 5]
    assert run_one(people, "PersonBulkDeleteNode", {"filter": doc}) == {"deleted": 3}
    assert ids(people, {}) == [1, 3, 6]


# -- other column types -------------------------------------------------------------
@pytest.fixture
def prices(db):
    @db.model
    class Price:
        label: str
        amount: Decimal
        day: dt.date
        stamp: dt.datetime

    rows = [
        {
            "label": "a",
            "amount": Decimal("9.99"),
            "day": dt.date(2024, 1, 9),
            "stamp": "2024-01-09T10:00:00+00:00",
        },
        {
            "label": "b",
            "amount": Decimal("10.5"),
            "day": dt.date(2024, 1, 10),
            "stamp": "2024-01-10T10:00:00+00:00",
        },
        {
            "label": "c",
            "amount": Decimal("100"),
            "day": dt.date(2023, 12, 31),
            "stamp": "2023-12-31T23:00:00+00:00",
        },
        {
            "label": "d",
            "amount": Decimal("-2.5"),
            "day": dt.date(2024, 2, 1),
            "stamp": "2024-02-01T00:00:00+00:00",
        },
    ]
    assert run_one(db, "PriceBulkCreateNode", {"data": rows}) == {"inserted": 4}
    return db


def labels(db, where, order_by=None):
    params = {"filter": where, **({"order_by": order_by} if order_by is not None else {})}
    return [r["label"] for r in run_one(db, "PriceListNode", params)["records"]]


def test_comparisons_on_decimal_fields_compare_numbers_not_text(prices):
    assert labels(prices, {"amount": {"$gt": Decimal("9.999")}}) == ["b", "c"]
    assert labels(prices, {"amount": {"$lt": 10}}) == ["a", "d"]
    assert labels(prices, {"amount": Decimal("10.5")}) == ["b"]


def test_order_by_a_decimal_field_sorts_numerically(prices):
    assert labels(prices, {}, "amount") == ["d", "a", "b", "c"]


def test_comparisons_on_dates(prices):
    assert labels(prices, {"day": {"$gte": dt.date(2024, 1, 10)}}) == ["b", "d"]
    assert labels(prices, {"day": {"$lt": "2024-01-01"}}) == ["c"]
    assert labels(prices, {}, ["-day"]) == ["d", "b", "a", "c"]


def test_comparisons_on_datetimes_respect_time_zones(prices):
    tokyo = dt.timezone(dt.timedelta(hours=9))
    # 2024-01-10 08:00 in Tokyo is 2024-01-09 23:00 UTC: after a, before b.
    moment = dt.datetime(2024, 1, 10, 8, 0, tzinfo=tokyo)
    assert labels(prices, {"stamp": {"$gt": moment}}) == ["b", "d"]
    assert labels(prices, {"stamp": {"$lte": moment}}) == ["a", "c"]
    assert labels(prices, {"stamp": dt.datetime(2024, 1, 9, 19, 0, tzinfo=tokyo)}) == ["a"]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.fixture
def things(db):
    @db.model
    class Thing:
        colour: Colour
        flag: bool
        uid: uuid.UUID
        day: dt.date
        raw: bytes
        stamp: dt.datetime

    rows = [
        {
            "colour": colour,
            "flag": flag,
            "uid": uuid.UUID(int=i),
            "day": dt.date(2020, 1, i + 1),
            "raw": bytes([i]),
            "stamp": dt.datetime(2020, 1, 1, i, tzinfo=dt.UTC),
        }
        for i, (colour, flag) in enumerate([(Colour.RED, True), (Colour.BLUE, False), (Colour.RED, True)])
    ]
    assert run_one(db, "ThingBulkCreateNode", {"data": rows}) == {"inserted": 3}
    return db


def thing_ids(db, where, order_by=None):
    params = {"filter": where, **({"order_by": order_by} if order_by is not None else {})}
    found = [r["id"] for r in run_one(db, "ThingListNode", params)["records"]]
    assert run_one(db, "ThingCountNode", {"filter": where})["count"] == len(found)
    return found


def test_filters_on_enum_fields_take_members_or_values(things):
    assert thing_ids(things, {"colour": Colour.BLUE}) == [2]
    assert thing_ids(things, {"colour": "red"}) == [1, 3]
    assert thing_ids(things, {"colour": {"$in": [Colour.BLUE]}}) == [2]
    assert thing_ids(things, {"colour": {"$ne": Colour.RED}}) == [2]


def test_filters_on_bool_uuid_date_bytes_and_datetime_fields(things):
    assert thing_ids(things, {"flag": {"$in": [False]}}) == [2]
    assert thing_ids(things, {"uid": {"$in": [uuid.UUID(int=0), str(uuid.UUID(int=2))]}}) == [1, 3]
    assert thing_ids(things, {"uid": {"$ne": uuid.UUID(int=0)}}) == [2, 3]
    assert thing_ids(things, {"day": {"$in": [dt.date(2020, 1, 2)]}}) == [2]
    assert thing_ids(things, {"raw": bytes([2])}) == [3]
    assert thing_ids(things, {"stamp": {"$in": [dt.datetime(2020, 1, 1, 1, tzinfo=dt.UTC)]}}) == [2]


def test_order_by_bool_and_uuid_fields(things):
    assert thing_ids(things, {}, ["-flag", "-id"]) == [3, 1, 2]
    assert thing_ids(things, {}, ["-uid"]) == [3, 2, 1]


def test_filters_on_the_generated_timestamps(things):
    now = dt.datetime.now(dt.UTC)
    assert thing_ids(things, {"created_at": {"$lte": now}}) == [1, 2, 3]
    assert thing_ids(things, {"updated_at": {"$gt": now + dt.timedelta(minutes=1)}}) == []


def test_a_nul_inside_a_json_filter_value_is_refused_where_text_cannot_hold_it(db, backend):
    @db.model
    class Doc:
        data: dict

    run_one(db, "DocCreateNode", {"data": {"a": 1}})
    where = {"data": {"$eq": {"a\x00": 1}}}
    if backend == "postgres":  # PostgreSQL refuses \u0000 in json text: a clear error, before any SQL
        with pytest.raises(ValidationError, match="NUL"):
            run_one(db, "DocListNode", {"filter": where})
    else:
        assert run_one(db, "DocListNode", {"filter": where})["records"] == []


def test_like_and_ilike_take_backslash_escapes_on_every_backend(db):
    """Issue 13, item 14: ESCAPE '\\' everywhere (it worked only on PostgreSQL)."""
    from dataflow_lab import LocalRuntime, WorkflowBuilder

    @db.model
    class Code:
        text: str

    def listed(flt):
        wf = WorkflowBuilder(db)
        wf.add_node("CodeListNode", "l", {"filter": {"text": flt}, "order_by": ["text"]})
        return [r["text"] for r in LocalRuntime().execute(wf.build())[0]["l"]["records"]]

    wf = WorkflowBuilder(db)
    wf.add_node(
        "CodeBulkCreateNode", "c", {"data": [{"text": t} for t in ["100%", "1000", "a_b", "axb", "c\\d"]]}
    )
    LocalRuntime().execute(wf.build())
    assert listed({"$like": "100\\%"}) == ["100%"]
    assert listed({"$like": "a\\_b"}) == ["a_b"]
    assert listed({"$ilike": "A\\_B"}) == ["a_b"]
    assert listed({"$like": "c\\\\d"}) == ["c\\d"]
    assert listed({"$like": "a_b"}) == ["a_b", "axb"]  # unescaped _ is still a wildcard


WORDS = ["ÄÖÜ", "äöü", "Straße", "STRASSE", "ΟΔΟΣ", "οδοσ", "Привет", "ПРИВЕТ", "plain"]


def test_ilike_folds_unicode_case_the_same_on_every_backend(db):
    """Issue 13, item 14: SQLite's $ilike folded only ASCII; PostgreSQL and DuckDB fold Unicode."""
    from dataflow_lab import LocalRuntime, WorkflowBuilder

    @db.model
    class Word:
        text: str

    def listed(flt):
        wf = WorkflowBuilder(db)
        wf.add_node("WordListNode", "l", {"filter": {"text": flt}, "order_by": ["id"]})
        return [r["text"] for r in LocalRuntime().execute(wf.build())[0]["l"]["records"]]

    wf = WorkflowBuilder(db)
    wf.add_node("WordBulkCreateNode", "c", {"data": [{"text": t} for t in WORDS]})
    LocalRuntime().execute(wf.build())
    assert listed({"$ilike": "äöü"}) == ["ÄÖÜ", "äöü"]
    assert listed({"$ilike": "%Ö%"}) == ["ÄÖÜ", "äöü"]
    assert listed({"$ilike": "straße"}) == ["Straße"]  # lower(), not casefold(): ß is not ss
    assert listed({"$ilike": "strasse"}) == ["STRASSE"]
    assert listed({"$ilike": "οδοσ"}) == ["ΟΔΟΣ", "οδοσ"]  # final Σ lowers to σ, as in PostgreSQL
    assert listed({"$ilike": "привет"}) == ["Привет", "ПРИВЕТ"]
    assert listed({"$ilike": "п_ивет"}) == ["Привет", "ПРИВЕТ"]  # _ is one character, not one byte
    assert listed({"$like": "привет"}) == []  # $like still matches case


# -- compiled once per shape ------------------------------------------------------------
# A filtered List or Count compiles its SQL once per filter shape (filters.shaped): the
# values of a run must never leak into another's.
SHAPES = [
    {"age": 30},
    {"age": None},
    {"age": {"$ne": None}},
    {"age": {"$in": [19, None]}},
    {"age": {"$nin": [30, 41]}},
    {"city": {"$like": "P%"}, "active": False},
    {"city": {"$ilike": "paris"}},
    {"code": {"$regex": "^[xX]"}},
    {"$or": [{"age": {"$gte": 40}}, {"name": {"$in": ["bob", "Eve"]}}]},
    {"$not": {"score": {"$lt": 5.0}}},
    {"name": {"$not": {"$in": ["Alice"]}}, "age": {"$exists": True}},
]


@pytest.mark.parametrize("where", SHAPES, ids=str)
def test_a_filter_template_is_the_sql_with_the_values_bound_in(people, where):
    from dataflow_lab import filters

    mt = people.table("Person")
    doc = filters.normalize(mt.model, where)
    shape = filters.shaped(mt, doc)
    sql, names = mt.dialect.compile_named(shape.where())
    assert (sql, [shape.values[n] for n in names]) == mt.dialect.compile(filters.to_sql(mt, doc))


def test_counts_and_lists_of_one_shape_take_each_run_s_values(people):
    for age, expected in [(30, [1, 6]), (25, [2]), (19, [4]), (99, [])]:
        assert ids(people, {"age": age}) == expected
    for age, expected in [(30, [3]), (19, [1, 3, 6]), (50, [])]:
        assert ids(people, {"age": {"$gt": age}, "active": True}) == expected
    assert ids(people, {"name": {"$like": "A%"}}) == [1, 3, 5]
    assert ids(people, {"name": {"$like": "Z%"}}) == [6]


def test_none_and_in_lists_of_other_lengths_are_other_shapes(people):
    assert ids(people, {"city": "Rome"}) == [5]
    assert ids(people, {"city": None}) == [2, 6]  # IS NULL, not = NULL with the last run's SQL
    assert ids(people, {"city": {"$ne": None}}) == [1, 3, 4, 5]
    assert ids(people, {"age": {"$in": [30]}}) == [1, 6]
    assert ids(people, {"age": {"$in": [25, 41]}}) == [2, 3]
    assert ids(people, {"age": {"$in": [25, None]}}) == [2, 5]
    assert ids(people, {"age": {"$in": []}}) == []
    assert ids(people, {"age": {"$nin": [30]}}) == [2, 3, 4, 5]
    assert ids(people, {"age": {"$nin": [30, None]}}) == [2, 3, 4]


def test_a_long_in_list_takes_its_own_values_each_run(people):
    assert ids(people, {"age": {"$in": list(range(600))}}) == [1, 2, 3, 4, 6]
    assert ids(people, {"age": {"$in": list(range(26, 700))}}) == [1, 3, 6]
    assert ids(people, {"age": {"$in": [*range(100, 700), None]}}) == [5]


def test_converted_values_of_one_shape_take_each_run_s_values(db):
    """UUIDs, datetimes and JSON reach the driver converted (text on SQLite): each run's own."""

    @db.model
    class Event:
        ref: uuid.UUID
        at: dt.datetime
        tags: dict

    refs = [uuid.uuid4() for _ in range(3)]
    times = [dt.datetime(2024, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3)]
    rows = [{"ref": r, "at": t, "tags": {"n": i}} for i, (r, t) in enumerate(zip(refs, times, strict=True))]
    run_one(db, "EventBulkCreateNode", {"data": rows})
    for i, (ref, at) in enumerate(zip(refs, times, strict=True)):
        listed = run_one(db, "EventListNode", {"filter": {"ref": ref}})["records"]
        assert [r["ref"] for r in listed] == [ref]
        assert run_one(db, "EventCountNode", {"filter": {"at": {"$gte": at}}})["count"] == 3 - i
        assert run_one(db, "EventCountNode", {"filter": {"ref": {"$in": [ref, refs[0]]}}})["count"] == (
            1 if i == 0 else 2
        )


def test_counts_of_one_shape_count_each_tenant_s_rows(db):
    @db.model
    class Ticket:
        __dataflow__ = {"multi_tenant": True}
        title: str
        open: bool

    runtime = LocalRuntime()

    def run(node_type, params, tenant):
        workflow = WorkflowBuilder(db)
        workflow.add_node(node_type, "node", params)
        return runtime.execute(workflow.build(), tenant=tenant)[0]["node"]

    run("TicketBulkCreateNode", {"data": [{"title": f"a{i}", "open": True} for i in range(3)]}, "acme")
    run("TicketBulkCreateNode", {"data": [{"title": "g", "open": True}]}, "globex")
    for _ in range(2):  # the second round runs the cached statements
        for tenant, expected in [("acme", 3), ("globex", 1), ("initech", 0)]:
            assert run("TicketCountNode", {"filter": {"open": True}}, tenant)["count"] == expected
            listed = run("TicketListNode", {"filter": {"open": True}, "limit": 10}, tenant)["records"]
            assert {r["tenant_id"] for r in listed} <= {tenant} and len(listed) == expected
            assert run("TicketCountNode", {}, tenant)["count"] == expected


def test_limit_and_offset_of_one_shape_take_each_run_s_values(people):
    def page(limit, offset):
        params = {"filter": {"active": True}, "limit": limit, "offset": offset}
        return [r["id"] for r in run_one(people, "PersonListNode", params)["records"]]

    assert page(2, 0) == [1, 3]
    assert page(2, 2) == [5, 6]
    assert page(1, 1) == [3]
    assert page(None, 3) == [6]
    assert page(None, 0) == [1, 3, 5, 6]
