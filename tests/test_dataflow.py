"""DataFlow: configuration, URLs, isolation between instances, model redefinition, lifecycle, secrets."""

from __future__ import annotations

import gc
import inspect
import logging
import os
import sqlite3
import traceback
from typing import Optional

import pytest

import dataflow_lab
from dataflow_lab import (
    DataFlow,
    DataFlowError,
    DestructiveMigrationError,
    LocalRuntime,
    MigrationError,
    MigrationRequiredError,
    NodeNotFoundError,
    ValidationError,
    WorkflowBuilder,
)
from dataflow_lab import errors as errors_module

SECRET = "s3cret"
SECRET_URL = f"postgresql://user:{SECRET}@127.0.0.1:1/db"


def define_user(db: DataFlow) -> type:
    @db.model
    class User:
        name: str
        email: str

    return User


def execute(db: DataFlow | None, build) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    build(wf)
    return LocalRuntime().execute(wf.build())[0]


def create_user(db: DataFlow | None, name: str, **extra) -> dict:
    params = {"name": name, "email": f"{name.lower()}@example.com", **extra}
    return execute(db, lambda wf: wf.add_node("UserCreateNode", "c", params))["c"]


def list_users(db: DataFlow | None) -> list[dict]:
    return execute(db, lambda wf: wf.add_node("UserListNode", "l", {}))["l"]["records"]


def read_user(db: DataFlow | None, user_id) -> dict:
    return execute(db, lambda wf: wf.add_node("UserReadNode", "r", {"id": user_id}))["r"]


# --------------------------------------------------------------------------- zero config


def test_zero_config_dataflow_creates_lists_and_reads_a_row():
    db = DataFlow()
    define_user(db)
    created = create_user(None, "Alice")
    assert created["id"] == 1
    listed = list_users(None)
    assert listed == [created]
    assert read_user(None, created["id"]) == created
    assert db.dialect == "sqlite"
    assert db.config.database_url == "sqlite:///:memory:"
    db.close()


def test_two_zero_config_dataflows_do_not_share_data():
    first, second = DataFlow(), DataFlow()
    define_user(first)
    define_user(second)
    create_user(first, "OnlyInFirst")
    create_user(first, "AlsoInFirst")
    assert [u["name"] for u in list_users(first)] == ["OnlyInFirst", "AlsoInFirst"]
    assert list_users(second) == []
    created = create_user(second, "OnlyInSecond")
    assert created["id"] == 1
    assert [u["name"] for u in list_users(first)] == ["OnlyInFirst", "AlsoInFirst"]
    first.close()
    second.close()


def test_database_url_from_the_environment_is_used_when_no_url_is_given(monkeypatch, tmp_path):
    path = tmp_path / "from_env.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    db = DataFlow()
    assert db.config.database_url == f"sqlite:///{path}"
    define_user(db)
    create_user(db, "FromEnv")
    db.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT name FROM users").fetchall() == [("FromEnv",)]


