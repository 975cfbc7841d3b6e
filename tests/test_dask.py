"""DaskRuntime on a real 2-process LocalCluster with PostgreSQL as the shared store.

The cluster starts once for this module. Without PostgreSQL the tests skip (or
fail under DATAFLOW_REQUIRE_POSTGRES=1), before any cluster is started.
"""

from __future__ import annotations

import asyncio
import os
import pickle

import pytest

from dataflow_lab import (
    AsyncLocalRuntime,
    CycleNotConvergedError,
    DaskRuntime,
    DataFlow,
    Encrypted,
    EncryptionError,
    LocalRuntime,
    NodeExecutionError,
    NodeTimeoutError,
    Skipped,
    ValidationError,
    WorkflowBuilder,
)
from dataflow_lab.encryption import ENV_KEY, keygen

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")


@pytest.fixture(scope="module")
def dask_client():
    cluster = distributed.LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=40
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def shop(pg_url):
    db = DataFlow(pg_url)

    @db.model
    class Customer:
        name: str
        tier: str = "basic"
        spent: int = 0

    yield db
    db.close()


def test_a_workflow_runs_on_dask_workers_against_mysql(my_url, dask_client):
    db = DataFlow(my_url)
    try:

        @db.model
        class Customer:
            name: str
            spent: int = 0

        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("CustomerCreateNode", "create", {"name": "Ann", "spent": 5})
        wf.add_node("CustomerReadNode", "read", {})
        wf.add_connection("create", "id", "read", "id")
        results, _ = DaskRuntime(dask_client).execute(wf.build())
        assert results["read"]["name"] == "Ann" and results["read"]["spent"] == 5
        assert [r["name"] for r in db.sql("SELECT name FROM customers").to_dict("records")] == ["Ann"]
    finally:
        db.close()


def test_what_workers_write_invalidates_this_processes_cache_on_mysql(my_url, dask_client):
    db = DataFlow(my_url, cache={"sole_writer": True})  # MySQL reports no other process's writes
    try:

        @db.model
        class Customer:
            name: str

        Customer.create(name="Ann")
        assert len(Customer.list()) == 1 == len(Customer.list())  # cached
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("CustomerCreateNode", "create", {"name": "Bo"})
        runtime = DaskRuntime(dask_client)
        runtime.execute(wf.build())  # the write is a worker process's
        names = [r["name"] for r in Customer.list()]
        assert names == ["Ann", "Bo"] == [r["name"] for r in Customer.list(cache=False)]
        reads = WorkflowBuilder(dataflow=db)
        reads.add_node("CustomerListNode", "all", {})
        for _ in range(3):  # on each worker, were its cache on, a List would now be kept
            runtime.execute(reads.build())
        Customer.create(name="Cy")  # this process's write: no worker would hear of it
        for _ in range(3):
            results, _ = runtime.execute(reads.build())
            assert [r["name"] for r in results["all"]["records"]] == ["Ann", "Bo", "Cy"]
    finally:
        db.close()


def greet(name: str) -> dict:
    return {"greeting": f"hello {name}", "pid": os.getpid()}


def restart(db: DataFlow, table: str) -> None:
    """Empty a table and restart its ids, so each runtime's run starts from the same state."""
    import asyncpg

    async def truncate() -> None:
        conn = await asyncpg.connect(os.environ["DATAFLOW_TEST_POSTGRES_URL"])
        try:
            schema = db.config.database_url.rsplit("schema=", 1)[1]
            if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}"."{table}"'):
                await conn.execute(f'TRUNCATE "{schema}"."{table}" RESTART IDENTITY')
        finally:
            await conn.close()

    asyncio.run(truncate())


