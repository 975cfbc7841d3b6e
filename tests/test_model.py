"""@db.model: table names, generated fields, refused declarations, awkward field names."""

from __future__ import annotations

import datetime as dt
import sqlite3
import typing
import uuid
from typing import Any, Optional

import pytest

from dataflow_lab import DataFlow, DataFlowError, LocalRuntime, ValidationError, WorkflowBuilder, _loop
from dataflow_lab.model import table_name_for


def run_one(db, node_type, params):
    workflow = WorkflowBuilder(db)
    workflow.add_node(node_type, "node", params)
    results, _ = LocalRuntime().execute(workflow.build())
    return results["node"]


def make_class(name, annotations, namespace=None):
    """A class with the given name and annotations (for names a class statement can't vary)."""
    return type(name, (), {"__annotations__": dict(annotations), **(namespace or {})})


# -- table names --------------------------------------------------------------------
TABLE_NAMES = [
    ("User", "users"),
    ("Person", "people"),
    ("Category", "categories"),
    ("OrderStatus", "order_statuses"),
    ("Address", "addresses"),
    ("Box", "boxes"),
    ("Church", "churches"),
    ("Wish", "wishes"),
    ("Key", "keys"),
    ("Child", "children"),
    ("BlogPost", "blog_posts"),
    ("HTTPRequest", "http_requests"),
]


@pytest.mark.parametrize("class_name, table", TABLE_NAMES)
def test_table_names_are_snake_case_plurals(class_name, table):
    assert table_name_for(class_name) == table


@pytest.mark.parametrize("class_name, table", TABLE_NAMES)
def test_a_model_gets_the_snake_case_plural_table_name(class_name, table):
    db = DataFlow()
    db.model(make_class(class_name, {"label": str}))
    assert db.models[class_name].table_name == table
    db.close()


def test_tablename_overrides_the_generated_name(db):
    @db.model
    class Person:
        __tablename__ = "staff_members"
        name: str

    assert db.models["Person"].table_name == "staff_members"
    row = run_one(db, "PersonCreateNode", {"name": "Ann"})
    assert run_one(db, "PersonListNode", {})["records"] == [row]


def test_the_generated_and_overridden_table_names_are_the_real_tables(tmp_path):
    path = tmp_path / "names.db"
    db = DataFlow(f"sqlite:///{path}")

    @db.model
    class OrderStatus:
        label: str

    @db.model
    class Person:
        __tablename__ = "staff_members"
        name: str

    run_one(db, "OrderStatusCreateNode", {"label": "open"})
    run_one(db, "PersonCreateNode", {"name": "Ann"})
    db.close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"order_statuses", "staff_members"} <= tables
        assert "people" not in tables
        assert conn.execute("SELECT label FROM order_statuses").fetchall() == [("open",)]


def test_an_invalid_tablename_is_refused(db):
    with pytest.raises(ValidationError, match="bad name"):

        @db.model
        class Thing:
            __tablename__ = "bad name"
            label: str


def test_two_models_sharing_a_table_are_refused(db):
    @db.model
    class Person:
        name: str

    with pytest.raises(ValidationError, match="people"):

        @db.model
        class Human:
            __tablename__ = "people"
            name: str


# -- generated fields -----------------------------------------------------------------
def test_every_model_gets_id_created_at_and_updated_at(db):
    @db.model
    class User:
        name: str

    schema = db.models["User"]
    assert [f.name for f in schema.fields] == ["id", "name", "created_at", "updated_at"]
    assert schema.id_field.primary_key is True
    assert schema.by_name["id"].type.python is int
    assert schema.by_name["created_at"].type.python is dt.datetime
    assert schema.by_name["updated_at"].type.python is dt.datetime


def test_generated_fields_appear_in_created_rows_but_are_not_create_parameters(db):
    @db.model
    class User:
        name: str

    names = {p.name for p in db.nodes["UserCreateNode"].parameters}
    assert names == {"name"}
    row = run_one(db, "UserCreateNode", {"name": "Ann"})
    assert set(row) == {"id", "name", "created_at", "updated_at"}
    assert row["id"] == 1