def test_an_explicit_url_wins_over_database_url(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    db = DataFlow("duckdb:///:memory:")
    assert db.dialect == "duckdb"
    define_user(db)
    create_user(db, "Explicit")
    db.close()
    assert not (tmp_path / "env.db").exists()


# --------------------------------------------------------------------------- URLs


def url_of(kind: str, tmp_path, request) -> str:
    return {
        "sqlite_file": f"sqlite:///{tmp_path / 'app.db'}",
        "sqlite_memory": "sqlite:///:memory:",
        "duckdb_file": f"duckdb:///{tmp_path / 'app.duckdb'}",
        "duckdb_memory": "duckdb:///:memory:",
        "postgres": request.getfixturevalue("pg_url") if kind == "postgres" else "",
    }[kind]


KINDS = ["sqlite_file", "sqlite_memory", "duckdb_file", "duckdb_memory", "postgres"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_supported_url_creates_lists_and_reads(kind, tmp_path, request):
    db = DataFlow(url_of(kind, tmp_path, request))
    assert (
        db.dialect == {"sqlite": "sqlite", "duckdb": "duckdb", "postgres": "postgresql"}[kind.split("_")[0]]
    )
    define_user(db)
    alice = create_user(db, "Alice")
    bob = create_user(db, "Bob")
    assert (alice["id"], bob["id"]) == (1, 2)
    assert list_users(db) == [alice, bob]
    assert read_user(db, bob["id"]) == bob
    db.close()


@pytest.mark.parametrize("kind", ["sqlite_file", "duckdb_file", "postgres"])
def test_a_persistent_database_keeps_rows_for_the_next_dataflow(kind, tmp_path, request):
    url = url_of(kind, tmp_path, request)
    first = DataFlow(url)
    define_user(first)
    alice = create_user(first, "Alice")
    first.close()
    second = DataFlow(url)
    define_user(second)
    assert list_users(second) == [alice]
    assert create_user(second, "Bob")["id"] == 2
    second.close()


def test_an_in_memory_database_is_empty_for_the_next_dataflow():
    first = DataFlow("sqlite:///:memory:")
    define_user(first)
    create_user(first, "Gone")
    first.close()
    second = DataFlow("sqlite:///:memory:")
    define_user(second)
    assert list_users(second) == []
    second.close()


def test_an_unsupported_url_scheme_is_refused():
    with pytest.raises(DataFlowError, match="Unsupported database URL 'oracle://user@localhost/db'"):
        DataFlow("oracle://user@localhost/db")


# --------------------------------------------------------------------------- environments and options


@pytest.mark.parametrize(
    ("env", "pool_size", "auto_migrate", "echo"),
    [
        ("development", 5, True, True),
        ("testing", 10, True, False),
        ("production", 100, False, False),
    ],
)
def test_dataflow_env_chooses_a_preset_visible_in_config(monkeypatch, env, pool_size, auto_migrate, echo):
    monkeypatch.setenv("DATAFLOW_ENV", env)
    db = DataFlow()
    assert db.config.environment == env
    assert db.config.pool_size == pool_size
    assert db.config.auto_migrate is auto_migrate
    assert db.config.echo is echo
    db.close()


def test_an_unset_dataflow_env_means_development():
    db = DataFlow()
    assert db.config.environment == "development"
    assert db.config.pool_size == 5
    db.close()


def test_keyword_options_override_the_environment_preset(monkeypatch):
    monkeypatch.setenv("DATAFLOW_ENV", "production")
    db = DataFlow(pool_size=7, auto_migrate=True, echo=False)
    assert (db.config.pool_size, db.config.auto_migrate, db.config.echo) == (7, True, False)
    assert db.config.max_overflow == 200  # the rest still comes from the preset
    db.close()


def test_echo_true_logs_the_sql_statements_a_run_executes(caplog):
    caplog.set_level(logging.INFO)
    db = DataFlow(echo=True)
    define_user(db)
    create_user(db, "Echoed")
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("INSERT" in message.upper() and "users" in message for message in logged), logged
    db.close()


def test_echo_false_logs_no_sql_statements(caplog):
    caplog.set_level(logging.INFO)
    db = DataFlow(echo=False)
    define_user(db)
    create_user(db, "Quiet")
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not any("INSERT" in message.upper() for message in logged), logged
    db.close()


def test_an_unknown_dataflow_env_is_refused(monkeypatch):
    monkeypatch.setenv("DATAFLOW_ENV", "qa")
    with pytest.raises(ValidationError) as info:
        DataFlow()
    assert "'qa'" in str(info.value)
    assert "staging" in str(info.value) and "production" in str(info.value)


def test_a_misspelled_dataflow_env_gets_a_suggestion(monkeypatch):
    monkeypatch.setenv("DATAFLOW_ENV", "prodution")
    with pytest.raises(ValidationError, match="Did you mean 'production'"):
        DataFlow()


def test_an_unknown_option_is_refused_with_a_suggestion():
    with pytest.raises(ValidationError) as info:
        DataFlow(pool_sise=3)
    assert "pool_sise" in str(info.value)
    assert "Did you mean 'pool_size'" in str(info.value)


def test_a_refused_dataflow_is_not_left_registered(monkeypatch):
    from dataflow_lab.nodes import registry

    before = len(registry.live_dataflows())
    with pytest.raises(ValidationError):
        DataFlow(pool_sise=3)
    assert len(registry.live_dataflows()) == before


def test_production_creates_no_table_at_first_use_and_create_tables_does(monkeypatch):
    monkeypatch.setenv("DATAFLOW_ENV", "production")
    db = DataFlow()
    define_user(db)
    with pytest.raises(MigrationRequiredError) as info:
        create_user(db, "Prod")
    message = str(info.value)
    assert "model 'User'" in message and "'users'" in message and "db.create_tables()" in message
    assert db.create_tables() == ["User"]
    assert create_user(db, "Prod")["id"] == 1  # the refused run wrote nothing
    db.close()


# --------------------------------------------------------------------------- isolation and name resolution


def test_an_ambiguous_node_name_raises_node_not_found_saying_how_to_scope_it():
    first, second = DataFlow(), DataFlow()
    define_user(first)
    define_user(second)
    builder = WorkflowBuilder()
    builder.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    with pytest.raises(NodeNotFoundError) as info:
        builder.build()
    message = str(info.value)
    assert "UserCreateNode" in message
    assert "WorkflowBuilder(dataflow=" in message
    assert "2" in message
    first.close()
    second.close()


def test_a_scoped_builder_writes_to_its_own_dataflow_only():
    first, second = DataFlow(), DataFlow()
    define_user(first)
    define_user(second)
    create_user(first, "First")
    create_user(second, "Second")
    assert [u["name"] for u in list_users(first)] == ["First"]
    assert [u["name"] for u in list_users(second)] == ["Second"]
    first.close()
    second.close()


def test_a_name_defined_by_exactly_one_live_dataflow_resolves_without_scoping():
    users, posts = DataFlow(), DataFlow()
    define_user(users)

    @posts.model
    class Post:
        title: str

    results = execute(None, lambda wf: wf.add_node("PostCreateNode", "p", {"title": "Hello"}))
    assert results["p"]["title"] == "Hello"
    assert execute(posts, lambda wf: wf.add_node("PostCountNode", "n", {}))["n"] == {"count": 1}
    builder = WorkflowBuilder(dataflow=users)
    builder.add_node("PostCreateNode", "p", {"title": "x"})
    with pytest.raises(NodeNotFoundError):
        builder.build()
    users.close()
    posts.close()


def test_a_closed_dataflow_no_longer_makes_a_name_ambiguous():
    first, second = DataFlow(), DataFlow()
    define_user(first)
    define_user(second)
    second.close()
    create_user(None, "Unscoped")
    assert [u["name"] for u in list_users(first)] == ["Unscoped"]
    first.close()


def test_rerunning_a_notebook_cell_that_makes_a_new_dataflow_makes_a_bare_name_ambiguous_until_scoped():
    def cell(*, scoped: bool) -> dict:
        db = DataFlow()
        define_user(db)
        return create_user(db if scoped else None, "Again")  # unscoped, as WorkflowBuilder() is

    # automatic garbage collection runs at arbitrary moments; with it paused, the outcome is deterministic
    gc.disable()
    try:
        assert cell(scoped=False)["id"] == 1
        # the first cell's DataFlow is no longer referenced, but alive until the collector frees it; a
        # lookup never collects garbage, so the bare name is ambiguous, and the error says what to do
        with pytest.raises(NodeNotFoundError, match="2 live DataFlow instances, oldest first: 1. ") as info:
            cell(scoped=False)
        assert "WorkflowBuilder(dataflow=db)" in str(info.value)
        assert "old_db.close()" in str(info.value)
        assert cell(scoped=True)["id"] == 1  # a builder given its DataFlow finds the name there
    finally:
        gc.enable()


def test_a_name_lookup_never_collects_garbage(monkeypatch):
    db = DataFlow()
    define_user(db)
    monkeypatch.setattr(gc, "collect", lambda *a: pytest.fail("a node-name lookup called gc.collect()"))
    assert create_user(None, "Ann")["id"] == 1
    assert create_user(db, "Bob")["id"] == 2
    db.close()


def test_a_scoped_builder_does_not_look_at_other_dataflows_but_its_error_names_the_one_that_has_it():
    users, posts = DataFlow(), DataFlow()
    define_user(users)

    @posts.model
    class Post:
        title: str

    wf = WorkflowBuilder(users)
    wf.add_node("PostCreateNode", "p", {"title": "x"})
    with pytest.raises(NodeNotFoundError) as info:
        wf.build()
    assert "not defined by this DataFlow" in str(info.value)
    assert "Post" in str(info.value) and "WorkflowBuilder(that DataFlow)" in str(info.value)
    users.close()
    posts.close()


def test_node_classes_of_two_dataflows_are_distinct():
    first, second = DataFlow(), DataFlow()
    define_user(first)
    define_user(second)
    assert first.nodes["UserCreateNode"] is not second.nodes["UserCreateNode"]
    assert first.nodes["UserCreateNode"].dataflow is first
    assert len(first.nodes) == 12
    first.close()
    second.close()


# --------------------------------------------------------------------------- redefining models


def test_redefining_a_model_before_its_table_exists_replaces_it():
    db = DataFlow()

    @db.model
    class User:
        name: str

    old_create = db.nodes["UserCreateNode"]

    @db.model
    class User:  # noqa: F811 - redefinition is the point
        title: str
        score: int

    assert db.nodes["UserCreateNode"] is not old_create
    assert set(db.models["User"].by_name) >= {"title", "score"}
    assert "name" not in db.models["User"].by_name
    results = execute(db, lambda wf: wf.add_node("UserCreateNode", "c", {"title": "T", "score": 3}))
    assert (results["c"]["title"], results["c"]["score"]) == ("T", 3)
    builder = WorkflowBuilder(dataflow=db)
    builder.add_node("UserCreateNode", "c", {"name": "old"})
    with pytest.raises(ValidationError):
        builder.build()
    db.close()


def test_redefining_a_model_identically_after_use_keeps_working(db):
    define_user(db)
    alice = create_user(db, "Alice")
    define_user(db)
    assert list_users(db) == [alice]


def test_an_additive_redefinition_migrates_the_existing_table(db):
    define_user(db)
    alice = create_user(db, "Alice")

    @db.model
    class User:
        name: str
        email: str
        age: int = 18
        score: float = 1.5
        active: bool = True
        nickname: Optional[str] = None  # noqa: UP045 - the documented spelling
        tags: list = []  # noqa: RUF012

    old = read_user(db, alice["id"])
    assert old["age"] == 18
    assert old["score"] == 1.5
    assert old["active"] is True
    assert old["nickname"] is None
    assert old["tags"] == []
    assert old["name"] == "Alice"
    bob = create_user(db, "Bob", age=40, nickname="bobby", tags=["x"])
    assert read_user(db, bob["id"]) == bob
    assert (bob["age"], bob["nickname"], bob["tags"]) == (40, "bobby", ["x"])
    updated = execute(
        db, lambda wf: wf.add_node("UserUpdateNode", "u", {"id": alice["id"], "fields": {"nickname": "al"}})
    )["u"]
    assert updated["nickname"] == "al"
    assert execute(db, lambda wf: wf.add_node("UserCountNode", "n", {"filter": {"age": 18}}))["n"] == {
        "count": 1
    }


def test_an_additive_change_by_a_new_dataflow_on_an_existing_file_migrates_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    first = DataFlow(url)
    define_user(first)
    create_user(first, "Alice")
    first.close()
    second = DataFlow(url)

    @second.model
    class User:
        name: str
        email: str
        age: int = 21

    assert [(u["name"], u["age"]) for u in list_users(second)] == [("Alice", 21)]
    second.close()


def test_removing_a_field_is_refused_at_first_use_showing_the_sql_until_confirmed(db):
    # Redefining a model registers it; its table is checked when a workflow next uses it.
    define_user(db)
    alice = create_user(db, "Alice")

    @db.model
    class User:
        name: str

    with pytest.raises(DestructiveMigrationError) as info:
        list_users(db)
    message = str(info.value)
    assert "User" in message and "email" in message
    assert "Nothing was changed" in message
    assert "confirm_destructive=True" in message
    assert any("email" in sql for sql in info.value.sql)
    # the refusal changed nothing: the old definition still works on the untouched table
    define_user(db)
    assert list_users(db) == [alice]


def test_a_confirmed_field_removal_keeps_the_other_columns_of_every_row(db):
    define_user(db)
    create_user(db, "Alice")

    @db.model
    class User:
        name: str

    db.migrations.apply(confirm_destructive=True)
    assert [u["name"] for u in list_users(db)] == ["Alice"]
    assert "email" not in list_users(db)[0]


def test_changing_a_field_type_narrowly_is_refused_at_first_use(db):
    define_user(db)
    create_user(db, "Alice")

    @db.model
    class User:
        name: int
        email: str

    with pytest.raises(DestructiveMigrationError) as info:
        list_users(db)
    assert "name" in str(info.value)
    assert "narrowing" in str(info.value)


def test_adding_a_required_field_after_the_table_has_rows_raises_migration_error(db):
    define_user(db)
    create_user(db, "Alice")

    @db.model
    class User:
        name: str
        email: str
        phone: str

    with pytest.raises(MigrationError, match="phone"):
        list_users(db)


def test_making_a_field_optional_is_applied_automatically_and_keeps_the_rows(db):
    define_user(db)
    alice = create_user(db, "Alice")

    @db.model
    class User:
        name: str
        email: Optional[str]  # noqa: UP045

    assert list_users(db) == [alice]
    assert create_user(db, "Bob", email=None)["email"] is None


def test_a_new_dataflow_whose_model_lacks_an_existing_column_raises_migration_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    first = DataFlow(url)
    define_user(first)
    create_user(first, "Alice")
    first.close()
    second = DataFlow(url)

    @second.model
    class User:
        name: str

    with pytest.raises(MigrationError, match="email"):
        execute(second, lambda wf: wf.add_node("UserListNode", "l", {}))
    second.close()


@pytest.mark.parametrize("kind", ["sqlite_file", "duckdb_file", "postgres"])
def test_a_new_dataflow_whose_model_changes_a_column_type_on_an_existing_table_raises_migration_error(
    kind, tmp_path, request
):
    url = url_of(kind, tmp_path, request)
    first = DataFlow(url)

    @first.model
    class Item:
        label: str
        qty: int

    execute(first, lambda wf: wf.add_node("ItemCreateNode", "c", {"label": "bolt", "qty": 3}))
    first.close()
    second = DataFlow(url)

    @second.model
    class Item:  # noqa: F811 - the same table, seen by a new DataFlow with other types
        label: int
        qty: str

    with pytest.raises(MigrationError) as info:
        execute(second, lambda wf: wf.add_node("ItemListNode", "l", {}))
    assert "label" in str(info.value)
    second.close()


# --------------------------------------------------------------------------- lifecycle


def test_close_is_idempotent_and_marks_the_dataflow_closed(db):
    define_user(db)
    create_user(db, "Alice")
    db.close()
    db.close()
    assert "closed" in repr(db)


def test_a_with_block_closes_the_dataflow(tmp_path):
    with DataFlow(f"sqlite:///{tmp_path / 'with.db'}") as db:
        define_user(db)
        assert create_user(db, "Inside")["id"] == 1
    assert "closed" in repr(db)
    with pytest.raises(DataFlowError, match="closed"):
        define_user(db)


def test_a_with_block_closes_the_dataflow_when_the_body_raises():
    with pytest.raises(KeyError), DataFlow() as db:
        define_user(db)
        create_user(db, "Inside")
        raise KeyError("body failed")
    assert "closed" in repr(db)


def test_an_async_with_block_closes_the_dataflow(url):
    import asyncio

    from dataflow_lab import AsyncLocalRuntime

    async def main() -> tuple[DataFlow, dict]:
        async with DataFlow(url) as db:
            define_user(db)
            wf = WorkflowBuilder(dataflow=db)
            wf.add_node("UserCreateNode", "c", {"name": "Async", "email": "async@x"})
            results, _ = await AsyncLocalRuntime().execute_async(wf.build())
        return db, results

    db, results = asyncio.run(main())
    assert results["c"]["name"] == "Async"
    assert "closed" in repr(db)
    with pytest.raises(DataFlowError, match="closed"):
        define_user(db)


def test_defining_a_model_on_a_closed_dataflow_raises_dataflow_error():
    db = DataFlow()
    db.close()
    with pytest.raises(DataFlowError, match="closed"):
        define_user(db)


def test_running_a_workflow_on_a_closed_dataflow_raises_dataflow_error(db):
    define_user(db)
    create_user(db, "Alice")
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("UserListNode", "l", {})
    workflow = wf.build()
    db.close()
    with pytest.raises(DataFlowError, match="closed"):
        LocalRuntime().execute(workflow)


def test_running_a_workflow_on_a_closed_dataflow_whose_table_never_existed_raises_dataflow_error():
    db = DataFlow()
    define_user(db)
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("UserListNode", "l", {})
    workflow = wf.build()
    db.close()
    with pytest.raises(DataFlowError, match="closed"):
        LocalRuntime().execute(workflow)


def test_a_closed_dataflows_nodes_are_no_longer_found_by_name():
    db = DataFlow()
    define_user(db)
    db.close()
    builder = WorkflowBuilder()
    builder.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    with pytest.raises(NodeNotFoundError):
        builder.build()


# --------------------------------------------------------------------------- secrets


def test_a_password_in_the_url_is_not_in_repr_or_config(caplog):
    caplog.set_level(logging.DEBUG)
    db = DataFlow(SECRET_URL)
    define_user(db)
    for text in (repr(db), str(db), repr(db.config), str(db.config), db.url):
        assert SECRET not in text
    assert "user" in db.url
    assert "127.0.0.1:1" in repr(db)
    db.close()
    assert SECRET not in repr(db)


def test_a_password_is_not_in_the_error_when_connecting_fails(caplog):
    caplog.set_level(logging.DEBUG)
    db = DataFlow(SECRET_URL, echo=True)
    define_user(db)
    with pytest.raises(DataFlowError) as info:
        create_user(db, "Alice")
    error = info.value
    formatted = "".join(traceback.format_exception(error))
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert SECRET not in formatted
    assert SECRET not in repr(getattr(error, "args", ()))
    assert "127.0.0.1" in str(error)
    for record in caplog.records:
        text = logging.Formatter().format(record)
        assert SECRET not in text, f"{record.name}: {text}"
        assert SECRET not in repr(record.args)
    db.close()


def test_a_password_given_as_a_url_query_parameter_is_not_in_repr_config_or_errors(caplog):
    caplog.set_level(logging.DEBUG)
    db = DataFlow(f"postgresql://user@127.0.0.1:1/db?password={SECRET}")
    define_user(db)
    assert SECRET not in repr(db)
    assert SECRET not in repr(db.config)
    assert SECRET not in db.url
    with pytest.raises(DataFlowError) as info:
        create_user(db, "Alice")
    assert SECRET not in "".join(traceback.format_exception(info.value))
    for record in caplog.records:
        assert SECRET not in logging.Formatter().format(record)
    db.close()


def test_a_password_is_not_in_the_ambiguous_node_name_error():
    first = DataFlow(SECRET_URL)
    second = DataFlow(SECRET_URL.replace("/db", "/other"))
    define_user(first)
    define_user(second)
    builder = WorkflowBuilder()
    builder.add_node("UserListNode", "l", {})
    with pytest.raises(NodeNotFoundError) as info:
        builder.build()
    assert "127.0.0.1" in str(info.value)
    assert SECRET not in str(info.value)
    first.close()
    second.close()


def test_a_refused_connection_raises_connection_error():
    db = DataFlow(SECRET_URL)
    define_user(db)
    with pytest.raises(dataflow_lab.ConnectionError):
        create_user(db, "Alice")
    db.close()


def test_a_refused_connection_can_be_retried_and_fails_the_same_way():
    db = DataFlow(SECRET_URL)
    define_user(db)
    for _ in range(2):
        with pytest.raises(DataFlowError) as info:
            create_user(db, "Alice")
        assert SECRET not in str(info.value)
    db.close()


def test_a_password_is_not_in_log_records_of_a_working_dataflow(pg_url, caplog):
    caplog.set_level(logging.DEBUG)
    user, _, rest = pg_url.partition("://")[2].partition("@")
    url = f"postgresql://{user.split(':')[0]}:{SECRET}@{rest}"
    db = DataFlow(url, echo=True)
    define_user(db)
    try:
        create_user(db, "Alice")
    except DataFlowError as exc:  # the server may trust every password, or refuse this one
        assert SECRET not in str(exc)
    for record in caplog.records:
        assert SECRET not in logging.Formatter().format(record)
    assert SECRET not in repr(db)
    db.close()


# --------------------------------------------------------------------------- pool status


def test_pool_status_is_a_dict_showing_nothing_checked_out_after_many_workflows(db):
    define_user(db)
    runtime = LocalRuntime()
    for i in range(25):
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("UserCreateNode", "c", {"name": f"u{i}", "email": f"u{i}@x"})
        wf.add_node("UserListNode", "l", {"limit": 3})
        runtime.execute(wf.build())
    for _ in range(5):
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("UserReadNode", "missing", {"id": 999_999})
        with pytest.raises(DataFlowError):
            runtime.execute(wf.build())
    status = db.pool_status()
    assert isinstance(status, dict)
    assert status["checked_out"] == 0


def test_pool_options_reach_the_postgres_pool(pg_url):
    db = DataFlow(pg_url, pool_size=3, max_overflow=1)
    define_user(db)
    create_user(db, "Alice")
    status = db.pool_status()
    assert status["size"] == 3
    assert status["checked_out"] == 0
    db.close()


def test_pool_status_is_a_dict_before_any_workflow_ran(db):
    assert isinstance(db.pool_status(), dict)


# --------------------------------------------------------------------------- errors


def test_every_error_class_is_exported_at_top_level_and_derives_from_dataflow_error():
    classes = {
        name: obj
        for name, obj in vars(errors_module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors_module.__name__
    }
    classes = {name: cls for name, cls in classes.items() if not name.startswith("NodeExecutionError[")}
    assert {
        "ConnectionError",
        "DataFlowError",
        "MigrationError",
        "NodeExecutionError",
        "NodeNotFoundError",
        "NotFoundError",
        "TransactionError",
        "ValidationError",
        "WorkflowValidationError",
    } <= set(classes)
    for name, cls in classes.items():
        assert getattr(dataflow_lab, name) is cls, name
        assert name in dataflow_lab.__all__, name
        assert issubclass(cls, DataFlowError), name


def test_an_error_carries_its_hint_in_its_message():
    with pytest.raises(DataFlowError) as info:
        DataFlow(pool_sise=1)
    assert info.value.hint
    assert info.value.hint in str(info.value)


def test_a_shared_in_memory_sqlite_uri_is_shared_and_never_a_file_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a file SQLite made of the name would land here
    url = "sqlite:///file:dataflow_shared_test?mode=memory&cache=shared&uri=true"
    first, second = DataFlow(url), DataFlow(url)
    try:

        @first.model
        class Note:
            text: str

        first.sql("CREATE TABLE IF NOT EXISTS shared_probe (n INTEGER)", write=True)
        first.sql("INSERT INTO shared_probe VALUES (7)", write=True)
        assert second.sql("SELECT n FROM shared_probe")["n"].tolist() == [7]  # one database, two DataFlows
        assert os.listdir(tmp_path) == []  # in memory: no file named after it
    finally:
        first.close()
        second.close()


def test_a_model_has_its_twelve_nodes_the_bulk_and_aggregate_ones_made_at_their_first_lookup():
    from dataflow_lab.database import _LATER
    from dataflow_lab.nodes.aggregate import AGGREGATE_OPERATIONS
    from dataflow_lab.nodes.bulk import BULK_OPERATIONS

    later = [(operations, names) for _, operations, _, names in _LATER]
    assert later == [  # every operation of the two modules, named in their order
        ("BULK_OPERATIONS", tuple(op.op_name for op in BULK_OPERATIONS)),
        ("AGGREGATE_OPERATIONS", tuple(op.op_name for op in AGGREGATE_OPERATIONS)),
    ]
    db = DataFlow()
    try:
        define_user(db)
        crud = ["Create", "Read", "Update", "Delete", "List", "Count", "Upsert"]
        bulk = ["BulkCreate", "BulkUpdate", "BulkDelete", "BulkUpsert", "Aggregate"]
        assert list(db.nodes) == [f"User{op}Node" for op in [*crud, *bulk]]
        made = db.nodes.UserBulkUpsertNode
        assert made is db.nodes["UserBulkUpsertNode"] and made.__bases__ == (BULK_OPERATIONS[-1],)
        assert (made.operation, made.model.name, made.dataflow) == ("bulk_upsert", "User", db)
        assert {p.name for p in made.parameters} >= {"data", "conflict_on"}
        rows = [{"name": "Ann", "email": "ann@example.com"}]
        assert (
            execute(db, lambda wf: wf.add_node("UserBulkCreateNode", "b", {"data": rows}))["b"]["inserted"]
            == 1
        )

        @db.model
        class User:  # defined again: its twelve nodes are replaced, made or not
            name: str
            email: str
            age: int = 0

        assert len(db.nodes) == 12 and db.nodes.UserBulkUpsertNode is not made
        assert "age" in {p.name for p in db.nodes.UserCreateNode.parameters}
    finally:
        db.close()