def order_flow(db: DataFlow, spent: int) -> WorkflowBuilder:
    """Create a customer, route on what they spent, upgrade the big spenders, count, greet."""
    wf = WorkflowBuilder(dataflow=db, name="orders")
    wf.add_node("CustomerCreateNode", "create", name="ada", spent=spent)
    wf.add_node(
        "SwitchNode",
        "route",
        condition=lambda c: "gold" if c["spent"] > 100 else "basic",
        cases=["gold", "basic"],
    )
    wf.add_node("CustomerUpdateNode", "upgrade", fields={"tier": "gold"})
    wf.add_node(lambda customer: {"note": f"customer {customer['id']} stays basic"}, "keep")
    wf.add_node("CustomerCountNode", "count")
    wf.add_node(greet, "greet")
    wf.add_connection("create", "spent", "route", "value.spent")
    wf.add_connection("create", "id", "route", "value.id")
    wf.add_connection("route", "gold.id", "upgrade", "id")
    wf.add_connection("route", "basic", "keep", "customer")
    wf.add_connection("create", "name", "count", "filter.name")  # counts after the create committed
    wf.add_connection("create", "name", "greet", "name")
    return wf


def without_volatile(results: dict) -> dict:
    """Results minus what differs between any two runs: timestamps and the worker's pid."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in ("created_at", "updated_at", "pid")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {node_id: clean(out) for node_id, out in results.items()}


# --------------------------------------------------------------------------- same results everywhere


@pytest.mark.parametrize("spent", [500, 20], ids=["gold", "basic"])
def test_one_workflow_gives_identical_results_on_local_async_and_dask(shop, dask_client, spent):
    runs = {}
    for name, runtime in [
        ("local", LocalRuntime()),
        ("async", AsyncLocalRuntime(transaction="node")),
        ("dask", DaskRuntime(dask_client)),
    ]:
        restart(shop, "customers")
        results, _ = runtime.execute(order_flow(shop, spent).build())
        runs[name] = without_volatile(results)
    assert runs["local"] == runs["async"] == runs["dask"]
    skipped = "keep" if spent > 100 else "upgrade"
    assert isinstance(runs["dask"][skipped], Skipped)
    assert list(runs["dask"]) == ["create", "route", "upgrade", "keep", "count", "greet"]


def test_a_cycle_gives_identical_results_and_iterations_on_local_async_and_dask(shop, dask_client):
    def next_name(n: int = 0) -> dict:
        return {"n": n + 1, "name": f"customer {n + 1}"}

    def build() -> WorkflowBuilder:
        wf = WorkflowBuilder(dataflow=shop)
        wf.add_node(next_name, "next")
        wf.add_node("CustomerCreateNode", "create")
        wf.add_node("CustomerCountNode", "count")
        wf.add_connection("next", "name", "create", "name")
        wf.add_connection("next", "n", "create", "spent")
        wf.add_connection("create", "spent", "next", "n", cycle=True, max_iterations=9,
                          converge_when=lambda c: c["spent"] >= 4)  # fmt: skip
        wf.add_connection("create", "tier", "count", "filter.tier")
        return wf

    runs = {}
    for name, runtime in [
        ("local", LocalRuntime()),
        ("async", AsyncLocalRuntime(transaction="node")),
        ("dask", DaskRuntime(dask_client)),
    ]:
        restart(shop, "customers")
        results, _ = runtime.execute(build().build())
        runs[name] = (without_volatile(results), without_volatile(results.iterations))
    assert runs["local"] == runs["async"] == runs["dask"]
    results, iterations = runs["dask"]
    assert results["count"] == {"count": 4}
    assert [c["id"] for c in iterations["create"]] == [1, 2, 3, 4]


def test_nodes_run_on_the_worker_processes(shop, dask_client):
    results, _ = DaskRuntime(dask_client).execute(order_flow(shop, 1).build())
    worker_pids = set(dask_client.run(os.getpid).values())
    assert results["greet"]["pid"] in worker_pids and results["greet"]["pid"] != os.getpid()
    assert results["create"]["id"] == 1 and results["count"]["count"] == 1


def test_task_keys_are_unique_per_run(shop, dask_client):
    runtime = DaskRuntime(dask_client)
    with distributed.get_task_stream(dask_client) as stream:
        _, first = runtime.execute(order_flow(shop, 1).build())
        _, second = runtime.execute(order_flow(shop, 1).build())
    keys = {str(t["key"]) for t in stream.data}
    assert {f"create-{first}", f"create-{second}", f"greet-{first}", f"greet-{second}"} <= keys


def test_the_switch_routes_both_ways_on_dask(shop, dask_client):
    runtime = DaskRuntime(dask_client)
    gold, _ = runtime.execute(order_flow(shop, 500).build())
    basic, _ = runtime.execute(order_flow(shop, 5).build())
    assert gold["upgrade"]["tier"] == "gold" and isinstance(gold["keep"], Skipped)
    assert basic["keep"] == {"note": "customer 2 stays basic"} and isinstance(basic["upgrade"], Skipped)
    assert "'route' chose 'basic', not 'gold'" in basic["upgrade"].reason


# --------------------------------------------------------------------------- cycles


def halve(x: float = 64.0) -> dict:
    return {"x": x / 2}


def test_a_converging_cycle_stops_at_the_right_iteration_on_dask(pg_url, dask_client):
    wf = WorkflowBuilder()
    wf.add_node(halve, "halve")
    wf.add_connection(
        "halve", "x", "halve", "x", cycle=True, max_iterations=20, converge_when=lambda o: o["x"] <= 4
    )
    results, _ = DaskRuntime(dask_client).execute(wf.build())
    assert results["halve"] == {"x": 4.0}
    assert [o["x"] for o in results.iterations["halve"]] == [32, 16, 8, 4]


def test_a_non_converging_cycle_raises_at_max_iterations_on_dask(pg_url, dask_client):
    wf = WorkflowBuilder()
    wf.add_node(halve, "halve")
    wf.add_connection("halve", "x", "halve", "x", cycle=True, max_iterations=3, converge_when=lambda o: False)
    with pytest.raises(CycleNotConvergedError) as caught:
        DaskRuntime(dask_client).execute(wf.build())
    assert caught.value.iterations == 3 and caught.value.last_outputs == {"halve": {"x": 8.0}}


def test_a_cycle_writing_to_postgres_on_dask_commits_each_iteration(shop, dask_client):
    def next_name(n: int = 0) -> dict:
        return {"n": n + 1, "name": f"customer {n + 1}"}

    wf = WorkflowBuilder(dataflow=shop)
    wf.add_node(next_name, "next")
    wf.add_node("CustomerCreateNode", "create")
    wf.add_connection("next", "name", "create", "name")
    wf.add_connection("next", "n", "create", "spent")
    wf.add_connection(
        "create", "spent", "next", "n", cycle=True, max_iterations=10, converge_when=lambda c: c["spent"] == 3
    )
    results, _ = DaskRuntime(dask_client).execute(wf.build())
    assert [c["name"] for c in results.iterations["create"]] == ["customer 1", "customer 2", "customer 3"]
    count = WorkflowBuilder(dataflow=shop)
    count.add_node("CustomerCountNode", "n")
    assert LocalRuntime().execute(count.build())[0]["n"]["count"] == 3


# --------------------------------------------------------------------------- failures and transactions


def declined(customer_id: int) -> dict:
    raise RuntimeError(f"payment for customer {customer_id} declined")


def checkout(db: DataFlow) -> WorkflowBuilder:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("CustomerCreateNode", "create", name="bob", spent=10)
    wf.add_node("CustomerUpdateNode", "spend", fields={"spent": 99})
    wf.add_node(declined, "pay")
    wf.add_connection("create", "id", "spend", "id")
    wf.add_connection("spend", "id", "pay", "customer_id")
    return wf


def customers(db: DataFlow) -> list[dict]:
    listing = WorkflowBuilder(dataflow=db)
    listing.add_node("CustomerListNode", "all")
    return LocalRuntime().execute(listing.build())[0]["all"]["records"]


def test_a_failing_node_on_dask_raises_its_node_execution_error(shop, dask_client):
    with pytest.raises(NodeExecutionError, match="payment for customer 1 declined") as caught:
        DaskRuntime(dask_client).execute(checkout(shop).build())
    assert caught.value.node_id == "pay"
    # per-node transactions: what committed before the failure stays
    assert [(c["name"], c["spent"]) for c in customers(shop)] == [("bob", 99)]


def test_a_dask_run_is_tracked_and_its_error_carries_the_run_id(shop, dask_client):
    runtime = DaskRuntime(dask_client)
    with pytest.raises(NodeExecutionError) as caught:
        runtime.execute(checkout(shop).build())
    (record,) = runtime.runs()
    assert caught.value.run_id == record.run_id and record.status == "error" and record.failed_node == "pay"
    assert record.nodes["pay"] == "error" and shop.runs()[-1] == record


def test_saga_on_dask_compensates_committed_nodes_newest_first(shop, dask_client):
    with pytest.raises(NodeExecutionError, match="declined") as caught:
        DaskRuntime(dask_client, transaction="saga").execute(checkout(shop).build())
    assert [(e["node_id"], e["status"]) for e in caught.value.compensations] == [
        ("spend", "compensated"),
        ("create", "compensated"),
    ]
    assert customers(shop) == []


async def linger(name: str) -> dict:
    await asyncio.sleep(30)
    return {"name": name}


def test_a_node_past_its_timeout_is_cancelled_on_its_worker_and_the_saga_compensates(shop, dask_client):
    wf = WorkflowBuilder(dataflow=shop)
    wf.add_node("CustomerCreateNode", "create", name="bob")
    wf.add_node(linger, "linger", timeout=0.5)
    wf.add_connection("create", "name", "linger", "name")
    with pytest.raises(NodeTimeoutError) as caught:
        DaskRuntime(dask_client, transaction="saga", node_timeout=None).execute(wf.build())
    assert (caught.value.node_id, caught.value.limit) == ("linger", 0.5)
    assert [(e["node_id"], e["status"]) for e in caught.value.compensations] == [("create", "compensated")]
    assert customers(shop) == []
    with pytest.raises(ValidationError, match="no whole-run timeout") as refused:
        DaskRuntime(dask_client, timeout=60)
    assert "node_timeout" in refused.value.hint


def test_a_node_error_keeps_its_class_across_processes(shop, dask_client):
    wf = WorkflowBuilder(dataflow=shop)
    wf.add_node("CustomerReadNode", "read", id=12345)
    from dataflow_lab import NotFoundError

    with pytest.raises(NotFoundError) as caught:
        DaskRuntime(dask_client).execute(wf.build())
    assert caught.value.id == 12345 and caught.value.node_id == "read"


class Events:
    def __init__(self):
        self.after: list[str] = []
        self.skipped: list[str] = []

    def after_node(self, *, node_id, error, **future):
        self.after.append(node_id)

    def node_skipped(self, *, node_id, **future):
        self.skipped.append(node_id)


def test_dask_runs_emit_node_hooks_on_the_client(shop, dask_client):
    events = Events()
    DaskRuntime(dask_client, hooks=[events]).execute(order_flow(shop, 1).build())
    assert sorted(events.after) == ["count", "create", "greet", "keep", "route"]
    assert events.skipped == ["upgrade"]


# --------------------------------------------------------------------------- refusals


def test_dask_refuses_a_database_private_to_this_process(pg_url, dask_client):
    db = DataFlow()

    @db.model
    class Note:
        text: str

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("NoteCreateNode", "n", text="x")
    with pytest.raises(ValidationError, match="Dask workers cannot share it"):
        DaskRuntime(dask_client).execute(wf.build())


def test_dask_refuses_a_transaction_per_run(pg_url, dask_client):
    with pytest.raises(ValidationError, match="each node commits on its own worker"):
        DaskRuntime(dask_client, transaction="workflow")


def test_dask_refuses_a_misspelled_option_with_a_suggestion_before_connecting():
    # checked before the address is dialled: no scheduler listens there
    with pytest.raises(
        ValidationError, match="Unknown DaskRuntime option 'transactions'. Did you mean 'transaction'"
    ):
        DaskRuntime("tcp://127.0.0.1:9", transactions="saga")


def test_a_dataflow_pickles_as_its_description_and_comes_back_as_itself_here(shop):
    data = pickle.dumps(shop)
    assert b"asyncpg" not in data  # no pool, no connection: a URL, options and model schemas
    assert pickle.loads(data) is shop


def test_a_dask_runtime_made_from_an_address_owns_and_closes_its_client(shop, dask_client):
    with DaskRuntime(dask_client.scheduler.address) as runtime:
        results, _ = runtime.execute(order_flow(shop, 1).build())
        assert results["greet"]["greeting"] == "hello ada"
        assert runtime.client is not dask_client
    assert runtime.client.status == "closed"
    assert dask_client.status == "running"  # a client passed in is the caller's to close


def test_dask_refuses_a_run_without_its_workflow_inputs_before_submitting_anything(shop, dask_client):
    wf = WorkflowBuilder(dataflow=shop)
    wf.add_node("CustomerCreateNode", "create", {"tier": "gold"})
    with pytest.raises(ValidationError, match=r"needs run parameters it was not given: create.name \(str\)"):
        DaskRuntime(dask_client).execute(wf.build())
    count = WorkflowBuilder(dataflow=shop)
    count.add_node("CustomerCountNode", "n", {})
    assert LocalRuntime().execute(count.build())[0]["n"]["count"] == 0
    results, _ = DaskRuntime(dask_client).execute(wf.build(), parameters={"create": {"name": "ada"}})
    assert (results["create"]["name"], results["create"]["tier"]) == ("ada", "gold")


def test_run_parameters_override_node_parameters_on_dask(shop, dask_client):
    results, _ = DaskRuntime(dask_client).execute(
        order_flow(shop, 1).build(), parameters={"create": {"name": "zed"}}
    )
    assert results["greet"]["greeting"] == "hello zed"
    assert results["create"]["name"] == "zed"


# --------------------------------------------------------------------------- users, tenants, monitoring


def test_dask_tasks_run_as_the_user_and_within_the_tenant(pg_url, dask_client):
    from dataflow_lab import TenantRequiredError

    db = DataFlow(pg_url)

    @db.model
    class Invoice:
        __dataflow__ = {"multi_tenant": True, "audit_log": True}
        amount: int

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("InvoiceCreateNode", "bill", amount=40)
    runtime = DaskRuntime(dask_client, user="dora")
    with pytest.raises(TenantRequiredError):
        runtime.execute(wf.build())  # refused on the client, before any task
    results, _ = runtime.execute(wf.build(), tenant="acme")
    assert results["bill"]["tenant_id"] == "acme"
    count = WorkflowBuilder(dataflow=db)
    count.add_node("InvoiceCountNode", "n")
    assert LocalRuntime().execute(count.build(), tenant="acme")[0]["n"]["count"] == 1
    assert LocalRuntime().execute(count.build(), tenant="globex")[0]["n"]["count"] == 0
    assert [(e.operation, e.user) for e in db.audit("Invoice", tenant="acme")] == [("create", "dora")]
    db.close()


def test_a_monitored_dataflow_records_dask_runs(pg_url, dask_client):
    db = DataFlow(pg_url, monitoring=True)

    @db.model
    class Ping:
        n: int

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("PingCreateNode", "a", n=1)
    wf.add_node("PingCreateNode", "b", n=2)
    DaskRuntime(dask_client).execute(wf.build())
    assert sorted(r.node_id for r in db.monitor.node_runs) == ["a", "b"]
    assert db.metrics()["workflow_executions"]["total"] == 1
    db.close()


def test_model_schemas_pickle_with_missing_defaults_intact(shop):
    from dataflow_lab.model import MISSING

    schema = shop.models["Customer"]
    copy = pickle.loads(pickle.dumps(schema))
    assert copy == schema and copy.signature() == schema.signature()
    assert copy.by_name["name"].default is MISSING  # still "no default", not a look-alike object
    assert copy.by_name["name"].required


def test_execute_async_runs_on_dask_without_blocking_the_event_loop(shop, dask_client):
    async def main() -> tuple:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.ensure_future(tick())
        results, _ = await DaskRuntime(dask_client).execute_async(order_flow(shop, 1).build())
        ticker.cancel()
        return results, ticks

    results, ticks = asyncio.run(main())
    assert results["greet"]["greeting"] == "hello ada"
    assert ticks > 1  # the loop kept running while the cluster worked


# --------------------------------------------------------------------------- encrypted fields


def refuse(row_id: int) -> dict:
    raise ValueError(f"row {row_id} refused")


def set_env(name: str, value: str | None) -> None:
    """Run on each worker: set (or, None, remove) a variable of its environment."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


