"""LocalRuntime / AsyncLocalRuntime: results and run ids, errors, transactions, threads, loops, Jupyter, exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dataflow_lab import (
    AsyncLocalRuntime,
    DataFlow,
    DataFlowError,
    LocalRuntime,
    NodeExecutionError,
    NotFoundError,
    ValidationError,
    WorkflowBuilder,
)

REPO = Path(__file__).resolve().parent.parent


def define_user(db: DataFlow) -> type:
    @db.model
    class User:
        name: str
        email: str
        age: int = 0
        __dataflow__ = {"unique": [["email"]]}

    return User


@pytest.fixture
def user_db(db):
    define_user(db)
    return db


def run(db: DataFlow, build, runtime: LocalRuntime | None = None) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    build(wf)
    return (runtime or LocalRuntime()).execute(wf.build())[0]


def all_users(db: DataFlow) -> list[dict]:
    return run(db, lambda wf: wf.add_node("UserListNode", "l", {}))["l"]["records"]


def seed(db: DataFlow) -> list[dict]:
    data = [{"name": n, "email": f"{n}@x", "age": i} for i, n in enumerate(["alice", "bob", "carol"], 1)]
    run(db, lambda wf: wf.add_node("UserBulkCreateNode", "seed", {"data": data}))
    return all_users(db)


def boom(trigger: int) -> None:
    raise RuntimeError(f"boom-{trigger}: the failure under test")


# --------------------------------------------------------------------------- results and run ids


def test_execute_returns_results_by_node_id_and_a_uuid_run_id(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    wf.add_node("UserCountNode", "n", {})
    results, run_id = LocalRuntime().execute(wf.build())
    assert set(results) == {"c", "n"}
    assert results["c"]["name"] == "A"
    assert results["n"] == {"count": 1}
    assert isinstance(run_id, str)
    assert str(uuid.UUID(run_id)) == run_id


def test_every_run_gets_a_new_run_id(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCountNode", "n", {})
    workflow = wf.build()
    runtime = LocalRuntime()
    run_ids = {runtime.execute(workflow)[1] for _ in range(5)}
    assert len(run_ids) == 5


def test_the_runtime_repr_shows_its_transaction_mode():
    assert "node" in repr(LocalRuntime(transaction="node"))
    assert "auto" in repr(LocalRuntime())  # the default (issue 16: all-or-nothing across databases)


# --------------------------------------------------------------------------- errors raise


def test_a_failing_callable_raises_node_execution_error_naming_node_id_type_and_cause(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    wf.add_node(boom, "explode", {})
    wf.add_connection("c", "id", "explode", "trigger")
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime().execute(wf.build())
    error = info.value
    assert error.node_id == "explode"
    assert error.node_type == "boom"
    message = str(error)
    assert "'explode'" in message
    assert "boom" in message
    assert "RuntimeError" in message
    assert "boom-1: the failure under test" in message
    assert isinstance(error.cause, RuntimeError)
    assert isinstance(error, DataFlowError)


def test_a_failing_generated_node_raises_node_execution_error_that_is_also_its_cause_class(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserReadNode", "fetch_missing", {"id": 987654})
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime().execute(wf.build())
    error = info.value
    assert isinstance(error, NotFoundError)
    assert error.node_id == "fetch_missing"
    assert error.node_type == "UserReadNode"
    assert "'fetch_missing'" in str(error)
    assert "UserReadNode" in str(error)
    assert "987654" in str(error)


def test_a_database_error_raises_node_execution_error_with_the_databases_message(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "first", {"name": "A", "email": "same@x"})
    wf.add_node("UserCreateNode", "second", {"name": "B", "email": "same@x"})
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime().execute(wf.build())
    assert info.value.node_id == "second"
    assert "UserCreateNode" in str(info.value)
    assert any(word in str(info.value).lower() for word in ("unique", "duplicate", "constraint"))


def test_a_failed_run_raises_and_returns_no_partial_results(user_db):
    outcome = {}
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "A", "email": "a@x"})
    wf.add_node(boom, "explode", {"trigger": 2})
    with pytest.raises(NodeExecutionError):
        outcome["value"] = LocalRuntime().execute(wf.build())
    assert outcome == {}


def test_nodes_after_a_failing_node_do_not_run(user_db):
    ran = []

    def after(x: int = 0) -> None:
        ran.append(x)

    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node(boom, "explode", {"trigger": 3})
    wf.add_node(after, "after", {})
    wf.add_connection("explode", "anything", "after", "x")
    with pytest.raises(NodeExecutionError):
        LocalRuntime().execute(wf.build())
    assert ran == []


# --------------------------------------------------------------------------- transactions


def failing_run(wf: WorkflowBuilder, db: DataFlow, ids: list[int], how: str) -> None:
    """A read, then create, update, delete, upserts and four bulk operations, then fail."""
    wf.add_node("UserListNode", "peek", {})
    wf.add_node("UserCreateNode", "create", {"name": "dave", "email": "dave@x"})
    wf.add_node("UserUpdateNode", "update", {"id": ids[0], "fields": {"age": 99, "name": "ALICE"}})
    wf.add_node("UserDeleteNode", "delete", {"id": ids[1]})
    wf.add_node(
        "UserBulkCreateNode",
        "bulk_create",
        {"data": [{"name": "eve", "email": "eve@x"}, {"name": "frank", "email": "frank@x"}]},
    )
    wf.add_node("UserBulkUpdateNode", "bulk_update", {"filter": {"name": "carol"}, "fields": {"age": 7}})
    wf.add_node(
        "UserBulkUpsertNode",
        "bulk_upsert",
        {"data": [{"name": "gina", "email": "carol@x", "age": 70}], "conflict_on": ["email"]},
    )
    wf.add_node("UserBulkDeleteNode", "bulk_delete", {"filter": {"name": "eve"}})
    wf.add_node("UserUpsertNode", "upsert", {"where": {"email": "zed@x"}, "create": {"name": "zed"}})
    if how == "python":
        wf.add_node(boom, "fail", {"trigger": 4})
    elif how == "database":  # a unique violation raised by the database itself
        wf.add_node("UserCreateNode", "fail", {"name": "dup", "email": "dave@x"})
    else:  # a NotFoundError raised by a generated node
        wf.add_node("UserReadNode", "fail", {"id": 424242})


@pytest.mark.parametrize("how", ["python", "database", "not_found"])
def test_by_default_a_failed_run_leaves_the_database_exactly_as_before(user_db, how):
    before = seed(user_db)
    wf = WorkflowBuilder(dataflow=user_db)
    failing_run(wf, user_db, [r["id"] for r in before], how)
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime().execute(wf.build())
    assert info.value.node_id == "fail"
    assert all_users(user_db) == before


@pytest.mark.parametrize("suffix", ["db", "duckdb"])
def test_by_default_a_failed_run_leaves_a_file_database_exactly_as_before(suffix, tmp_path):
    scheme = "sqlite" if suffix == "db" else "duckdb"
    db = DataFlow(f"{scheme}:///{tmp_path / f'rollback.{suffix}'}")
    define_user(db)
    before = seed(db)
    for how in ("python", "database", "not_found"):
        wf = WorkflowBuilder(dataflow=db)
        failing_run(wf, db, [r["id"] for r in before], how)
        with pytest.raises(NodeExecutionError):
            LocalRuntime().execute(wf.build())
        assert all_users(db) == before, how
    db.close()


def test_after_a_rolled_back_run_the_database_is_usable_and_ids_continue(user_db):
    before = seed(user_db)
    wf = WorkflowBuilder(dataflow=user_db)
    failing_run(wf, user_db, [r["id"] for r in before], "database")
    with pytest.raises(NodeExecutionError):
        LocalRuntime().execute(wf.build())
    created = run(user_db, lambda w: w.add_node("UserCreateNode", "c", {"name": "h", "email": "h@x"}))["c"]
    assert created["id"] > max(r["id"] for r in before)
    assert [r["name"] for r in all_users(user_db)] == ["alice", "bob", "carol", "h"]


def test_transaction_node_keeps_what_nodes_committed_before_the_failure(user_db):
    before = seed(user_db)
    alice, bob, _ = before
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "create", {"name": "dave", "email": "dave@x"})
    wf.add_node("UserUpdateNode", "update", {"id": alice["id"], "fields": {"age": 99}})
    wf.add_node("UserDeleteNode", "delete", {"id": bob["id"]})
    wf.add_node("UserBulkCreateNode", "bulk", {"data": [{"name": "eve", "email": "eve@x"}]})
    wf.add_node(boom, "fail", {"trigger": 5})
    wf.add_node("UserCreateNode", "never", {"name": "never", "email": "never@x"})
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime(transaction="node").execute(wf.build())
    assert info.value.node_id == "fail"
    after = {r["name"]: r for r in all_users(user_db)}
    assert set(after) == {"alice", "carol", "dave", "eve"}
    assert after["alice"]["age"] == 99


def test_transaction_node_rolls_back_only_the_failing_node(user_db):
    seed(user_db)
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "create", {"name": "dave", "email": "dave@x"})
    # a bulk insert whose second row violates the unique email: its first row must not stay
    wf.add_node(
        "UserBulkCreateNode",
        "bulk",
        {"data": [{"name": "eve", "email": "eve@x"}, {"name": "dup", "email": "alice@x"}]},
    )
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime(transaction="node").execute(wf.build())
    assert info.value.node_id == "bulk"
    assert [r["name"] for r in all_users(user_db)] == ["alice", "bob", "carol", "dave"]


def test_an_unknown_transaction_mode_is_refused_with_a_suggestion():
    with pytest.raises(ValidationError) as info:
        LocalRuntime(transaction="nodes")
    assert "nodes" in str(info.value)
    assert "Did you mean 'node'" in str(info.value)
    with pytest.raises(ValidationError):
        AsyncLocalRuntime(transaction="per-statement")


def test_a_misspelled_runtime_option_is_refused_with_a_suggestion():
    with pytest.raises(ValidationError) as info:
        LocalRuntime(transactions="node")
    assert str(info.value).startswith(
        "Unknown LocalRuntime option 'transactions'. Did you mean 'transaction'?"
    )
    assert "known options: hooks, isolation, node_timeout, retry, timeout, transaction, user." in str(
        info.value
    )
    with pytest.raises(ValidationError) as info:
        AsyncLocalRuntime(max_concurency=2)
    assert "AsyncLocalRuntime option 'max_concurency'. Did you mean 'max_concurrency'?" in str(info.value)
    with pytest.raises(ValidationError, match="Did you mean 'transaction'"):
        AsyncLocalRuntime(transactions="node")


def test_a_run_spanning_two_databases_rolls_back_both(tmp_path):
    first = DataFlow(f"sqlite:///{tmp_path / 'one.db'}")
    second = DataFlow("duckdb:///:memory:")

    @first.model
    class Author:
        name: str

    @second.model
    class Book:
        title: str

    wf = WorkflowBuilder()
    wf.add_node("AuthorCreateNode", "a", {"name": "Ann"})
    wf.add_node("BookCreateNode", "b", {"title": "Tome"})
    wf.add_node(boom, "fail", {"trigger": 6})
    with pytest.raises(NodeExecutionError):
        LocalRuntime().execute(wf.build())
    check = WorkflowBuilder()
    check.add_node("AuthorCountNode", "authors", {})
    check.add_node("BookCountNode", "books", {})
    results, _ = LocalRuntime().execute(check.build())
    assert results == {"authors": {"count": 0}, "books": {"count": 0}}
    first.close()
    second.close()


# --------------------------------------------------------------------------- threads


def hammer(db: DataFlow, threads: int = 20, runs: int = 3) -> None:
    runtime = LocalRuntime()
    barrier = threading.Barrier(threads)

    def work(t: int) -> list[tuple[dict, dict]]:
        barrier.wait(timeout=30)
        out = []
        for r in range(runs):
            wf = WorkflowBuilder(dataflow=db)
            wf.add_node("UserCreateNode", "c", {"name": f"t{t}-{r}", "email": f"t{t}-{r}@x", "age": t})
            wf.add_node("UserReadNode", "read", {})
            wf.add_node("UserCountNode", "n", {"filter": {"age": t}})
            wf.add_connection("c", "id", "read", "id")
            results, run_id = runtime.execute(wf.build())
            uuid.UUID(run_id)
            out.append((results["c"], results["read"], results["n"]))
        return out

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(work, t) for t in range(threads)]
        outcomes = [f.result(timeout=60) for f in futures]
    for t, per_thread in enumerate(outcomes):
        for r, (created, read, count) in enumerate(per_thread):
            assert created == read
            assert created["name"] == f"t{t}-{r}"
            assert count == {"count": r + 1}  # a run sees its own thread's earlier commits
    rows = all_users(db)
    assert len(rows) == threads * runs
    assert len({row["id"] for row in rows}) == threads * runs
    assert db.pool_status().get("checked_out", 0) == 0


def test_twenty_threads_sharing_one_runtime_all_succeed(user_db):
    hammer(user_db)


def test_twenty_threads_sharing_one_runtime_all_succeed_on_file_sqlite(tmp_path):
    db = DataFlow(f"sqlite:///{tmp_path}/x.db")
    define_user(db)
    hammer(db)
    db.close()


def test_twenty_threads_sharing_one_runtime_all_succeed_on_file_duckdb(tmp_path):
    db = DataFlow(f"duckdb:///{tmp_path}/x.duckdb")
    define_user(db)
    hammer(db)
    db.close()


def several_dataflows_at_once(url: str, instances: int = 6, runs: int = 5) -> list[list]:
    """Independent DataFlows on one database (as separate processes would be), first use at once."""
    dbs = []
    for _ in range(instances):
        db = DataFlow(url)

        @db.model
        class Event:
            label: str
            __dataflow__ = {"indexes": ["label"]}

        dbs.append(db)
    barrier = threading.Barrier(instances)

    def work(db: DataFlow) -> list:
        barrier.wait(timeout=30)
        outcomes = []
        for r in range(runs):
            wf = WorkflowBuilder(dataflow=db)
            wf.add_node("EventCreateNode", "c", {"label": f"r{r}"})
            try:
                outcomes.append(LocalRuntime().execute(wf.build())[0]["c"]["id"])
            except DataFlowError as exc:
                outcomes.append(str(exc))
        return outcomes

    with ThreadPoolExecutor(max_workers=instances) as pool:
        results = list(pool.map(work, dbs, timeout=90))
    for db in dbs:
        db.close()
    return results


def test_several_dataflows_creating_the_same_table_on_one_postgres_database_at_once_all_succeed(pg_url):
    results = several_dataflows_at_once(pg_url)
    failures = [o for per_db in results for o in per_db if not isinstance(o, int)]
    assert failures == []
    assert sorted(o for per_db in results for o in per_db) == list(range(1, 31))


def test_several_dataflows_writing_one_sqlite_file_at_once_all_succeed(tmp_path):
    results = several_dataflows_at_once(f"sqlite:///{tmp_path / 'shared.db'}")
    failures = [o for per_db in results for o in per_db if not isinstance(o, int)]
    assert failures == []
    assert sorted(o for per_db in results for o in per_db) == list(range(1, 31))


def test_one_workflow_object_run_by_many_threads_with_different_parameters(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "template", "email": "template@x"})
    wf.add_node("UserReadNode", "r", {})
    wf.add_connection("c", "id", "r", "id")
    workflow = wf.build()
    runtime = LocalRuntime()

    def work(t: int) -> dict:
        results, _ = runtime.execute(workflow, parameters={"c": {"name": f"n{t}", "email": f"n{t}@x"}})
        return results["r"]

    with ThreadPoolExecutor(max_workers=20) as pool:
        rows = list(pool.map(work, range(20), timeout=60))
    assert [row["name"] for row in rows] == [f"n{t}" for t in range(20)]
    assert dict(workflow.nodes["c"].params) == {"name": "template", "email": "template@x"}
    assert len(all_users(user_db)) == 20


def test_threads_whose_runs_fail_roll_back_without_disturbing_the_others(user_db):
    runtime = LocalRuntime()

    def work(t: int) -> str:
        wf = WorkflowBuilder(dataflow=user_db)
        wf.add_node("UserCreateNode", "c", {"name": f"t{t}", "email": f"t{t}@x"})
        if t % 2:
            wf.add_node(boom, "fail", {"trigger": t})
        try:
            runtime.execute(wf.build())
        except NodeExecutionError:
            return "failed"
        return "ok"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(work, range(10), timeout=60))
    assert outcomes == ["ok", "failed"] * 5
    assert sorted(r["name"] for r in all_users(user_db)) == ["t0", "t2", "t4", "t6", "t8"]


# --------------------------------------------------------------------------- async


def test_execute_async_under_asyncio_run_returns_results_and_a_run_id(user_db):
    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "Async", "email": "async@x"})
    workflow = wf.build()
    results, run_id = asyncio.run(AsyncLocalRuntime().execute_async(workflow))
    assert results["c"]["name"] == "Async"
    assert str(uuid.UUID(run_id)) == run_id
    assert [r["name"] for r in all_users(user_db)] == ["Async"]


def test_execute_async_works_from_within_a_running_loop_concurrently(user_db):
    runtime = AsyncLocalRuntime()

    async def main() -> list[tuple[dict, str]]:
        assert asyncio.get_running_loop() is not None
        runs = []
        for i in range(8):
            wf = WorkflowBuilder(dataflow=user_db)
            wf.add_node("UserCreateNode", "c", {"name": f"a{i}", "email": f"a{i}@x"})
            runs.append(runtime.execute_async(wf.build()))
        return await asyncio.gather(*runs)

    outcomes = asyncio.run(main())
    assert sorted(results["c"]["name"] for results, _ in outcomes) == [f"a{i}" for i in range(8)]
    assert len({run_id for _, run_id in outcomes}) == 8


def test_the_sync_execute_works_when_called_from_inside_a_running_loop(user_db):
    async def main() -> tuple[dict, str]:
        wf = WorkflowBuilder(dataflow=user_db)
        wf.add_node("UserCreateNode", "c", {"name": "Sync", "email": "sync@x"})
        return LocalRuntime().execute(wf.build())

    results, run_id = asyncio.run(main())
    assert results["c"]["name"] == "Sync"
    uuid.UUID(run_id)


def test_execute_async_raises_node_execution_error_and_rolls_back(user_db):
    before = seed(user_db)
    wf = WorkflowBuilder(dataflow=user_db)
    failing_run(wf, user_db, [r["id"] for r in before], "python")

    async def main() -> None:
        await AsyncLocalRuntime().execute_async(wf.build())

    with pytest.raises(NodeExecutionError) as info:
        asyncio.run(main())
    assert info.value.node_id == "fail"
    assert "boom-4" in str(info.value)
    assert all_users(user_db) == before


def test_a_cancelled_execute_async_rolls_back_and_releases_its_connection(user_db):
    async def slow(x: int) -> None:
        await asyncio.sleep(5)

    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node("UserCreateNode", "c", {"name": "Cancelled", "email": "cancelled@x"})
    wf.add_node(slow, "slow", {})
    wf.add_connection("c", "id", "slow", "x")
    workflow = wf.build()

    async def main() -> None:
        await asyncio.wait_for(AsyncLocalRuntime().execute_async(workflow), timeout=0.5)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(main())
    deadline = time.monotonic() + 3
    while user_db.pool_status().get("checked_out", 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert user_db.pool_status().get("checked_out", 0) == 0
    assert all_users(user_db) == []
    assert time.monotonic() - started < 4  # the slow node was cancelled, not waited for


def test_a_blocking_execute_inside_a_running_workflow_is_refused_not_deadlocked(user_db):
    async def nested() -> dict:
        inner = WorkflowBuilder(dataflow=user_db)
        inner.add_node("UserCountNode", "n", {})
        return LocalRuntime().execute(inner.build())[0]

    wf = WorkflowBuilder(dataflow=user_db)
    wf.add_node(nested, "nested", {})
    started = time.monotonic()
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime().execute(wf.build())
    assert time.monotonic() - started < 10
    assert "execute_async" in str(info.value)


# --------------------------------------------------------------------------- Jupyter


@pytest.fixture(scope="session")
def python3_kernel() -> str:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user"], check=True)
    return "python3"


def test_the_sync_execute_works_inside_a_real_jupyter_kernel(python3_kernel, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    cells = [
        """
        import asyncio, uuid
        from dataflow_lab import AsyncLocalRuntime, DataFlow, LocalRuntime, NodeExecutionError, WorkflowBuilder
        probe = asyncio.sleep(0)
        try:
            asyncio.run(probe)
            print("ASYNCIO_RUN_WORKED")
        except RuntimeError:
            probe.close()
            print("ASYNCIO_RUN_RAISES")
        """,
        """
        db = DataFlow()

        @db.model
        class User:
            name: str
            email: str

        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("UserCreateNode", "create", {"name": "Alice", "email": "alice@example.com"})
        wf.add_node("UserReadNode", "read", {})
        wf.add_connection("create", "id", "read", "id")
        results, run_id = LocalRuntime().execute(wf.build())
        print("SYNC", results["read"]["name"], uuid.UUID(run_id).version)
        """,
        """
        @db.model
        class User:
            name: str
            email: str

        listing = WorkflowBuilder(dataflow=db)
        listing.add_node("UserListNode", "users", {})
        results, _ = LocalRuntime().execute(listing.build())
        print("RERUN", results["users"]["count"])
        """,
        """
        results, run_id = await AsyncLocalRuntime().execute_async(listing.build())
        print("ASYNC", results["users"]["count"])
        """,
        """
        bad = WorkflowBuilder(dataflow=db)
        bad.add_node("UserReadNode", "missing", {"id": 404})
        try:
            LocalRuntime().execute(bad.build())
        except NodeExecutionError as exc:
            print("ERROR", exc.node_id)
        db.close()
        """,
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    client = NotebookClient(
        nb, kernel_name=python3_kernel, timeout=60, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    printed = [
        "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        for cell in nb.cells
    ]
    assert printed[0].strip() == "ASYNCIO_RUN_RAISES"
    assert printed[1].strip() == "SYNC Alice 4"
    assert printed[2].strip() == "RERUN 1"
    assert printed[3].strip() == "ASYNC 1"
    assert printed[4].strip() == "ERROR missing"


# --------------------------------------------------------------------------- process exit


def run_script(code: str, timeout: float = 20) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATAFLOW_ENV")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    return proc, time.monotonic() - started


def script_url(kind: str, request) -> str:
    tmp_path = request.getfixturevalue("tmp_path")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'exit.db'}"
    if kind == "duckdb":
        return f"duckdb:///{tmp_path / 'exit.duckdb'}"
    return request.getfixturevalue("pg_url")


@pytest.mark.parametrize("kind", ["sqlite", "duckdb", "postgres"])
def test_a_process_whose_workflow_fails_exits_promptly_with_the_error(kind, request):
    url = script_url(kind, request)
    proc, elapsed = run_script(
        f"""
        from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
        db = DataFlow({url!r})

        @db.model
        class User:
            name: str

        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("UserCreateNode", "create", {{"name": "a"}})
        wf.add_node("UserReadNode", "read_missing_user", {{"id": 31337}})
        LocalRuntime().execute(wf.build())
        print("NOT REACHED")
        """
    )
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert proc.returncode != 0
    assert "NOT REACHED" not in proc.stdout
    assert "NodeExecutionError" in proc.stderr
    assert "read_missing_user" in proc.stderr
    assert "31337" in proc.stderr


@pytest.mark.parametrize("kind", ["sqlite", "duckdb", "postgres"])
def test_a_process_that_never_calls_close_exits_promptly_and_cleanly(kind, request):
    url = script_url(kind, request)
    proc, elapsed = run_script(
        f"""
        from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
        db = DataFlow({url!r})

        @db.model
        class User:
            name: str

        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("UserCreateNode", "create", {{"name": "a"}})
        wf.add_node("UserListNode", "users", {{}})
        results, _ = LocalRuntime().execute(wf.build())
        print("COUNT", results["users"]["count"])
        """
    )
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "COUNT 1"
    assert "Traceback" not in proc.stderr
    assert "Exception ignored" not in proc.stderr
    # what the process committed without close() is there for the next one
    db = DataFlow(url)

    @db.model
    class User:
        name: str

    assert [u["name"] for u in all_users(db)] == ["a"]
    db.close()


@pytest.mark.parametrize("node_kind", ["async", "sync"])
def test_ctrl_c_during_a_workflow_exits_the_process_promptly_and_keeps_nothing(node_kind, tmp_path):
    import signal

    path = tmp_path / "interrupted.db"
    code = textwrap.dedent(
        f"""
        import asyncio, time
        from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
        db = DataFlow({f"sqlite:///{path}"!r})

        @db.model
        class User:
            name: str

        async def slow_async(x: int) -> None:
            print("started", flush=True)
            await asyncio.sleep(60)

        def slow_sync(x: int) -> None:
            print("started", flush=True)
            time.sleep(60)

        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("UserCreateNode", "create", {{"name": "a"}})
        wf.add_node(slow_{node_kind}, "slow", {{}})
        wf.add_connection("create", "id", "slow", "x")
        LocalRuntime().execute(wf.build())
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATAFLOW_ENV")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the process was still running 10 s after Ctrl-C")
        assert time.monotonic() - interrupted < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr
    import sqlite3

    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM users").fetchone() == (0,)