def test_generated_fields_cannot_be_set_on_create(db):
    @db.model
    class User:
        name: str

    for field in ("id", "created_at", "updated_at"):
        builder = WorkflowBuilder(db)
        builder.add_node("UserCreateNode", "c", {"name": "Ann", field: 1})
        with pytest.raises(ValidationError, match=field):
            builder.build()


def test_generated_fields_cannot_be_changed_by_update(db):
    @db.model
    class User:
        name: str

    for field in ("id", "created_at", "updated_at"):
        builder = WorkflowBuilder(db)
        builder.add_node("UserUpdateNode", "u", {"id": 1, "fields": {field: 1}})
        with pytest.raises(ValidationError, match=field):
            builder.build()


def test_an_int_id_annotation_is_the_generated_integer_id(db):
    @db.model
    class Item:
        id: int
        label: str

    assert run_one(db, "ItemCreateNode", {"label": "a"})["id"] == 1
    assert {p.name for p in db.nodes["ItemCreateNode"].parameters} == {"label"}


def test_a_str_id_is_a_required_create_parameter(db):
    @db.model
    class Item:
        id: str
        label: str

    params = {p.name: p for p in db.nodes["ItemCreateNode"].parameters}
    assert params["id"].required is True
    assert run_one(db, "ItemCreateNode", {"id": "k-1", "label": "a"})["id"] == "k-1"


def test_a_duplicate_str_id_is_refused_and_nothing_changes(db):
    @db.model
    class Item:
        id: str
        label: str

    run_one(db, "ItemCreateNode", {"id": "k", "label": "first"})
    with pytest.raises(DataFlowError):
        run_one(db, "ItemCreateNode", {"id": "k", "label": "second"})
    assert [r["label"] for r in run_one(db, "ItemListNode", {})["records"]] == ["first"]


# -- refused declarations ---------------------------------------------------------------
@pytest.mark.parametrize(
    "field, annotation, option, expected",
    [
        ("created_at", str, None, "datetime"),
        ("updated_at", int, None, "datetime"),
        ("created_at", Optional[dt.date], None, "datetime"),  # noqa: UP045
        ("deleted_at", int, "soft_delete", "datetime"),
        ("version", str, "versioned", "int"),
        ("version", float, "versioned", "int"),
        ("tenant_id", int, "multi_tenant", "str"),
    ],
)
def test_a_managed_column_declared_with_another_type_is_refused_saying_what_is_expected(
    db, field, annotation, option, expected
):
    namespace = {"__dataflow__": {option: True}} if option else {}
    with pytest.raises(ValidationError) as info:
        db.model(make_class("Thing", {"label": str, field: annotation}, namespace))
    message = str(info.value)
    assert f"'{field}'" in message and f"manages '{field}' as {expected}" in message
    assert f"{field}: {expected}" in info.value.hint
    assert "Thing" not in db.models


@pytest.mark.parametrize(
    "field, default, option", [("created_at", dt.datetime(2020, 1, 1), None), ("version", 5, "versioned")]
)
def test_a_managed_column_declared_with_a_default_is_refused(db, field, default, option):
    annotation = dt.datetime if field == "created_at" else int
    namespace = {field: default, **({"__dataflow__": {option: True}} if option else {})}
    with pytest.raises(ValidationError, match=f"'{field}' has default"):
        db.model(make_class("Thing", {"label": str, field: annotation}, namespace))


