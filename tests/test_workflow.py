"""WorkflowBuilder: add_node checks, build() reports every problem at once, Workflows are immutable."""

from __future__ import annotations

import dataclasses
import threading
from typing import Optional, TypedDict

import pytest
from conftest import spy_on_opens

from dataflow_lab import (
    AsyncLocalRuntime,
    DataFlow,
    DataFlowError,
    LocalRuntime,
    NodeExecutionError,
    NodeNotFoundError,
    ValidationError,
    Workflow,
    WorkflowBuilder,
    WorkflowInput,
    WorkflowValidationError,
    _loop,
    viz,
)
from dataflow_lab.workflow import prepare


class Totals(TypedDict):
    """What a typed Python node returns: build() checks connections from it."""

    count: int
    label: str


def totals() -> Totals:
    return {"count": 3, "label": "three"}


def define_user(db: DataFlow) -> type:
    @db.model
    class User:
        name: str
        email: str
        age: int = 0
        nickname: Optional[str] = None  # noqa: UP045 - Optional is the documented spelling

    return User


@pytest.fixture
def mem_db():
    """A zero-config DataFlow with a User model, for checks that need no particular backend."""
    db = DataFlow()
    define_user(db)
    yield db
    db.close()


@pytest.fixture
def user_db(db):
    """The parametrized real database (sqlite, duckdb, postgres) with a User model."""
    define_user(db)
    return db


def build_problems(wf: WorkflowBuilder, error: type[Exception] = WorkflowValidationError) -> str:
    """What build() refuses the workflow for: its one error, as text."""
    with pytest.raises(error) as info:
        wf.build()
    return str(info.value)


def create_users(db: DataFlow, *names: str) -> list[dict]:
    wf = WorkflowBuilder(dataflow=db)
    for i, name in enumerate(names):
        wf.add_node("UserCreateNode", f"c{i}", {"name": name, "email": f"{name}@example.com"})
    results, _ = LocalRuntime().execute(wf.build())
    return [results[f"c{i}"] for i in range(len(names))]


# --------------------------------------------------------------------------- add_node's checks, reported by build()


def test_an_unknown_node_type_is_reported_by_build_with_a_did_you_mean(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreatNode", "c", {"name": "a", "email": "a@x"})
    message = build_problems(wf, NodeNotFoundError)
    assert "Did you mean 'UserCreateNode'" in message
    assert "UserCreatNode" in message


def test_an_unknown_node_type_is_reported_even_when_no_model_is_close():
    db = DataFlow()
    define_user(db)
    wf = WorkflowBuilder()
    wf.add_node("ZebraStripeNode", "z", {})
    assert "Zebra" in build_problems(wf, NodeNotFoundError)
    db.close()


def test_an_unknown_parameter_is_reported_by_build_with_a_suggestion(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"nmae": "Alice", "email": "a@x"})
    message = build_problems(wf)
    assert "nmae" in message
    assert "Did you mean 'name'" in message
    assert "'c'" in message


@pytest.mark.parametrize("bad", ["abc", 3.7, [1], {"a": 1}])
def test_a_wrongly_typed_value_for_an_int_field_is_reported_by_build(mem_db, bad):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x", "age": bad})
    assert "age" in build_problems(wf)


