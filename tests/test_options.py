"""The __dataflow__ options soft_delete, versioned, unique and indexes, on every backend.

multi_tenant has its own file (test_tenancy.py); access control is in test_access.py.
"""

from __future__ import annotations

import threading

import pytest
from conftest import spy_on_opens

from dataflow_lab import (
    ConcurrencyError,
    DataFlow,
    LocalRuntime,
    NotFoundError,
    ValidationError,
    WorkflowBuilder,
)


def run(db, *steps, **execute):
    workflow = WorkflowBuilder(db)
    for node_type, node_id, params in steps:
        workflow.add_node(node_type, node_id, params)
    results, _ = LocalRuntime().execute(workflow.build(), **execute)
    return results


def one(db, node_type, params=None, **execute):
    return run(db, (node_type, "node", params or {}), **execute)["node"]


# -- option parsing --------------------------------------------------------------
def test_an_unknown_option_is_an_error_that_lists_the_valid_ones():
    db = DataFlow()
    with pytest.raises(ValidationError) as info:

        @db.model
        class Note:
            text: str
            __dataflow__ = {"soft_delet": True}

    text = str(info.value)
    assert "Did you mean 'soft_delete'?" in text
    for option in ("unique", "indexes", "audit_log", "soft_delete", "versioned", "multi_tenant"):
        assert option in text


def test_a_flag_option_must_be_a_bool():
    db = DataFlow()
    with pytest.raises(ValidationError, match="'versioned'.*True or False"):

        @db.model
        class Note:
            text: str
            __dataflow__ = {"versioned": "yes"}


def test_an_option_refuses_a_class_that_declares_its_column_with_another_default():
    db = DataFlow()  # declaring `version: int` is fine (test_model.py); a default of 0 contradicts the option
    with pytest.raises(ValidationError, match="'version' has default 0"):

        @db.model
        class Note:
            text: str
            version: int = 0
            __dataflow__ = {"versioned": True}


def test_the_option_columns_are_managed_and_cannot_be_set():
    db = DataFlow()

    @db.model
    class Note:
        text: str
        __dataflow__ = {"versioned": True, "soft_delete": True}

    assert [f.name for f in Note.__dataflow_model__.fields] == [
        "id", "text", "version", "deleted_at", "created_at", "updated_at",
    ]  # fmt: skip
    assert "version" not in db.nodes["NoteCreateNode"].param_map()
    builder = WorkflowBuilder(db)
    builder.add_node("NoteUpdateNode", "u", {"id": 1, "version": 1, "fields": {"version": 9}})
    with pytest.raises(ValidationError, match="version"):
        builder.build()


def test_generated_nodes_show_the_option_parameters():
    db = DataFlow()

    @db.model
    class Note:
        text: str
        __dataflow__ = {"versioned": True, "soft_delete": True}

    @db.model
    class Plain:
        text: str

    update = {p["name"]: p for p in db.nodes["NoteUpdateNode"].describe()}
    assert update["version"]["required"] is True
    for op in ("Read", "List", "Count", "BulkUpdate"):
        assert "include_deleted" in db.nodes[f"Note{op}Node"].param_map(), op
    assert "hard" in db.nodes["NoteDeleteNode"].param_map()
    assert "hard" in db.nodes["NoteBulkDeleteNode"].param_map()
    for name, node in db.nodes.items():
        if name.startswith("Plain"):
            assert not {"version", "include_deleted", "hard"} & set(node.param_map()), name