def test_created_at_and_updated_at_declared_as_datetime_are_accepted_and_still_managed(db):
    @db.model
    class Plain:
        label: str

    @db.model
    class Stamped:
        created_at: dt.datetime
        label: str
        updated_at: Optional[dt.datetime] = None  # noqa: UP045

    plain, stamped = db.models["Plain"], db.models["Stamped"]
    assert [f.name for f in stamped.fields] == [f.name for f in plain.fields]
    assert stamped.by_name["created_at"] == plain.by_name["created_at"]  # generated, not nullable
    row = run_one(db, "StampedCreateNode", {"label": "a"})
    assert isinstance(row["created_at"], dt.datetime) and row["updated_at"] == row["created_at"]
    with pytest.raises(ValidationError, match="unknown parameter 'created_at'"):
        run_one(db, "StampedCreateNode", {"label": "b", "created_at": dt.datetime(2020, 1, 1)})
    later = run_one(db, "StampedUpdateNode", {"id": row["id"], "fields": {"label": "c"}})
    assert later["updated_at"] >= row["updated_at"] and later["created_at"] == row["created_at"]
    with pytest.raises(ValidationError, match="cannot be set"):
        run_one(db, "StampedUpdateNode", {"id": row["id"], "fields": {"updated_at": dt.datetime(2020, 1, 1)}})


def test_option_columns_declared_with_their_types_are_accepted_and_managed(db):
    @db.model
    class Note:
        text: str
        version: int = 1
        deleted_at: Optional[dt.datetime] = None  # noqa: UP045
        tenant_id: str
        __dataflow__ = {"versioned": True, "soft_delete": True, "multi_tenant": True}

    assert all(db.models["Note"].by_name[n].generated for n in ("version", "deleted_at", "tenant_id"))
    with db.tenant("acme"):
        row = run_one(db, "NoteCreateNode", {"text": "a"})
        assert (row["version"], row["deleted_at"], row["tenant_id"]) == (1, None, "acme")
        row = run_one(db, "NoteUpdateNode", {"id": row["id"], "version": 1, "fields": {"text": "b"}})
        assert row["version"] == 2
        run_one(db, "NoteDeleteNode", {"id": row["id"]})
        assert run_one(db, "NoteListNode", {})["count"] == 0
        assert run_one(db, "NoteListNode", {"include_deleted": True})["records"][0]["deleted_at"] is not None


def test_deleted_at_and_version_without_their_options_are_plain_user_fields(db):
    @db.model
    class Doc:
        name: str
        version: int = 0
        deleted_at: Optional[dt.datetime] = None  # noqa: UP045
        __dataflow__ = {"unique": [["name"]]}

    model = db.models["Doc"]
    assert not model.soft_delete and not model.versioned
    assert not model.by_name["version"].generated and not model.by_name["deleted_at"].generated
    when = dt.datetime(2021, 5, 6, tzinfo=dt.UTC)
    row = run_one(db, "DocCreateNode", {"name": "a", "version": 7, "deleted_at": when})
    assert (row["version"], row["deleted_at"]) == (7, when)
    # BulkUpsert sets a user's version (it bumps only versioned's) and keeps a user's deleted_at
    data = [{"name": "a", "version": 3}]
    assert run_one(db, "DocBulkUpsertNode", {"data": data, "conflict_on": ["name"]}) == {
        "inserted": 0,
        "updated": 1,
    }
    row = run_one(db, "DocReadNode", {"id": row["id"]})
    assert (row["version"], row["deleted_at"]) == (3, when)
    assert run_one(db, "DocDeleteNode", {"id": row["id"]})["deleted"] is True  # a real delete
    assert run_one(db, "DocCountNode", {})["count"] == 0


@pytest.mark.parametrize("annotation", [float, bytes, Optional[int]])  # noqa: UP045
def test_an_id_that_is_neither_int_str_nor_uuid_is_refused(db, annotation):
    with pytest.raises(ValidationError, match="'id'.*UUID"):
        db.model(make_class("Thing", {"id": annotation, "label": str}))


class Point:
    def __init__(self, x: int, y: int):
        self.x, self.y = x, y


UNSUPPORTED = [
    ("coords", set),
    ("pair", tuple),
    ("complex_number", complex),
    ("point", Point),
    ("anything", Any),
    ("either", typing.Union[int, str]),  # noqa: UP007
    ("either_or_none", int | str | None),
    ("stamp", dt.time),
]


