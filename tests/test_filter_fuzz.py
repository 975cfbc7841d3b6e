"""Fault test g: the filter compiler, fuzzed.

Hypothesis generates arbitrary filter documents (nested dicts and lists of
random keys: real field names, real and fake ``$`` operators, random text and
non-text keys; values of many types) and ``order_by`` values. Normalizing and
compiling them (``filters.normalize``, ``to_sql``, ``normalize_order_by`` and
``order_clauses``, on the SQLite, PostgreSQL and DuckDB dialects) and running
the ones that are accepted through a List and a Count node on SQLite must
raise nothing but ``ValidationError``, and List and Count must agree.

CI runs ``CI_EXAMPLES`` examples; ``DATAFLOW_FUZZ_EXAMPLES=100000`` runs more.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import os
import sys
import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dataflow_lab import DataFlow, LocalRuntime, ValidationError, WorkflowBuilder
from dataflow_lab.filters import OPERATORS, normalize, normalize_order_by, order_clauses, to_sql

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

CI_EXAMPLES = 2_000
NO_NUL = st.characters(exclude_characters="\x00")  # for text that must be storable everywhere
EXAMPLES = int(os.environ.get("DATAFLOW_FUZZ_EXAMPLES") or CI_EXAMPLES)
BACKEND_EXAMPLES = max(100, EXAMPLES // 10)  # the valid filters also run on DuckDB and PostgreSQL

# A dialect is needed to compile, not a server: this URL is never connected to.
OFFLINE_POSTGRES = "postgresql://fuzz@127.0.0.1:9/fuzz"


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


def define(db: DataFlow) -> Any:
    @db.model
    class Thing:
        text: str
        n: int
        x: float
        flag: bool
        at: dt.datetime
        day: dt.date
        amount: Decimal
        blob: bytes
        uid: uuid.UUID
        colour: Colour
        meta: dict
        tags: list
        opt_text: str | None = None
        opt_n: int | None = None

    return Thing


FIELDS = [
    "id", "text", "n", "x", "flag", "at", "day", "amount", "blob", "uid", "colour", "meta", "tags",
    "opt_text", "opt_n", "created_at", "updated_at",
]  # fmt: skip
FAKE_OPERATORS = [
    "$", "$$", "$EQ", "$Eq", "$eq ", " $eq", "$in\x00", "$foo", "$where", "$expr", "$elemMatch", "$size",
    "$all", "$text", "$nor", "$xor", "$contains", "$between", "$and", "$or", "$not", "$regex$", "$like'",
    "$1", "$-1", "$ne;", "$gt--", "$$gt",
]  # fmt: skip
LOGICAL = ["$and", "$or", "$not"]

ROWS = [
    {
        "text": t, "n": n, "x": x, "flag": flag, "at": dt.datetime(2024, 1, 1 + i, tzinfo=dt.UTC),
        "day": dt.date(2024, 2, 1 + i), "amount": Decimal(a), "blob": t.encode(), "uid": uuid.UUID(int=i),
        "colour": c, "meta": {"k": i}, "tags": [i, t], "opt_text": ot, "opt_n": on,
    }
    for i, (t, n, x, flag, a, c, ot, on) in enumerate(
        [
            ("alpha", 1, 1.5, True, "1.10", Colour.RED, None, None),
            ("Beta", -5, -0.25, False, "-3", Colour.GREEN, "b", 7),
            ("gamma'; --", 0, 1e300, True, "0", Colour.RED, "", 0),
            ("", 2**62, math.inf, False, "12345678901234567890.5", Colour.GREEN, "é", -1),
            ("%_\\", -(2**63), -math.inf, True, "0.000001", Colour.RED, None, 2**63 - 1),
        ]
    )
]  # fmt: skip


# -- strategies -----------------------------------------------------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, 0, -1]),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(
        [
            "",
            "1",
            "1.5",
            "abc",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "red",
            "RED",
            str(uuid.UUID(int=3)),
            "nan",
            "%",
            "^a",
            "(",
            "[",
            "*",
        ]
    ),
    st.binary(max_size=6),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.integers().map(Decimal),  # (st.decimals costs three times as much to generate)
    st.tuples(st.integers(), st.integers(-30, 30)).map(lambda t: Decimal(t[0]).scaleb(t[1])),
    st.sampled_from([Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity"), Decimal("1E+999999")]),
    st.uuids(),
    st.sampled_from(list(Colour)),
    st.sampled_from([1j, complex(1, -2), complex("nan+nanj")]),
    st.just(object()),
    st.just(Ellipsis),
)
text_keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(list(OPERATORS)),
    st.sampled_from(FAKE_OPERATORS),
    st.text(max_size=8),
    st.text(max_size=6).map(lambda s: "$" + s),
)
any_keys = st.one_of(
    text_keys,
    text_keys,
    st.integers(),
    st.none(),
    st.booleans(),
    st.floats(),
    st.binary(max_size=4),
    st.tuples(st.text(max_size=3), st.integers()),
)
arbitrary = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
        st.dictionaries(any_keys, children, max_size=4),
    ),
    max_leaves=6,
)


def _valid_value(field: str, *, junk: bool) -> st.SearchStrategy:
    """Values of the field's type; with ``junk``, a value of any type now and then.

    Text in a clean (documented) filter holds no NUL: PostgreSQL text and JSONB cannot, and
    such a filter is refused there by design (the junk filters and test_injection cover it).
    """

    def text(max_size: int) -> st.SearchStrategy:
        return st.text(max_size=max_size) if junk else st.text(NO_NUL, max_size=max_size)

    typed = {
        "id": st.integers(-2, 8),
        "text": st.sampled_from([r["text"] for r in ROWS]) | text(4),
        "opt_text": st.sampled_from(["b", "", "é"]) | text(3),
        "n": st.integers(-(2**63), 2**63 - 1) | st.sampled_from([1, -5, 0]),
        "opt_n": st.sampled_from([7, 0, -1, 2**63 - 1]) | st.integers(-3, 3),
        "x": st.floats(allow_nan=False) | st.sampled_from([1.5, math.inf]),
        "flag": st.booleans(),
        "at": st.datetimes(timezones=st.none() | st.just(dt.UTC)),
        "created_at": st.datetimes(timezones=st.just(dt.UTC)),
        "updated_at": st.datetimes(),
        "day": st.dates(),
        "amount": st.integers(-(10**8), 10**8).map(lambda i: Decimal(i).scaleb(-4))
        | st.sampled_from([Decimal("1.10"), 3]),
        "blob": st.binary(max_size=6),
        "uid": st.uuids() | st.just(uuid.UUID(int=1)).map(str),
        "colour": st.sampled_from([*Colour, "red", "GREEN"]),
        "meta": st.dictionaries(text(3), st.integers() | text(3), max_size=2),
        "tags": st.lists(st.integers() | text(3), max_size=3),
    }[field]
    return st.one_of(typed, typed, typed, typed, typed, scalars) if junk else typed


TEXT_FIELDS = ("text", "opt_text", "colour")


def _condition(field: str, *, junk: bool) -> st.SearchStrategy:
    value = _valid_value(field, junk=junk)
    if not junk:  # only what the documentation allows: these filters must all run
        clean = [
            st.tuples(st.sampled_from(["$eq", "$ne"]), value | st.none()),
            st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), value),
            st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(value | st.none(), max_size=4)),
            st.tuples(st.sampled_from(["$exists", "$null"]), st.booleans()),
        ]
        if field in TEXT_FIELDS:
            clean += [
                st.tuples(
                    st.sampled_from(["$like", "$ilike"]),
                    # a pattern may not end with a lone backslash (the escape character): that is refused
                    st.text("ab%_\\'", max_size=4).filter(lambda p: (len(p) - len(p.rstrip("\\"))) % 2 == 0),
                ),
                st.tuples(st.just("$regex"), st.sampled_from(["^a", "a$", "[ab]", "a{2,}", "^$", "e"])),
            ]
        ops = st.lists(st.one_of(clean), min_size=1, max_size=2).map(dict)
        return st.one_of(value, ops, ops.map(lambda c: {"$not": c}))
    op_value = st.one_of(
        st.tuples(st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]), value | st.none()),
        st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(value | st.none(), max_size=4)),
        st.tuples(st.sampled_from(["$like", "$ilike"]), st.text("ab%_\\'", max_size=4)),
        st.tuples(
            st.just("$regex"), st.sampled_from(["^a", "a$", "[ab]", "(", "a{2,}", "\\d", "^$", "(?i)A"])
        ),
        st.tuples(st.sampled_from(["$exists", "$null"]), st.booleans() | scalars),
        st.tuples(st.sampled_from(FAKE_OPERATORS), value),
    )
    ops = st.lists(op_value, min_size=1, max_size=3).map(dict)
    return st.one_of(value, ops, ops.map(lambda c: {"$not": c}))


def _leaf(*, junk: bool) -> st.SearchStrategy:
    one = st.one_of([_condition(f, junk=junk).map(lambda c, f=f: {f: c}) for f in FIELDS])
    return st.lists(one, max_size=3).map(lambda parts: {k: v for p in parts for k, v in p.items()})


def _nest(children: st.SearchStrategy, leaf: st.SearchStrategy, *, junk: bool) -> st.SearchStrategy:
    shapes = [
        st.lists(children, max_size=3).map(lambda ds: {"$and": ds}),
        st.lists(children, max_size=3).map(lambda ds: {"$or": ds}),
        children.map(lambda d: {"$not": d}),
        st.tuples(leaf, children).map(lambda t: {**t[0], "$or": [t[1]]}),
    ]
    if junk:  # a logical operator over anything at all
        shapes.append(st.tuples(st.sampled_from(LOGICAL), arbitrary).map(lambda t: {t[0]: t[1]}))
    return st.one_of(shapes)


_junk_leaf, _clean_leaf = _leaf(junk=True), _leaf(junk=False)
structured = st.recursive(_junk_leaf, lambda c: _nest(c, _junk_leaf, junk=True), max_leaves=5)
well_typed = st.recursive(_clean_leaf, lambda c: _nest(c, _clean_leaf, junk=False), max_leaves=5)
FILTERS = st.one_of(
    structured, structured, structured, st.dictionaries(any_keys, arbitrary, max_size=4), arbitrary
)

_order_name = st.one_of(
    st.sampled_from(FIELDS),
    st.text(max_size=6),
    st.sampled_from(["", "-", "+", "--n", "+-text", "-+x", "- n", "n "]),
)
_order_item = st.one_of(
    _order_name,
    st.sampled_from(FIELDS).map(lambda f: f"-{f}"),
    st.dictionaries(
        _order_name,
        st.sampled_from([1, -1, "asc", "desc", "ASC", "DESC", 0, 2, True, None, "up"]),
        max_size=2,
    ),
    st.tuples(_order_name, st.booleans()),
    st.tuples(_order_name, scalars),
    scalars,
)
ORDER_BY = st.one_of(
    st.none(),
    _order_item,
    st.lists(_order_item, max_size=3),
    st.lists(_order_item, max_size=2).map(tuple),
    arbitrary,
)
VALID_ORDER_BY = st.one_of(
    st.none(),
    st.sampled_from(FIELDS),
    st.lists(
        st.sampled_from(FIELDS).flatmap(
            lambda f: st.sampled_from([f, f"-{f}", f"+{f}", {f: 1}, {f: "desc"}])
        ),
        max_size=3,
    ),
)


# -- the tests ---------------------------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.examples = self.accepted = self.refused = self.ran = 0
        self.orders_accepted = self.orders_refused = 0
        self.first_refusal: tuple | None = None


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )


def run_list_and_count(db: DataFlow, where: Any, order_by: Any) -> None:
    """List and Count with this filter; List and Count must agree (ValidationError may escape)."""
    workflow = WorkflowBuilder(db)
    params = {"filter": where} if order_by is None else {"filter": where, "order_by": order_by}
    workflow.add_node("ThingListNode", "list", params)
    workflow.add_node("ThingCountNode", "count", {"filter": where})
    results, _ = LocalRuntime().execute(workflow.build())
    assert results["list"]["count"] == results["count"]["count"] == len(results["list"]["records"]), results


def test_fuzzed_filters_raise_only_validation_error(record_property):
    sqlite = DataFlow()
    tables = [sqlite.table(define(sqlite))]
    for url in ("duckdb:///:memory:", OFFLINE_POSTGRES):  # compiled on these dialects, never run
        other = DataFlow(url)
        tables.append(other.table(define(other)))
    model = tables[0].model
    workflow = WorkflowBuilder(sqlite)
    workflow.add_node("ThingBulkCreateNode", "rows", {"data": ROWS, "progress": False})
    LocalRuntime().execute(workflow.build())
    tally = Tally()

    @fuzz_settings(EXAMPLES)
    @given(where=FILTERS, order_by=ORDER_BY)
    def check(where: Any, order_by: Any) -> None:
        tally.examples += 1
        normalized = order = None
        try:
            normalized = normalize(model, where)
            tally.accepted += 1
        except ValidationError:
            tally.refused += 1
        try:
            order = normalize_order_by(model, order_by)
            tally.orders_accepted += 1
        except ValidationError:
            tally.orders_refused += 1
        if normalized is None and order is None:
            return
        for mt in tables:  # what was accepted compiles on every dialect
            expr = to_sql(mt, normalized or {})
            stmt = sa.select(mt.table.c.id).order_by(*order_clauses(mt, order or []))
            mt.dialect.compile(stmt if expr is None else stmt.where(expr))
        if normalized is not None:  # the nodes' own checks, then the database
            run_list_and_count(sqlite, where, order_by if order is not None else None)
            tally.ran += 1

    try:
        check()
    finally:
        figures = {
            "examples": tally.examples,
            "filters accepted": tally.accepted,
            "filters refused with ValidationError": tally.refused,
            "order_by accepted": tally.orders_accepted,
            "order_by refused with ValidationError": tally.orders_refused,
            "ran on SQLite": tally.ran,
            "other exceptions": 0,  # any other exception fails the test
        }
        for name, value in figures.items():
            record_property(name, value)
        print("\n[filter fuzz] " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    assert tally.examples >= min(EXAMPLES, CI_EXAMPLES)
    assert tally.accepted > tally.examples // 20, "too few valid filters reach the database"


def finite(x: float) -> float:
    return x if math.isfinite(x) else math.copysign(sys.float_info.max, x)


def has_infinity(doc: Any) -> bool:
    if isinstance(doc, float):
        return math.isinf(doc)
    if isinstance(doc, dict):
        return any(has_infinity(v) for v in doc.values())
    if isinstance(doc, list | tuple):
        return any(has_infinity(v) for v in doc)
    return False


def test_fuzzed_valid_filters_run_on_every_backend(db, backend, record_property):
    """Filters written as documented (typed values, real operators, text operators on text fields)
    are all accepted and run on every backend, where List and Count agree."""
    define(db)
    workflow = WorkflowBuilder(db)
    rows = ROWS if backend != "mysql" else [{**r, "x": finite(r["x"])} for r in ROWS]
    workflow.add_node("ThingBulkCreateNode", "rows", {"data": rows, "progress": False})
    LocalRuntime().execute(workflow.build())
    tally = Tally()

    @fuzz_settings(BACKEND_EXAMPLES)
    @given(where=well_typed, order_by=VALID_ORDER_BY)
    def check(where: Any, order_by: Any) -> None:
        if backend == "mysql" and has_infinity(where):  # MySQL's DOUBLE has none: refused (test_mysql.py)
            return
        tally.examples += 1
        try:
            run_list_and_count(db, where, order_by)  # through the nodes: their checks, then the database
        except ValidationError as exc:
            tally.refused += 1
            tally.first_refusal = tally.first_refusal or (where, order_by, str(exc))
            return
        tally.ran += 1

    try:
        check()
    finally:
        figures = {"backend": backend, "examples": tally.examples, "ran": tally.ran, "refused": tally.refused}
        for name, value in figures.items():
            record_property(name, value)
        print(f"\n[filter fuzz {backend}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    assert tally.refused == 0, f"a filter written as documented was refused: {tally.first_refusal!r}"


@pytest.mark.parametrize("depth", [50, 500, 5_000])
@pytest.mark.parametrize("shape", ["$not", "$and", "$or", "field $not"])
def test_deeply_nested_filters_raise_only_validation_error(depth, shape):
    """A filter nested thousands deep must be refused (or run), never crash with RecursionError."""
    db = DataFlow()
    model = db.table(define(db))
    doc: Any = {"n": 1} if shape != "field $not" else {"$eq": 1}
    for _ in range(depth):
        if shape in ("$not", "field $not"):
            doc = {"$not": doc}
        else:
            doc = {shape: [doc]}
    if shape == "field $not":
        doc = {"n": doc}
    try:
        normalized = normalize(model.model, doc)
        to_sql(model, normalized)
        run_list_and_count(db, doc, None)
    except ValidationError:
        pass
    db.close()