# -- unique and indexes ------------------------------------------------------------
def test_composite_unique_and_indexes_work(db):
    @db.model
    class Seat:
        room: str
        number: int
        row: str = "A"
        __dataflow__ = {"unique": [["room", "number"]], "indexes": [["room", "row"], "number"]}

    one(db, "SeatCreateNode", {"room": "r1", "number": 1})
    one(db, "SeatCreateNode", {"room": "r1", "number": 2})
    one(db, "SeatCreateNode", {"room": "r2", "number": 1})
    with pytest.raises(Exception, match="(?i)unique|duplicate|constraint"):
        one(db, "SeatCreateNode", {"room": "r1", "number": 1})
    assert one(db, "SeatCountNode")["count"] == 3
    names = {i.name for i in db.table("Seat").table.indexes}
    assert names == {"ix_seats_room_row", "ix_seats_number"}
    out = one(
        db,
        "SeatBulkUpsertNode",
        {
            "data": [{"room": "r1", "number": 2, "row": "B"}, {"room": "r3", "number": 1}],
            "conflict_on": ["room", "number"],
        },
    )
    assert (out["inserted"], out["updated"]) == (1, 1)
    rows = one(db, "SeatListNode", {"filter": {"room": "r1", "number": 2}})["records"]
    assert rows[0]["row"] == "B"


# -- soft_delete -----------------------------------------------------------------
def define_note(db, **options):
    @db.model
    class Note:
        text: str
        tag: str = ""
        __dataflow__ = {"soft_delete": True, "unique": ["text"], **options}

    return Note


def test_soft_delete_marks_the_row_and_reads_hide_it(db):
    define_note(db)
    one(db, "NoteBulkCreateNode", {"data": [{"text": t} for t in ("a", "b", "c")]})
    assert one(db, "NoteDeleteNode", {"id": 2}) == {"id": 2, "deleted": True}
    assert one(db, "NoteDeleteNode", {"id": 2}) == {"id": 2, "deleted": False}  # already deleted
    with pytest.raises(NotFoundError):
        one(db, "NoteReadNode", {"id": 2})
    gone = one(db, "NoteReadNode", {"id": 2, "include_deleted": True})
    assert gone["text"] == "b" and gone["deleted_at"] is not None
    assert one(db, "NoteReadNode", {"id": 1})["deleted_at"] is None
    assert [r["text"] for r in one(db, "NoteListNode")["records"]] == ["a", "c"]
    assert one(db, "NoteListNode", {"include_deleted": True})["count"] == 3
    assert one(db, "NoteCountNode")["count"] == 2
    assert one(db, "NoteCountNode", {"filter": {"text": "b"}, "include_deleted": True})["count"] == 1


def test_update_and_bulk_update_leave_deleted_rows_alone(db):
    define_note(db)
    one(db, "NoteBulkCreateNode", {"data": [{"text": t} for t in ("a", "b", "c")]})
    one(db, "NoteDeleteNode", {"id": 1})
    with pytest.raises(NotFoundError):
        one(db, "NoteUpdateNode", {"id": 1, "fields": {"tag": "x"}})
    assert one(db, "NoteBulkUpdateNode", {"fields": {"tag": "y"}, "confirmed": True}) == {"updated": 2}
    assert one(db, "NoteReadNode", {"id": 1, "include_deleted": True})["tag"] == ""
    out = one(db, "NoteBulkUpdateNode", {"fields": {"tag": "z"}, "confirmed": True, "include_deleted": True})
    assert out == {"updated": 3}


def test_bulk_delete_marks_rows_and_hard_delete_removes_them(db):
    define_note(db)
    one(
        db,
        "NoteBulkCreateNode",
        {"data": [{"text": t, "tag": "old"} for t in ("a", "b", "c")] + [{"text": "d"}]},
    )
    assert one(db, "NoteBulkDeleteNode", {"filter": {"tag": "old"}}) == {"deleted": 3}
    assert one(db, "NoteBulkDeleteNode", {"filter": {"tag": "old"}}) == {"deleted": 0}  # nothing live matches
    assert one(db, "NoteCountNode")["count"] == 1
    assert one(db, "NoteCountNode", {"include_deleted": True})["count"] == 4
    assert one(db, "NoteBulkDeleteNode", {"filter": {"tag": "old"}, "hard": True}) == {"deleted": 3}
    assert one(db, "NoteDeleteNode", {"id": 4, "hard": True})["deleted"] is True
    assert one(db, "NoteCountNode", {"include_deleted": True})["count"] == 0