@pytest.mark.parametrize("kind", ["sqlite", "duckdb", "postgres"])
def test_awaiting_execute_async_inside_a_running_workflow_does_not_hang(kind, request):
    url = script_url(kind, request)
    try:
        proc, elapsed = run_script(
            f"""
            from dataflow_lab import AsyncLocalRuntime, DataFlow, LocalRuntime, WorkflowBuilder
            db = DataFlow({url!r})

            @db.model
            class User:
                name: str

            async def nested(x: int) -> dict:
                inner = WorkflowBuilder(dataflow=db)
                inner.add_node("UserCountNode", "n", {{}})
                return (await AsyncLocalRuntime().execute_async(inner.build()))[0]["n"]

            wf = WorkflowBuilder(dataflow=db)
            wf.add_node("UserCreateNode", "create", {{"name": "a"}})
            wf.add_node(nested, "nested", {{}})
            wf.add_connection("create", "id", "nested", "x")
            print("NESTED", LocalRuntime().execute(wf.build())[0]["nested"])
            """,
            timeout=8,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a workflow awaiting execute_async inside a node was still running after 8 s (deadlock)")
    # either the nested run works, or it is refused with a clear error; it must not hang
    assert (proc.returncode == 0 and "NESTED {'count'" in proc.stdout) or (
        proc.returncode != 0 and ("DataFlowError" in proc.stderr or "NodeExecutionError" in proc.stderr)
    ), proc.stderr


def test_dataflows_opening_a_new_sqlite_file_at_once_wait_out_its_switch_to_wal(tmp_path):
    """Connections that race a new file's switch to WAL can get "database is locked" at once, busy
    timeout or not (SQLite skips the busy handler there); connecting tries again instead of failing."""
    failures = []
    for trial in range(25):
        results = several_dataflows_at_once(f"sqlite:///{tmp_path / f'new{trial}.db'}", instances=6, runs=1)
        failures += [o for per_db in results for o in per_db if not isinstance(o, int)]
    assert failures == []
