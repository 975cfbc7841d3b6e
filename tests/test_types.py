"""Every supported field type round-trips on every backend; wrong types are refused early."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Optional

import pytest

from dataflow_lab import LocalRuntime, ValidationError, WorkflowBuilder


class Status(enum.Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


UTC = dt.UTC
TOKYO = dt.timezone(dt.timedelta(hours=9), "Tokyo")


def run_one(db, node_type, params):
    workflow = WorkflowBuilder(db)
    workflow.add_node(node_type, "node", params)
    results, _ = LocalRuntime().execute(workflow.build())
    return results["node"]


def define_sample(db):
    @db.model
    class Sample:
        label: str
        quantity: int
        ratio: float
        flag: bool
        moment: dt.datetime
        day: dt.date
        price: Decimal
        payload: bytes
        uid: uuid.UUID
        status: Status
        level: Level
        meta: dict
        tags: list

    return Sample


FULL_ROW = {
    "label": "hello",
    "quantity": 42,
    "ratio": 3.141592653589793,
    "flag": True,
    "moment": dt.datetime(2024, 2, 29, 13, 45, 30, 123456, tzinfo=UTC),
    "day": dt.date(2024, 2, 29),
    "price": Decimal("12345.6789"),
    "payload": b"\x00\x01binary\xff",
    "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "status": Status.INACTIVE,
    "level": Level.HIGH,
    "meta": {"a": [1, 2, {"b": None}], "c": "ü", "d": True, "e": 1.5},
    "tags": [1, "two", None, {"x": 3}],
}


@pytest.fixture
def samples(db):
    define_sample(db)
    return db


def assert_same_row(row, expected):
    """Values equal and of exactly the expected Python type."""
    for name, value in expected.items():
        got = row[name]
        assert got == value, f"{name}: {got!r} != {value!r}"
        if isinstance(value, enum.Enum):
            assert got is value, name
        elif isinstance(value, dt.datetime):
            assert isinstance(got, dt.datetime), name
            assert got.utcoffset() == dt.timedelta(0), f"{name} is not UTC: {got!r}"
        elif isinstance(value, bool):
            assert got is value, name
        else:
            assert type(got) is type(value), f"{name}: {type(got).__name__} is not {type(value).__name__}"


# -- round trips of every type -------------------------------------------------------
def test_every_type_round_trips_through_create(samples):
    created = run_one(samples, "SampleCreateNode", FULL_ROW)
    assert_same_row(created, FULL_ROW)


def test_every_type_round_trips_through_read_and_list(samples):
    created = run_one(samples, "SampleCreateNode", FULL_ROW)
    read = run_one(samples, "SampleReadNode", {"id": created["id"]})
    assert_same_row(read, FULL_ROW)
    [listed] = run_one(samples, "SampleListNode", {})["records"]
    assert_same_row(listed, FULL_ROW)
    assert read == listed == created


def test_every_type_round_trips_through_bulk_create(samples):
    other = {**FULL_ROW, "label": "second", "flag": False, "status": Status.ACTIVE, "level": Level.LOW}
    assert run_one(samples, "SampleBulkCreateNode", {"data": [FULL_ROW, other]}) == {"inserted": 2}
    first, second = run_one(samples, "SampleListNode", {})["records"]
    assert_same_row(first, FULL_ROW)
    assert_same_row(second, other)


def test_every_type_round_trips_through_update(samples):
    created = run_one(samples, "SampleCreateNode", {**FULL_ROW, "flag": False, "quantity": 0})
    changes = {
        "quantity": -7,
        "ratio": -0.5,
        "flag": True,
        "moment": dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "day": dt.date(1999, 12, 31),
        "price": Decimal("-0.01"),
        "payload": b"",
        "uid": uuid.UUID("87654321-4321-8765-4321-876543218765"),
        "status": Status.ACTIVE,
        "level": Level.LOW,
        "meta": {},
        "tags": [],
    }
    updated = run_one(samples, "SampleUpdateNode", {"id": created["id"], "fields": changes})
    assert_same_row(updated, changes)
    assert_same_row(run_one(samples, "SampleReadNode", {"id": created["id"]}), changes)


def test_every_type_round_trips_through_bulk_upsert(samples):
    created = run_one(samples, "SampleCreateNode", FULL_ROW)
    changed = {**FULL_ROW, "id": created["id"], "price": Decimal("1.5"), "tags": ["z"], "flag": False}
    fresh = {**FULL_ROW, "label": "new", "uid": uuid.UUID(int=7), "day": dt.date(2000, 1, 1)}
    result = run_one(samples, "SampleBulkUpsertNode", {"data": [changed, {**fresh, "id": created["id"] + 1}]})
    assert result == {"inserted": 1, "updated": 1}
    first, second = run_one(samples, "SampleListNode", {})["records"]
    assert_same_row(first, {k: v for k, v in changed.items() if k != "id"})
    assert_same_row(second, fresh)


@pytest.mark.parametrize("value", [0, -1, 1, 2**53 + 1, 2**62, -(2**62)])
def test_int_round_trips_exactly(db, value):
    @db.model
    class Counter:
        value: int

    row = run_one(db, "CounterCreateNode", {"value": value})
    assert row["value"] == value
    assert type(row["value"]) is int
    assert run_one(db, "CounterReadNode", {"id": row["id"]})["value"] == value


@pytest.mark.parametrize("value", [0.0, 0.1, -1e300, 1e-300, 3.141592653589793, 2.0**60])
def test_float_round_trips_exactly(db, value):
    @db.model
    class Measure:
        value: float

    row = run_one(db, "MeasureCreateNode", {"value": value})
    assert run_one(db, "MeasureReadNode", {"id": row["id"]})["value"] == value
    assert type(row["value"]) is float


def test_bool_comes_back_as_bool(db):
    @db.model
    class Switch:
        enabled: bool

    run_one(db, "SwitchBulkCreateNode", {"data": [{"enabled": True}, {"enabled": False}]})
    first, second = run_one(db, "SwitchListNode", {})["records"]
    assert first["enabled"] is True
    assert second["enabled"] is False
    assert run_one(db, "SwitchReadNode", {"id": 1})["enabled"] is True
    assert run_one(db, "SwitchCreateNode", {"enabled": False})["enabled"] is False


def test_an_aware_datetime_in_another_zone_comes_back_as_the_same_instant_in_utc(db):
    @db.model
    class Event:
        at_time: dt.datetime

    local = dt.datetime(2024, 7, 1, 9, 30, 15, 250000, tzinfo=TOKYO)
    row = run_one(db, "EventCreateNode", {"at_time": local})
    stored = run_one(db, "EventReadNode", {"id": row["id"]})["at_time"]
    assert stored == local
    assert stored.utcoffset() == dt.timedelta(0)
    assert (stored.hour, stored.minute, stored.microsecond) == (0, 30, 250000)


def test_a_naive_datetime_is_taken_as_utc(db):
    @db.model
    class Event:
        at_time: dt.datetime

    row = run_one(db, "EventCreateNode", {"at_time": dt.datetime(2024, 1, 2, 3, 4, 5)})
    stored = run_one(db, "EventReadNode", {"id": row["id"]})["at_time"]
    assert stored == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert stored.utcoffset() == dt.timedelta(0)


def test_timestamps_are_aware_utc_on_read(samples):
    created = run_one(samples, "SampleCreateNode", FULL_ROW)
    read = run_one(samples, "SampleReadNode", {"id": created["id"]})
    for name in ("created_at", "updated_at"):
        assert isinstance(read[name], dt.datetime)
        assert read[name].utcoffset() == dt.timedelta(0)
        assert read[name] == created[name]


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime.min.replace(tzinfo=UTC),
        dt.datetime.max.replace(tzinfo=UTC),
        dt.datetime(1900, 1, 1, tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=["min", "max", "1900", "before-epoch"],
)
def test_extreme_datetimes_round_trip_as_aware_utc(db, moment):
    @db.model
    class Event:
        at_time: dt.datetime

    row = run_one(db, "EventCreateNode", {"at_time": moment})
    for stored in (row["at_time"], run_one(db, "EventReadNode", {"id": row["id"]})["at_time"]):
        assert stored == moment
        assert stored.utcoffset() == dt.timedelta(0)


def test_a_date_comes_back_as_a_date_not_a_datetime(db):
    @db.model
    class Holiday:
        day: dt.date

    row = run_one(db, "HolidayCreateNode", {"day": dt.date(1970, 1, 1)})
    stored = run_one(db, "HolidayReadNode", {"id": row["id"]})["day"]
    assert stored == dt.date(1970, 1, 1)
    assert type(stored) is dt.date


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "-0.01",
        "12345.6789",
        "99999999999.9999999999",
        "1E+3",
        "0.000000000001",
        "0.123456789012345678",  # 18 decimals: an undeclared Decimal's most (tests/test_decimals.py)
    ],
)
def test_decimal_round_trips_without_losing_precision(db, text):
    @db.model
    class Money:
        amount: Decimal

    row = run_one(db, "MoneyCreateNode", {"amount": Decimal(text)})
    stored = run_one(db, "MoneyReadNode", {"id": row["id"]})["amount"]
    assert type(stored) is Decimal
    assert stored == Decimal(text)


@pytest.mark.parametrize("value", [b"", b"\x00", bytes(range(256)), b"plain text", b"\xff" * 10_000])
def test_bytes_round_trip_exactly(db, value):
    @db.model
    class Blob:
        data: bytes

    row = run_one(db, "BlobCreateNode", {"data": value})
    stored = run_one(db, "BlobReadNode", {"id": row["id"]})["data"]
    assert stored == value
    assert type(stored) is bytes


def test_uuid_round_trips_and_can_be_filtered_on(db):
    @db.model
    class Token:
        uid: uuid.UUID

    values = [uuid.uuid4() for _ in range(3)]
    run_one(db, "TokenBulkCreateNode", {"data": [{"uid": v} for v in values]})
    rows = run_one(db, "TokenListNode", {})["records"]
    assert [r["uid"] for r in rows] == values
    assert all(type(r["uid"]) is uuid.UUID for r in rows)
    found = run_one(db, "TokenListNode", {"filter": {"uid": str(values[1])}})["records"]
    assert [r["id"] for r in found] == [2]


def test_enum_round_trips_as_the_member_and_can_be_filtered_on(db):
    @db.model
    class Ticket:
        status: Status
        level: Level

    run_one(
        db,
        "TicketBulkCreateNode",
        {
            "data": [
                {"status": Status.ACTIVE, "level": Level.LOW},
                {"status": "inactive", "level": 2},
                {"status": "ACTIVE", "level": Level.HIGH},
            ]
        },
    )
    rows = run_one(db, "TicketListNode", {})["records"]
    assert [r["status"] for r in rows] == [Status.ACTIVE, Status.INACTIVE, Status.ACTIVE]
    assert [r["level"] for r in rows] == [Level.LOW, Level.HIGH, Level.HIGH]
    assert rows[1]["status"] is Status.INACTIVE
    assert rows[2]["level"] is Level.HIGH
    found = run_one(db, "TicketListNode", {"filter": {"status": Status.ACTIVE, "level": Level.HIGH}})
    assert [r["id"] for r in found["records"]] == [3]


def test_dict_and_list_round_trip_as_json(db):
    @db.model
    class Doc:
        body: dict
        items: list

    body = {"nested": {"deep": [1, 2.5, "three", None, True]}, "unicode": "日本語", "quote": 'it\'s "x"'}
    items = [{"a": 1}, [2, [3]], "four", False, None]
    row = run_one(db, "DocCreateNode", {"body": body, "items": items})
    stored = run_one(db, "DocReadNode", {"id": row["id"]})
    assert stored["body"] == body
    assert stored["items"] == items
    assert type(stored["body"]) is dict
    assert type(stored["items"]) is list


def test_optional_fields_store_none(db):
    @db.model
    class Maybe:
        note: Optional[str]  # noqa: UP045
        number: Optional[int]  # noqa: UP045
        flag: Optional[bool]  # noqa: UP045
        moment: Optional[dt.datetime]  # noqa: UP045
        day: dt.date | None
        price: Decimal | None
        payload: bytes | None
        uid: uuid.UUID | None
        status: Status | None
        meta: dict | None
        tags: list | None

    names = ["note", "number", "flag", "moment", "day", "price", "payload", "uid", "status", "meta", "tags"]
    explicit = run_one(db, "MaybeCreateNode", dict.fromkeys(names))
    omitted = run_one(db, "MaybeCreateNode", {})
    for row in (explicit, omitted, *run_one(db, "MaybeListNode", {})["records"]):
        assert {name: row[name] for name in names} == dict.fromkeys(names)


def test_optional_fields_also_store_values(db):
    @db.model
    class Maybe:
        number: Optional[int]  # noqa: UP045
        flag: bool | None

    row = run_one(db, "MaybeCreateNode", {"number": 5, "flag": False})
    stored = run_one(db, "MaybeReadNode", {"id": row["id"]})
    assert stored["number"] == 5
    assert stored["flag"] is False


def test_defaults_fill_omitted_fields(db):
    @db.model
    class Settings:
        name: str
        retries: int = 3
        ratio: float = 0.5
        enabled: bool = False
        status: Status = Status.ACTIVE
        price: Decimal = Decimal("1.25")
        options: dict = {"mode": "fast"}  # noqa: RUF012
        tags: list = ["a"]  # noqa: RUF012
        note: Optional[str] = None  # noqa: UP045

    row = run_one(db, "SettingsCreateNode", {"name": "x"})
    expected = {
        "retries": 3,
        "ratio": 0.5,
        "enabled": False,
        "status": Status.ACTIVE,
        "price": Decimal("1.25"),
        "options": {"mode": "fast"},
        "tags": ["a"],
        "note": None,
    }
    stored = run_one(db, "SettingsReadNode", {"id": row["id"]})
    for name, value in expected.items():
        assert row[name] == value, name
        assert stored[name] == value, name
    assert stored["enabled"] is False


def test_defaults_are_overridden_by_given_values(db):
    @db.model
    class Settings:
        retries: int = 3
        enabled: bool = False

    row = run_one(db, "SettingsCreateNode", {"retries": 9, "enabled": True})
    assert (row["retries"], row["enabled"]) == (9, True)


def test_defaults_fill_omitted_fields_in_bulk_create(db):
    @db.model
    class Settings:
        name: str
        retries: int = 3
        tags: list = ["a"]  # noqa: RUF012

    run_one(db, "SettingsBulkCreateNode", {"data": [{"name": "x"}, {"name": "y", "retries": 1}]})
    rows = run_one(db, "SettingsListNode", {})["records"]
    assert [(r["retries"], r["tags"]) for r in rows] == [(3, ["a"]), (1, ["a"])]


# -- text round trips exactly ---------------------------------------------------------
TEXTS = {
    "sql": "select * from t",
    "drop": "DROP TABLE users; --",
    "injection": "Robert'); DROP TABLE students;--",
    "unicode": "naïve café 日本語 Ελληνικά 🎉👩‍👩‍👧",
    "quotes": 'it\'s "quoted" and `ticked`',
    "backslashes": "C:\\path\\to\\file \\n \\' \\\\",
    "whitespace": "  line1\nline2\r\n\ttabbed  ",
    "empty": "",
    "wildcards": "100% _under_ [brackets] *star*",
    "placeholders": "$1 ? :name %(name)s %s {0}",
    "long": "abcdefghij" * 100_000,
}


@pytest.mark.parametrize("key", sorted(TEXTS))
def test_text_round_trips_exactly_and_is_found_by_equality(db, key):
    @db.model
    class Note:
        body: str

    text = TEXTS[key]
    created = run_one(db, "NoteCreateNode", {"body": text})
    run_one(db, "NoteCreateNode", {"body": "other"})
    assert created["body"] == text
    assert run_one(db, "NoteReadNode", {"id": created["id"]})["body"] == text
    found = run_one(db, "NoteListNode", {"filter": {"body": text}})["records"]
    assert [r["id"] for r in found] == [created["id"]]
    assert run_one(db, "NoteCountNode", {}) == {"count": 2}


def test_every_text_round_trips_through_bulk_create(db):
    @db.model
    class Note:
        body: str

    texts = list(TEXTS.values())
    run_one(db, "NoteBulkCreateNode", {"data": [{"body": t} for t in texts]})
    assert [r["body"] for r in run_one(db, "NoteListNode", {})["records"]] == texts


# -- wrong types are refused at build -----------------------------------------------
WRONG = [
    ("quantity", "abc"),
    ("quantity", 3.7),
    ("quantity", True),
    ("quantity", None),
    ("label", 5),
    ("label", None),
    ("ratio", "fast"),
    ("flag", "yes"),
    ("flag", 2),
    ("moment", "yesterday"),
    ("moment", 12),
    ("day", "31/12/2024"),
    ("day", dt.datetime(2024, 1, 1, tzinfo=UTC)),
    ("price", "a lot"),
    ("payload", "text, not bytes"),
    ("uid", "not-a-uuid"),
    ("status", "unknown"),
    ("level", 3),
    ("meta", [1, 2]),
    ("tags", "abc"),
]


@pytest.mark.parametrize("field, value", WRONG, ids=[f"{f}={v!r}" for f, v in WRONG])
def test_a_wrong_type_is_refused_at_build_naming_the_model_and_field(samples, field, value):
    params = {**FULL_ROW, field: value}
    workflow = WorkflowBuilder(samples)
    workflow.add_node("SampleCreateNode", "create", params)
    with pytest.raises(ValidationError) as info:
        workflow.build()
    message = str(info.value)
    assert "Sample" in message
    assert f"'{field}'" in message


@pytest.mark.parametrize("field, value", [("quantity", "abc"), ("quantity", 3.7), ("flag", "yes")])
def test_a_wrong_type_in_update_fields_is_refused_at_build(samples, field, value):
    builder = WorkflowBuilder(samples)
    builder.add_node("SampleUpdateNode", "update", {"id": 1, "fields": {field: value}})
    with pytest.raises(ValidationError) as info:
        builder.build()
    assert "Sample" in str(info.value)
    assert field in str(info.value)


def test_nothing_is_written_when_a_wrong_type_is_refused(samples):
    workflow = WorkflowBuilder(samples)
    workflow.add_node("SampleCreateNode", "good", FULL_ROW)
    workflow.add_node("SampleCreateNode", "bad", {**FULL_ROW, "quantity": "abc"})
    with pytest.raises(ValidationError):
        workflow.build()
    assert run_one(samples, "SampleCountNode", {}) == {"count": 0}


def test_a_wrong_type_arriving_through_a_connection_is_refused_at_run_time(samples):
    def make_quantity() -> dict:
        return {"value": "abc"}

    workflow = WorkflowBuilder(samples)
    workflow.add_node(make_quantity, "source", {})
    params = {k: v for k, v in FULL_ROW.items() if k != "quantity"}
    workflow.add_node("SampleCreateNode", "create", params)
    workflow.add_connection("source", "value", "create", "quantity")
    with pytest.raises(ValidationError, match="quantity"):
        LocalRuntime().execute(workflow.build())
    assert run_one(samples, "SampleCountNode", {}) == {"count": 0}


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_an_int_beyond_64_bits_is_refused_at_build(samples, value):
    builder = WorkflowBuilder(samples)
    builder.add_node("SampleCreateNode", "create", {**FULL_ROW, "quantity": value})
    with pytest.raises(ValidationError, match="quantity"):
        builder.build()
    assert run_one(samples, "SampleCountNode", {}) == {"count": 0}


def test_64_bit_ints_at_the_limits_are_accepted(samples):
    for value in (2**63 - 1, -(2**63)):
        row = run_one(samples, "SampleCreateNode", {**FULL_ROW, "quantity": value})
        assert run_one(samples, "SampleReadNode", {"id": row["id"]})["quantity"] == value


@pytest.mark.parametrize(
    "field, value",
    [
        ("meta", {"when": dt.datetime(2024, 1, 1)}),
        ("meta", {"blob": b"bytes"}),
        ("tags", [object()]),
        ("tags", [{1, 2}]),
    ],
    ids=["datetime-in-dict", "bytes-in-dict", "object-in-list", "set-in-list"],
)
def test_json_fields_refuse_values_json_cannot_store_at_build(samples, field, value):
    builder = WorkflowBuilder(samples)
    builder.add_node("SampleCreateNode", "create", {**FULL_ROW, field: value})
    with pytest.raises(ValidationError) as info:
        builder.build()
    assert field in str(info.value)


LOSSLESS = [
    ("quantity", "42", 42),
    ("quantity", " -7 ", -7),
    ("quantity", 42.0, 42),
    ("ratio", 2, 2.0),
    ("ratio", "2.5", 2.5),
    ("flag", 1, True),
    ("flag", 0, False),
    ("moment", "2024-02-29T13:45:30.123456+00:00", dt.datetime(2024, 2, 29, 13, 45, 30, 123456, tzinfo=UTC)),
    ("day", "2024-02-29", dt.date(2024, 2, 29)),
    ("price", "1.10", Decimal("1.10")),
    ("price", 3, Decimal(3)),
    ("payload", bytearray(b"ab"), b"ab"),
    ("uid", "12345678-1234-5678-1234-567812345678", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("status", "active", Status.ACTIVE),
    ("status", "INACTIVE", Status.INACTIVE),
    ("level", 1, Level.LOW),
    ("tags", ("a", "b"), ["a", "b"]),
]


@pytest.mark.parametrize("field, given, expected", LOSSLESS, ids=[f"{f}={g!r}" for f, g, _ in LOSSLESS])
def test_a_lossless_value_is_coerced_to_the_field_type(samples, field, given, expected):
    row = run_one(samples, "SampleCreateNode", {**FULL_ROW, field: given})
    assert row[field] == expected
    assert type(row[field]) is type(expected)
    assert run_one(samples, "SampleReadNode", {"id": row["id"]})[field] == expected


# -- issue 13, item 15 ---------------------------------------------------------------
AHEAD = dt.timezone(dt.timedelta(hours=5))
BEHIND = dt.timezone(dt.timedelta(hours=-5))


@pytest.mark.parametrize(
    "moment",
    [dt.datetime.max.replace(tzinfo=BEHIND), dt.datetime(1, 1, 1, 2, tzinfo=AHEAD)],
    ids=["max-5h", "1+5h"],
)
def test_an_aware_datetime_beyond_the_calendar_in_utc_is_refused_naming_model_and_field(db, moment):
    """It raised a bare OverflowError (from astimezone), on Create and in bulk."""

    @db.model
    class Event:
        at_time: dt.datetime

    with pytest.raises(ValidationError, match="Event.*'at_time'.*outside years 1..9999"):
        run_one(db, "EventCreateNode", {"at_time": moment})
    with pytest.raises(ValidationError, match="Event.*'at_time'.*outside years 1..9999"):
        good = dt.datetime(2024, 1, 1, tzinfo=AHEAD)
        run_one(db, "EventBulkCreateNode", {"data": [{"at_time": good}, {"at_time": moment}]})
    assert run_one(db, "EventCountNode", {}) == {"count": 0}


@pytest.mark.parametrize("value", [2**53 + 1, -(2**53) - 1, 10**17 + 1, 2**63 - 1])
def test_an_int_a_float_cannot_hold_exactly_is_refused_for_a_float_field(db, value):
    @db.model
    class Reading:
        level: float

    with pytest.raises(ValidationError, match="Reading.*'level'.*would be rounded"):
        run_one(db, "ReadingCreateNode", {"level": value})
    with pytest.raises(ValidationError, match="Reading.*'level'.*would be rounded"):
        run_one(db, "ReadingBulkCreateNode", {"data": [{"level": 1.5}, {"level": value}]})
    assert run_one(db, "ReadingCountNode", {}) == {"count": 0}
    assert run_one(db, "ReadingCreateNode", {"level": 2**53})["level"] == 2.0**53  # exact: accepted
    assert run_one(db, "ReadingCreateNode", {"level": 10**20})["level"] == 1e20  # a power of ten is exact


def test_json_floats_of_1e16_and_above_stay_floats(db):
    """JSONB printed 1e16 as 10000000000000000, which read back as an int (PostgreSQL)."""

    @db.model
    class Doc:
        body: dict
        items: list

    body = {"big": 1e16, "huge": 1.7976931348623157e308, "neg": -2.5e20, "small": 1e-20, "int": 10**16,
            "nested": [{"x": 3e300}], "text": "1e+16"}  # fmt: skip
    items = [1e16, 123456789012345678.0, 10**16]
    row = run_one(db, "DocCreateNode", {"body": body, "items": items})
    for stored in (row, run_one(db, "DocReadNode", {"id": row["id"]})):
        assert stored["body"] == body and stored["items"] == items
        assert [type(v) for v in stored["items"]] == [float, float, int]
        assert {k: type(v) for k, v in stored["body"].items()} == {k: type(v) for k, v in body.items()}
        assert type(stored["body"]["nested"][0]["x"]) is float
    bulk = run_one(db, "DocBulkCreateNode", {"data": [{"body": body, "items": items}]})
    assert bulk == {"inserted": 1}
    listed = run_one(db, "DocListNode", {"order_by": ["id"]})["records"][-1]
    assert [type(v) for v in listed["items"]] == [float, float, int]