def test_upserts_revive_a_soft_deleted_row(db):
    define_note(db)
    one(db, "NoteBulkCreateNode", {"data": [{"text": "a"}, {"text": "b"}]})
    one(db, "NoteBulkDeleteNode", {"confirmed": True})
    out = one(db, "NoteUpsertNode", {"where": {"text": "a"}, "update": {"tag": "back"}})
    assert out["created"] is False
    assert out["record"]["deleted_at"] is None and out["record"]["tag"] == "back"
    out = one(db, "NoteBulkUpsertNode", {"data": [{"text": "b", "tag": "bulk"}], "conflict_on": ["text"]})
    assert (out["inserted"], out["updated"]) == (0, 1)
    rows = one(db, "NoteListNode")["records"]
    assert [(r["text"], r["tag"]) for r in rows] == [("a", "back"), ("b", "bulk")]


def test_sql_shows_the_soft_delete_predicate(db):
    define_note(db)
    assert "deleted_at IS NULL" in db.nodes["NoteListNode"].sql({"filter": {"tag": "x"}})
    assert "deleted_at IS NULL" not in db.nodes["NoteListNode"].sql({"include_deleted": True})
    assert "UPDATE" in db.nodes["NoteDeleteNode"].sql({"id": 1})
    assert "DELETE" in db.nodes["NoteDeleteNode"].sql({"id": 1, "hard": True})


# -- versioned ---------------------------------------------------------------------
def define_doc(db):
    @db.model
    class Doc:
        title: str
        body: str = ""
        __dataflow__ = {"versioned": True, "unique": ["title"]}

    return Doc


def test_version_starts_at_one_and_each_update_bumps_it(db):
    define_doc(db)
    assert one(db, "DocCreateNode", {"title": "a"})["version"] == 1
    one(db, "DocBulkCreateNode", {"data": [{"title": "b"}, {"title": "c"}]})
    assert one(db, "DocReadNode", {"id": 2})["version"] == 1
    assert one(db, "DocUpdateNode", {"id": 1, "version": 1, "fields": {"body": "x"}})["version"] == 2
    assert one(
        db, "DocBulkUpdateNode", {"filter": {"title": {"$in": ["a", "b"]}}, "fields": {"body": "y"}}
    ) == {"updated": 2}
    assert [r["version"] for r in one(db, "DocListNode")["records"]] == [3, 2, 1]
    out = one(db, "DocUpsertNode", {"where": {"title": "c"}, "update": {"body": "z"}})
    assert out["record"]["version"] == 2
    assert one(db, "DocUpsertNode", {"where": {"title": "d"}})["record"]["version"] == 1
    out = one(
        db,
        "DocBulkUpsertNode",
        {"data": [{"title": "c", "body": "w"}, {"title": "e"}], "conflict_on": ["title"]},
    )
    assert (out["inserted"], out["updated"]) == (1, 1)
    versions = {r["title"]: r["version"] for r in one(db, "DocListNode")["records"]}
    assert versions == {"a": 3, "b": 2, "c": 3, "d": 1, "e": 1}


def test_a_stale_version_raises_and_changes_nothing(db):
    define_doc(db)
    one(db, "DocCreateNode", {"title": "a", "body": "first"})
    one(db, "DocUpdateNode", {"id": 1, "version": 1, "fields": {"body": "second"}})
    with pytest.raises(ConcurrencyError) as info:
        one(db, "DocUpdateNode", {"id": 1, "version": 1, "fields": {"body": "lost"}})
    error = info.value
    assert (error.model, error.id, error.expected, error.actual) == ("Doc", 1, 1, 2)
    assert "version 2" in str(error) and "expected 1" in str(error)
    row = one(db, "DocReadNode", {"id": 1})
    assert (row["body"], row["version"]) == ("second", 2)
    with pytest.raises(NotFoundError):
        one(db, "DocUpdateNode", {"id": 99, "version": 1, "fields": {"body": "x"}})