@pytest.mark.parametrize("field, annotation", UNSUPPORTED, ids=[f for f, _ in UNSUPPORTED])
def test_an_unsupported_type_is_refused_naming_the_field(db, field, annotation):
    with pytest.raises(ValidationError) as info:
        db.model(make_class("Thing", {"label": str, field: annotation}))
    message = str(info.value)
    assert f"'{field}'" in message
    assert "Thing" in message
    assert "str, int" in message  # the error lists the supported types


def test_a_refused_model_generates_no_nodes(db):
    with pytest.raises(ValidationError):
        db.model(make_class("Thing", {"label": str, "coords": set}))
    assert "ThingCreateNode" not in db.nodes
    assert "Thing" not in db.models


def test_a_model_without_fields_is_refused(db):
    with pytest.raises(ValidationError, match="Empty"):
        db.model(make_class("Empty", {}))


def test_a_default_of_the_wrong_type_is_refused_naming_the_field(db):
    with pytest.raises(ValidationError, match="retries"):
        db.model(make_class("Thing", {"retries": int}, {"retries": "many"}))


def test_a_none_default_on_a_non_optional_field_is_refused(db):
    with pytest.raises(ValidationError, match="label"):
        db.model(make_class("Thing", {"label": str}, {"label": None}))


def test_an_unknown_dataflow_option_is_refused_with_a_suggestion(db):
    with pytest.raises(ValidationError, match="Did you mean 'unique'"):
        db.model(make_class("Thing", {"label": str}, {"__dataflow__": {"uniqe": [["label"]]}}))


def test_a_unique_constraint_on_an_unknown_field_is_refused(db):
    with pytest.raises(ValidationError, match="lable"):
        db.model(make_class("Thing", {"label": str}, {"__dataflow__": {"unique": [["lable"]]}}))


def test_private_and_classvar_attributes_are_not_fields(db):
    @db.model
    class Thing:
        label: str
        _cache: dict
        registry: typing.ClassVar[dict] = {}

    assert [f.name for f in db.models["Thing"].fields] == ["id", "label", "created_at", "updated_at"]


def test_optional_and_defaulted_fields_are_not_required(db):
    @db.model
    class Thing:
        label: str
        note: Optional[str]  # noqa: UP045
        other: int | None
        tally: int = 0

    params = {p.name: p.required for p in db.nodes["ThingCreateNode"].parameters}
    assert params == {"label": True, "note": False, "other": False, "tally": False}
    row = run_one(db, "ThingCreateNode", {"label": "x"})
    assert (row["note"], row["other"], row["tally"]) == (None, None, 0)


def test_a_declared_unique_constraint_is_enforced(db):
    @db.model
    class Account:
        email: str
        __dataflow__ = {"unique": [["email"]], "indexes": ["email"]}

    run_one(db, "AccountCreateNode", {"email": "a@example.com"})
    with pytest.raises(DataFlowError):
        run_one(db, "AccountCreateNode", {"email": "a@example.com"})
    assert run_one(db, "AccountCountNode", {}) == {"count": 1}


def test_the_decorator_returns_the_class(db):
    class Thing:
        label: str

    assert db.model(Thing) is Thing


