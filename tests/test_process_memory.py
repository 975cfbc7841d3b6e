"""Per-node figures of a monitored run (pool usage, memory, tags) and the process's memory in the dashboard."""

from __future__ import annotations

import mmap
import os
import re

import pytest

from dataflow_lab import DataFlow, LocalRuntime, ValidationError, WorkflowBuilder
from dataflow_lab.monitoring import MetricsCollector
from dataflow_lab.process_memory import memory_figures, rss_bytes

KEPT: list[bytes] = []  # what the allocating node keeps alive, so its memory is still held after it


def define(db: DataFlow) -> None:
    @db.model
    class Note:
        text: str


def create_and_list(db: DataFlow) -> WorkflowBuilder:
    wf = WorkflowBuilder(db)
    wf.add_node("NoteCreateNode", "create", {"text": "hello"})
    wf.add_node("NoteListNode", "list", {})
    wf.add_connection("create", "id", "list", "limit")
    return wf


def allocate(megabytes: int = 40) -> int:
    block = b"x" * (megabytes * 1024 * 1024)  # written, so its pages are resident
    KEPT.append(block)
    return len(block)


@pytest.fixture
def mdb(url):
    db = DataFlow(url, monitoring=True)
    define(db)
    yield db
    db.close()


def test_each_node_run_reports_its_pool_usage_memory_and_tags(mdb, backend):
    LocalRuntime().execute(create_and_list(mdb).build())
    runs = {r.node_id: r for r in mdb.monitor.node_runs}
    capacity = {"sqlite": 1, "duckdb": 1, "postgres": 5 + 10, "mysql": 5 + 10}[
        backend
    ]  # development: pool 5, overflow 10
    assert runs["create"].connection_pool_usage == f"1/{capacity}"  # the run's connection, at the node's end
    assert re.fullmatch(r"\d+/\d+", runs["list"].connection_pool_usage)
    assert all(isinstance(r.memory_usage_mb, float) for r in runs.values())
    assert runs["create"].tags == {"model": "Note", "operation": "create", "environment": "development"}
    assert runs["list"].tags["operation"] == "list"
    frame = mdb.metrics_frame()
    assert list(frame["connection_pool_usage"])[0] == f"1/{capacity}"
    assert frame["memory_usage_mb"].dtype == "float64"


def test_a_node_that_takes_memory_shows_it_as_its_rss_change():
    collector = MetricsCollector()  # standalone, on the runtime's hooks: every run of that runtime
    wf = WorkflowBuilder()
    wf.add_node(allocate, "allocate", {})
    try:
        LocalRuntime(hooks=[collector]).execute(wf.build())
        (run,) = collector.node_runs
        assert run.memory_usage_mb >= 35  # 40 MB written and kept
        assert run.connection_pool_usage is None  # a Python node has no database
        assert run.tags == {"model": None, "operation": "python", "environment": None}
    finally:
        KEPT.clear()


def test_with_tracemalloc_a_node_shows_the_most_it_allocated_even_if_it_freed_it():
    import tracemalloc

    was_tracing = tracemalloc.is_tracing()
    db = DataFlow(monitoring=True, memory_tracking="tracemalloc")
    define(db)

    def churn(id: int) -> int:
        return len(b"y" * (20 * 1024 * 1024))  # 20 MB, freed before the node returns

    wf = WorkflowBuilder(db)
    wf.add_node("NoteCreateNode", "create", {"text": "hello"})
    wf.add_node(churn, "churn", {})
    wf.add_connection("create", "id", "churn", "id")
    try:
        LocalRuntime().execute(wf.build())
        run = db.monitor.node_runs[-1]
        assert tracemalloc.is_tracing()
        assert 19 <= run.memory_usage_mb < 60
        assert db.metrics()["process"]["tracemalloc_peak_mb"] >= 19
    finally:
        db.close()
        if not was_tracing:
            tracemalloc.stop()


def test_an_unmonitored_run_measures_no_node(db):
    define(db)
    seen: list[dict] = []

    class AfterNode:
        def after_node(self, **fields) -> None:
            seen.append(fields)

    LocalRuntime(hooks=[AfterNode()]).execute(create_and_list(db).build())
    assert [(f["memory_mb"], f["pool_usage"]) for f in seen] == [(None, None), (None, None)]


def test_the_dashboard_and_prometheus_show_the_process_memory(mdb):
    pytest.importorskip("prometheus_client")
    LocalRuntime().execute(create_and_list(mdb).build())
    process = mdb.metrics()["process"]
    assert process["memory_rss_mb"] > 10 and process["memory_peak_rss_mb"] >= process["memory_rss_mb"]
    text = mdb.metrics_text()
    rss = re.search(r'dataflow_process_memory_bytes\{database="[^"]*",kind="rss"\} (\S+)', text)
    assert rss is not None and float(rss.group(1)) > 10 * 1024 * 1024
    assert 'kind="peak_rss"' in text