def test_update_of_a_versioned_model_requires_the_version(db, monkeypatch):
    define_doc(db)
    one(db, "DocCreateNode", {"title": "a"})
    workflow = WorkflowBuilder(db)
    workflow.add_node("DocUpdateNode", "u", {"id": 1, "fields": {"body": "x"}})
    built = workflow.build()
    assert [str(i) for i in built.workflow_inputs] == ["u.version"]
    opens = spy_on_opens(monkeypatch, db)
    with pytest.raises(ValidationError, match="u.version"):
        LocalRuntime().execute(built)
    assert opens == []
    assert one(db, "DocReadNode", {"id": 1})["body"] != "x"
    assert LocalRuntime().execute(built, parameters={"u": {"version": 1}})[0]["u"]["body"] == "x"


def test_a_version_conflict_rolls_back_the_whole_workflow(db):
    define_doc(db)
    one(db, "DocCreateNode", {"title": "a"})
    one(db, "DocUpdateNode", {"id": 1, "version": 1, "fields": {"body": "moved on"}})
    with pytest.raises(ConcurrencyError):
        run(
            db,
            ("DocCreateNode", "new", {"title": "b"}),
            ("DocUpdateNode", "stale", {"id": 1, "version": 1, "fields": {"body": "x"}}),
        )
    assert one(db, "DocCountNode")["count"] == 1


def test_concurrent_updates_of_one_version_let_exactly_one_win(db):
    define_doc(db)
    one(db, "DocCreateNode", {"title": "a"})
    read = one(db, "DocReadNode", {"id": 1})
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def writer(name: str) -> None:
        workflow = WorkflowBuilder(db)
        workflow.add_node(
            "DocUpdateNode", "u", {"id": 1, "version": read["version"], "fields": {"body": name}}
        )
        built = workflow.build()
        barrier.wait()
        try:
            outcomes[name] = LocalRuntime().execute(built)[0]["u"]
        except Exception as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [n for n, o in outcomes.items() if isinstance(o, dict)]
    losers = [o for o in outcomes.values() if not isinstance(o, dict)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert isinstance(losers[0], ConcurrencyError), losers[0]
    row = one(db, "DocReadNode", {"id": 1})
    assert (row["body"], row["version"]) == (winners[0], 2)


# -- the options together ------------------------------------------------------------
def test_all_options_together_with_the_audit_log(db):
    @db.model
    class Page:
        slug: str
        body: str = ""
        __dataflow__ = {
            "soft_delete": True,
            "versioned": True,
            "multi_tenant": True,
            "audit_log": True,
            "unique": ["slug"],
        }

    with db.tenant("acme"):
        page = one(db, "PageCreateNode", {"slug": "home"})
        assert (page["tenant_id"], page["version"], page["deleted_at"]) == ("acme", 1, None)
        page = one(db, "PageUpdateNode", {"id": page["id"], "version": 1, "fields": {"body": "hi"}})
        assert page["version"] == 2
        one(db, "PageBulkDeleteNode", {"filter": {"slug": "home"}})
        assert one(db, "PageCountNode")["count"] == 0
        with pytest.raises(NotFoundError):  # a deleted row cannot be updated, whatever its version
            one(db, "PageUpdateNode", {"id": page["id"], "version": 2, "fields": {"body": "x"}})
        out = one(
            db, "PageBulkUpsertNode", {"data": [{"slug": "home", "body": "back"}], "conflict_on": ["slug"]}
        )
        assert (out["inserted"], out["updated"]) == (0, 1)
        page = one(db, "PageReadNode", {"id": page["id"]})
        assert (page["body"], page["version"], page["deleted_at"]) == ("back", 3, None)
    with db.tenant("globex"):
        assert one(db, "PageCountNode", {"include_deleted": True})["count"] == 0
        assert one(db, "PageUpsertNode", {"where": {"slug": "home"}})["record"]["id"] != page["id"]
    operations = [
        e.operation for e in db.audit("Page", page["id"], tenant="acme")
    ]  # audit reads are tenant-scoped
    assert operations == ["create", "update", "bulk_delete", "bulk_upsert"]
