"""AsyncLocalRuntime runs independent branches concurrently with transaction="node" (under a limit)."""

from __future__ import annotations

import asyncio

import pytest

from dataflow_lab import AsyncLocalRuntime, LocalRuntime, NodeExecutionError, ValidationError, WorkflowBuilder


class Gauge:
    """Counts how many branch nodes run at once, at most."""

    def __init__(self):
        self.now = 0
        self.peak = 0
        self.started: list[int] = []

    async def square(self, i: int) -> dict:
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.started.append(i)
        try:
            await asyncio.sleep(0.02)  # I/O: long enough for every ready sibling to start
        finally:
            self.now -= 1
        return {"square": i * i}


def adder(width: int):
    """A node callable add(p0, ..., p<width-1>) -> {"total": ...} (nodes take named parameters)."""
    names = ", ".join(f"p{i}: int" for i in range(width))
    namespace: dict = {}
    exec(
        f"def add({names}) -> dict:\n    return {{'total': {' + '.join(f'p{i}' for i in range(width))}}}",
        namespace,
    )
    return namespace["add"]


def fan(gauge: Gauge, width: int) -> WorkflowBuilder:
    """width independent squares, then one node adding them up."""
    wf = WorkflowBuilder()
    for i in range(width):
        wf.add_node(gauge.square, f"b{i}", i=i)
    wf.add_node(adder(width), "sum")
    for i in range(width):
        wf.add_connection(f"b{i}", "square", "sum", f"p{i}")
    return wf


def test_with_node_transactions_independent_branches_run_concurrently_up_to_the_limit():
    gauge = Gauge()
    runtime = AsyncLocalRuntime(transaction="node", max_concurrency=3)
    results, _ = asyncio.run(runtime.execute_async(fan(gauge, 8).build()))
    assert gauge.peak == 3
    assert results["sum"] == {"total": sum(i * i for i in range(8))}


def test_concurrent_results_equal_sequential_results_in_the_same_order():
    concurrent, _ = AsyncLocalRuntime(transaction="node", max_concurrency=8).execute(fan(Gauge(), 8).build())
    sequential, _ = LocalRuntime(transaction="node").execute(fan(Gauge(), 8).build())
    assert concurrent == sequential
    assert list(concurrent) == list(sequential) == [*(f"b{i}" for i in range(8)), "sum"]


@pytest.mark.parametrize("transaction", ["workflow", "2pc", "auto"])
def test_in_one_transaction_per_run_nodes_run_one_after_another(transaction):
    gauge = Gauge()
    AsyncLocalRuntime(transaction=transaction, max_concurrency=8).execute(fan(gauge, 5).build())
    assert gauge.peak == 1


def test_local_runtime_runs_node_transactions_one_at_a_time():
    gauge = Gauge()
    LocalRuntime(transaction="node").execute(fan(gauge, 5).build())
    assert gauge.peak == 1 and gauge.started == [0, 1, 2, 3, 4]


def test_a_node_waits_for_all_of_its_upstream_branches():
    gauge = Gauge()
    wf = fan(gauge, 4)
    wf.add_node(lambda total: {"double": total * 2}, "after")
    wf.add_connection("sum", "total", "after", "total")
    results, _ = AsyncLocalRuntime(transaction="node").execute(wf.build())
    assert results["after"] == {"double": 2 * (0 + 1 + 4 + 9)}


def test_max_concurrency_must_be_a_positive_int():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValidationError, match="max_concurrency"):
            AsyncLocalRuntime(max_concurrency=bad)
    assert "max_concurrency=4" in repr(AsyncLocalRuntime(transaction="node", max_concurrency=4))


def test_a_failing_branch_stops_new_branches_and_raises_its_error():
    gauge = Gauge()
    wf = fan(gauge, 6)

    async def broken() -> dict:
        await asyncio.sleep(0.001)
        raise RuntimeError("branch broke")

    wf.add_node(broken, "broken")
    wf.add_node(lambda x: {"x": x}, "after_broken")
    wf.add_connection("broken", "x", "after_broken", "x")
    with pytest.raises(NodeExecutionError, match="branch broke"):
        AsyncLocalRuntime(transaction="node", max_concurrency=2).execute(wf.build())
    assert gauge.now == 0  # branches in flight finished (or were cancelled) before the error surfaced


def test_concurrent_node_transactions_keep_each_committed_write(db):
    @db.model
    class Item:
        name: str

    wf = WorkflowBuilder(dataflow=db)
    for i in range(6):
        wf.add_node("ItemCreateNode", f"c{i}", name=f"item {i}")
    results, _ = AsyncLocalRuntime(transaction="node", max_concurrency=4).execute(wf.build())
    assert sorted(results[f"c{i}"]["name"] for i in range(6)) == sorted(f"item {i}" for i in range(6))
    assert len({results[f"c{i}"]["id"] for i in range(6)}) == 6
    count = WorkflowBuilder(dataflow=db)
    count.add_node("ItemCountNode", "n")
    assert LocalRuntime().execute(count.build())[0]["n"]["count"] == 6


def test_a_saga_with_concurrent_branches_compensates_every_committed_branch(db):
    @db.model
    class Item:
        name: str

    async def fail_late(name: str) -> dict:
        await asyncio.sleep(0.05)  # after the creates have committed
        raise RuntimeError("payment declined")

    wf = WorkflowBuilder(dataflow=db)
    for i in range(4):
        wf.add_node("ItemCreateNode", f"c{i}", name=f"item {i}")
    wf.add_node(fail_late, "pay", name="x")
    with pytest.raises(NodeExecutionError, match="payment declined") as caught:
        AsyncLocalRuntime(transaction="saga", max_concurrency=5).execute(wf.build())
    record = caught.value.compensations
    assert sorted(entry["node_id"] for entry in record) == ["c0", "c1", "c2", "c3"]
    assert {entry["status"] for entry in record} == {"compensated"}
    count = WorkflowBuilder(dataflow=db)
    count.add_node("ItemCountNode", "n")
    assert LocalRuntime().execute(count.build())[0]["n"]["count"] == 0