class PayloadSpy:
    """The real client, keeping a pickle of every task's arguments and every result it gathers."""

    def __init__(self, client):
        self.client, self.scheduler, self.sent = client, client.scheduler, []

    def submit(self, fn, *args, **kwargs):
        self.sent.append(
            cloudpickle.dumps(args[0])
        )  # the NodeTask (or a compensation's steps), as Dask sends it
        return self.client.submit(fn, *args, **kwargs)

    def gather(self, futures):
        out = self.client.gather(futures)
        self.sent.append(cloudpickle.dumps(out))
        return out

    def cancel(self, futures):
        return self.client.cancel(futures)


def test_encrypted_fields_travel_sealed_and_workers_take_the_key_from_their_environment(pg_url, dask_client):

    secret, key = "123-45-6789", keygen("k1")
    dask_client.run(set_env, ENV_KEY, key)  # the workers' own environment, not a payload
    try:
        db = DataFlow(pg_url, encryption_keys=key)

        @db.model
        class Patient:
            name: str
            ssn: Encrypted[str, "searchable"]  # noqa: F821, UP037

        spy = PayloadSpy(dask_client)
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("PatientCreateNode", "add", name="Ann", ssn=secret)
        wf.add_node("PatientReadNode", "read")
        wf.add_node("PatientListNode", "find", filter={"ssn": secret})
        wf.add_node(lambda ssn: {"last4": ssn[-4:], "pid": os.getpid()}, "mask")
        wf.add_connection("add", "id", "read", "id")
        wf.add_connection("add", "name", "find", "filter.name")
        wf.add_connection("read", "ssn", "mask", "ssn")  # plaintext between two workers: sealed too
        results, _ = DaskRuntime(spy).execute(wf.build())
        assert results["read"]["ssn"] == secret and results["mask"]["last4"] == "6789"
        assert [r["name"] for r in results["find"]["records"]] == ["Ann"]
        assert results["mask"]["pid"] != os.getpid()  # it ran on a worker, which opened the row
        saga = WorkflowBuilder(dataflow=db)
        saga.add_node("PatientUpdateNode", "change", id=results["add"]["id"], fields={"ssn": "000-00-0000"})
        saga.add_node(refuse, "refuse")
        saga.add_connection("change", "id", "refuse", "row_id")
        with pytest.raises(NodeExecutionError):
            DaskRuntime(spy, transaction="saga").execute(saga.build())
        back = LocalRuntime().execute(_read(db, results["add"]["id"]))[0]["read"]
        assert back["ssn"] == secret  # compensated from the sealed before-image
        assert len(spy.sent) >= 8
        for payload in spy.sent:
            assert secret.encode() not in payload and b"000-00-0000" not in payload
        stored = db.sql("SELECT ssn FROM patients")["ssn"].tolist()
        assert stored and all(v.startswith("dfe1:") for v in stored)
        db.close()
    finally:
        dask_client.run(set_env, ENV_KEY, None)


def _read(db, row_id):
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("PatientReadNode", "read", id=row_id)
    return wf.build()


def test_a_worker_without_the_key_refuses_the_sealed_task_and_writes_nothing(pg_url, dask_client):

    db = DataFlow(pg_url, encryption_keys=keygen("k1"))

    @db.model
    class Patient:
        name: str
        ssn: Encrypted[str]

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("PatientCreateNode", "add", name="Ann", ssn="123-45-6789")
    with pytest.raises(EncryptionError, match="has no DATAFLOW_ENCRYPTION_KEY"):
        DaskRuntime(dask_client).execute(wf.build())
    assert LocalRuntime().execute(_count(db))[0]["count"]["count"] == 0
    db.close()


def _count(db):
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("PatientCountNode", "count")
    return wf.build()
