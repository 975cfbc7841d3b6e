"""Fault test f: SQL-injection payloads, as values and as identifiers, on every backend.

Payloads are built from classic fragments (quotes of every kind, comments,
semicolons, UNION SELECT, DROP TABLE, placeholders of every driver, NUL bytes,
backslashes, unicode look-alikes...). Each backend gets:

- every payload as a **value**: written by BulkCreate, Create and Update,
  read back by List and Read, which must return it exactly; used as a filter
  value, which must match exactly the rows holding it;
- every payload as an **identifier**: a field name of a model, the table name,
  Create parameters, Update ``fields`` keys, filter keys (also nested, and as
  operators), ``order_by``, ``conflict_on``, ``update_fields`` and bulk row
  keys. Each one must be refused with ``ValidationError``;
- and afterwards the tables must be intact: the same tables and columns, the
  same row counts, and the sentinel table with its row.

PostgreSQL cannot store NUL in text; there a payload with NUL must be refused
cleanly (a DataFlowError naming the node) and change nothing.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from dataflow_lab import DataFlowError, LocalRuntime, ValidationError, WorkflowBuilder, _loop
from dataflow_lab.model import IDENTIFIER

MIN_PAYLOADS = 1_000
SAMPLE_EVERY = 20  # every payload goes through the bulk nodes; this share also through single-row ones
TABLES = ("victims", "sentinels")
CHUNK = 250  # nodes of one kind per workflow

FRAGMENTS = [
    "'", "''", '"', '""', "`", "\\", "\\'", "\\\\'", '\\"', ";", ";;", "--", "-- -", "#", "/*", "*/",
    "/*!50000", "*/;", "%", "_", "%%", "?", "??", "$1", "$2::text", "$$", "$tag$", "%s", "%(id)s",
    "%(text)s", ":id", ":text", "@x", "{0}", "{}", "\n", "\r\n", "\t", "\x1a", "\x08", "\x00",
    "a\x00b", "\u2019", "\u2018", "\u02bc", "\uff07", "\uff02", "\u2033", "\u201b", "\u275b", "\u2028",
    "\ufeff", "\u200b", "\U0001f642", "é", "ß", "\u0130", " ", ")", "(", ",", "*", "=", "||", "&&",
    "0x27", "char(39)", "CHR(39)", "E'\\x27'", "N'", "U&'\\0027'", "X'27'", "\\x27", "\\u0027",
    "%27", "&#39;", "NULL", "null", "\\N", "1e309", "-0",
]  # fmt: skip

TEMPLATES = [
    "' OR '1'='1", "' OR 1=1 --", '" OR "1"="1', "' OR ''='", "1 OR 1=1", "admin'--", "admin' #",
    "admin'/*", "') OR ('1'='1", "')) OR (('1'='1", "' OR 1=1 LIMIT 1 --", "'; DROP TABLE {t}; --",
    "1; DROP TABLE {t}", '"; DROP TABLE {t}; --', "'); DROP TABLE {t}; --", "`; DROP TABLE {t}; --",
    "Robert'); DROP TABLE {t};--", "' UNION SELECT * FROM {t} --", "' UNION SELECT NULL, NULL, NULL --",
    "1 UNION ALL SELECT name FROM sqlite_master --", "' UNION SELECT table_name FROM information_schema.tables --",
    "'; DELETE FROM {t}; --", "'; UPDATE {t} SET text = 'pwned'; --",
    "'; INSERT INTO {t} (text) VALUES ('pwned'); --", "'; TRUNCATE {t}; --",
    "'; ALTER TABLE {t} DROP COLUMN text; --", "'; CREATE TABLE pwned (x int); --",
    "'; SELECT pg_sleep(10); --", "' AND 1=(SELECT COUNT(*) FROM {t}) --", "'||(SELECT version())||'",
    "'; ATTACH DATABASE '/tmp/pwned.db' AS pwned; --", "'; COPY {t} TO '/tmp/pwned.csv'; --",
    "'; PRAGMA writable_schema=1; --", "$$; DROP TABLE {t}; $$", "$1; DROP TABLE {t}", "?; DROP TABLE {t}",
    "%s; DROP TABLE {t}", "\\'; DROP TABLE {t}; --", "'/**/OR/**/1=1/**/--", "' oR 1=1 --",
    "%27%20OR%201=1", "&#39; OR 1=1", "' AND SLEEP(5) --", "1' WAITFOR DELAY '0:0:5' --",
    "'; EXEC xp_cmdshell('dir'); --", "' OR text LIKE '%", "'; COMMIT; DROP TABLE {t}; --",
    "'; ROLLBACK; --", "'; SET search_path TO pwned; --", "'; DETACH DATABASE main; --",
    "'; INSTALL httpfs; LOAD httpfs; --", "' OR EXISTS(SELECT 1 FROM {t}) --", "{t}", '"{t}"', "{t}.text",
    '"{t}"."text"', "text FROM {t}; --", "id) VALUES (1); DROP TABLE {t}; --",
]  # fmt: skip

WRAPPERS = ["'", '"', ";", "--", "/*", "\\", "\u2019", "\x00", "$1", "?", "%s", " "]

# Identifier-shaped payloads: near misses of the real names, and names no database should see.
IDENTIFIER_EXTRAS = [
    "", " ", "text ", " text", "text;", "text--", 'text"', "text'", "Text", "TEXT", "te xt", "text\n",
    "text\x00", "a b", "1abc", "x" * 64, "\u00f1ame", "\u540d\u524d", "victims.text", '"text"',
    "(text)", "text)", "*", "$where", "$text", "__class__", "__dict__", "text AS x", "text, id",
    "id; DROP TABLE victims", "text COLLATE \"C\"", "lower(text)", "1", "-1", "text::int",
    "text/**/", "text`", "[text]", "text -- ", "$or", "$and ", "$not\x00",
]  # fmt: skip

FIELDS = ("text", "note", "meta", "raw")


def build_payloads() -> list[str]:
    base = [t.format(t=table) for t in TEMPLATES for table in TABLES]
    combos = [w + b for b in base for w in WRAPPERS] + [b + w for b in base for w in WRAPPERS]
    pairs = [a + b for a, b in itertools.product(FRAGMENTS[:24], repeat=2)]
    seen: dict[str, None] = {}
    for p in [*FRAGMENTS, *base, *combos, *pairs]:
        seen.setdefault(p, None)
    return list(seen)


PAYLOADS = build_payloads()
CLASSIC = {*FRAGMENTS, *(t.format(t=table) for t in TEMPLATES for table in TABLES)}
FEW = CLASSIC | set(IDENTIFIER_EXTRAS)  # these go into every identifier context
IDENTIFIER_PAYLOADS = list(dict.fromkeys([*IDENTIFIER_EXTRAS, *PAYLOADS]))


# -- helpers ------------------------------------------------------------------------------
def define_models(db: Any) -> None:
    @db.model
    class Victim:
        text: str
        note: str | None = None
        meta: dict | None = None
        raw: bytes | None = None

    @db.model
    class Sentinel:
        name: str


def run_workflow(db: Any, build: Any) -> dict[str, Any]:
    workflow = WorkflowBuilder(db)
    build(workflow)
    results, _ = LocalRuntime().execute(workflow.build())
    return results


def one(db: Any, node_type: str, params: dict[str, Any]) -> Any:
    return run_workflow(db, lambda w: w.add_node(node_type, "n", params))["n"]


def raw_fetch(db: Any, sql: str) -> list[tuple]:
    """A workflow-free query on the DataFlow's own database (its in-memory SQLite too)."""

    async def fetch() -> list[tuple]:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await dialect.release(conn)

    return _loop.run(fetch())


