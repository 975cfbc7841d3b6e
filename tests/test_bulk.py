"""Bulk operations on real databases: inputs, atomicity, skipping, ids, upserts, CSV and progress.

Every test runs on SQLite, DuckDB and PostgreSQL through the ``db`` fixture
unless it is about one database's behaviour. The basics of the four bulk
nodes live in test_nodes.py; this file covers what the bulk issue adds:
DataFrames and streamed generators, all-or-nothing at scale, ``on_error``,
``return_ids``, exact upsert counts across chunks, one-statement filter
writes, ``db.import_csv`` and progress reporting.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time
from decimal import Decimal
from typing import Optional

import numpy as np
import pandas as pd
import pytest
from conftest import url_for

from dataflow_lab import DataFlow, DataFlowError, LocalRuntime, ValidationError, WorkflowBuilder

UTC = dt.UTC


# -- helpers ------------------------------------------------------------------
def bulk(db, node_type, params, *, hooks=()):
    """Run one node (id 'bulk') in its own workflow; return its output."""
    workflow = WorkflowBuilder(db)
    workflow.add_node(node_type, "bulk", params)
    results, _ = LocalRuntime(hooks=list(hooks)).execute(workflow.build())
    return results["bulk"]


def records(db, model="User", **params):
    return bulk(db, f"{model}ListNode", params)["records"]


def count(db, model="User", where=None):
    return bulk(db, f"{model}CountNode", {"filter": where or {}})["count"]


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


def define_reading(db):
    @db.model
    class Reading:
        sensor: str
        tally: int
        value: float
        ok: bool
        taken_at: dt.datetime
        level: Optional[int] = None  # noqa: UP045
        score: Optional[float] = None  # noqa: UP045
        note: Optional[str] = None  # noqa: UP045
        flag: Optional[bool] = None  # noqa: UP045
        seen_at: Optional[dt.datetime] = None  # noqa: UP045

    return Reading


def define_item(db):
    @db.model
    class Item:
        sku: str
        qty: int
        price: float
        in_stock: bool
        added: dt.date
        note: Optional[str] = None  # noqa: UP045
        rating: Optional[float] = None  # noqa: UP045
        recalled: Optional[bool] = None  # noqa: UP045

    return Item


def user_rows(count_, start=0, **extra):
    return [{"name": f"user{i}", "email": f"u{i}@example.com", **extra} for i in range(start, start + count_)]


class ProgressSpy:
    """A hooks subscriber that records every progress event (and may run a callback on each)."""

    def __init__(self, on_event=None):
        self.events: list[dict] = []
        self.on_event = on_event

    def progress(self, *, run_id, node_id, done, total, **future):
        self.events.append({"node_id": node_id, "done": done, "total": total})
        if self.on_event is not None:
            self.on_event()


@pytest.fixture
def users(db):
    define_user(db)
    return db


@pytest.fixture
def readings(db):
    define_reading(db)
    return db


@pytest.fixture
def items(db):
    define_item(db)
    return db


@pytest.fixture(params=("sqlite", "sqlite_file", "postgres"))
def savepoint_db(request, tmp_path):
    """The databases that can skip one refused row (savepoints): SQLite and PostgreSQL."""
    dataflow = DataFlow(url_for(request.param, tmp_path))
    define_user(dataflow)
    yield dataflow
    dataflow.close()


# -- inputs: DataFrames ----------------------------------------------------------
def test_a_dataframe_of_int64_float64_bool_and_datetime64_columns_is_stored_as_native_values(readings):
    frame = pd.DataFrame(
        {
            "sensor": ["a", "b", "c"],
            "tally": np.array([1, 2**40, -3], dtype="int64"),
            "value": np.array([0.5, 1.25, -2.0], dtype="float64"),
            "ok": np.array([True, False, True]),
            "taken_at": pd.to_datetime(["2024-01-01 10:00:00", "2024-02-29 23:59:59", "2023-12-31 00:00:00"]),
        },
        index=[10, 20, 30],
    )
    assert [str(t) for t in frame.dtypes][1:4] == ["int64", "float64", "bool"]
    assert str(frame.dtypes["taken_at"]).startswith("datetime64")

    assert bulk(readings, "ReadingBulkCreateNode", {"data": frame}) == {"inserted": 3}

    rows = records(readings, "Reading")
    assert [r["sensor"] for r in rows] == ["a", "b", "c"]
    assert [r["tally"] for r in rows] == [1, 2**40, -3]
    assert all(type(r["tally"]) is int for r in rows)
    assert [r["value"] for r in rows] == [0.5, 1.25, -2.0]
    assert all(type(r["value"]) is float for r in rows)
    assert [r["ok"] for r in rows] == [True, False, True]
    assert all(type(r["ok"]) is bool for r in rows)
    assert [r["taken_at"] for r in rows] == [
        dt.datetime(2024, 1, 1, 10, 0, tzinfo=UTC),
        dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
        dt.datetime(2023, 12, 31, 0, 0, tzinfo=UTC),
    ]


def test_a_dataframe_with_nan_nat_and_na_in_optional_numeric_columns_stores_null(readings):
    frame = pd.DataFrame(
        {
            "sensor": ["a", "b", "c"],
            "tally": [1, 2, 3],
            "value": [1.0, 2.0, 3.0],
            "ok": [True, True, False],
            "taken_at": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True),
            "level": [1, None, 3],  # float64 with NaN
            "score": [np.nan, 2.5, None],
            "flag": pd.array([True, None, False], dtype="boolean"),
            "seen_at": pd.to_datetime(["2024-05-01 12:00", None, "2024-05-03 08:30"], utc=True),
        }
    )
    assert str(frame.dtypes["level"]) == "float64"

    assert bulk(readings, "ReadingBulkCreateNode", {"data": frame}) == {"inserted": 3}

    rows = records(readings, "Reading")
    assert [r["level"] for r in rows] == [1, None, 3]
    assert all(type(r["level"]) is int for r in rows if r["level"] is not None)
    assert [r["score"] for r in rows] == [None, 2.5, None]
    assert [r["flag"] for r in rows] == [True, None, False]
    assert [r["seen_at"] for r in rows] == [
        dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        None,
        dt.datetime(2024, 5, 3, 8, 30, tzinfo=UTC),
    ]
    assert rows[0]["taken_at"] == dt.datetime(2024, 1, 1, tzinfo=UTC)


def test_a_dataframe_with_none_or_nan_in_an_optional_text_column_stores_null(readings):
    frame = pd.DataFrame(
        {
            "sensor": ["a", "b", "c", "d"],
            "tally": [1, 2, 3, 4],
            "value": [1.0, 2.0, 3.0, 4.0],
            "ok": [True, True, False, False],
            "taken_at": pd.to_datetime(["2024-01-01"] * 4),
            "note": ["first", None, np.nan, "last"],
        }
    )
    assert bulk(readings, "ReadingBulkCreateNode", {"data": frame}) == {"inserted": 4}
    assert [r["note"] for r in records(readings, "Reading")] == ["first", None, None, "last"]


def test_a_dataframe_with_a_nullable_int64_column_stores_its_na_as_null(readings):
    frame = pd.DataFrame(
        {
            "sensor": ["a", "b"],
            "tally": pd.array([7, 8], dtype="Int64"),
            "value": [1.0, 2.0],
            "ok": [True, False],
            "taken_at": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "level": pd.array([None, 5], dtype="Int64"),
        }
    )
    assert bulk(readings, "ReadingBulkCreateNode", {"data": frame}) == {"inserted": 2}
    assert [(r["tally"], r["level"]) for r in records(readings, "Reading")] == [(7, None), (8, 5)]


def test_a_dataframe_column_that_is_not_a_field_is_refused_and_nothing_is_written(users):
    frame = pd.DataFrame({"name": ["a", "b"], "emial": ["a@x", "b@x"]})
    with pytest.raises(ValidationError) as info:
        bulk(users, "UserBulkCreateNode", {"data": frame})
    message = str(info.value)
    assert "emial" in message
    assert "Did you mean 'email'" in message
    assert count(users) == 0


def test_an_empty_dataframe_inserts_nothing(users):
    frame = pd.DataFrame({"name": pd.Series([], dtype=object), "email": pd.Series([], dtype=object)})
    assert bulk(users, "UserBulkCreateNode", {"data": frame}) == {"inserted": 0}
    assert count(users) == 0


def test_a_bulk_upsert_takes_a_dataframe(users):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(2)})
    frame = pd.DataFrame(
        {"name": ["renamed", "new"], "email": ["u1@example.com", "new@example.com"], "age": [41, 42]}
    )
    result = bulk(users, "UserBulkUpsertNode", {"data": frame, "conflict_on": ["email"]})
    assert result == {"inserted": 1, "updated": 1}
    rows = {r["email"]: (r["name"], r["age"]) for r in records(users)}
    assert rows == {
        "u0@example.com": ("user0", 0),
        "u1@example.com": ("renamed", 41),
        "new@example.com": ("new", 42),
    }


# -- inputs: generators and iterators ----------------------------------------------
def test_a_generator_is_consumed_chunk_by_chunk_not_materialized_before_the_first_write(users):
    pulled = 0

    def generate():
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield {"name": f"n{i}", "email": f"e{i}"}

    pulled_at_event: list[int] = []
    spy = ProgressSpy(on_event=lambda: pulled_at_event.append(pulled))
    result = bulk(users, "UserBulkCreateNode", {"data": generate(), "batch_size": 10}, hooks=[spy])

    assert result == {"inserted": 100}
    assert len(pulled_at_event) == 10
    assert pulled_at_event[0] <= 20  # at most one chunk of look-ahead when the first chunk is done
    assert pulled_at_event[0] < 100
    assert pulled_at_event == sorted(pulled_at_event)
    assert count(users) == 100


@pytest.mark.parametrize("sized", [False, True], ids=["iterator", "list"])
def test_ten_thousand_rows_in_chunks_of_1000_report_ten_progress_events_with_growing_done(users, sized):
    data = user_rows(10_000)
    spy = ProgressSpy()
    result = bulk(
        users, "UserBulkCreateNode", {"data": data if sized else iter(data), "batch_size": 1000}, hooks=[spy]
    )
    assert result == {"inserted": 10_000}
    assert [e["done"] for e in spy.events] == list(range(1000, 10_001, 1000))
    assert {e["total"] for e in spy.events} == ({10_000} if sized else {None})
    assert {e["node_id"] for e in spy.events} == {"bulk"}
    assert count(users) == 10_000


def test_a_global_hooks_subscriber_also_receives_bulk_progress(users):
    from dataflow_lab import hooks

    spy = hooks.subscribe(ProgressSpy())
    try:
        bulk(users, "UserBulkCreateNode", {"data": user_rows(30), "batch_size": 10})
    finally:
        hooks.unsubscribe(spy)
    assert [(e["node_id"], e["done"], e["total"]) for e in spy.events] == [
        ("bulk", 10, 30),
        ("bulk", 20, 30),
        ("bulk", 30, 30),
    ]


def test_a_row_that_is_not_a_dict_is_refused_naming_its_index(users):
    def generate():
        yield {"name": "a", "email": "a"}
        yield ("b", "b")

    with pytest.raises(ValidationError, match="row 1"):
        bulk(users, "UserBulkCreateNode", {"data": generate()})
    assert count(users) == 0


@pytest.mark.parametrize("batch_size", [0, -5, 2.5, True])
def test_batch_size_must_be_a_positive_int(users, batch_size):
    with pytest.raises(ValidationError, match="batch_size"):
        bulk(users, "UserBulkCreateNode", {"data": user_rows(2), "batch_size": batch_size})
    assert count(users) == 0


def test_on_error_must_be_raise_or_skip(users):
    with pytest.raises(ValidationError, match="on_error"):
        bulk(users, "UserBulkCreateNode", {"data": user_rows(2), "on_error": "ignore"})


# -- all or nothing --------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [None, 1000])
def test_a_bad_last_row_of_3000_writes_nothing_and_names_the_row_the_field_and_the_type(users, batch_size):
    data = [{"name": f"n{i}", "email": f"e{i}", "age": i} for i in range(3000)]
    data[-1]["age"] = "abc"
    with pytest.raises(ValidationError) as info:
        bulk(users, "UserBulkCreateNode", {"data": data, "batch_size": batch_size})
    message = str(info.value)
    assert "row 2999" in message
    assert "'age'" in message
    assert "str" in message
    assert count(users) == 0


def test_an_int_field_never_stores_abc_even_from_a_generator(users):
    def generate():
        for i in range(5):
            yield {"name": f"n{i}", "email": f"e{i}", "age": i}
        yield {"name": "bad", "email": "bad", "age": "abc"}

    with pytest.raises(ValidationError, match="row 5"):
        bulk(users, "UserBulkCreateNode", {"data": generate()})
    assert count(users) == 0
    assert count(users, where={"name": "bad"}) == 0


def test_an_int_field_refuses_a_value_beyond_64_bits(users):
    data = [{"name": "a", "email": "a", "age": 1}, {"name": "b", "email": "b", "age": 2**63}]
    with pytest.raises(ValidationError, match="64 bits"):
        bulk(users, "UserBulkCreateNode", {"data": data})
    assert count(users) == 0


def test_a_sqlite_file_table_is_strict_so_even_raw_sql_cannot_store_abc_in_an_int_column(tmp_path):
    url = url_for("sqlite_file", tmp_path)
    db = DataFlow(url)
    define_user(db)
    with pytest.raises(ValidationError):
        bulk(db, "UserBulkCreateNode", {"data": iter([{"name": "a", "email": "a", "age": "abc"}])})
    skipped = bulk(
        db,
        "UserBulkCreateNode",
        {"data": iter([{"name": "b", "email": "b", "age": "abc"}]), "on_error": "skip"},
    )
    assert skipped["inserted"] == 0
    db.close()

    raw = sqlite3.connect(tmp_path / "test.db")
    try:
        assert raw.execute("SELECT count(*) FROM users").fetchone() == (0,)
        assert raw.execute("SELECT count(*) FROM users WHERE typeof(age) = 'text'").fetchone() == (0,)
        with pytest.raises(sqlite3.Error):
            raw.execute(
                "INSERT INTO users (name, email, age, active, created_at, updated_at) "
                "VALUES ('x', 'x', 'abc', 1, '2024-01-01', '2024-01-01')"
            )
    finally:
        raw.close()


def test_a_bad_row_in_the_third_chunk_of_a_generator_rolls_back_the_two_chunks_already_written(users):
    def generate():
        for i in range(3000):
            yield {"name": f"n{i}", "email": f"e{i}", "age": "x" if i == 2500 else i}

    spy = ProgressSpy()
    with pytest.raises(ValidationError, match="row 2500"):
        bulk(users, "UserBulkCreateNode", {"data": generate(), "batch_size": 1000}, hooks=[spy])
    assert [e["done"] for e in spy.events] == [1000, 2000]  # two chunks were written, then undone
    assert count(users) == 0


def test_a_database_refusal_in_the_third_chunk_of_a_generator_commits_nothing(users):
    def generate():
        for i in range(3000):
            yield {"name": f"n{i}", "email": "e7" if i == 2999 else f"e{i}"}  # duplicates row 7's email

    with pytest.raises(DataFlowError):
        bulk(users, "UserBulkCreateNode", {"data": generate(), "batch_size": 1000})
    assert count(users) == 0


def test_a_bad_last_row_of_a_bulk_upsert_changes_nothing(users):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(2)})
    before = records(users)
    data = [{"name": f"changed{i}", "email": f"u{i}@example.com", "age": 99} for i in range(3000)]
    data[-1]["age"] = "abc"
    with pytest.raises(ValidationError, match="row 2999"):
        bulk(users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"], "batch_size": 1000})
    assert records(users) == before


# -- on_error="skip" --------------------------------------------------------------
def test_on_error_skip_writes_the_good_rows_and_reports_each_bad_row_with_its_index_and_error(users):
    data = [
        {"name": "a", "email": "a", "age": 1},
        {"name": "b", "email": "b", "age": "abc"},
        {"name": "c", "email": "c", "age": 3},
        {"name": "d", "age": 4},
        {"name": "e", "email": "e", "age": 5},
    ]
    result = bulk(users, "UserBulkCreateNode", {"data": data, "on_error": "skip"})
    assert result["inserted"] == 3
    assert [s["index"] for s in result["skipped"]] == [1, 3]
    assert "age" in result["skipped"][0]["error"]
    assert "str" in result["skipped"][0]["error"]
    assert "email" in result["skipped"][1]["error"]
    assert [(r["name"], r["age"]) for r in records(users)] == [("a", 1), ("c", 3), ("e", 5)]


def test_on_error_skip_reports_input_indexes_across_the_chunks_of_a_generator(users):
    bad = {4, 15, 24}

    def generate():
        for i in range(25):
            yield {"name": f"n{i}", "email": f"e{i}", "age": "bad" if i in bad else i}

    spy = ProgressSpy()
    result = bulk(
        users, "UserBulkCreateNode", {"data": generate(), "batch_size": 10, "on_error": "skip"}, hooks=[spy]
    )
    assert result["inserted"] == 22
    assert [s["index"] for s in result["skipped"]] == [4, 15, 24]
    assert [e["done"] for e in spy.events] == [10, 20, 25]
    assert sorted(r["age"] for r in records(users)) == sorted(set(range(25)) - bad)


def test_without_on_error_skip_the_result_has_no_skipped_list(users):
    assert bulk(users, "UserBulkCreateNode", {"data": user_rows(3)}) == {"inserted": 3}


def test_on_error_skip_skips_just_the_row_the_database_refuses_on_sqlite_and_postgres(savepoint_db):
    db = savepoint_db
    bulk(db, "UserBulkCreateNode", {"data": [{"name": "old", "email": "taken"}]})
    data = [
        {"name": "a", "email": "a"},
        {"name": "b", "email": "b"},
        {"name": "dup-existing", "email": "taken"},
        {"name": "c", "email": "c"},
        {"name": "dup-input", "email": "a"},
    ]
    result = bulk(db, "UserBulkCreateNode", {"data": data, "on_error": "skip"})
    assert result["inserted"] == 3
    assert [s["index"] for s in result["skipped"]] == [2, 4]
    for skipped in result["skipped"]:
        assert "unique" in skipped["error"].lower() or "duplicate" in skipped["error"].lower()
    assert sorted(r["name"] for r in records(db)) == ["a", "b", "c", "old"]


def test_on_error_skip_progress_ends_at_the_number_of_input_rows_when_the_database_refuses_some(
    savepoint_db,
):
    db = savepoint_db
    bulk(db, "UserBulkCreateNode", {"data": [{"name": "old", "email": "taken"}]})
    data = [{"name": f"n{i}", "email": "taken" if i in (3, 8) else f"e{i}"} for i in range(12)]
    spy = ProgressSpy()
    result = bulk(db, "UserBulkCreateNode", {"data": data, "on_error": "skip", "batch_size": 5}, hooks=[spy])
    assert result["inserted"] == 10
    assert [e["done"] for e in spy.events] == [5, 10, 12]


def test_on_error_skip_with_return_ids_puts_none_where_a_row_was_skipped(savepoint_db):
    db = savepoint_db
    bulk(db, "UserBulkCreateNode", {"data": [{"name": "old", "email": "taken"}]})
    data = [
        {"name": "a", "email": "a"},
        {"name": "bad-type", "email": "x", "age": "abc"},
        {"name": "dup", "email": "taken"},
        {"name": "b", "email": "b"},
    ]
    result = bulk(db, "UserBulkCreateNode", {"data": data, "on_error": "skip", "return_ids": True})
    by_name = {r["name"]: r["id"] for r in records(db)}
    assert result["ids"] == [by_name["a"], None, None, by_name["b"]]
    assert result["inserted"] == 2


def test_on_error_skip_reports_the_true_index_of_a_refused_row_after_an_invalid_one(savepoint_db):
    db = savepoint_db
    bulk(db, "UserBulkCreateNode", {"data": [{"name": "old", "email": "taken"}]})
    data = [
        {"name": "bad-type", "email": "x", "age": "abc"},
        {"name": "a", "email": "a"},
        {"name": "dup", "email": "taken"},
        {"name": "b", "email": "b"},
    ]
    result = bulk(db, "UserBulkCreateNode", {"data": data, "on_error": "skip", "batch_size": 10})
    assert [s["index"] for s in result["skipped"]] == [0, 2]
    assert "age" in result["skipped"][0]["error"]


def test_on_error_skip_with_return_ids_keeps_input_positions_across_chunks_on_every_backend(users):
    data = [{"name": f"n{i}", "email": f"e{i}", "age": "bad" if i in (1, 5, 6) else i} for i in range(8)]
    result = bulk(
        users, "UserBulkCreateNode", {"data": data, "on_error": "skip", "return_ids": True, "batch_size": 3}
    )
    by_age = {r["age"]: r["id"] for r in records(users)}
    assert result["ids"] == [None if i in (1, 5, 6) else by_age[i] for i in range(8)]


def test_on_error_skip_on_duckdb_still_skips_invalid_rows_but_raises_on_a_database_refusal_and_writes_nothing():
    """DuckDB has no savepoints, so a row the database refuses cannot be skipped alone.

    Rows that fail the model's own checks are still skipped (they never reach the
    database); a unique-constraint refusal raises and the whole node is rolled back.
    """
    db = DataFlow("duckdb:///:memory:")
    define_user(db)
    bulk(db, "UserBulkCreateNode", {"data": [{"name": "old", "email": "taken"}]})

    data = [
        {"name": "a", "email": "a"},
        {"name": "bad", "email": "b", "age": "abc"},
        {"name": "c", "email": "c"},
    ]
    result = bulk(db, "UserBulkCreateNode", {"data": data, "on_error": "skip"})
    assert result["inserted"] == 2
    assert [s["index"] for s in result["skipped"]] == [1]

    refused = [{"name": "d", "email": "d"}, {"name": "dup", "email": "taken"}, {"name": "e", "email": "e"}]
    with pytest.raises(DataFlowError):
        bulk(db, "UserBulkCreateNode", {"data": refused, "on_error": "skip"})
    assert sorted(r["name"] for r in records(db)) == ["a", "c", "old"]
    db.close()


# -- return_ids ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["list", "generator", "dataframe"])
def test_return_ids_are_in_input_order_and_equal_what_list_returns(users, kind):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(2)})
    names = [f"name-{i:02d}" for i in reversed(range(25))]
    data = [{"name": n, "email": f"{n}@example.com"} for n in names]
    source = {
        "list": lambda: data,
        "generator": lambda: (row for row in data),
        "dataframe": lambda: pd.DataFrame(data),
    }[kind]()

    result = bulk(users, "UserBulkCreateNode", {"data": source, "batch_size": 10, "return_ids": True})

    assert result["inserted"] == 25
    by_name = {r["name"]: r["id"] for r in records(users)}
    assert result["ids"] == [by_name[n] for n in names]
    assert len(set(result["ids"])) == 25
    assert min(result["ids"]) > max(by_name["user0"], by_name["user1"])


def test_return_ids_with_the_default_batch_size_are_in_input_order(users):
    data = user_rows(10_000)
    result = bulk(users, "UserBulkCreateNode", {"data": data, "return_ids": True})
    by_email = {r["email"]: r["id"] for r in records(users)}
    assert result["ids"] == [by_email[row["email"]] for row in data]


def test_return_ids_of_a_str_id_model_are_the_given_ids_in_input_order(db):
    @db.model
    class Tag:
        id: str
        label: str

    data = [{"id": k, "label": k.upper()} for k in ("m", "b", "z", "a")]
    result = bulk(db, "TagBulkCreateNode", {"data": data, "batch_size": 3, "return_ids": True})
    assert result == {"inserted": 4, "ids": ["m", "b", "z", "a"]}
    assert sorted(r["id"] for r in records(db, "Tag")) == ["a", "b", "m", "z"]


# -- BulkUpsert --------------------------------------------------------------------
def test_bulk_upsert_counts_a_key_repeated_across_chunks_once_and_keeps_the_last_row(users):
    bulk(users, "UserBulkCreateNode", {"data": [{**r, "age": i} for i, r in enumerate(user_rows(2))]})
    data = [
        {"name": "a-first", "email": "a", "age": 10},  # new
        {"name": "u1-first", "email": "u1@example.com", "age": 11},  # existing
        {"name": "a-last", "email": "a", "age": 12},  # chunk 2: repeats a key written by chunk 1
        {"name": "b", "email": "b", "age": 13},  # new
        {"name": "u1-last", "email": "u1@example.com", "age": 14},  # chunk 3: repeats an updated key
        {"name": "c", "email": "c", "age": 15},  # new
    ]
    result = bulk(users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"], "batch_size": 2})
    assert result == {"inserted": 3, "updated": 1}
    rows = {r["email"]: (r["name"], r["age"]) for r in records(users)}
    assert rows == {
        "u0@example.com": ("user0", 0),
        "u1@example.com": ("u1-last", 14),
        "a": ("a-last", 12),
        "b": ("b", 13),
        "c": ("c", 15),
    }


def test_a_duckdb_bulk_upsert_loads_each_chunk_by_column_as_shaped_and_counts_exactly(monkeypatch):
    db = DataFlow("duckdb:///:memory:")
    define_user(db)
    bulk(db, "UserBulkCreateNode", {"data": user_rows(3)})
    dialect, loaded = db.database.dialect, []
    real_columns, real_rows = dialect.bulk_upsert_columns, dialect.bulk_upsert

    async def by_column(conn, table, columns, columns_data, *rest):
        loaded.append(dict(zip(columns, columns_data, strict=True)))
        return await real_columns(conn, table, columns, columns_data, *rest)

    async def by_row(*args):
        loaded.append("rows")
        return await real_rows(*args)

    monkeypatch.setattr(dialect, "bulk_upsert_columns", by_column)
    monkeypatch.setattr(dialect, "bulk_upsert", by_row)
    data = [{"name": f"new{i}", "email": f"u{i}@example.com", "age": i} for i in range(5)]
    result = bulk(db, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"], "batch_size": 2})
    assert result == {"inserted": 2, "updated": 3}
    assert len(loaded) == 3 and "rows" not in loaded  # three chunks, none made into rows
    assert loaded[0]["email"] == ["u0@example.com", "u1@example.com"]  # the keys: lists the node reads
    assert type(loaded[0]["age"]).__name__ == "Int64Array"  # the others: Arrow arrays, built as checked
    assert type(loaded[0]["created_at"]).__name__ == "Same"  # one parameter, not a column of copies
    assert sorted((r["email"], r["name"]) for r in records(db)) == [
        (f"u{i}@example.com", f"new{i}") for i in range(5)
    ]
    db.close()


@pytest.mark.parametrize("batch_size", [None, 7])
def test_bulk_upsert_counts_are_exact_over_many_chunks_of_a_generator(users, batch_size):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(100)})

    def generate():  # 100 existing keys interleaved with 150 new ones
        for i in range(250):
            yield {"name": f"v{i}", "email": f"u{i}@example.com", "age": i}

    params = {"data": generate(), "conflict_on": ["email"], "batch_size": batch_size}
    assert bulk(users, "UserBulkUpsertNode", params) == {"inserted": 150, "updated": 100}
    assert count(users) == 250
    assert count(users, where={"name": {"$like": "v%"}}) == 250


def test_bulk_upsert_on_id_counts_exactly_across_chunks(users):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(10)})
    ids = {r["email"]: r["id"] for r in records(users)}
    data = [
        {"id": ids[f"u{i}@example.com"], "name": f"up{i}", "email": f"u{i}@example.com"} for i in (9, 0, 5)
    ] + [{"id": 1000 + i, "name": f"new{i}", "email": f"new{i}"} for i in range(4)]
    result = bulk(users, "UserBulkUpsertNode", {"data": data, "batch_size": 2})
    assert result == {"inserted": 4, "updated": 3}
    assert count(users) == 14
    assert count(users, where={"name": {"$like": "up%"}}) == 3


def test_bulk_upsert_update_fields_keeps_unlisted_fields_refreshes_updated_at_and_keeps_created_at(users):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(2, age=5)})
    before = {r["email"]: r for r in records(users)}
    time.sleep(0.01)
    data = [{"name": "renamed", "email": "u0@example.com", "age": 50, "nickname": "nick", "active": False}]
    result = bulk(
        users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"], "update_fields": ["age"]}
    )
    assert result == {"inserted": 0, "updated": 1}
    after = {r["email"]: r for r in records(users)}
    row, old = after["u0@example.com"], before["u0@example.com"]
    assert row["age"] == 50
    assert (row["name"], row["nickname"], row["active"]) == ("user0", None, True)
    assert row["created_at"] == old["created_at"]
    assert row["updated_at"] > old["updated_at"]
    assert after["u1@example.com"] == before["u1@example.com"]


def test_bulk_upsert_over_many_chunks_overwrites_its_own_rows_whole_and_others_only_in_update_fields(users):
    """Keys of earlier chunks are looked up in a temporary table (flat memory): the same answers."""
    bulk(users, "UserBulkCreateNode", {"data": user_rows(2, age=5)})
    data = [
        {"name": "a-first", "email": "a", "age": 1},  # chunk 1: new
        {"name": "renamed", "email": "u0@example.com", "age": 2},  # chunk 1: existing
        {"name": "b", "email": "b", "age": 3},  # chunk 2: new
        {"name": "c", "email": "c", "age": 4},  # chunk 2: new
        {"name": "a-last", "email": "a", "age": 6},  # chunk 3: this node's own row again
        {"name": "renamed-again", "email": "u0@example.com", "age": 7},  # chunk 3: existing again
        {"name": "b-last", "email": "b", "age": 8},  # chunk 4: own row, written by chunk 2
    ]
    params = {"data": iter(data), "conflict_on": ["email"], "update_fields": ["age"], "batch_size": 2}
    assert bulk(users, "UserBulkUpsertNode", params) == {"inserted": 3, "updated": 1}
    rows = {r["email"]: (r["name"], r["age"]) for r in records(users)}
    assert rows == {
        "u0@example.com": ("user0", 7),
        "u1@example.com": ("user1", 5),
        "a": ("a-last", 6),
        "b": ("b-last", 8),
        "c": ("c", 4),
    }
    assert bulk(users, "UserBulkUpsertNode", {**params, "data": iter(data)}) == {"inserted": 0, "updated": 4}


def test_bulk_upsert_rows_without_id_on_conflict_id_are_inserted_and_existing_rows_are_untouched(users):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(2)})
    before = records(users)
    data = [{"name": f"fresh{i}", "email": f"fresh{i}"} for i in range(3)]
    assert bulk(users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["id"]}) == {
        "inserted": 3,
        "updated": 0,
    }
    after = records(users)
    assert after[:2] == before
    new_ids = [r["id"] for r in after[2:]]
    assert len(set(new_ids)) == 3
    assert min(new_ids) > max(r["id"] for r in before)


def test_bulk_upsert_counts_a_new_row_whose_id_is_below_the_largest_id_as_inserted(users):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(3)})
    ids = [r["id"] for r in records(users)]
    bulk(users, "UserDeleteNode", {"id": ids[1]})
    data = [{"id": ids[1], "name": "back", "email": "back"}, {"id": ids[2], "name": "kept", "email": "kept"}]
    assert bulk(users, "UserBulkUpsertNode", {"data": data}) == {"inserted": 1, "updated": 1}
    assert {r["id"]: r["name"] for r in records(users)} == {ids[0]: "user0", ids[1]: "back", ids[2]: "kept"}


def test_bulk_upsert_never_silently_duplicates_a_row_whose_id_appears_only_after_row_zero(users):
    """Row 0 has no id (so it is new); row 1 names an existing id: it must update, or be refused."""
    bulk(users, "UserBulkCreateNode", {"data": user_rows(1)})
    [existing] = records(users)
    data = [
        {"name": "new", "email": "new"},
        {"id": existing["id"], "name": "changed", "email": "changed"},
    ]
    try:
        result = bulk(users, "UserBulkUpsertNode", {"data": data})
    except ValidationError:
        assert records(users) == [existing]
        return
    assert result == {"inserted": 1, "updated": 1}
    rows = {r["id"]: r["name"] for r in records(users)}
    assert rows[existing["id"]] == "changed"
    assert len(rows) == 2


def test_bulk_upsert_on_a_composite_unique_constraint_in_any_order(db):
    @db.model
    class Score:
        player: str
        game: str
        points: int = 0

        __dataflow__ = {"unique": [["player", "game"]]}

    bulk(db, "ScoreBulkCreateNode", {"data": [{"player": "ann", "game": "go", "points": 1}]})
    data = [
        {"player": "ann", "game": "go", "points": 10},
        {"player": "ann", "game": "chess", "points": 20},
        {"player": "bob", "game": "go", "points": 30},
    ]
    result = bulk(db, "ScoreBulkUpsertNode", {"data": data, "conflict_on": ["game", "player"]})
    assert result == {"inserted": 2, "updated": 1}
    points = {(r["player"], r["game"]): r["points"] for r in records(db, "Score")}
    assert points == {("ann", "go"): 10, ("ann", "chess"): 20, ("bob", "go"): 30}

    with pytest.raises(ValidationError, match="unique"):
        bulk(db, "ScoreBulkUpsertNode", {"data": data, "conflict_on": ["player"]})
    assert count(db, "Score") == 3


def test_bulk_upsert_of_one_chunk_keeps_the_last_row_of_a_composite_key_given_twice(db):
    @db.model
    class Score:
        player: str
        game: str | None = None
        points: int = 0

        __dataflow__ = {"unique": [["player", "game"]]}

    data = [{"player": "ann", "game": "go", "points": 1}, {"player": "ann", "game": None, "points": 2},
            {"player": "ann", "game": None, "points": 3}, {"player": "ann", "game": "go", "points": 4},
            {"player": "bob", "game": "go", "points": 5}]  # fmt: skip
    result = bulk(db, "ScoreBulkUpsertNode", {"data": data, "conflict_on": ["player", "game"]})
    assert result == {"inserted": 4, "updated": 0}  # ann/go twice: the last row; a NULL key is its own
    got = sorted((r["player"], r["game"] or "", r["points"]) for r in records(db, "Score"))
    assert got == [("ann", "", 2), ("ann", "", 3), ("ann", "go", 4), ("bob", "go", 5)]


def test_a_duckdb_bulk_upsert_of_one_chunk_leaves_its_keys_to_duckdb_unless_one_repeats(monkeypatch):
    db = DataFlow("duckdb:///:memory:")
    define_user(db)
    bulk(db, "UserBulkCreateNode", {"data": user_rows(3)})
    dialect, answers = db.database.dialect, []
    real = dialect.bulk_upsert_distinct

    async def distinct(*args):
        answers.append(await real(*args))
        return answers[-1]

    monkeypatch.setattr(dialect, "bulk_upsert_distinct", distinct)
    data = [{"name": f"new{i}", "email": f"u{i}@example.com", "age": i} for i in range(5)]
    assert bulk(db, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"]}) == {
        "inserted": 2, "updated": 3
    }  # fmt: skip
    twice = [*data, {"name": "last", "email": "u0@example.com", "age": 9}]
    assert bulk(db, "UserBulkUpsertNode", {"data": twice, "conflict_on": ["email"]}) == {
        "inserted": 0, "updated": 5
    }  # fmt: skip
    assert answers == [(2, 3), None]  # the repeat found by DuckDB, nothing written: the node kept the last
    assert {r["email"]: r["name"] for r in records(db)}["u0@example.com"] == "last"
    db.close()


def test_bulk_upsert_conflict_on_an_unknown_field_suggests_the_right_one(users):
    with pytest.raises(ValidationError, match="Did you mean 'email'"):
        bulk(users, "UserBulkUpsertNode", {"data": user_rows(1), "conflict_on": ["emial"]})
    assert count(users) == 0


def test_bulk_upsert_with_on_error_skip_reports_the_input_index_of_a_refused_row_and_counts_exactly(
    savepoint_db,
):
    db = savepoint_db
    bulk(db, "UserBulkCreateNode", {"data": user_rows(2)})
    ids = {r["email"]: r["id"] for r in records(db)}
    data = [
        {"id": ids["u0@example.com"], "name": "zero-a", "email": "u0@example.com"},
        {"id": ids["u0@example.com"], "name": "zero-b", "email": "u0@example.com"},  # same key: last wins
        {"id": 700, "name": "seven", "email": "u1@example.com"},  # new id, but the email is taken
        {"id": 800, "name": "eight", "email": "eight@example.com"},
    ]
    result = bulk(db, "UserBulkUpsertNode", {"data": data, "on_error": "skip"})
    assert [s["index"] for s in result["skipped"]] == [2]
    assert (result["inserted"], result["updated"]) == (1, 1)
    names = {r["id"]: r["name"] for r in records(db)}
    assert names == {ids["u0@example.com"]: "zero-b", ids["u1@example.com"]: "user1", 800: "eight"}


def test_bulk_upsert_progress_counts_every_input_row_even_when_keys_repeat(users):
    data = [{"name": f"n{i}", "email": f"e{i % 3}"} for i in range(10)]
    spy = ProgressSpy()
    result = bulk(
        users, "UserBulkUpsertNode", {"data": data, "conflict_on": ["email"], "batch_size": 5}, hooks=[spy]
    )
    assert result == {"inserted": 3, "updated": 0}
    assert [e["done"] for e in spy.events] == [5, 10]
    assert {e["total"] for e in spy.events} == {10}


@pytest.mark.parametrize("backend_name", ["sqlite", "sqlite_file", "duckdb", "duckdb_file", "postgres"])
def test_after_a_bulk_upsert_with_explicit_integer_ids_later_creates_get_fresh_ids(backend_name, tmp_path):
    db = DataFlow(url_for(backend_name, tmp_path))
    define_user(db)
    data = [{"id": i, "name": f"n{i}", "email": f"e{i}"} for i in range(1, 51)]
    assert bulk(db, "UserBulkUpsertNode", {"data": data, "batch_size": 8}) == {"inserted": 50, "updated": 0}

    created = bulk(db, "UserCreateNode", {"name": "next", "email": "next"})
    assert created["id"] > 50
    more = bulk(db, "UserBulkCreateNode", {"data": user_rows(3), "return_ids": True})
    assert min(more["ids"]) > created["id"]
    assert count(db) == 54
    db.close()


# -- BulkUpdate and BulkDelete by filter ---------------------------------------------
def sql_statements(caplog):
    return [r.getMessage().lstrip() for r in caplog.records if r.name == "dataflow_lab.sql"]


def test_bulk_update_by_filter_runs_one_statement_and_counts_exactly(url, caplog):
    db = DataFlow(url, echo=True)
    define_user(db)
    bulk(db, "UserBulkCreateNode", {"data": [{**r, "age": i} for i, r in enumerate(user_rows(1200))]})

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dataflow_lab.sql"):
        result = bulk(db, "UserBulkUpdateNode", {"filter": {"age": {"$lt": 700}}, "fields": {"age": 5000}})
    assert result == {"updated": 700}
    writes = [s for s in sql_statements(caplog) if s.upper().startswith(("UPDATE", "INSERT", "DELETE"))]
    assert len(writes) == 1
    assert writes[0].upper().startswith("UPDATE")
    assert count(db, where={"age": 5000}) == 700
    assert count(db, where={"age": {"$lt": 5000}}) == 500


def test_bulk_delete_by_filter_runs_one_statement_and_counts_exactly(url, caplog):
    db = DataFlow(url, echo=True)
    define_user(db)
    bulk(db, "UserBulkCreateNode", {"data": [{**r, "age": i % 4} for i, r in enumerate(user_rows(1200))]})

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dataflow_lab.sql"):
        result = bulk(db, "UserBulkDeleteNode", {"filter": {"age": {"$in": [1, 3]}}})
    assert result == {"deleted": 600}
    writes = [s for s in sql_statements(caplog) if s.upper().startswith(("UPDATE", "INSERT", "DELETE"))]
    assert len(writes) == 1
    assert writes[0].upper().startswith("DELETE")
    assert count(db) == 600
    assert count(db, where={"age": {"$in": [1, 3]}}) == 0


# -- db.import_csv ------------------------------------------------------------------
ITEMS_CSV = """\
price,sku,in_stock,qty,added,note,rating,recalled
1.5,A1,true,3,2024-01-31,hello,4.5,no
2,B2,False,0,2024-02-29,,,
0.25,C3,yes,-7,2023-12-01,"with, comma",,1
10,D4,no,12,2024-03-01,x,0,0
1e3,E5,1,1,2024-03-02,y,,YES
5,F6,0,2,2024-03-03,z,,false
"""


def write_csv(tmp_path, text, name="items.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_csv_maps_the_header_to_fields_and_parses_every_type(items, tmp_path):
    path = write_csv(tmp_path, ITEMS_CSV)
    assert items.import_csv("Item", path) == {"inserted": 6}
    rows = sorted(records(items, "Item"), key=lambda r: r["sku"])
    assert [r["sku"] for r in rows] == ["A1", "B2", "C3", "D4", "E5", "F6"]
    assert [r["qty"] for r in rows] == [3, 0, -7, 12, 1, 2]
    assert all(type(r["qty"]) is int for r in rows)
    assert [r["price"] for r in rows] == [1.5, 2.0, 0.25, 10.0, 1000.0, 5.0]
    assert all(type(r["price"]) is float for r in rows)
    assert [r["in_stock"] for r in rows] == [True, False, True, False, True, False]
    assert [r["recalled"] for r in rows] == [False, None, True, False, True, False]
    assert [r["added"] for r in rows] == [
        dt.date(2024, 1, 31),
        dt.date(2024, 2, 29),
        dt.date(2023, 12, 1),
        dt.date(2024, 3, 1),
        dt.date(2024, 3, 2),
        dt.date(2024, 3, 3),
    ]
    assert [r["note"] for r in rows] == ["hello", None, "with, comma", "x", "y", "z"]
    assert [r["rating"] for r in rows] == [4.5, None, None, 0.0, None, None]


def test_import_csv_accepts_the_model_class_and_a_subset_of_columns(db, tmp_path):
    Item = define_item(db)
    path = write_csv(tmp_path, "sku,qty,price,in_stock,added\nA,1,1.0,t,2024-01-01\n")
    assert db.import_csv(Item, path) == {"inserted": 1}
    [row] = records(db, "Item")
    assert (row["note"], row["rating"], row["recalled"]) == (None, None, None)


def test_import_csv_with_an_unknown_header_column_is_refused_with_did_you_mean(items, tmp_path):
    path = write_csv(tmp_path, "sku,qty,prise,in_stock,added\nA,1,1.0,true,2024-01-01\n")
    with pytest.raises(ValidationError) as info:
        items.import_csv("Item", path)
    assert "prise" in str(info.value)
    assert "Did you mean 'price'" in str(info.value)
    assert count(items, "Item") == 0


def test_import_csv_with_one_bad_value_imports_nothing_and_names_the_row_and_field(items, tmp_path):
    lines = ["sku,qty,price,in_stock,added"]
    lines += [f"S{i},{i},1.0,true,2024-01-01" for i in range(2500)]
    lines.append("BAD,three,1.0,true,2024-01-01")
    path = write_csv(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ValidationError) as info:
        items.import_csv("Item", path, batch_size=1000)
    message = str(info.value)
    assert "row 2500" in message
    assert "'qty'" in message
    assert "three" in message
    assert count(items, "Item") == 0


@pytest.mark.parametrize(
    "bad_line, field",
    [
        ("A,1,1.0,maybe,2024-01-01", "in_stock"),
        ("A,,1.0,true,2024-01-01", "qty"),
        ("A,1,cheap,true,2024-01-01", "price"),
        ("A,1,1.0,true,31/01/2024", "added"),
    ],
)
def test_import_csv_refuses_a_value_its_field_cannot_hold(items, tmp_path, bad_line, field):
    path = write_csv(tmp_path, f"sku,qty,price,in_stock,added\nOK,1,1.0,true,2024-01-01\n{bad_line}\n")
    with pytest.raises(ValidationError) as info:
        items.import_csv("Item", path)
    assert f"'{field}'" in str(info.value)
    assert count(items, "Item") == 0


def test_import_csv_on_error_skip_imports_the_good_rows_and_reports_the_bad_ones(items, tmp_path):
    path = write_csv(
        tmp_path,
        "sku,qty,price,in_stock,added\n"
        "A,1,1.0,true,2024-01-01\n"
        "B,two,1.0,true,2024-01-01\n"
        "C,3,1.0,false,2024-01-01\n"
        "D,4,1.0,maybe,2024-01-01\n"
        "E,5,1.0,no,2024-01-01\n",
    )
    result = items.import_csv("Item", path, on_error="skip")
    assert result["inserted"] == 3
    assert [s["index"] for s in result["skipped"]] == [1, 3]
    assert sorted(r["sku"] for r in records(items, "Item")) == ["A", "C", "E"]


def test_import_csv_streams_a_50k_row_file_in_chunks(items, tmp_path):
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("sku,qty,price,in_stock,added,note\n")
        for i in range(50_000):
            handle.write(
                f"S{i},{i},{i / 4},{'yes' if i % 2 else 'no'},2024-01-{i % 28 + 1:02d},{'' if i % 3 else 'n'}\n"
            )
    spy = ProgressSpy()
    result = items.import_csv("Item", path, batch_size=10_000, runtime=LocalRuntime(hooks=[spy]))
    assert result == {"inserted": 50_000}
    assert [e["done"] for e in spy.events] == list(range(10_000, 50_001, 10_000))
    assert {e["total"] for e in spy.events} == {None}  # a stream: the total is not known up front
    assert count(items, "Item") == 50_000
    [last] = records(items, "Item", filter={"sku": "S49999"})
    assert (last["qty"], last["price"], last["in_stock"]) == (49_999, 49_999 / 4, True)
    assert (last["added"], last["note"]) == (dt.date(2024, 1, 49_999 % 28 + 1), None)
    assert count(items, "Item", where={"note": None}) == 50_000 - len(range(0, 50_000, 3))


# -- progress bar -------------------------------------------------------------------
class TqdmSpy:
    calls: list[dict] = []

    def __init__(self, *args, **kwargs):
        TqdmSpy.calls.append(kwargs)

    def update(self, n=1):
        pass

    def close(self):
        pass


@pytest.fixture
def tqdm_spy(monkeypatch):
    import tqdm.auto

    TqdmSpy.calls = []
    monkeypatch.setattr(tqdm.auto, "tqdm", TqdmSpy)
    return TqdmSpy


def test_progress_false_never_creates_a_progress_bar(users, tqdm_spy, capsys):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(50), "progress": False})
    bulk(users, "UserBulkUpsertNode", {"data": user_rows(5), "conflict_on": ["email"], "progress": False})
    assert tqdm_spy.calls == []
    assert capsys.readouterr().err == ""


def test_progress_false_on_import_csv_never_creates_a_progress_bar(items, tmp_path, tqdm_spy, capsys):
    items.import_csv("Item", write_csv(tmp_path, ITEMS_CSV), progress=False)
    assert tqdm_spy.calls == []
    assert capsys.readouterr().err == ""


def test_progress_true_writes_a_tqdm_bar_to_stderr(users, capsys):
    capsys.readouterr()
    bulk(users, "UserBulkCreateNode", {"data": user_rows(50), "progress": True})
    err = capsys.readouterr().err
    assert "bulk (UserBulkCreateNode)" in err
    assert "rows" in err


def test_progress_true_tells_tqdm_the_total_when_the_input_has_a_length(users, tqdm_spy):
    bulk(users, "UserBulkCreateNode", {"data": user_rows(50), "progress": True})
    bulk(users, "UserBulkCreateNode", {"data": iter(user_rows(5, start=50)), "progress": True})
    assert [c["total"] for c in tqdm_spy.calls] == [50, None]


def test_by_default_a_quick_bulk_operation_shows_no_progress_bar(users, capsys):
    capsys.readouterr()
    bulk(users, "UserBulkCreateNode", {"data": user_rows(50)})
    assert "UserBulkCreateNode" not in capsys.readouterr().err


@pytest.mark.parametrize("node", ["BulkCreate", "BulkUpsert"])
@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("x", float("nan")),
        ("d", Decimal("NaN")),
        ("d", Decimal("Infinity")),
        ("d", Decimal("-Infinity")),
        ("d", Decimal("sNaN")),
    ],
)
def test_the_bulk_fast_path_refuses_the_nan_and_infinity_create_refuses(db, node, field, bad):
    """Issue 13, item 13: BulkCreate/BulkUpsert (executemany, COPY, Arrow) validate like Create."""

    @db.model
    class Nan:
        x: float = 0.0
        d: Decimal = Decimal("0")

    good = [{"x": 1.5, "d": Decimal("1.5")} for _ in range(5)]
    with pytest.raises(ValidationError, match=f"row 3.*'{field}'|'{field}'.*row 3"):
        bulk(db, f"Nan{node}Node", {"data": [*good[:3], {**good[0], field: bad}, *good[3:]]})
    with pytest.raises(ValidationError):
        bulk(db, "NanCreateNode", {field: bad})
    assert count(db, "Nan") == 0


# -- missing values in non-Optional fields with a default (issue 12, item 4) -----------------
def define_task(db):
    @db.model
    class Task:
        title: str
        priority: int = 3
        weight: float = 1.0
        done: bool = False
        due: dt.datetime = dt.datetime(2030, 1, 1, tzinfo=UTC)
        label: str = "none"
        note: Optional[str] = "n/a"  # noqa: UP045 - Optional: a missing cell is NULL, not the default

        __dataflow__ = {"unique": [["title"]]}

    return Task


TASK_DEFAULTS = {"priority": 3, "weight": 1.0, "done": False, "due": dt.datetime(2030, 1, 1, tzinfo=UTC)}


def task_frame():
    return pd.DataFrame(
        {
            "title": ["a", "b", "c"],
            "priority": [1, np.nan, 2],  # float64 with NaN
            "weight": [np.nan, 2.5, np.nan],
            "done": pd.array([True, None, pd.NA], dtype="object"),
            "due": pd.to_datetime(["2024-01-01", None, "2024-03-01"], utc=True),  # NaT
            "label": ["x", None, np.nan],
            "note": ["keep", None, np.nan],
        }
    )


def test_a_dataframe_missing_cell_in_a_field_with_a_default_takes_the_default(db):
    define_task(db)
    assert bulk(db, "TaskBulkCreateNode", {"data": task_frame()}) == {"inserted": 3}
    rows = records(db, "Task", order_by="title")
    assert [r["priority"] for r in rows] == [1, 3, 2]
    assert [r["weight"] for r in rows] == [1.0, 2.5, 1.0]
    assert [r["done"] for r in rows] == [True, False, False]
    assert [r["due"] for r in rows] == [dt.datetime(2024, 1, 1, tzinfo=UTC), TASK_DEFAULTS["due"],
                                        dt.datetime(2024, 3, 1, tzinfo=UTC)]  # fmt: skip
    assert [r["label"] for r in rows] == ["x", "none", "none"]
    assert [r["note"] for r in rows] == ["keep", None, None]  # Optional: missing is NULL


def test_a_dataframe_missing_cell_takes_the_default_on_the_slow_path_too(db):
    define_task(db)
    frame = pd.DataFrame({"title": ["a", "b", "c"], "priority": pd.array([1, None, "5"], dtype="object")})
    assert bulk(db, "TaskBulkCreateNode", {"data": frame}) == {"inserted": 3}  # '5' is coerced, row by row
    assert [r["priority"] for r in records(db, "Task", order_by="title")] == [1, 3, 5]


def test_bulk_upsert_of_a_dataframe_writes_the_default_for_a_missing_cell(db):
    define_task(db)
    bulk(db, "TaskBulkCreateNode", {"data": [{"title": "a", "priority": 9}, {"title": "b", "priority": 9}]})
    frame = pd.DataFrame({"title": ["a", "b", "c"], "priority": [1, np.nan, np.nan]})
    result = bulk(db, "TaskBulkUpsertNode", {"data": frame, "conflict_on": ["title"]})
    assert result == {"inserted": 1, "updated": 2}
    assert [r["priority"] for r in records(db, "Task", order_by="title")] == [1, 3, 3]


@pytest.mark.parametrize("node", ["BulkCreate", "BulkUpsert"])
def test_a_dataframe_missing_cell_in_a_field_without_a_default_is_an_error_naming_field_and_row(db, node):
    @db.model
    class Probe:
        name: str
        value: float

    frame = pd.DataFrame({"name": ["a", "b", "c"], "value": [1.0, 2.0, np.nan]})
    params = {"data": frame, **({"conflict_on": ["id"]} if node == "BulkUpsert" else {})}
    with pytest.raises(ValidationError, match=r"row 2: .*'value' may not be None"):
        bulk(db, f"Probe{node}Node", params)
    frame = pd.DataFrame({"name": ["a", None], "value": [1.0, 2.0]})
    with pytest.raises(ValidationError, match=r"row 1: .*'name' may not be None"):
        bulk(db, f"Probe{node}Node", {**params, "data": frame})
    assert count(db, "Probe") == 0


def test_an_explicit_nan_in_a_python_row_is_still_refused_like_create(db):
    define_task(db)  # a DataFrame cell's NaN means missing; a Python float('nan') is a value Create refuses
    with pytest.raises(ValidationError, match="row 1.*'weight'.*NaN"):
        bulk(db, "TaskBulkCreateNode", {"data": [{"title": "a"}, {"title": "b", "weight": float("nan")}]})
    with pytest.raises(ValidationError, match="'weight'.*NaN"):
        bulk(db, "TaskCreateNode", {"title": "c", "weight": float("nan")})
    assert count(db, "Task") == 0


def test_import_csv_empty_cell_in_a_field_with_a_default_takes_the_default(db, tmp_path):
    define_task(db)
    path = write_csv(
        tmp_path, "title,priority,weight,done,due,label,note\na,,,,,,\nb,7,2.5,true,2024-01-01,x,y\n"
    )
    assert db.import_csv("Task", path) == {"inserted": 2}
    a, b = records(db, "Task", order_by="title")
    assert {k: a[k] for k in TASK_DEFAULTS} == TASK_DEFAULTS
    assert (a["label"], a["note"]) == ("none", None)
    assert (b["priority"], b["weight"], b["done"], b["label"], b["note"]) == (7, 2.5, True, "x", "y")


def test_import_csv_empty_cell_in_a_field_without_a_default_is_an_error_naming_row_and_field(items, tmp_path):
    path = write_csv(
        tmp_path, "sku,qty,price,in_stock,added\nA,1,1.0,true,2024-01-01\nB,2,,true,2024-01-01\n"
    )
    with pytest.raises(ValidationError, match=r"row 1: .*'price'"):
        items.import_csv("Item", path)
    assert count(items, "Item") == 0


@pytest.mark.parametrize("batch_size", [None, 1, 2])
def test_bulk_upsert_inserts_every_row_whose_key_is_null_and_counts_exactly(db, batch_size):
    """NULL equals nothing in SQL: each such row is its own key, never folded into another."""

    @db.model
    class Tag:
        label: str | None = None
        uses: int = 0
        __dataflow__ = {"unique": ["label"]}

    data = [{"label": "a", "uses": 1}, {"label": None, "uses": 2}, {"label": None, "uses": 3},
            {"label": "b", "uses": 4}, {"label": None, "uses": 5}, {"label": "a", "uses": 6}]  # fmt: skip
    params = {"data": data, "conflict_on": ["label"], **({"batch_size": batch_size} if batch_size else {})}
    first = bulk(db, "TagBulkUpsertNode", params)
    assert (first["inserted"], first["updated"]) == (5, 0)  # 'a' twice: the last row wins
    again = bulk(db, "TagBulkUpsertNode", params)
    assert (again["inserted"], again["updated"]) == (3, 2)
    assert sorted(r["uses"] for r in Tag.list()) == [2, 2, 3, 3, 4, 5, 5, 6]