# -- awkward field names ------------------------------------------------------------------
def test_fields_named_like_node_parameters_work(db):
    @db.model
    class Record:
        id: str
        name: str
        filter: str
        data: dict
        fields: Optional[str] = None  # noqa: UP045
        limit: int = 0

    created = run_one(
        db,
        "RecordCreateNode",
        {"id": "r1", "name": "first", "filter": "f1", "data": {"k": 1}, "fields": "x", "limit": 5},
    )
    assert created["id"] == "r1"
    assert (created["name"], created["filter"], created["data"]) == ("first", "f1", {"k": 1})
    assert (created["fields"], created["limit"]) == ("x", 5)
    assert run_one(db, "RecordReadNode", {"id": "r1"}) == created

    run_one(
        db,
        "RecordBulkCreateNode",
        {"data": [{"id": "r2", "name": "second", "filter": "f2", "data": {"k": 2}, "limit": 7}]},
    )
    listed = run_one(db, "RecordListNode", {"filter": {"filter": "f2"}})
    assert [r["id"] for r in listed["records"]] == ["r2"]
    assert listed["records"][0]["data"] == {"k": 2}
    by_name = run_one(db, "RecordListNode", {"filter": {"name": "first"}, "order_by": ["-limit"]})
    assert [r["id"] for r in by_name["records"]] == ["r1"]
    ordered = run_one(db, "RecordListNode", {"order_by": ["-limit"]})
    assert [r["id"] for r in ordered["records"]] == ["r2", "r1"]

    updated = run_one(db, "RecordUpdateNode", {"id": "r1", "fields": {"filter": "changed", "data": {}}})
    assert (updated["filter"], updated["data"]) == ("changed", {})
    assert run_one(db, "RecordCountNode", {"filter": {"filter": "changed"}}) == {"count": 1}


def test_a_str_id_model_lists_in_id_order(db):
    @db.model
    class Code:
        id: str
        name: str

    run_one(db, "CodeBulkCreateNode", {"data": [{"id": i, "name": i.upper()} for i in ("c", "a", "b")]})
    assert [r["id"] for r in run_one(db, "CodeListNode", {})["records"]] == ["a", "b", "c"]


def exercise_keyword_fields(db, model_name, names):
    """Create, read, list (filter + order_by), update, count, bulk create/upsert and delete."""
    values = {name: f"{name}-1" for name in names}
    created = run_one(db, f"{model_name}CreateNode", values)
    assert {name: created[name] for name in names} == values
    assert run_one(db, f"{model_name}ReadNode", {"id": created["id"]}) == created

    bulk = [{name: f"{name}-{i}" for name in names} for i in (2, 3)]
    assert run_one(db, f"{model_name}BulkCreateNode", {"data": bulk}) == {"inserted": 2}
    first = names[0]
    listed = run_one(
        db, f"{model_name}ListNode", {"filter": {first: {"$ne": f"{first}-2"}}, "order_by": [f"-{first}"]}
    )
    assert [r[first] for r in listed["records"]] == [f"{first}-3", f"{first}-1"]

    updated = run_one(db, f"{model_name}UpdateNode", {"id": created["id"], "fields": {first: "changed"}})
    assert updated[first] == "changed"
    assert run_one(db, f"{model_name}CountNode", {"filter": {first: "changed"}}) == {"count": 1}
    upsert = [{"id": created["id"], **{n: "upserted" for n in names}}]
    assert run_one(db, f"{model_name}BulkUpsertNode", {"data": upsert}) == {"inserted": 0, "updated": 1}
    changed = run_one(
        db, f"{model_name}BulkUpdateNode", {"filter": {first: "upserted"}, "fields": {first: "bulk"}}
    )
    assert changed == {"updated": 1}
    assert run_one(db, f"{model_name}BulkDeleteNode", {"filter": {first: "bulk"}}) == {"deleted": 1}
    assert run_one(db, f"{model_name}CountNode", {}) == {"count": 2}


def test_sql_keywords_order_select_and_group_work_as_field_names(db):
    @db.model
    class Keyword:
        order: str
        select: str
        group: str

    exercise_keyword_fields(db, "Keyword", ["order", "select", "group"])


@pytest.mark.parametrize(
    "keyword",
    [
        "from",
        "where",
        "table",
        "user",
        "limit",
        "desc",
        "default",
        "check",
        "end",
        "at",
        "values",
        "qualify",
        "pivot",
    ],
)
def test_other_sql_keywords_work_as_field_names(db, keyword):
    db.model(make_class("Keyword", {keyword: str, "label": str}))
    exercise_keyword_fields(db, "Keyword", [keyword, "label"])