def test_a_bool_is_not_accepted_as_an_int_field(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x", "age": True})
    assert "age" in build_problems(wf)


def test_a_wrongly_typed_value_for_an_int_parameter_of_a_generated_node_is_refused(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserListNode", "l", {"limit": "ten"})
    wf.add_node("UserListNode", "m", {"offset": 2.5})
    message = build_problems(wf)
    assert "limit" in message and "offset" in message


def test_build_reports_every_problem_at_once_each_with_its_did_you_mean(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreatNode", "typo", {})
    wf.add_node("UserCreateNode", "c", {"nmae": "A", "emial": "a@x", "age": "old"})
    wf.add_node("UserReadNode", "r", {})
    wf.add_node(lambda x: {"x": x}, "a", {})
    wf.add_node(lambda x: {"x": x}, "b", {})
    wf.add_connection("craetor", "id", "r", "id")
    wf.add_connection("a", "x", "b", "x")
    wf.add_connection("b", "x", "a", "x")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    error = info.value
    assert isinstance(error, NodeNotFoundError)  # one of its problems is an unknown node type
    message = str(error)
    assert "Did you mean 'UserCreateNode'" in message
    assert "unknown parameter 'nmae'. Did you mean 'name'?" in message
    assert "unknown parameter 'emial'. Did you mean 'email'?" in message
    assert "there is no node 'craetor'" in message
    assert "cycle that was not declared" in message
    assert "field 'age' got str 'old'" in message
    assert len(error.problems) == 6
    assert [p.node_id for p in error.problems][:3] == ["typo", "c", "c"]


def test_a_node_with_a_bad_value_is_reported_and_its_other_values_still_checked(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": 5, "emial": "a@x"})
    message = build_problems(wf)
    assert "emial" in message and "'name'" in message


def test_a_lossless_numeric_string_is_coerced_to_int_for_an_int_field(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x", "age": "42"})
    workflow = wf.build()
    assert workflow.nodes["c"].checked["age"] == 42
    assert type(workflow.nodes["c"].checked["age"]) is int
    results, _ = LocalRuntime().execute(workflow)
    assert results["c"]["age"] == 42
    assert type(results["c"]["age"]) is int


def test_a_lossless_numeric_string_is_coerced_for_an_int_parameter_of_a_generated_node(user_db):
    create_users(user_db, "a", "b", "c")
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserListNode", "l", {"limit": "2"})
    results, _ = LocalRuntime().execute(wf.build())
    assert results["l"]["count"] == 2


def test_a_wrongly_typed_value_for_an_int_argument_of_a_callable_is_refused_and_a_numeric_string_coerced():
    def double(x: int) -> int:
        return x * 2

    for bad in ("abc", 3.7):
        wf = WorkflowBuilder()
        wf.add_node(double, "d", {"x": bad})
        assert "'x'" in build_problems(wf)
    wf = WorkflowBuilder()
    wf.add_node(double, "d", {"x": "21"})
    results, _ = LocalRuntime().execute(wf.build())
    assert results["d"] == 42


def test_a_params_argument_that_is_not_a_dict_is_refused(mem_db):
    wf = WorkflowBuilder()
    with pytest.raises(ValidationError, match="dict"):
        wf.add_node("UserCreateNode", "c", [("name", "A")])


def test_a_duplicate_node_id_is_refused(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    with pytest.raises(ValidationError, match="'c'"):
        wf.add_node("UserListNode", "c", {})
    workflow = wf.build()
    assert list(workflow.nodes) == ["c"]
    assert workflow.nodes["c"].type_name == "UserCreateNode"


def test_a_node_with_a_bad_value_is_the_only_problem_build_reports(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserListNode", "l", {})
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x", "age": "abc"})
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    assert [p.node_id for p in info.value.problems] == ["c"]
    assert "age" in info.value.problems[0]


# --------------------------------------------------------------------------- what add_node accepts as a type


def test_a_node_class_from_db_nodes_is_accepted_as_the_type(user_db):
    wf = WorkflowBuilder()
    wf.add_node(user_db.nodes["UserCreateNode"], "c", {"name": "Cls", "email": "cls@x"})
    wf.add_node(user_db.nodes["UserReadNode"], "r", {})
    wf.add_connection("c", "id", "r", "id")
    results, _ = LocalRuntime().execute(wf.build())
    assert results["r"]["name"] == "Cls"
    assert results["r"] == results["c"]


def test_a_node_class_is_checked_like_a_name(mem_db):
    wf = WorkflowBuilder()
    wf.add_node(mem_db.nodes["UserCreateNode"], "c", {"name": "A", "emial": "a@x"})
    assert "Did you mean 'email'" in build_problems(wf)


def test_a_plain_callable_takes_its_parameters_as_inputs_and_returns_its_output(user_db):
    def greeting(name: str, punctuation: str = "!") -> dict:
        return {"text": f"Hello, {name}{punctuation}", "length": len(name)}

    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "Alice", "email": "alice@x"})
    wf.add_node(greeting, "greet", {})
    wf.add_connection("c", "name", "greet", "name")
    results, _ = LocalRuntime().execute(wf.build())
    assert results["greet"] == {"text": "Hello, Alice!", "length": 5}


def test_sync_callables_run_on_kept_worker_threads_not_a_new_thread_per_call():
    seen: list[threading.Thread] = []

    def where(n: int) -> int:
        seen.append(threading.current_thread())
        return n

    workflow = WorkflowBuilder()
    workflow.add_node(where, "w", {"n": 1})
    built = workflow.build()
    runtime = LocalRuntime()
    for _ in range(30):
        runtime.execute(built)
    assert len(seen) == 30
    # at most the kept idle workers (8) and one more, whatever earlier tests left: not one per call
    assert len(set(seen)) <= 9, "a thread was started per call"
    assert all(t is not threading.main_thread() and t.daemon for t in seen)


def test_parallel_sync_callables_still_overlap_on_the_worker_threads():
    gate = threading.Barrier(3, timeout=10)

    def meet(n: int) -> int:
        gate.wait()  # all three must be running at once, or this times out
        return n

    workflow = WorkflowBuilder()
    for i in range(3):
        workflow.add_node(meet, f"m{i}", {"n": i})
    results, _ = AsyncLocalRuntime(transaction="node").execute(workflow.build())
    assert [results[f"m{i}"] for i in range(3)] == [0, 1, 2]


def test_a_wide_fan_out_keeps_insertion_order_among_independent_nodes():
    def one(x: int = 1) -> int:
        return x

    workflow = WorkflowBuilder()
    workflow.add_node(one, "root", {"x": 1})
    for i in reversed(range(300)):
        workflow.add_node(one, f"n{i}")
        workflow.add_connection("root", "result", f"n{i}", "x")
    order = [step for step in workflow.build().order]
    assert order == ["root", *[f"n{i}" for i in reversed(range(300))]]


def test_a_callable_parameter_without_a_default_is_a_required_input():
    def needs(a: int, b: int = 1) -> int:
        return a + b

    wf = WorkflowBuilder()
    wf.add_node(needs, "n", {})
    workflow = wf.build()
    assert [(i.node_id, i.name, i.type_name) for i in workflow.workflow_inputs] == [("n", "a", "int")]
    with pytest.raises(ValidationError) as info:
        LocalRuntime().execute(workflow)
    assert "n.a (int)" in str(info.value)
    assert "n.b" not in str(info.value)
    assert LocalRuntime().execute(workflow, parameters={"n": {"a": 2}})[0]["n"] == 3


def test_an_unknown_argument_for_a_callable_is_refused_with_a_suggestion():
    def add(left: int, right: int) -> int:
        return left + right

    wf = WorkflowBuilder()
    wf.add_node(add, "a", {"left": 1, "rigth": 2})
    assert "Did you mean 'right'" in build_problems(wf)


def test_an_async_callable_is_awaited_and_its_result_is_the_output(user_db):
    async def shout(name: str) -> dict:
        import asyncio

        await asyncio.sleep(0)
        return {"loud": name.upper()}

    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "bob", "email": "bob@x"})
    wf.add_node(shout, "s", {})
    wf.add_node("UserUpdateNode", "u", {"fields": {}})
    wf.add_connection("c", "name", "s", "name")
    wf.add_connection("c", "id", "u", "id")
    wf.add_connection("s", "loud", "u", "fields.name")
    results, _ = LocalRuntime().execute(wf.build())
    assert results["s"] == {"loud": "BOB"}
    assert results["u"]["name"] == "BOB"


def test_a_lambda_is_accepted_as_a_node():
    wf = WorkflowBuilder()
    wf.add_node(lambda x: x + 1, "inc", {"x": 1})
    results, _ = LocalRuntime().execute(wf.build())
    assert results["inc"] == 2


def test_a_value_that_is_not_a_name_class_or_callable_is_refused():
    wf = WorkflowBuilder()
    with pytest.raises(ValidationError):
        wf.add_node(42, "n", {})


# --------------------------------------------------------------------------- typed connections


def test_an_int_output_wired_into_a_str_field_is_refused_at_build_naming_both_ends(user_db, monkeypatch):
    wf = WorkflowBuilder(user_db)
    wf.add_node("UserCreateNode", "first", {"name": "A", "email": "a@x"})
    wf.add_node("UserCountNode", "count", {})
    wf.add_node("UserCreateNode", "third", {"email": "c@x"})
    wf.add_connection("first", "id", "count", "filter.id")
    wf.add_connection("count", "count", "third", "name")
    opens = spy_on_opens(monkeypatch, user_db)
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    (problem,) = info.value.problems
    assert problem.startswith(
        "connection count.count -> third.name: UserCountNode 'count' outputs 'count' as int"
    )
    assert "UserCreateNode 'third' takes 'name' as str" in problem
    assert "Connect an output of type str, or convert the value in a Python node" in problem
    assert opens == [] and count_rows(user_db) == 0


def test_a_row_field_of_the_wrong_type_is_refused_through_a_path_and_an_update_field(mem_db):
    wf = WorkflowBuilder(mem_db)
    wf.add_node("UserListNode", "l", {})
    wf.add_node("UserUpdateNode", "u", {"id": 1, "fields": {}})
    wf.add_connection("l", "records.0.created_at", "u", "fields.email")
    wf.add_connection("l", "records.0.name", "u", "fields.age")
    message = build_problems(wf)
    assert (
        "outputs 'records.0.created_at' as datetime" in message and "takes 'fields.email' as str" in message
    )
    assert "fields.age" not in message  # a text may hold a whole number: '42' is an int, at run time


def test_a_typed_python_nodes_return_annotation_is_its_output_type(mem_db):
    wf = WorkflowBuilder(mem_db)
    wf.add_node(totals, "t", {})
    wf.add_node("UserCreateNode", "c", {"email": "a@x"})
    wf.add_connection("t", "count", "c", "name")
    wf.add_connection("t", "labl", "c", "age")
    message = build_problems(wf)
    assert "totals 't' outputs 'count' as int" in message
    assert "has no output 'labl'. Did you mean 'label'?" in message


def test_conversions_the_runtime_makes_still_build_and_run(db):
    @db.model
    class Reading:
        label: str
        value: float
        level: int = 0
        note: Optional[str] = None  # noqa: UP045 - Optional is the documented spelling

    def as_text(level: int) -> dict[str, str]:
        return {"level": str(level)}

    def untyped(x):
        return {"anything": x}

    wf = WorkflowBuilder(db)
    wf.add_node("ReadingCreateNode", "first", {"label": "a", "value": 1.5, "level": 7})
    wf.add_node("ReadingReadNode", "read", {})  # a row, or None: Optional
    wf.add_node(as_text, "text", {})
    wf.add_node(untyped, "any", {})
    wf.add_node("ReadingCreateNode", "second", {"label": "b"})
    wf.add_connection("first", "id", "read", "id")  # a row's id into an id input
    wf.add_connection("read", "level", "second", "value")  # int into a float field
    wf.add_connection("read", "level", "text", "level")
    wf.add_connection("text", "level", "second", "level")  # '7' into an int field
    wf.add_connection("read", "label", "any", "x")  # into Any
    wf.add_connection("any", "anything", "second", "note")  # from Any, into an Optional field
    results, _ = LocalRuntime().execute(wf.build())
    assert (results["second"]["value"], results["second"]["level"], results["second"]["note"]) == (
        7.0,
        7,
        "a",
    )


def test_a_path_into_a_row_that_lacks_the_field_is_refused_with_a_did_you_mean(mem_db):
    wf = WorkflowBuilder(mem_db)
    wf.add_node("UserListNode", "l", {})
    wf.add_node("UserReadNode", "r", {})
    wf.add_node("UserReadNode", "s", {})
    wf.add_connection("l", "records.0.idd", "r", "id")
    wf.add_connection("l", "records.id", "s", "id")
    message = build_problems(wf)
    assert "'records.0' of UserListNode 'l' is a User row, which has no 'idd'. Did you mean 'id'?" in message
    assert "is Records[User], a list, so it has no 'id'. Name an index: 'records.0.id'" in message


# --------------------------------------------------------------------------- connections


def test_a_dotted_source_output_reaches_into_a_list_of_records(user_db):
    create_users(user_db, "first", "second")
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserListNode", "l", {"order_by": ["-id"]})
    wf.add_node("UserReadNode", "r", {})
    wf.add_connection("l", "records.0.id", "r", "id")
    results, _ = LocalRuntime().execute(wf.build())
    assert results["r"]["name"] == "second"


def test_a_dotted_target_input_sets_one_key_of_a_dict_parameter_and_keeps_the_others(user_db):
    def make_email(name: str) -> dict:
        return {"email": f"{name.lower()}@new.example"}

    (alice,) = create_users(user_db, "Alice")
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserReadNode", "r", {"id": alice["id"]})
    wf.add_node(make_email, "mk", {})
    wf.add_node("UserUpdateNode", "u", {"id": alice["id"], "fields": {"age": 31}})
    wf.add_connection("r", "name", "mk", "name")
    wf.add_connection("mk", "email", "u", "fields.email")
    workflow = wf.build()
    results, _ = LocalRuntime().execute(workflow)
    assert results["u"]["email"] == "alice@new.example"
    assert results["u"]["age"] == 31
    assert results["u"]["name"] == "Alice"
    # the node's own parameter dict is not modified by a run
    assert dict(workflow.nodes["u"].params["fields"]) == {"age": 31}


def test_a_dotted_target_input_alone_supplies_a_required_dict_parameter(user_db):
    (alice,) = create_users(user_db, "Alice")
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserReadNode", "r", {"id": alice["id"]})
    wf.add_node("UserUpdateNode", "u", {})
    wf.add_connection("r", "id", "u", "id")
    wf.add_connection("r", "email", "u", "fields.nickname")
    results, _ = LocalRuntime().execute(wf.build())
    assert results["u"]["nickname"] == alice["email"]


def test_a_connected_value_is_checked_and_coerced_like_a_parameter(user_db):
    def age_text() -> dict:
        return {"age": "57", "bad": "old"}

    (alice,) = create_users(user_db, "Alice")
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node(age_text, "t", {})
    wf.add_node("UserUpdateNode", "u", {"id": alice["id"], "fields": {}})
    wf.add_connection("t", "age", "u", "fields.age")
    results, _ = LocalRuntime().execute(wf.build())
    assert results["u"]["age"] == 57

    wf2 = WorkflowBuilder(dataflow=user_db)
    wf2.add_node(age_text, "t", {})
    wf2.add_node("UserUpdateNode", "u", {"id": alice["id"], "fields": {}})
    wf2.add_connection("t", "bad", "u", "fields.age")
    with pytest.raises(ValidationError, match="age"):
        LocalRuntime().execute(wf2.build())


def test_a_source_output_path_that_the_result_lacks_fails_the_run_naming_the_node_and_path(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserListNode", "l", {})
    wf.add_node("UserReadNode", "r", {})
    wf.add_connection("l", "records.0.id", "r", "id")
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime().execute(wf.build())
    assert info.value.node_id == "r"
    assert "records.0.id" in str(info.value)


def test_add_connection_refuses_an_empty_path(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserListNode", "l", {})
    wf.add_node("UserReadNode", "r", {})
    with pytest.raises(ValidationError):
        wf.add_connection("l", "", "r", "id")
    with pytest.raises(ValidationError):
        wf.add_connection("l", "count", "r", "")


# --------------------------------------------------------------------------- build() reports every problem


def test_build_reports_a_dangling_connection_naming_the_missing_node(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "creator", {"name": "A", "email": "a@x"})
    wf.add_node("UserReadNode", "r", {"id": 1})
    wf.add_connection("craetor", "id", "r", "id")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    assert len(info.value.problems) == 1
    assert "'craetor'" in info.value.problems[0]
    assert "Did you mean 'creator'" in info.value.problems[0]


def test_build_reports_a_connection_into_a_missing_target(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    wf.add_connection("c", "id", "nowhere", "id")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    assert any("'nowhere'" in p for p in info.value.problems)


def test_build_records_a_required_input_that_nobody_supplies_as_a_workflow_input(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A"})
    workflow = wf.build()
    assert [str(i) for i in workflow.workflow_inputs] == ["c.email"]
    with pytest.raises(ValidationError, match="c.email"):
        LocalRuntime().execute(workflow)


def test_a_required_input_supplied_by_a_connection_satisfies_build(mem_db):
    def email() -> dict:
        return {"address": "a@x"}

    wf = WorkflowBuilder()
    wf.add_node(email, "e", {})
    wf.add_node("UserCreateNode", "c", {"name": "A"})
    wf.add_connection("e", "address", "c", "email")
    workflow = wf.build()
    assert workflow.order == ("e", "c")
    results, _ = LocalRuntime().execute(workflow)
    assert results["c"]["email"] == "a@x"


def test_build_reports_an_unknown_output_of_a_generated_node_with_a_suggestion(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserListNode", "l", {})
    wf.add_node("UserReadNode", "r", {})
    wf.add_connection("l", "recods.0.id", "r", "id")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    assert len(info.value.problems) == 1
    assert "recods" in info.value.problems[0]
    assert "Did you mean 'records'" in info.value.problems[0]


def test_a_missing_source_node_is_suggested_by_similarity_or_not_at_all(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserReadNode", "read_user", {"id": 1})
    wf.add_node("UserListNode", "list_users", {})
    wf.add_connection("create_usr", "id", "read_user", "id")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    (problem,) = info.value.problems
    assert "there is no node 'create_usr'." in problem
    assert "Did you mean" not in problem  # nothing is close: no wrong guess
    assert "The workflow's nodes: read_user, list_users." in problem
    wf.add_node("UserCreateNode", "create_user", {"name": "A", "email": "a@x"})
    with pytest.raises(WorkflowValidationError, match="Did you mean 'create_user'"):
        wf.build()


def test_an_unknown_input_or_output_lists_the_valid_ones(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    wf.add_node("UserUpdateNode", "u", {"id": 1})
    wf.add_connection("c", "name", "u", "feilds.name")
    wf.add_connection("c", "nmae", "u", "fields.name")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    inputs, outputs = info.value.problems
    assert "UserUpdateNode has no input 'feilds'. Did you mean 'fields'?" in inputs
    assert "Its inputs: id, filter, fields, raise_on_not_found." in inputs
    assert "UserCreateNode has no output 'nmae'. Did you mean 'name'?" in outputs
    assert "Its outputs: age, created_at, email, id, name, nickname, updated_at." in outputs


def test_build_reports_an_unknown_input_of_the_target(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    wf.add_node("UserReadNode", "r", {})
    wf.add_connection("c", "id", "r", "idd")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    assert any("idd" in p and "Did you mean 'id'" in p for p in info.value.problems)


def test_build_reports_a_cycle_naming_its_nodes():
    def a(x: int) -> dict:
        return {"y": x}

    def b(y: int) -> dict:
        return {"x": y}

    wf = WorkflowBuilder()
    wf.add_node(a, "first", {})
    wf.add_node(b, "second", {})
    wf.add_connection("first", "y", "second", "y")
    wf.add_connection("second", "x", "first", "x")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    assert len(info.value.problems) == 1
    assert "cycle" in info.value.problems[0]
    assert "first" in info.value.problems[0]
    assert "second" in info.value.problems[0]


def test_build_reports_a_node_feeding_itself():
    def a(x: int = 0) -> dict:
        return {"x": x}

    wf = WorkflowBuilder()
    wf.add_node(a, "loop", {})
    wf.add_connection("loop", "x", "loop", "x")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    assert any("loop" in p for p in info.value.problems)


def test_build_reports_every_problem_at_once_in_one_error(mem_db):
    def a(x: int) -> dict:
        return {"y": x}

    def b(y: int) -> dict:
        return {"x": y}

    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "incomplete", {"name": "A"})  # no email: a workflow input, no problem
    wf.add_node("UserBulkUpdateNode", "everyone", {"fields": {"age": 1}})  # no filter, not confirmed
    wf.add_node("UserListNode", "l", {})
    wf.add_node("UserReadNode", "r", {})
    wf.add_connection("l", "rekords.0.id", "r", "id")  # unknown output
    wf.add_connection("ghost", "id", "incomplete", "age")  # dangling
    wf.add_node(a, "first", {})
    wf.add_node(b, "second", {})
    wf.add_connection("first", "y", "second", "y")
    wf.add_connection("second", "x", "first", "x")  # cycle
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    problems = info.value.problems
    assert isinstance(problems, list)
    assert len(problems) == 4
    assert any("ghost" in p for p in problems)
    assert any("'everyone'" in p and "every User row" in p for p in problems)
    assert not any("email" in p for p in problems)
    assert any("rekords" in p for p in problems)
    assert any("cycle" in p for p in problems)
    assert "4 problem" in str(info.value)
    for p in problems:
        assert p in str(info.value)


def test_build_refuses_a_single_record_update_whose_filter_is_not_an_id(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserUpdateNode", "u", {"filter": {"name": "A"}, "fields": {"age": 1}})
    with pytest.raises((WorkflowValidationError, ValidationError)):
        wf.build()


def test_an_empty_workflow_builds_and_runs_to_empty_results():
    workflow = WorkflowBuilder().build()
    assert isinstance(workflow, Workflow)
    results, run_id = LocalRuntime().execute(workflow)
    assert results == {}
    assert run_id


# --------------------------------------------------------------------------- the built Workflow


def test_build_returns_an_immutable_workflow(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    workflow = wf.build()
    assert isinstance(workflow, Workflow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        workflow.name = "changed"
    with pytest.raises(TypeError):
        workflow.nodes["x"] = workflow.nodes["c"]
    with pytest.raises(TypeError):
        workflow.nodes["c"].params["name"] = "B"
    with pytest.raises(AttributeError):
        workflow.connections.append(None)


def test_changing_the_builder_after_build_does_not_change_the_built_workflow(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    first = wf.build()
    wf.add_node("UserReadNode", "r", {})
    wf.add_connection("c", "id", "r", "id")
    second = wf.build()
    assert list(first.nodes) == ["c"]
    assert first.connections == ()
    assert list(second.nodes) == ["c", "r"]
    assert len(second.connections) == 1


def test_a_mutable_params_dict_changed_after_add_node_does_not_change_the_workflow(user_db):
    params = {"name": "Before", "email": "b@x"}
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", params)
    params["name"] = "After"
    results, _ = LocalRuntime().execute(wf.build())
    assert results["c"]["name"] == "Before"


def test_nodes_run_in_dependency_order_regardless_of_insertion_order(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserReadNode", "r", {})
    wf.add_node("UserCreateNode", "c", {"name": "Late", "email": "late@x"})
    wf.add_connection("c", "id", "r", "id")
    workflow = wf.build()
    assert workflow.order == ("c", "r")
    results, _ = LocalRuntime().execute(workflow)
    assert results["r"]["name"] == "Late"


def test_each_build_gets_a_distinct_workflow_id(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserListNode", "l", {})
    assert wf.build().workflow_id != wf.build().workflow_id


# --------------------------------------------------------------------------- parameters at execute


def test_parameters_at_execute_override_node_parameters(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "Default", "email": "d@x"})
    workflow = wf.build()
    runtime = LocalRuntime()
    results, _ = runtime.execute(workflow, parameters={"c": {"name": "Override", "email": "o@x"}})
    assert results["c"]["name"] == "Override"
    assert results["c"]["email"] == "o@x"
    # the workflow itself keeps its own parameters for the next run
    results, _ = runtime.execute(workflow)
    assert results["c"]["name"] == "Default"


def test_parameters_at_execute_override_only_the_named_keys(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "Default", "email": "d@x", "age": 5})
    results, _ = LocalRuntime().execute(wf.build(), parameters={"c": {"age": 6}})
    assert (results["c"]["name"], results["c"]["email"], results["c"]["age"]) == ("Default", "d@x", 6)


def test_parameters_at_execute_are_checked_and_coerced(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    workflow = wf.build()
    with pytest.raises(ValidationError, match="age"):
        LocalRuntime().execute(workflow, parameters={"c": {"age": "abc"}})
    with pytest.raises(ValidationError, match="Did you mean 'name'"):
        LocalRuntime().execute(workflow, parameters={"c": {"nam": "B"}})
    results, _ = LocalRuntime().execute(workflow, parameters={"c": {"age": "8"}})
    assert results["c"]["age"] == 8


def test_parameters_at_execute_naming_an_unknown_node_are_refused_and_nothing_runs(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "create", {"name": "A", "email": "a@x"})
    workflow = wf.build()
    with pytest.raises(ValidationError) as info:
        LocalRuntime().execute(workflow, parameters={"craete": {"name": "B"}})
    assert "craete" in str(info.value)
    assert "Did you mean 'create'" in str(info.value)
    check = WorkflowBuilder(dataflow=user_db)
    check.add_node("UserCountNode", "n", {})
    assert LocalRuntime().execute(check.build())[0]["n"] == {"count": 0}


def test_parameters_at_execute_may_override_a_parameter_that_a_connection_also_feeds(user_db):
    (alice,) = create_users(user_db, "Alice")
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserReadNode", "r", {"id": alice["id"]})
    wf.add_node("UserUpdateNode", "u", {"fields": {"age": 1}})
    wf.add_connection("r", "id", "u", "id")
    results, _ = LocalRuntime().execute(wf.build(), parameters={"u": {"fields": {"age": 2}}})
    assert results["u"]["age"] == 2


def test_the_builder_itself_can_be_executed(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    results, _ = LocalRuntime().execute(wf)
    assert results["c"]["name"] == "A"


def test_execute_refuses_something_that_is_not_a_workflow():
    with pytest.raises(ValidationError, match="Workflow"):
        LocalRuntime().execute({"nodes": []})


# --------------------------------------------------------------------------- workflow inputs: run parameters


class Events:
    """A hooks subscriber that records what the runtime started."""

    def __init__(self):
        self.seen: list[str] = []

    def before_workflow(self, **_):
        self.seen.append("workflow")

    def before_node(self, *, node_id, **_):
        self.seen.append(node_id)


def count_rows(db: DataFlow) -> int:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("UserCountNode", "n", {})
    return LocalRuntime().execute(wf.build())[0]["n"]["count"]


def test_run_parameters_supply_a_required_input_as_in_kailashs_quickstart(user_db):
    (alice,) = create_users(user_db, "Alice")
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserReadNode", "read", {})
    workflow = wf.build()
    assert workflow.workflow_inputs == (WorkflowInput("read", "id", "int"),)
    results, _ = LocalRuntime().execute(workflow, parameters={"read": {"id": alice["id"]}})
    assert results["read"] == alice


def test_a_run_without_a_workflow_input_is_refused_before_anything_runs(user_db, monkeypatch):
    count_rows(user_db)  # the table exists: what the refused run would write to
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "create", {"name": "A", "email": "a@x"})
    wf.add_node("UserReadNode", "read", {})
    wf.add_node("UserUpdateNode", "rename", {})
    workflow = wf.build()
    opens, events = spy_on_opens(monkeypatch, user_db), Events()
    for runtime in (LocalRuntime(hooks=[events]), AsyncLocalRuntime(hooks=[events])):
        with pytest.raises(ValidationError) as info:
            runtime.execute(workflow, parameters={"rename": {"fields": {"name": "B"}}})
        assert str(info.value).startswith(
            "workflow 'workflow' needs run parameters it was not given: read.id (int), rename.id (int). "
            "Nothing ran."
        )
        assert 'parameters={"read": {"id": ...}, "rename": {"id": ...}}' in str(info.value)
    with pytest.raises(ValidationError, match="read.id"):
        _loop.run(AsyncLocalRuntime().execute_async(workflow))
    with pytest.raises(ValidationError, match="read.id"):
        prepare(workflow, None)
    assert opens == [] and events.seen == []
    assert count_rows(user_db) == 0


def test_a_wrong_typed_run_parameter_is_refused_before_anything_runs(user_db, monkeypatch):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "create", {"name": "A", "email": "a@x"})
    wf.add_node("UserReadNode", "read", {})
    workflow = wf.build()
    opens = spy_on_opens(monkeypatch, user_db)
    with pytest.raises(ValidationError, match="UserReadNode 'read': parameter 'id': .* expected int"):
        LocalRuntime().execute(workflow, parameters={"read": {"id": "first"}})
    assert opens == []
    at_build = WorkflowBuilder(dataflow=user_db)
    at_build.add_node("UserReadNode", "read", {"id": "first"})
    with pytest.raises(ValidationError, match="parameter 'id': .* expected int"):
        at_build.build()  # at build, as before


def test_run_parameters_that_complete_a_node_get_its_full_check_before_anything_runs(user_db, monkeypatch):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "create", {"name": "A", "email": "a@x"})
    wf.add_node("UserUpdateNode", "rename", {"fields": {"name": "B"}})
    workflow = wf.build()
    opens = spy_on_opens(monkeypatch, user_db)
    with pytest.raises(ValidationError, match="UserBulkUpdateNode"):  # a filter on another field than id
        LocalRuntime().execute(workflow, parameters={"rename": {"filter": {"name": "A"}}})
    assert opens == []
    results, _ = LocalRuntime().execute(workflow, parameters={"rename": {"filter": {"id": 1}}})
    assert results["rename"]["name"] == "B"  # a filter on the id stands in for the id


def test_a_connected_or_given_input_is_no_workflow_input(mem_db):
    wf = WorkflowBuilder()
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    wf.add_node("UserReadNode", "connected", {})
    wf.add_node("UserReadNode", "given", {"id": 1})
    wf.add_connection("c", "id", "connected", "id")
    workflow = wf.build()
    assert workflow.workflow_inputs == ()
    assert "workflow input" not in workflow.describe()
    assert LocalRuntime().execute(workflow)[0]["given"]["name"] == "A"


def test_describe_and_the_dag_show_the_workflow_inputs(mem_db):
    wf = WorkflowBuilder(name="lookup")
    wf.add_node("UserCreateNode", "c", {"name": "A"})
    wf.add_node("UserReadNode", "read", {})
    workflow = wf.build()
    assert workflow.describe().splitlines() == [
        "<Workflow 'lookup': 2 node(s), 0 connection(s)>",
        "  c: UserCreateNode",
        "    <- c.email: str, a workflow input",
        "  read: UserReadNode",
        "    <- read.id: int, a workflow input",
        '  each run passes: parameters={"c": {"email": ...}, "read": {"id": ...}}',
    ]
    drawing = viz.DagDrawing(workflow)
    assert "    <- read.id: int, a workflow input" in drawing.text().splitlines()
    assert "run input: id" in drawing.fallback_html()
    try:
        dot = drawing.dot()
    except DataFlowError:  # the graphviz package is not installed
        return
    assert "read\\nUserReadNode\\nrun input: id" in dot


# --------------------------------------------------------------------------- the spec's node surface


def test_each_generated_node_class_carries_its_model_name_and_operation(mem_db):
    operations = {name: cls.operation for name, cls in mem_db.nodes.items()}
    assert operations == {
        "UserCreateNode": "create",
        "UserReadNode": "read",
        "UserUpdateNode": "update",
        "UserDeleteNode": "delete",
        "UserListNode": "list",
        "UserUpsertNode": "upsert",
        "UserCountNode": "count",
        "UserBulkCreateNode": "bulk_create",
        "UserBulkUpdateNode": "bulk_update",
        "UserBulkDeleteNode": "bulk_delete",
        "UserBulkUpsertNode": "bulk_upsert",
        "UserAggregateNode": "aggregate",
    }
    assert {cls.model_name for cls in mem_db.nodes.values()} == {"User"}


def test_generated_nodes_are_attributes_of_the_node_namespace_and_tab_complete(mem_db):
    assert mem_db.nodes.UserCreateNode is mem_db.nodes["UserCreateNode"]
    assert "UserBulkUpsertNode" in dir(mem_db.nodes)

    @mem_db.model
    class Order:
        total: int

    assert mem_db.nodes.OrderCreateNode.model_name == "Order"  # a live view: later models appear
    assert "OrderReadNode" in dir(mem_db.nodes) and len(mem_db.nodes) == 24


def test_a_wrong_node_attribute_is_an_attribute_error_that_suggests_the_close_name(mem_db):
    with pytest.raises(AttributeError, match=r"no node 'UserCreatNode'. Did you mean 'UserCreateNode'\?"):
        getattr(mem_db.nodes, "UserCreatNode")  # noqa: B009 - the attribute lookup is the point
    with pytest.raises(NodeNotFoundError):
        getattr(mem_db.nodes, "UserCreatNode")  # noqa: B009 - the attribute lookup is the point
    assert not hasattr(mem_db.nodes, "UserFrobNode")
    with pytest.raises(KeyError):
        mem_db.nodes["UserCreatNode"]


def test_a_node_class_from_the_namespace_can_be_passed_to_add_node(mem_db):
    wf = WorkflowBuilder(dataflow=mem_db)
    wf.add_node(mem_db.nodes.UserCreateNode, "create", {"name": "Ann", "email": "a@x"})
    wf.add_node(mem_db.nodes.UserCountNode, "count", {})
    wf.add_connection("create", "id", "count", "filter.id")
    results, _ = LocalRuntime().execute(wf.build())
    assert results["create"]["name"] == "Ann" and results["count"]["count"] == 1


def test_add_node_records_when_it_was_added_and_what_the_node_does(mem_db):
    import datetime as dt

    wf = WorkflowBuilder(dataflow=mem_db)
    before = dt.datetime.now(dt.UTC)
    wf.add_node("UserBulkUpsertNode", "upsert", {"data": []})
    wf.add_node(lambda x: x, "plain", {"x": 1})
    after = dt.datetime.now(dt.UTC)
    workflow = wf.build()
    upsert, plain = workflow.nodes["upsert"].metadata, workflow.nodes["plain"].metadata
    assert before <= upsert["added_at"] <= after and before <= plain["added_at"] <= after
    assert (upsert["model_name"], upsert["operation"]) == ("User", "bulk_upsert")
    assert (plain["model_name"], plain["operation"]) == (None, "python")


def test_a_built_workflow_records_its_id_name_creation_time_and_models(mem_db):
    import datetime as dt

    @mem_db.model
    class Order:
        total: int

    wf = WorkflowBuilder(dataflow=mem_db, name="checkout")
    wf.add_node("UserCreateNode", "user", {"name": "Ann", "email": "a@x"})
    wf.add_node("OrderCreateNode", "order", {"total": 3})
    wf.add_node(lambda: 1, "plain")
    assert wf.metadata["dataflow_models"] == {"User", "Order"}
    before = dt.datetime.now(dt.UTC)
    workflow = wf.build(workflow_id="wf-1")
    assert dict(workflow.metadata, created_at=None) == {
        "workflow_id": "wf-1",
        "workflow_name": "checkout",
        "created_at": None,
        "dataflow_models": {"User", "Order"},
    }
    assert before <= workflow.metadata["created_at"] <= dt.datetime.now(dt.UTC)
    with pytest.raises(TypeError):
        workflow.metadata["dataflow_models"] = set()  # the built workflow is immutable