def test_rss_is_read_from_the_process():
    assert rss_bytes() > 1024 * 1024
    assert set(memory_figures()) == {
        "memory_rss_mb",
        "memory_peak_rss_mb",
        "tracemalloc_mb",
        "tracemalloc_peak_mb",
    }


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/statm"), reason="Linux /proc")
def test_a_forked_child_reads_its_own_rss_not_its_parent_s():
    rss_bytes()  # the parent opens its descriptor of /proc/self/statm first
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it reads before and after touching 64 MB
        try:
            before = rss_bytes() or 0
            grown = bytearray(64 * 1024 * 1024)
            for i in range(0, len(grown), mmap.PAGESIZE):
                grown[i] = 1
            os.write(write, str((rss_bytes() or 0) - before).encode())
        finally:
            os._exit(0)
    os.close(write)
    grew = int(os.read(read, 64) or b"0")
    os.close(read)
    os.waitpid(pid, 0)
    # the inherited descriptor would read the parent's /proc entry, which never took the 64 MB
    assert grew >= 48 * 1024 * 1024, f"the child read {grew} bytes more: its parent's memory"


@pytest.mark.parametrize("tracking", ["psutil", None, ""])
def test_an_unknown_memory_tracking_is_refused(tracking):
    with pytest.raises(ValidationError, match="memory_tracking must be 'rss' or 'tracemalloc'"):
        DataFlow(memory_tracking=tracking)


def test_consecutive_nodes_each_show_their_own_rss_change():
    """A node starts from the reading its predecessor ended on (one read per node): the memory the
    second node takes is its own, and the first, which takes none, shows none of it."""
    collector = MetricsCollector()

    def first() -> dict:
        return {"x": 1}

    def second(x: int) -> int:
        return allocate()

    wf = WorkflowBuilder()
    wf.add_node(first, "first", {})
    wf.add_node(second, "second", {})
    wf.add_connection("first", "x", "second", "x")
    try:
        LocalRuntime(hooks=[collector]).execute(wf.build())
        runs = {r.node_id: r for r in collector.node_runs}
        assert runs["second"].memory_usage_mb >= 35  # 40 MB written and kept
        assert abs(runs["first"].memory_usage_mb) < 5
    finally:
        KEPT.clear()


def test_a_run_s_first_node_starts_from_the_reading_the_last_run_on_its_thread_ended_on(monkeypatch):
    """One read of /proc per node across runs too: the second run's only node reads its end alone,
    and still shows the memory it took as its own."""
    from dataflow_lab import _loop, process_memory

    async def in_flight() -> int:
        return process_memory._chain().running

    # the chain counts nodes in flight per thread: one an earlier test started and never ended (on
    # this thread or the runtime's) would turn chaining off, and this test would blame the chain
    assert process_memory._chain().running == 0 and _loop.run(in_flight()) == 0, "a node never ended"
    monkeypatch.setattr(process_memory, "CHAIN_WITHIN", 60.0)  # the gap between runs never matters here
    monkeypatch.setattr(process_memory, "SAMPLE_EVERY", 0.0)  # every node reads its end (no sampling)
    reads = []
    real = process_memory.rss_bytes
    monkeypatch.setattr(process_memory, "rss_bytes", lambda: reads.append(1) or real())
    collector = MetricsCollector()

    def small() -> int:
        return 1

    def big() -> int:
        return allocate()

    try:
        runtime = LocalRuntime(hooks=[collector])
        per_run = []
        for fn in (small, small, big):  # the first run starts the chain (or takes what came before)
            wf = WorkflowBuilder()
            wf.add_node(fn, "only", {})
            before = len(reads)
            runtime.execute(wf.build())
            per_run.append(len(reads) - before)
        assert per_run[1:] == [1, 1]  # each run after the first reads its node's end only
        _, first, second = collector.node_runs
        assert abs(first.memory_usage_mb) < 5
        assert second.memory_usage_mb >= 35  # 40 MB written and kept
    finally:
        KEPT.clear()


def test_quick_nodes_share_a_reading_and_their_memory_shows_in_the_next_node_that_reads(monkeypatch):
    """At most one read of /proc per millisecond on a thread: a node ending sooner after the last
    reading shows 0.0, and what it took is not lost: the next node that reads shows it."""
    from dataflow_lab import process_memory

    monkeypatch.setattr(process_memory, "SAMPLE_EVERY", 60.0)  # no node here ends a minute after a reading
    monkeypatch.setattr(process_memory, "CHAIN_WITHIN", 0.0)  # the first run reads afresh (no earlier test's)
    reads = []
    real = process_memory.rss_bytes
    monkeypatch.setattr(process_memory, "rss_bytes", lambda: reads.append(1) or real())
    collector = MetricsCollector()
    runtime = LocalRuntime(hooks=[collector])

    def one(fn) -> None:
        wf = WorkflowBuilder()
        wf.add_node(fn, "only", {})
        runtime.execute(wf.build())

    def mapped() -> int:  # 40 MB of fresh pages, whatever the allocator kept from earlier tests
        block = mmap.mmap(-1, 40 * 1024 * 1024)
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        KEPT.append(block)  # type: ignore[arg-type]
        return len(block)

    try:
        one(lambda: 1)  # takes the chain's first reading
        monkeypatch.setattr(process_memory, "CHAIN_WITHIN", 60.0)  # the next runs start from it
        before = len(reads)
        one(mapped)  # inside the sampling window: no read, 0.0
        assert len(reads) == before
        monkeypatch.setattr(process_memory, "SAMPLE_EVERY", 0.0)  # the window has passed
        one(lambda: 2)
        assert len(reads) == before + 1
        _, took, after = collector.node_runs
        assert took.memory_usage_mb == 0.0
        assert after.memory_usage_mb >= 35  # the 40 MB the sampled node kept, shown by the next reading
    finally:
        KEPT.clear()