def test_keyword_model_names_get_keyword_free_tables(db):
    @db.model
    class Order:
        select: str

    @db.model
    class Group:
        order: int

    assert db.models["Order"].table_name == "orders"
    assert db.models["Group"].table_name == "groups"
    run_one(db, "OrderCreateNode", {"select": "x"})
    run_one(db, "GroupCreateNode", {"order": 3})
    assert run_one(db, "GroupListNode", {"order_by": "order"})["records"][0]["order"] == 3
    assert run_one(db, "OrderCountNode", {"filter": {"select": "x"}}) == {"count": 1}


# -- issue 13, item 15 ---------------------------------------------------------------
@pytest.mark.parametrize("where", ["field", "table", "model"])
def test_an_identifier_ending_in_a_newline_is_refused(db, where):
    """`$` in a regex matches before a trailing newline: 'name\\n' passed as an identifier."""
    if where == "field":
        cls = make_class("Thing", {"name\n": str})
    elif where == "table":
        cls = make_class("Thing", {"name": str}, {"__tablename__": "things\n"})
    else:
        cls = make_class("Thing\n", {"name": str})
    with pytest.raises(ValidationError, match="not a valid identifier"):
        db.model(cls)
    assert "Thing" not in db.models


@pytest.mark.parametrize(
    "table",
    ["sqlite_master", "SQLITE_SEQUENCE", "pg_class", "pg_stat_activity", "information_schema", "duckdb_tables",
     "dataflow_migrations", "dataflow_audit_log", "_dataflow_backup"],
)  # fmt: skip
def test_a_reserved_or_system_table_name_is_refused_at_the_model(db, table):
    with pytest.raises(ValidationError, match=f"Thing.*'{table}' is reserved") as caught:
        db.model(make_class("Thing", {"name": str}, {"__tablename__": table}))
    assert "__tablename__" in caught.value.hint
    assert "Thing" not in db.models
    assert not db.migrations.plan()  # before, sqlite_master made plan() raise IndexError


# -- id: UUID --------------------------------------------------------------------------
@pytest.fixture
def tokens(db):
    @db.model
    class Token:
        id: uuid.UUID
        label: str
        __dataflow__ = {"unique": [["label"]]}

    return db


def raw_fetch(db, sql: str) -> list[tuple]:
    """A workflow-free query on the DataFlow's own database (its in-memory SQLite too)."""

    async def fetch() -> list[tuple]:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await dialect.release(conn)

    return _loop.run(fetch())


def stored_id_type(db) -> str:
    if db.dialect == "sqlite":
        return raw_fetch(db, "SELECT typeof(id) FROM tokens LIMIT 1")[0][0]
    rows = raw_fetch(
        db,
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'tokens' AND column_name = 'id' AND table_schema = "
        + ("DATABASE()" if db.dialect == "mysql" else "current_schema()"),
    )
    return rows[0][0]


def test_a_uuid_id_is_a_uuid4_when_create_omits_it_and_is_stored_natively(tokens):
    row = run_one(tokens, "TokenCreateNode", {"label": "a"})
    assert type(row["id"]) is uuid.UUID and row["id"].version == 4
    assert (
        stored_id_type(tokens).lower()
        == {"sqlite": "text", "duckdb": "uuid", "postgresql": "uuid", "mysql": "char"}[tokens.dialect]
    )
    if tokens.dialect == "sqlite":  # text in canonical form
        assert raw_fetch(tokens, "SELECT id FROM tokens") == [(str(row["id"]),)]
    assert run_one(tokens, "TokenReadNode", {"id": row["id"]})["label"] == "a"
    assert run_one(tokens, "TokenReadNode", {"id": str(row["id"])})["id"] == row["id"]


