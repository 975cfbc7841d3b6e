"""Monitoring must not keep DataFlows alive: re-created monitored instances on PostgreSQL.

Before the fix the global hooks held each collector (through a ``weakref.finalize`` whose
arguments live as long as the DataFlow), the collector's node log held the node classes,
and they held the DataFlow: none was ever freed, closed or not.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import weakref

import pytest
from test_faults import record

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder, hooks

# runs alone under pytest -n: it counts every client backend of the server
pytestmark = pytest.mark.exclusive

INSTANCES = 300


def define(db: DataFlow) -> None:
    @db.model
    class Item:
        name: str


def use(db: DataFlow) -> None:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCreateNode", "n", {"name": "x"})
    LocalRuntime().execute(wf.build())
    db.metrics()


def server_connections(url: str) -> int:
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(url.split("?")[0])
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def monitored(url: str | None) -> weakref.ref:
    db = DataFlow(url, monitoring=True)
    define(db)
    use(db)
    db.close()
    return weakref.ref(db)


def test_a_closed_monitored_dataflow_is_freed(url):
    ref = monitored(url)
    gc.collect()
    assert ref() is None


def test_an_unclosed_monitored_dataflow_is_freed_when_dropped():
    subscribers = len(hooks.global_hooks)
    db = DataFlow(monitoring=True)
    define(db)
    use(db)
    ref = weakref.ref(db)
    del db
    gc.collect()
    assert ref() is None
    assert len(hooks.global_hooks) == subscribers  # its collector was on its own hooks, and went with it


def test_the_first_run_of_a_process_leaves_nothing_holding_its_dataflow():
    """The first deadline of a loop arms its shared timer, which once kept the run's context (its
    scope, hooks and collector, and so the DataFlow) until it fired, 30 s later. Only a fresh
    process's first run arms it, so the test makes one."""
    script = textwrap.dedent(
        """
        import gc, weakref
        from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder

        def first():
            db = DataFlow(monitoring=True)

            @db.model
            class Item:
                name: str

            wf = WorkflowBuilder(dataflow=db)
            wf.add_node("ItemCreateNode", "n", {"name": "x"})
            LocalRuntime().execute(wf.build())
            return weakref.ref(db)

        ref = first()
        gc.collect()
        print("freed" if ref() is None else "alive")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split()[-1] == "freed"


def test_hundreds_of_recreated_monitored_dataflows_free_their_connections(pg_url):
    baseline = server_connections(pg_url)
    refs, peak = [], 0
    for i in range(INSTANCES):
        refs.append(monitored(pg_url))
        if i % 50 == 49:
            gc.collect()
            peak = max(peak, server_connections(pg_url))
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    after = server_connections(pg_url)
    record("monitored DataFlows re-created on PostgreSQL", instances=INSTANCES, alive_after_close=alive,
           peak_extra_connections=peak - baseline, leaked_connections=after - baseline)  # fmt: skip
    assert alive == 0
    assert after - baseline <= 1  # at most a connection in the middle of closing
    assert peak - baseline <= 5


def test_closing_a_dataflow_stops_its_metrics_endpoint_and_frees_it():
    import urllib.request

    pytest.importorskip("prometheus_client")
    db = DataFlow(monitoring=True)
    define(db)
    use(db)
    server = db.serve_metrics(0)
    assert urllib.request.urlopen(server.url, timeout=10).status == 200
    ref = weakref.ref(db)
    db.close()
    del db
    gc.collect()
    assert ref() is None
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)
