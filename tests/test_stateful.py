"""Fault test e: random operations against an in-memory reference model.

A hypothesis ``RuleBasedStateMachine`` runs random Create, Read, Update,
Delete, Upsert, List, Count, BulkCreate, BulkUpdate, BulkDelete and BulkUpsert
operations, each as its own workflow through ``WorkflowBuilder`` and
``LocalRuntime`` (so the real generated nodes run), and applies the same
operation to a plain dict ``id -> row``. After every step the whole table is
read back and must equal the reference exactly: every field, value types,
``created_at`` (never changes) and ``updated_at`` (moves, inside the step's
time window, exactly on the rows the step changed).

Operations that must fail (a missing id, a duplicate unique code, a bad row in
a bulk operation) are generated on purpose, and must change nothing.

CI runs at least ``CI_STEPS`` (2,000) operations on each of SQLite, PostgreSQL and
DuckDB (about a minute in all); ``DATAFLOW_STATEFUL_STEPS=100000`` (say) runs more. ``DATAFLOW_STATEFUL_SHRINK=1`` shrinks a failure to a minimal example.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from dataflow_lab import DataFlowError, LocalRuntime, NotFoundError, ValidationError, WorkflowBuilder

CI_STEPS = 2_000  # per backend
STEPS = int(os.environ.get("DATAFLOW_STATEFUL_STEPS") or CI_STEPS)
STEPS_PER_EXAMPLE = 50
# Shrinking a failure re-runs thousands of database workflows (minutes); the unshrunk
# failing example (at most STEPS_PER_EXAMPLE steps, printed in full) is usually enough.
SHRINK = os.environ.get("DATAFLOW_STATEFUL_SHRINK") == "1"

USER_FIELDS = ("code", "name", "qty", "score", "tag", "active")
OPTIONAL_FIELDS = ("score", "tag", "active")
DEFAULTS = {"score": None, "tag": None, "active": True}
ORDER_FIELDS = ("id", "code", "name", "qty", "active", "created_at", "updated_at")

# -- values -------------------------------------------------------------------------
# Small pools, so equality filters hit rows and unique codes collide on purpose.
CODES = [f"k{i}" for i in range(34)] + ["", "K1", "k1 ", "é", "o'k", "ü%_"]
TAGS = ["", "red", "Red", "blue", "o'neil", "ü"]
FLOATS = [0.0, 1.5, -2.25, 0.1, 3.0, 1e300, -1e-300, 5e-324, math.inf, -math.inf]
BIG_INTS = [2**63 - 1, -(2**63), 1_000_000]
REGEXES = ["^a", "a$", "[ab]", "^k1", "b.a", "^$", "A", "'", "^k[0-9]$", "é"]

codes = st.sampled_from(CODES)
NAMES = ["", "a", "A", "ab", "Ab", "aB", "b a", "ba", "é", "éa", "o'k", "%", "_", "a\\b", "Ωz", "abc", "B", " "]  # fmt: skip
LIKE = ["%", "a%", "%a", "_", "__", "%b%", "A%", "k1%", "k_", "%'%", "é%", "_a%", "", "%%", "ab"]
ILIKE = ["a%", "%B", "AB", "%a_%", "k1", "K%", "_"]
names = st.sampled_from(NAMES)  # one choice per value: a text strategy costs a choice per character
qtys = st.one_of(st.integers(-3, 3), st.sampled_from(BIG_INTS))
scores = st.sampled_from(FLOATS)
tags = st.sampled_from(TAGS)
VALUES: dict[str, st.SearchStrategy] = {
    "id": st.integers(-1, 80),
    "code": codes,
    "name": names,
    "qty": qtys,
    "score": scores,
    "tag": tags,
    "active": st.booleans(),
}
OPTIONAL_VALUES = {"score": st.none() | scores, "tag": st.none() | tags, "active": st.booleans()}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- the reference filter semantics ---------------------------------------------------
# Two-valued logic, as documented: a plain value means equality (None: IS NULL);
# $ne and $nin include missing values; a comparison with a missing value is false;
# $not negates exactly.
def _ascii_lower(text: str) -> str:
    return text.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))


def _like(value: str, pattern: str, *, fold: bool) -> bool:
    if fold:
        value, pattern = _ascii_lower(value), _ascii_lower(pattern)
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _equal(x: Any, v: Any) -> bool:
    return x is None if v is None else (x is not None and x == v)


def cond_matches(x: Any, cond: Any) -> bool:
    if not (isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond)):
        cond = {"$eq": cond}
    for op, v in cond.items():
        if op == "$eq":
            ok = _equal(x, v)
        elif op == "$ne":
            ok = not _equal(x, v)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = x is not None and {"$gt": x > v, "$gte": x >= v, "$lt": x < v, "$lte": x <= v}[op]
        elif op == "$in":
            ok = any(_equal(x, e) for e in v)
        elif op == "$nin":
            ok = not any(_equal(x, e) for e in v)
        elif op == "$like":
            ok = x is not None and _like(x, v, fold=False)
        elif op == "$ilike":
            ok = x is not None and _like(x, v, fold=True)
        elif op == "$regex":
            ok = x is not None and re.search(v, x) is not None
        elif op == "$exists":
            ok = (x is not None) == v
        elif op == "$null":
            ok = (x is None) == v
        elif op == "$not":
            ok = not cond_matches(x, v)
        else:  # pragma: no cover - the strategies only make known operators
            raise AssertionError(op)
        if not ok:
            return False
    return True


def matches(row: dict[str, Any], doc: dict[str, Any]) -> bool:
    for key, value in doc.items():
        if key == "$and":
            ok = all(matches(row, d) for d in value)
        elif key == "$or":
            ok = any(matches(row, d) for d in value)
        elif key == "$not":
            ok = not matches(row, value)
        else:
            ok = cond_matches(row[key], value)
        if not ok:
            return False
    return True


def order_rows(rows: list[dict[str, Any]], order_by: Any) -> list[dict[str, Any]]:
    """Sort like the package documents: the given keys, then id ascending."""
    keys: list[tuple[str, bool]] = []
    items = [order_by] if isinstance(order_by, str | dict) else list(order_by or [])
    for item in items:
        if isinstance(item, str):
            keys.append((item.lstrip("-+"), item.startswith("-")))
        else:
            keys += [(name, d in (-1, "desc", "DESC")) for name, d in item.items()]
    out = sorted(rows, key=lambda r: r["id"])
    for name, desc in reversed(keys):
        out.sort(key=lambda r, n=name: r[n], reverse=desc)  # stable, also in reverse
    return out


# -- strategies for filters and order_by -------------------------------------------------
def _condition(field: str) -> st.SearchStrategy:
    value = VALUES[field]
    maybe_none = st.none() | value
    pairs = [
        st.tuples(st.sampled_from(["$eq", "$ne"]), maybe_none),
        st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(maybe_none, max_size=4)),
        st.tuples(st.sampled_from(["$null", "$exists"]), st.booleans()),
    ]
    if field != "active":
        pairs.append(st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), value))
    if field in ("code", "name", "tag"):
        pairs += [
            st.tuples(st.just("$like"), st.sampled_from(LIKE)),
            st.tuples(st.just("$ilike"), st.sampled_from(ILIKE)),
            st.tuples(st.just("$regex"), st.sampled_from(REGEXES)),
        ]
    op = st.one_of(pairs)
    ops = st.lists(op, min_size=1, max_size=2).map(dict)
    with_not = st.one_of(
        ops, ops.map(lambda c: {"$not": c}), st.tuples(op, ops).map(lambda t: {**dict([t[0]]), "$not": t[1]})
    )
    return st.one_of(maybe_none, with_not)


# Strategies are built once (no flatmap, no per-draw construction): generation stays cheap.
_field_filter = st.one_of([_condition(f).map(lambda c, f=f: {f: c}) for f in VALUES])
_leaf_doc = st.lists(_field_filter, max_size=2).map(lambda parts: {k: v for p in parts for k, v in p.items()})
FILTERS = st.recursive(
    _leaf_doc,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda ds: {"$and": ds}),
        st.lists(children, max_size=3).map(lambda ds: {"$or": ds}),
        children.map(lambda d: {"$not": d}),
        st.tuples(_leaf_doc, children).map(lambda t: {**t[0], "$or": [t[1]]}),
    ),
    max_leaves=6,
)
_order_item = st.sampled_from(
    [x for f in ORDER_FIELDS for x in (f, f"-{f}", f"+{f}", {f: 1}, {f: -1}, {f: "asc"}, {f: "desc"})]
)
ORDER_BY = st.one_of(st.none(), _order_item, st.lists(_order_item, min_size=1, max_size=3))

ROWS = st.fixed_dictionaries(
    {"code": codes, "name": names, "qty": qtys}, optional=OPTIONAL_VALUES
)  # a Create's parameters
UPDATE_FIELDS = st.fixed_dictionaries(
    {}, optional={"code": codes, "name": names, "qty": qtys, **OPTIONAL_VALUES}
).filter(bool)
UPDATE_FIELDS_OR_NONE = UPDATE_FIELDS | st.just({})
GIVEN = st.lists(st.sampled_from(OPTIONAL_FIELDS), unique=True)
# A bad row: the shapes a bulk node must refuse, leaving the table as it was.
BAD_ROWS = st.sampled_from(
    [
        {"code": "bad1", "name": "x", "qty": "abc"},
        {"code": "bad2", "name": "x", "qty": 1.5},
        {"code": "bad3", "name": None, "qty": 1},
        {"code": "bad4", "qty": 1},
        {"code": "bad5", "name": "x", "qty": 1, "nope": 1},
        {"code": "bad6", "name": "x", "qty": 1, "active": "yes"},
        {"code": "bad7", "name": "x", "qty": 2**64},
        {"code": "bad8", "name": "x", "qty": 1, "created_at": "2020-01-01"},
        ["bad9", "x", 1],
    ]
)


# (0 = any code, so it may collide; else a code no row holds yet), index
CODE_CHOICE = st.tuples(st.integers(0, 3), st.integers(0, len(CODES) - 1))
MAYBE_BAD = st.tuples(st.integers(0, 5), st.integers(0, 8), BAD_ROWS)
BULK_ROWS = st.tuples(
    GIVEN,
    st.lists(st.tuples(CODE_CHOICE, names, qtys, *(OPTIONAL_VALUES[f] for f in OPTIONAL_FIELDS)), max_size=8),
)


def choose_code(choice: tuple[int, int], taken: set[str]) -> str:
    collide, index = choice
    free = [c for c in CODES if c not in taken]
    return free[index % len(free)] if free and collide else CODES[index]


def pick(data: Any, seq: Any, label: str) -> Any:
    """One element of a list that depends on the state (drawn as an index: cheap, and replayable)."""
    return seq[data.draw(st.integers(0, len(seq) - 1), label=label)]


def same(a: Any, b: Any) -> bool:
    """Equal values of the same type (the database must hand back what was written)."""
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and a == b


def full_row(fields: dict[str, Any]) -> dict[str, Any]:
    return {f: fields.get(f, DEFAULTS.get(f)) for f in USER_FIELDS}


class Stats:
    def __init__(self) -> None:
        self.ops = Counter()  # operations compared, by kind
        self.failed = 0  # operations that failed as the reference said they must
        self.checks = 0  # full-table comparisons
        self.examples = 0
        self.divergences = 0


# -- the machine ----------------------------------------------------------------------------
def make_machine(db: Any, stats: Stats) -> type[RuleBasedStateMachine]:
    runtime = LocalRuntime()

    class ItemMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.ref: dict[int, dict[str, Any]] = {}
            self.stamps: dict[int, tuple[dt.datetime, dt.datetime]] = {}
            self.max_id = 0
            self.last = "creating the table"

        @initialize(data=st.data())
        def empty_table(self, data: Any) -> None:
            stats.examples += 1
            self.model = define_item(db, f"Item{stats.examples}")
            self.verify(utcnow())
            # Every example opens with a BulkCreate: Hypothesis's swarm testing turns rules off for
            # whole examples, and one CI run drew no BulkCreate in all its 2,000 operations.
            self.bulk_create(data, data.draw(st.sampled_from([None, 1, 2, 3, 5])), data.draw(st.booleans()))

        # -- plumbing ---------------------------------------------------------------
        def run(self, node_type: str, params: dict[str, Any]) -> Any:
            workflow = WorkflowBuilder(db)
            workflow.add_node(node_type.replace("Item", self.model, 1), "op", params)
            results, _ = runtime.execute(workflow.build())
            return results["op"]

        def attempt(self, kind: str, node_type: str, params: dict[str, Any]) -> tuple[Any, Exception | None]:
            """Run one operation; return (output, None) or (None, the DataFlowError it raised)."""
            stats.ops[kind] += 1
            self.last = f"{kind} {params!r}"
            try:
                return self.run(node_type, params), None
            except DataFlowError as exc:
                return None, exc

        def ok(self, error: Exception | None, what: str) -> None:
            if error is not None:
                stats.divergences += 1
                raise AssertionError(f"{what}: failed, but the reference model says it succeeds: {error!r}")

        def failed(self, error: Exception | None, what: str, kind: type = DataFlowError) -> None:
            if not isinstance(error, kind):
                stats.divergences += 1
                raise AssertionError(f"{what}: expected a {kind.__name__}, got {error!r}")
            stats.failed += 1

        def codes(self, *, besides: set[int] = frozenset()) -> set[str]:
            return {r["code"] for i, r in self.ref.items() if i not in besides}

        def full(self, i: int) -> dict[str, Any]:
            created, updated = self.stamps[i]
            return {"id": i, **self.ref[i], "created_at": created, "updated_at": updated}

        def pick_id(self, data: Any) -> int:
            existing = sorted(self.ref)
            kind = data.draw(st.integers(0, 4), label="id kind")
            if existing and kind < 3:
                return pick(data, existing, "existing id")
            if kind == 3:
                return self.max_id + data.draw(st.integers(-2, 3), label="id near the largest")
            return pick(data, (0, -1, 2**63 - 1), "odd id")

        def fresh_code(self, data: Any, taken: set[str]) -> str:
            return choose_code(data.draw(CODE_CHOICE, label="code choice"), taken)

        def verify(
            self,
            started: dt.datetime,
            expected: dict[int, dict[str, Any]] | None = None,
            *,
            created: set[int] = frozenset(),
            touched: set[int] = frozenset(),
            new_by_code: dict[str, dict[str, Any]] | None = None,
        ) -> list[int]:
            """The table must equal ``expected`` (default: unchanged). Returns ids of rows new to the
            reference whose ids the operation did not report (matched by their unique code)."""
            ended = utcnow()
            expected = dict(self.ref if expected is None else expected)
            stats.checks += 1
            rows = self.run("ItemListNode", {})["records"]
            ids = [r["id"] for r in rows]
            actual = {r["id"]: r for r in rows}
            problems = []
            if ids != sorted(set(ids)):
                problems.append(f"List without order_by returned ids {ids}, not unique ascending")
            unreported = sorted(set(actual) - set(expected))
            new_by_code = dict(new_by_code or {})
            for i in unreported:
                fields = new_by_code.pop(actual[i]["code"], None)
                if fields is None:
                    problems.append(f"unexpected row {actual[i]}")
                else:
                    expected[i] = fields
            if new_by_code:
                problems.append(f"rows never written: {list(new_by_code.values())}")
            created = set(created) | set(unreported)
            missing = sorted(set(expected) - set(actual))
            if missing:
                problems.append(f"rows missing from the table: {[(i, expected[i]) for i in missing]}")
            stamps = {}
            for i in sorted(set(actual) & set(expected)):
                row, want = actual[i], expected[i]
                wrong = {f: (row[f], want[f]) for f in USER_FIELDS if not same(row[f], want[f])}
                if wrong:
                    problems.append(f"row {i}: (table, reference) differ in {wrong}")
                stamp = (row["created_at"], row["updated_at"])
                if i in created:
                    if not (started <= stamp[0] == stamp[1] <= ended):
                        problems.append(f"new row {i}: timestamps {stamp} outside [{started}, {ended}]")
                elif i in touched:
                    if stamp[0] != self.stamps[i][0] or not started <= stamp[1] <= ended:
                        problems.append(f"changed row {i}: timestamps {stamp}, was {self.stamps[i]}")
                elif stamp != self.stamps.get(i):
                    problems.append(f"untouched row {i}: timestamps {stamp}, was {self.stamps.get(i)}")
                stamps[i] = stamp
            if problems:
                stats.divergences += len(problems)
                raise AssertionError(
                    f"after {self.last}\nthe table diverged from the reference:\n  " + "\n  ".join(problems)
                )
            self.ref, self.stamps = expected, stamps
            self.max_id = max([self.max_id, *actual])
            return unreported

        # -- single-row operations -----------------------------------------------------
        @rule(data=st.data(), row=ROWS)
        def create(self, data: Any, row: dict[str, Any]) -> None:
            row["code"] = self.fresh_code(data, self.codes())
            started = utcnow()
            out, error = self.attempt("Create", "ItemCreateNode", row)
            if row["code"] in self.codes():
                self.failed(error, f"Create {row} (duplicate code)")
                self.verify(started)
                return
            self.ok(error, f"Create {row}")
            new = full_row(row)
            assert out["id"] not in self.ref, f"Create returned id {out['id']}, which a row already has"
            assert {f: out[f] for f in USER_FIELDS} == new, (out, new)
            self.verify(started, {**self.ref, out["id"]: new}, created={out["id"]})

        @rule(data=st.data(), lenient=st.booleans())
        def read(self, data: Any, lenient: bool) -> None:
            i = self.pick_id(data)
            started = utcnow()
            out, error = self.attempt("Read", "ItemReadNode", {"id": i, "raise_on_not_found": not lenient})
            if i in self.ref:
                self.ok(error, f"Read {i}")
                assert out == self.full(i), (out, self.full(i))
            elif lenient:
                self.ok(error, f"Read {i}, raise_on_not_found=False")
                assert out is None, out
            else:
                self.failed(error, f"Read of missing id {i}", NotFoundError)
            self.verify(started)

        @rule(data=st.data(), fields=UPDATE_FIELDS, lenient=st.booleans())
        def update(self, data: Any, fields: dict[str, Any], lenient: bool) -> None:
            i = self.pick_id(data)
            if "code" in fields:
                fields["code"] = self.fresh_code(data, self.codes(besides={i}))
            by_filter = data.draw(st.booleans(), label="filter={'id': i}?")
            params = {"filter": {"id": i}} if by_filter else {"id": i}
            params.update(fields=fields, raise_on_not_found=not lenient)
            started = utcnow()
            out, error = self.attempt("Update", "ItemUpdateNode", params)
            what = f"Update {params}"
            if i not in self.ref:
                if lenient:
                    self.ok(error, what)
                    assert out is None, out
                else:
                    self.failed(error, what, NotFoundError)
                self.verify(started)
            elif "code" in fields and fields["code"] in self.codes(besides={i}):
                self.failed(error, f"{what} (duplicate code)")
                self.verify(started)
            else:
                self.ok(error, what)
                new = {**self.ref[i], **fields}
                assert {f: out[f] for f in USER_FIELDS} == new and out["id"] == i, (out, new)
                self.verify(started, {**self.ref, i: new}, touched={i})

        @rule(data=st.data())
        def delete(self, data: Any) -> None:
            i = self.pick_id(data)
            by_filter = data.draw(st.booleans(), label="filter={'id': i}?")
            started = utcnow()
            params = {"filter": {"id": i}} if by_filter else {"id": i}
            out, error = self.attempt("Delete", "ItemDeleteNode", params)
            self.ok(error, f"Delete {params}")
            assert out == {"id": i, "deleted": i in self.ref}, out
            self.verify(started, {k: v for k, v in self.ref.items() if k != i})

        @rule(
            data=st.data(),
            create=st.fixed_dictionaries({"name": names, "qty": qtys}, optional=OPTIONAL_VALUES),
        )
        def upsert(self, data: Any, create: dict[str, Any]) -> None:
            code = data.draw(codes, label="where code")
            update = data.draw(UPDATE_FIELDS_OR_NONE, label="update")
            params = {"where": {"code": code}, "create": create, "update": update}
            found = [i for i, r in self.ref.items() if r["code"] == code]
            started = utcnow()
            out, error = self.attempt("Upsert", "ItemUpsertNode", params)
            what = f"Upsert {params}"
            if not found:
                self.ok(error, what)
                new = full_row({"code": code, **create})
                assert out["created"] is True and {f: out["record"][f] for f in USER_FIELDS} == new, out
                self.verify(started, {**self.ref, out["record"]["id"]: new}, created={out["record"]["id"]})
                return
            [i] = found
            if "code" in update and update["code"] in self.codes(besides={i}):
                self.failed(error, f"{what} (duplicate code)")
                self.verify(started)
                return
            self.ok(error, what)
            new = {**self.ref[i], **update}
            assert out["created"] is False and out["record"]["id"] == i, out
            assert {f: out["record"][f] for f in USER_FIELDS} == new, (out, new)
            self.verify(started, {**self.ref, i: new}, touched={i} if update else set())

        # -- reads with filters ------------------------------------------------------------
        def expected_rows(self, where: dict[str, Any]) -> list[dict[str, Any]]:
            return [self.full(i) for i in sorted(self.ref) if matches(self.full(i), where)]

        @rule(
            where=FILTERS,
            order_by=ORDER_BY,
            page=st.none() | st.tuples(st.none() | st.integers(0, 5), st.integers(0, 4)),
        )
        def list_rows(self, where: dict[str, Any], order_by: Any, page: Any) -> None:
            params: dict[str, Any] = {"filter": where}
            if order_by is not None:
                params["order_by"] = order_by
            if page is not None:
                params["limit"], params["offset"] = page
            started = utcnow()
            out, error = self.attempt("List", "ItemListNode", params)
            self.ok(error, f"List {params}")
            want = order_rows(self.expected_rows(where), order_by)
            if page is not None:
                limit, offset = page
                want = want[offset:] if limit is None else want[offset : offset + limit]
            got = list(out["records"])
            if got != want or out["count"] != len(want):
                stats.divergences += 1
                raise AssertionError(
                    f"List {params}: ids {[r['id'] for r in got]}, reference {[r['id'] for r in want]}"
                )
            self.verify(started)

        @rule(where=FILTERS)
        def count(self, where: dict[str, Any]) -> None:
            started = utcnow()
            out, error = self.attempt("Count", "ItemCountNode", {"filter": where})
            self.ok(error, f"Count {where}")
            want = len(self.expected_rows(where))
            if out != {"count": want}:
                stats.divergences += 1
                raise AssertionError(f"Count {where}: {out}, reference {want}")
            self.verify(started)

        # -- bulk operations ------------------------------------------------------------------
        def bulk_rows(self, data: Any, *, taken: set[str], max_size: int = 8) -> list[dict[str, Any]]:
            """Rows with the required fields and the same optional ones (unique codes, mostly free)."""
            given, raw = data.draw(BULK_ROWS, label="optional fields given, rows")
            rows, used = [], set(taken)
            for code_choice, name, qty, *optional in raw:
                row = {"code": choose_code(code_choice, used), "name": name, "qty": qty}
                row.update({f: v for f, v in zip(OPTIONAL_FIELDS, optional) if f in given})
                used.add(row["code"])
                rows.append(row)
            return rows

        def maybe_bad(self, data: Any, rows: list[Any]) -> Any:
            chance, position, row = data.draw(MAYBE_BAD, label="bad row? where? which?")
            if chance:
                return None
            position %= len(rows) + 1
            rows.insert(position, row)
            return position

        @rule(data=st.data(), batch_size=st.sampled_from([None, 1, 2, 3, 5]), return_ids=st.booleans())
        def bulk_create(self, data: Any, batch_size: int | None, return_ids: bool) -> None:
            rows = self.bulk_rows(data, taken=self.codes())
            bad = self.maybe_bad(data, rows)
            params: dict[str, Any] = {"data": rows, "batch_size": batch_size, "progress": False}
            if return_ids:
                params["return_ids"] = True
            started = utcnow()
            out, error = self.attempt("BulkCreate", "ItemBulkCreateNode", params)
            what = f"BulkCreate {rows} (batch_size {batch_size})"
            input_codes = [r["code"] for r in rows if isinstance(r, dict) and "code" in r]
            if bad is not None or len(set(input_codes)) < len(input_codes) or set(input_codes) & self.codes():
                self.failed(error, f"{what} (a bad row or a duplicate code)")
                self.verify(started)
                return
            self.ok(error, what)
            assert out["inserted"] == len(rows), out
            new = {r["code"]: full_row(r) for r in rows}
            if return_ids:
                assert len(out["ids"]) == len(rows), out
                expected = {**self.ref, **{i: full_row(r) for i, r in zip(out["ids"], rows)}}
                self.verify(started, expected, created=set(out["ids"]))
                return
            fresh = self.verify(started, new_by_code=new)
            assert [self.ref[i]["code"] for i in fresh] == input_codes, "ids do not follow input order"

        @rule(data=st.data(), where=FILTERS, fields=UPDATE_FIELDS)
        def bulk_update(self, data: Any, where: dict[str, Any], fields: dict[str, Any]) -> None:
            hit = {r["id"] for r in self.expected_rows(where)}
            if "code" in fields:
                fields["code"] = self.fresh_code(data, self.codes(besides=hit))
            params = {"filter": where, "fields": fields, "confirmed": data.draw(st.booleans()) or not where}
            started = utcnow()
            out, error = self.attempt("BulkUpdate", "ItemBulkUpdateNode", params)
            what = f"BulkUpdate {params}"
            if "code" in fields and (len(hit) > 1 or (hit and fields["code"] in self.codes(besides=hit))):
                self.failed(error, f"{what} (duplicate code on {len(hit)} rows)")
                self.verify(started)
                return
            self.ok(error, what)
            assert out == {"updated": len(hit)}, (out, sorted(hit))
            expected = {i: {**r, **fields} if i in hit else r for i, r in self.ref.items()}
            self.verify(started, expected, touched=hit)

        @rule(data=st.data(), where=FILTERS)
        def bulk_delete(self, data: Any, where: dict[str, Any]) -> None:
            hit = {r["id"] for r in self.expected_rows(where)}
            confirmed = data.draw(st.booleans(), label="confirmed")
            started = utcnow()
            out, error = self.attempt(
                "BulkDelete", "ItemBulkDeleteNode", {"filter": where, "confirmed": confirmed}
            )
            if not where and not confirmed:
                self.failed(error, "BulkDelete with an empty filter, unconfirmed", ValidationError)
                self.verify(started)
                return
            self.ok(error, f"BulkDelete {where}")
            assert out == {"deleted": len(hit)}, (out, sorted(hit))
            self.verify(started, {i: r for i, r in self.ref.items() if i not in hit})

        @rule(
            data=st.data(),
            mode=st.sampled_from(["id", "new", "code"]),
            batch_size=st.sampled_from([None, 1, 2, 3]),
            update_fields=st.none() | st.lists(st.sampled_from(USER_FIELDS), unique=True),
        )
        def bulk_upsert(
            self, data: Any, mode: str, batch_size: int | None, update_fields: list[str] | None
        ) -> None:
            """mode 'id': rows carry ids (existing or new); 'new': no ids, so every row is new;
            'code': rows are matched on the unique code."""
            rows = self.bulk_rows(data, taken=set() if mode != "new" else self.codes())
            if mode == "code":
                for row in rows:  # codes of existing rows too, and repeated codes (the last wins)
                    row["code"] = data.draw(codes, label="code")
            if mode == "id":
                gaps = [i for i in range(1, self.max_id + 4) if i not in self.ref]
                pool = sorted(self.ref) + gaps
                for row in rows:
                    row["id"] = pick(data, pool, "id")
            params: dict[str, Any] = {"data": rows, "batch_size": batch_size, "progress": False}
            if mode == "code":
                params["conflict_on"] = ["code"]
            if update_fields is not None:
                params["update_fields"] = update_fields
            bad = self.maybe_bad(data, rows)
            started = utcnow()
            out, error = self.attempt("BulkUpsert", "ItemBulkUpsertNode", params)
            what = f"BulkUpsert {params}"
            if bad is not None:
                self.failed(error, f"{what} (a bad row)")
                self.verify(started)
                return
            expected, touched, created = copy.deepcopy(self.ref), set(), set()
            new_by_code: dict[str, dict[str, Any]] = {}
            inserted = updated = 0
            if mode == "new":
                input_codes = [r["code"] for r in rows]
                if len(set(input_codes)) < len(input_codes) or set(input_codes) & self.codes():
                    self.failed(error, f"{what} (duplicate code)")
                    self.verify(started)
                    return
                new_by_code = {r["code"]: full_row(r) for r in rows}
                inserted = len(rows)
                must, final_ok = True, True
            else:
                key = "id" if mode == "id" else "code"
                last: dict[Any, dict[str, Any]] = {}
                for row in rows:  # the documented rule: when a key repeats, the last row wins
                    last.pop(row[key], None)
                    last[row[key]] = row
                by_key = {(i if key == "id" else r["code"]): i for i, r in self.ref.items()}
                for k, row in last.items():
                    if k in by_key:
                        i = by_key[k]
                        allowed = [f for f in row if f in USER_FIELDS and f != key]
                        if update_fields is not None:
                            allowed = [f for f in allowed if f in update_fields]
                        expected[i] = {**expected[i], **{f: row[f] for f in allowed}}
                        touched.add(i)
                        updated += 1
                    elif key == "id":
                        expected[k] = full_row(row)
                        created.add(k)
                        inserted += 1
                    else:
                        new_by_code[k] = full_row(row)
                        inserted += 1
                final_codes = [r["code"] for r in expected.values()] + list(new_by_code)
                final_ok = len(set(final_codes)) == len(final_codes)
                # Must succeed when no order of writing the rows can collide on a code:
                # each code belongs to one key in the whole input, and no other row holds it now.
                owner: dict[str, set[Any]] = {}
                for row in rows:
                    owner.setdefault(row["code"], set()).add(row[key])
                held = {r["code"]: (i if key == "id" else r["code"]) for i, r in self.ref.items()}
                must = final_ok and all(
                    len(keys) == 1 and held.get(code, next(iter(keys))) in keys
                    for code, keys in owner.items()
                )
            if not final_ok:
                self.failed(error, f"{what} (duplicate code)")
                self.verify(started)
                return
            if error is not None and not must:  # an order-dependent collision: refusing is fine
                stats.failed += 1
                self.verify(started)
                return
            self.ok(error, what)
            assert out == {"inserted": inserted, "updated": updated}, (out, inserted, updated)
            self.verify(started, expected, created=created, touched=touched, new_by_code=new_by_code)

    return ItemMachine


def define_item(db: Any, name: str) -> str:
    """A fresh model (and table) ``name``, so every example starts empty, with ids from 1."""
    namespace = {
        "__annotations__": {
            "code": str,
            "name": str,
            "qty": int,
            "score": float | None,
            "tag": str | None,
            "active": bool,
        },
        **DEFAULTS,
        "__dataflow__": {"unique": [["code"]]},
    }
    db.model(type(name, (), namespace))
    return name


def test_random_operations_match_a_reference_model(db, backend, record_property):
    if backend == "mysql":  # its floats include infinities, which MySQL's DOUBLE refuses (test_mysql.py)
        pytest.skip("MySQL stores no infinite float; the other operations are covered per node")
    target = STEPS
    stats = Stats()
    machine = make_machine(db, stats)
    kinds = {
        "Create", "Read", "Update", "Delete", "Upsert", "List", "Count",
        "BulkCreate", "BulkUpdate", "BulkDelete", "BulkUpsert",
    }  # fmt: skip
    try:
        while (done := sum(stats.ops.values())) < target:
            run_state_machine_as_test(
                machine,
                settings=settings(
                    max_examples=max(1, min(10, -(-(target - done) // (STEPS_PER_EXAMPLE - 1)))),
                    stateful_step_count=STEPS_PER_EXAMPLE,
                    deadline=None,
                    database=None,
                    print_blob=True,
                    phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SHRINK else [])],
                    suppress_health_check=list(HealthCheck),
                ),
            )
    except BaseException:
        stats.divergences = max(stats.divergences, 1)  # an assertion about an output, say
        raise
    finally:  # the figures, also when a divergence stopped the run
        figures = {
            "backend": backend,
            "operations required": target,
            "operations compared": sum(stats.ops.values()),
            "full-table checks": stats.checks,
            "failed as the model said": stats.failed,
            "examples": stats.examples,
            "divergences": stats.divergences,
            "operations by kind": ", ".join(f"{kind} {n}" for kind, n in sorted(stats.ops.items())),
        }
        for name, value in figures.items():
            record_property(name, value)
        print(f"\n[stateful {backend}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    assert stats.divergences == 0
    assert sum(stats.ops.values()) >= target
    assert set(stats.ops) == kinds


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q", "-s"])