def test_a_uuid_id_given_by_the_caller_is_kept_as_uuid_or_str(tokens):
    mine = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert run_one(tokens, "TokenCreateNode", {"id": mine, "label": "a"})["id"] == mine
    other = uuid.uuid4()
    assert run_one(tokens, "TokenCreateNode", {"id": str(other).upper(), "label": "b"})["id"] == other
    with pytest.raises(ValidationError, match="'id'.*UUID"):
        run_one(tokens, "TokenCreateNode", {"id": "not-a-uuid", "label": "c"})


def test_filters_by_a_uuid_id_take_uuid_or_str(tokens):
    ids = run_one(tokens, "TokenBulkCreateNode", {"data": [{"label": x} for x in "abc"], "return_ids": True})[
        "ids"
    ]
    assert all(type(i) is uuid.UUID for i in ids) and len(set(ids)) == 3
    listed = run_one(tokens, "TokenListNode", {"filter": {"id": str(ids[1])}})["records"]
    assert [r["label"] for r in listed] == ["b"]
    listed = run_one(
        tokens, "TokenListNode", {"filter": {"id": {"$in": [ids[0], str(ids[2])]}}, "order_by": "label"}
    )
    assert [r["label"] for r in listed["records"]] == ["a", "c"]
    assert run_one(tokens, "TokenCountNode", {"filter": {"id": {"$ne": ids[0]}}})["count"] == 2


def test_bulk_create_makes_a_uuid4_per_row_on_the_fast_and_the_slow_path(tokens):
    given = uuid.uuid4()
    data = [{"label": "a"}, {"label": "b"}, {"label": "c", "id": str(given)}, {"label": 4}]
    data[3]["label"] = "d"  # a str label after all: rows 0, 1, 3 fast, row 2 slow (it adds id)
    ids = run_one(tokens, "TokenBulkCreateNode", {"data": data, "return_ids": True})["ids"]
    assert ids[2] == given and len(set(ids)) == 4 and all(type(i) is uuid.UUID for i in ids)
    rows = run_one(tokens, "TokenListNode", {"order_by": "label"})["records"]
    assert [r["id"] for r in rows] == ids


def test_upsert_and_bulk_upsert_make_a_uuid4_for_new_rows(tokens):
    out = run_one(tokens, "TokenUpsertNode", {"where": {"label": "a"}, "update": {}, "create": {}})
    assert out["created"] and type(out["record"]["id"]) is uuid.UUID
    data = [{"label": "a"}, {"label": "b"}, {"label": "c"}]
    result = run_one(tokens, "TokenBulkUpsertNode", {"data": data, "conflict_on": ["label"]})
    assert result == {"inserted": 2, "updated": 1}
    rows = run_one(tokens, "TokenListNode", {"order_by": "label"})["records"]
    assert rows[0]["id"] == out["record"]["id"]  # an update never changes the id
    assert len({r["id"] for r in rows}) == 3 and all(r["id"].version == 4 for r in rows)
    again = [{"id": rows[1]["id"], "label": "bb"}]
    assert run_one(tokens, "TokenBulkUpsertNode", {"data": again}) == {"inserted": 0, "updated": 1}
    assert run_one(tokens, "TokenReadNode", {"id": rows[1]["id"]})["label"] == "bb"


def test_update_and_delete_by_a_uuid_id_take_uuid_or_str_with_audit_soft_delete_and_versions(db):
    @db.model
    class Ticket:
        id: uuid.UUID
        label: str
        __dataflow__ = {"audit_log": True, "soft_delete": True, "versioned": True}

    row = run_one(db, "TicketCreateNode", {"label": "a"})
    changed = run_one(db, "TicketUpdateNode", {"id": str(row["id"]), "version": 1, "fields": {"label": "b"}})
    assert (changed["id"], changed["label"], changed["version"]) == (row["id"], "b", 2)
    assert run_one(db, "TicketDeleteNode", {"id": row["id"]}) == {"id": row["id"], "deleted": True}
    assert run_one(db, "TicketCountNode", {})["count"] == 0
    entries = db.audit("Ticket")
    assert [e.operation for e in entries] == ["create", "update", "delete"]