def schema_snapshot(db: Any) -> list[tuple]:
    """Every table and column this database shows (the tables must stay exactly these)."""
    if db.dialect == "sqlite":
        return raw_fetch(db, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
    return raw_fetch(
        db,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = {'DATABASE()' if db.dialect == 'mysql' else 'current_schema()'} "
        "ORDER BY table_name, column_name",
    )


def table_counts(db: Any) -> dict[str, int]:
    return {t: raw_fetch(db, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}


def value_row(p: str) -> dict[str, Any]:
    return {"text": p, "note": p[::-1], "meta": {"k": p, p: [p]}, "raw": p.encode("utf-8")}


def refused(call: Any) -> bool:
    """True when ``call()`` raises ValidationError; any other outcome fails the test."""
    try:
        call()
    except ValidationError:
        return True
    except Exception as exc:  # noqa: BLE001 - the point is to name the wrong exception
        raise AssertionError(f"expected ValidationError, got {type(exc).__name__}: {exc}") from exc
    return False


# -- the test ---------------------------------------------------------------------------------
@pytest.mark.mysql_subset  # MySQL: every payload in bulk and in filters, a quarter of the single-row sample
def test_payloads_round_trip_as_values_are_refused_as_identifiers_and_tables_stay_intact(
    db, backend, record_property
):
    assert len(PAYLOADS) >= MIN_PAYLOADS
    define_models(db)
    assert one(db, "SentinelCreateNode", {"name": "sentinel"})["id"] == 1
    one(db, "VictimCreateNode", {"text": "control"})
    schema_before = schema_snapshot(db)

    storable = [p for p in PAYLOADS if "\x00" not in p] if backend == "postgres" else list(PAYLOADS)
    nul = [p for p in PAYLOADS if p not in set(storable)]
    figures: dict[str, Any] = {}

    def note(name: str, value: Any) -> None:  # recorded at once, so a failure keeps the figures so far
        figures[name] = value
        record_property(name, value)

    note("backend", backend)
    note("payloads tried", len(set(PAYLOADS) | set(IDENTIFIER_PAYLOADS)))
    note("value payloads", len(storable))

    # 1. BulkCreate every payload at once; List returns each exactly.
    out = one(
        db,
        "VictimBulkCreateNode",
        {"data": [value_row(p) for p in storable], "return_ids": True, "progress": False},
    )
    assert out["inserted"] == len(storable)
    bulk_ids = dict(zip(out["ids"], storable))
    listed = {
        r["id"]: r for r in one(db, "VictimListNode", {"filter": {"id": {"$in": out["ids"]}}})["records"]
    }
    mismatched = [
        (p, listed.get(i)) for i, p in bulk_ids.items() if {f: listed[i][f] for f in FIELDS} != value_row(p)
    ]
    assert not mismatched, (
        f"{len(mismatched)} payloads did not round-trip through BulkCreate/List: {mismatched[:3]}"
    )

    # 2. Filters with payload values match exactly the rows holding them: $in and $or over
    #    chunks of payloads, one statement each (test_a_long_in_list... takes them all at once).
    rows_by_text = {p: i for i, p in bulk_ids.items()}
    for start in range(0, len(storable), CHUNK):
        part = storable[start : start + CHUNK]
        want = sorted(rows_by_text[p] for p in part)
        for where in (
            {"text": {"$in": part}},
            {"$or": [{"text": p} for p in part]},
            {"note": {"$in": [p[::-1] for p in part]}, "raw": {"$in": [p.encode() for p in part]}},
        ):
            got = [r["id"] for r in one(db, "VictimListNode", {"filter": where})["records"]]
            assert got == want, (
                f"a filter over payloads {start}..{start + len(part)} matched {len(got)} rows, not {len(want)}: {sorted(set(got) ^ set(want))[:5]}"
            )

    # 3. The single-row nodes, on the classic payloads and every SAMPLE_EVERY-th other one:
    #    Create then Read (connected), Update then Read, and a Count per payload.
    every = SAMPLE_EVERY * (4 if backend == "mysql" else 1)
    sample = [p for k, p in enumerate(storable) if p in CLASSIC or k % every == 0]
    for start in range(0, len(sample), CHUNK):
        part = sample[start : start + CHUNK]

        def build(w: WorkflowBuilder, part: list[str] = part) -> None:
            for k, p in enumerate(part):
                w.add_node("VictimCreateNode", f"c{k}", {"text": p, "note": p, "raw": p.encode()})
                w.add_node("VictimUpdateNode", f"u{k}", {"fields": value_row(p)})
                w.add_node("VictimReadNode", f"r{k}", {})
                w.add_node("VictimCountNode", f"n{k}", {"filter": {"text": p, "raw": {"$ne": b""}}})
                w.add_connection(f"c{k}", "id", f"u{k}", "id")
                w.add_connection(f"u{k}", "id", f"r{k}", "id")
                w.add_connection(f"r{k}", "id", f"n{k}", "filter.id.$ne")

        results = run_workflow(db, build)
        for k, p in enumerate(part):
            created, updated, read = results[f"c{k}"], results[f"u{k}"], results[f"r{k}"]
            assert {f: created[f] for f in FIELDS} == {
                "text": p,
                "note": p,
                "meta": None,
                "raw": p.encode(),
            }, p
            assert read == updated and {f: read[f] for f in FIELDS} == value_row(p), (p, read)
            assert results[f"n{k}"] == {"count": 1}, (p, results[f"n{k}"])  # the BulkCreate row only
    note("single-row payloads (Create, Update, Read, Count)", len(sample))

    # 4. NUL on PostgreSQL: refused cleanly, nothing written.
    nul_refused = 0
    if nul:
        before = table_counts(db)
        for p in nul[:25]:
            for node_type, params in (
                ("VictimCreateNode", {"text": p}),
                ("VictimBulkCreateNode", {"data": [{"text": "fine"}, {"text": p}], "progress": False}),
            ):
                with pytest.raises(DataFlowError) as caught:
                    one(db, node_type, params)
                assert "'n'" in str(caught.value), f"the error does not name the node: {caught.value}"
                nul_refused += 1
        assert table_counts(db) == before
        note("NUL payloads refused (PostgreSQL stores no NUL in text)", nul_refused)

    # 5. Identifiers: every payload into the contexts the issue names, and the classic and
    #    identifier-shaped ones into every context.
    counts_before = table_counts(db)
    tried = try_identifiers(db, IDENTIFIER_PAYLOADS, every_context=FEW)
    # Bulk row keys are checked while the rows are written: a sample, one workflow each.
    for p in IDENTIFIER_PAYLOADS[:: max(1, len(IDENTIFIER_PAYLOADS) // 100)]:
        for node_type in ("VictimBulkCreateNode", "VictimBulkUpsertNode"):
            data = [{"text": "ok"}, {"text": "x", p: "pwned"}]
            call = lambda t=node_type, d=data: one(db, t, {"data": d, "progress": False})  # noqa: E731
            assert refused(call), f"{node_type} accepted a row with the key {p!r}"
            tried += 1
    assert table_counts(db) == counts_before
    note("identifier payloads", len(IDENTIFIER_PAYLOADS))
    note("identifier attempts refused with ValidationError", tried)
    note("identifier attempts accepted", 0)

    # 6. Intact: the same tables and columns, the same rows, the sentinel untouched.
    assert schema_snapshot(db) == schema_before
    assert table_counts(db) == {"victims": 1 + len(storable) + len(sample), "sentinels": 1}
    sentinel = one(db, "SentinelReadNode", {"id": 1})
    assert sentinel["name"] == "sentinel"
    assert one(db, "VictimCountNode", {"filter": {"text": "pwned"}}) == {"count": 0}

    note("tables intact", "yes")
    print(f"\n[injection {backend}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def test_a_long_in_list_of_payloads_matches_exactly_their_rows(db, backend, record_property):
    """$in / $nin over every payload at once (a list this long travels as one array parameter)."""
    define_models(db)
    storable = [p for p in PAYLOADS if "\x00" not in p] if backend == "postgres" else list(PAYLOADS)
    record_property("backend", backend)
    record_property("payloads in one $in", len(storable))
    data = [{"text": "control"}, *({"text": p} for p in storable)]
    assert one(db, "VictimBulkCreateNode", {"data": data, "progress": False}) == {"inserted": len(data)}
    found = {r["text"] for r in one(db, "VictimListNode", {"filter": {"text": {"$in": storable}}})["records"]}
    missed = [p for p in storable if p not in found]
    assert not missed, f"$in over {len(storable)} payloads missed {len(missed)} of them, e.g. {missed[:4]}"
    others = [
        r["text"] for r in one(db, "VictimListNode", {"filter": {"text": {"$nin": storable}}})["records"]
    ]
    assert others == ["control"], f"$nin over every payload returned {len(others)} rows: {others[:4]}"


def try_identifiers(db: Any, payloads: list[str], *, every_context: set[str]) -> int:
    """Send each payload into the identifier contexts; each must be refused. Returns attempts."""
    tried = 0
    for p in payloads:
        assert p not in ("id", *FIELDS, "created_at", "updated_at")
        for what, call in identifier_attempts(db, p, every_context=p in every_context):
            assert refused(call), f"{what} with the identifier {p!r} was accepted"
            tried += 1
    return tried


def identifier_attempts(db: Any, p: str, *, every_context: bool) -> list[tuple[str, Any]]:
    """(what, call) pairs that use ``p`` as an identifier; each call must raise ValidationError.

    Every payload goes into the contexts the issue names (a model's field names, Create and
    Update field keys, filter keys, order_by); with ``every_context``, into all the others too.
    """

    def node(node_type: str, params: dict[str, Any]) -> Any:
        def build() -> Any:  # add_node keeps what it finds wrong; build() reports it
            builder = WorkflowBuilder(db)
            builder.add_node(node_type, "n", params)
            return builder.build()

        return build

    def model(annotations: dict[str, Any], name: str = "Evil", **attrs: Any) -> Any:
        return lambda: db.model(type(name, (), {"__annotations__": annotations, **attrs}))

    valid_name = IDENTIFIER.match(p)  # NULL, Text...: a fine name for a new model (it is quoted)
    attempts = [
        ("a Create parameter", node("VictimCreateNode", {"text": "x", p: "x"})),
        ("an Update fields key", node("VictimUpdateNode", {"id": 1, "fields": {p: "x"}})),
        ("a filter key", node("VictimListNode", {"filter": {p: "x"}})),
        ("a nested filter key", node("VictimCountNode", {"filter": {"$or": [{"text": "x"}, {p: 1}]}})),
        ("an order_by name", node("VictimListNode", {"order_by": p})),
        ("an order_by mapping key", node("VictimListNode", {"order_by": [{p: -1}]})),
    ]
    if not valid_name:
        attempts.append(("a model field name", model({p: str})))
    if not every_context:
        return attempts
    attempts += [
        ("a unique constraint", model({"ok": str}, __dataflow__={"unique": [[p]]})),
        ("an index", model({"ok": str}, __dataflow__={"indexes": [p]})),
        (
            "a filter operator",
            node("VictimListNode", {"filter": {"text": {p if p.startswith("$") else f"${p}": 1}}}),
        ),
        (
            "a BulkUpdate filter key",
            node("VictimBulkUpdateNode", {"filter": {p: 1}, "fields": {"note": "x"}}),
        ),
        ("a BulkUpdate fields key", node("VictimBulkUpdateNode", {"filter": {"id": 1}, "fields": {p: "x"}})),
        ("a BulkDelete filter key", node("VictimBulkDeleteNode", {"filter": {"$not": {p: None}}})),
        ("an Upsert where key", node("VictimUpsertNode", {"where": {p: "x"}})),
        ("an order_by list item", node("VictimListNode", {"order_by": ["text", f"-{p}"]})),
        ("an order_by direction", node("VictimListNode", {"order_by": [{"text": p}]})),
        ("conflict_on", node("VictimBulkUpsertNode", {"data": [], "conflict_on": [p]})),
        ("update_fields", node("VictimBulkUpsertNode", {"data": [], "update_fields": [p]})),
    ]
    if not valid_name:
        attempts += [
            ("a second model field name", model({"ok": str, p: int}) if p[:1] != "_" else model({p: str})),
            ("a table name", model({"ok": str}, __tablename__=p or " ")),  # "" means the default
        ]
        if "\x00" not in p:  # Python itself refuses NUL in a class name
            attempts.append(("a model class name", model({"ok": str}, name=p)))
    return attempts
