"""Monitoring overhead: the same workloads with monitoring off and on, in the same run.

- single-op: a two-node workflow (Create, then Read by id), as in bench_core.py;
- bulk: BulkCreate of 10,000 rows;
- run tracking: the single-op on the unmonitored DataFlow, with its run trackers (``db.runs()``,
  ``runtime.runs()``: always on) swapped out, against in.

Each backend gets a monitored DataFlow, whose monitoring is switched off and on
in turn by swapping its hooks (with and without the collector) and its statement
counting, and an unmonitored one, whose run trackers are switched the same way.
Calls alternate one by one (off, on, on, off, ...) and we compare median call
times, in wall time and in process CPU time, so drift on a shared machine hits
both sides alike; one database serves both sides, so no difference between two
databases enters the ratio.

Targets (issue 6): single-op at most 5% slower, bulk at most 2%; run tracking (issue 16) at most 5%
on a single op, with monitoring off.

The health task (health.py, issue 16) is measured the same way: the single-op workflow on a
DataFlow whose health task probes every HEALTH_INTERVAL seconds (300 times the preset's rate)
and keeps min_connections warm, against one with probes off; target at most 5% slower.

Run: python benchmarks/bench_monitoring.py [--health-only | --no-health] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _harness import fmt_ms, item_db, table  # noqa: E402
from bench_core import write  # noqa: E402

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder  # noqa: E402
from dataflow_lab.hooks import Hooks  # noqa: E402
from dataflow_lab.monitoring import MetricsCollector  # noqa: E402
from dataflow_lab.tracking import RunTracker  # noqa: E402

BULK_ROWS = 10_000
ACCOUNTING: list[str] = []
HEALTH_INTERVAL = 1.0  # seconds between probes while measuring (the presets probe every 60 s)
HEALTH_BLOCKS = 9
HEALTH_ACCOUNTING: list[str] = []
TRACKING: list[str] = []


PG_SCHEMA = "bench_monitoring"  # on PostgreSQL, every DataFlow here keeps its tables in this schema


def fresh(url: str | None) -> str | None:
    """``url`` as the benchmark uses it: on PostgreSQL, in PG_SCHEMA, emptied first.

    Each measurement starts from empty tables: tables left by an earlier run (or by another
    measurement here, whose ``Item`` has other fields) would need a backfill.
    """
    if url is None or not url.startswith("postgres"):
        return url
    import asyncio

    import asyncpg

    async def reset() -> None:
        con = await asyncpg.connect(url)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE; CREATE SCHEMA "{PG_SCHEMA}"')
        finally:
            await con.close()

    asyncio.run(reset())
    return f"{url}{'&' if '?' in url else '?'}schema={PG_SCHEMA}"


def make(
    url: str | None, monitoring: bool
) -> tuple[DataFlow, LocalRuntime, Callable[[], object], Callable[[], object]]:
    db, _ = item_db(url, monitoring=monitoring)  # no SQL on stderr: the monitoring cost alone
    runtime = LocalRuntime()
    single = WorkflowBuilder(dataflow=db)
    single.add_node("ItemCreateNode", "create", {"name": "widget", "qty": 3, "price": 9.5})
    single.add_node("ItemReadNode", "read", {})
    single.add_connection("create", "id", "read", "id")
    single_wf = single.build()
    rows = [{"name": f"item {i}", "qty": i, "price": i * 0.5} for i in range(BULK_ROWS)]
    bulk = WorkflowBuilder(dataflow=db)
    bulk.add_node("ItemBulkCreateNode", "load", {"data": rows, "progress": False})
    bulk_wf = bulk.build()
    return db, runtime, (lambda: runtime.execute(single_wf)), (lambda: runtime.execute(bulk_wf))


def compare(
    off: Callable[[], object],
    on: Callable[[], object],
    *,
    n: int,
    before: Callable[[bool], None] | None = None,
) -> dict[str, float]:
    """Median seconds per call of ``off`` and ``on``, calls interleaved one by one.

    Call i runs ``off`` and then ``on`` (the other way round on odd i), so load that drifts
    during the run hits both sides alike. Nothing is subscribed or unsubscribed between calls
    (re-subscribing right before a call made that call up to 1.5x slower, which is no cost of
    monitoring: see ``compare_switched``). Wall time and
    process CPU time are both kept.
    """
    for fn in (off, on):
        for _ in range(max(1, n // 10)):
            fn()  # warm up both sides
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    gc.collect()
    for i in range(n):
        for monitored in (False, True) if i % 2 == 0 else (True, False):
            fn = on if monitored else off
            if before is not None:
                before(monitored)
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            cpu[monitored].append(time.process_time() - c0)
            wall[monitored].append(time.perf_counter() - w0)
    median, mean = statistics.median, statistics.fmean
    return {
        "off": median(wall[False]),
        "on": median(wall[True]),
        "wall": median(wall[True]) / median(wall[False]),
        "cpu": median(cpu[True]) / median(cpu[False]),
        # means count the calls that do more than the median one (the collector counts its queued
        # runs every monitoring.FOLD_EVERY runs); trimmed of the slowest 1% per side (GC, load spikes)
        "mean": mean(_trimmed(wall[True])) / mean(_trimmed(wall[False])),
    }


def _trimmed(times: list[float]) -> list[float]:
    kept = sorted(times)
    return kept[: max(1, len(kept) - len(kept) // 100)]


def compare_switched(
    run: Callable[[], object], switch: Callable[[bool], None], *, n: int
) -> dict[str, float]:
    """``compare`` on one DataFlow and runtime, ``switch(on)`` turning the measured thing on or off.

    One database serves both sides, so no difference between two databases' tables or threads
    enters the ratio; ``switch`` must be cheap and leave no garbage (it swaps prepared objects),
    and one untimed call after each switch settles what is left.
    """
    state = {"on": True}

    def before(on: bool) -> None:
        if state["on"] is not on:
            switch(on)
            state["on"] = on
            run()

    result = compare(run, run, n=n, before=before)
    before(True)
    return result


def tracking_switch(db: DataFlow, runtime: LocalRuntime) -> Callable[[bool], None]:
    """Give ``db`` and ``runtime`` their hooks with their run trackers (True) or empty hooks (False).

    Swapping two prepared Hooks objects costs nothing. Subscribing on every switch did: its
    misspelling check (difflib) left a trail that made the next calls slower even when the
    subscriber was never called (an A/A test read 1.06x-1.26x).
    """
    for hooks_, tracker in ((runtime.hooks, runtime.tracker), (db.hooks, db.tracker)):
        assert tracker in hooks_ and len(hooks_) == 1, "only the tracker is subscribed (monitoring off)"
    tracked, bare = (runtime.hooks, db.hooks), (Hooks(), Hooks())

    def switch(on: bool) -> None:
        runtime.hooks, db.hooks = tracked if on else bare

    return switch


def monitoring_switch(db: DataFlow) -> Callable[[bool], None]:
    """Turn ``db``'s monitoring on (its hooks with the collector, statements counted) or off.

    The same swap as tracking_switch: ``db.hooks`` with and without the collector (its run tracker
    in both), and the dialect's statement counting (``observe``) as ``monitoring.attach`` sets it.
    Left on in both: the transaction ledger, which the scopes keep whatever monitoring says.
    """
    dialect = db.database.dialect
    monitored, observe = db.hooks, dialect.observe
    assert db.monitor in monitored and db.tracker in monitored and len(monitored) == 2
    bare = Hooks([db.tracker])

    def switch(on: bool) -> None:
        db.hooks = monitored if on else bare
        dialect.observe = observe if on else 0

    return switch


def time_inside(cls: Any, subscribers: list[tuple[Any, Any]], run: Callable[[], object], n: int) -> float:
    """Seconds per ``run()`` spent inside ``cls.after_workflow`` (of every subscriber of that class).

    An accounting figure, steadier than the A/B ratio on a busy machine: the hook method is
    wrapped in a timer (whose own cost is subtracted); hook dispatch and query counting are not in
    it. ``subscribers``: (hooks, subscriber) pairs, subscribed again to pick up the timer.
    """
    spent = [0.0]
    clock = time.perf_counter
    original = cls.after_workflow

    def timed(fn: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*a: object, **k: object) -> object:
            start = clock()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += clock() - start

        return wrapper

    empty = timed(lambda: None)
    start = clock()
    for _ in range(10_000):
        empty()
    wrapper_cost, spent[0] = (clock() - start) / 10_000, 0.0

    def resubscribe() -> None:  # hooks keep bound methods: subscribe again to pick up the timer
        for hooks_, subscriber in subscribers:
            hooks_.unsubscribe(subscriber)
            hooks_.subscribe(subscriber)

    cls.after_workflow = timed(original)
    resubscribe()
    try:
        for _ in range(n):
            run()
        return spent[0] / n - len(subscribers) * wrapper_cost
    finally:
        cls.after_workflow = original
        resubscribe()


def per_call(run: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        run()
    return (time.perf_counter() - start) / n


def measure(label: str, url: str | None, args: argparse.Namespace) -> list[tuple]:
    url = fresh(url)
    db_off, runtime_off, single_off, _ = make(url, monitoring=False)
    db_on, _, single_on, bulk_on = make(url, monitoring=True)
    monitoring, tracking = monitoring_switch(db_on), tracking_switch(db_off, runtime_off)
    rows = []
    for workload, run, switch, n, target in (
        ("single-op (create + read)", single_on, monitoring, args.n, "<= 1.05x"),
        (f"bulk create {BULK_ROWS:,} rows", bulk_on, monitoring, args.bulk_n, "<= 1.02x"),
        ("run tracking, single-op (monitoring off)", single_off, tracking, args.n, "<= 1.05x"),
    ):
        r = compare_switched(run, switch, n=n)
        rows.append(
            (label, workload, fmt_ms(r["off"]), fmt_ms(r["on"]), f"{r['wall']:.3f}x", f"{r['cpu']:.3f}x",
             f"{r['mean']:.3f}x", target)
        )  # fmt: skip
    per_run = per_call(single_off, args.n)
    inside = time_inside(MetricsCollector, [(db_on.hooks, db_on.monitor)], single_on, args.n)
    ACCOUNTING.append(
        f"- {label}: {inside * 1e6:.1f} us inside the collector per single-op run, "
        f"{inside / per_run:.1%} of an unmonitored run ({fmt_ms(per_run)})"
    )
    trackers = [(runtime_off.hooks, runtime_off.tracker), (db_off.hooks, db_off.tracker)]
    inside = time_inside(RunTracker, trackers, single_off, args.n)
    TRACKING.append(
        f"- {label}: {inside * 1e6:.1f} us inside the two run trackers per single-op run, "
        f"{inside / per_run:.1%} of a run"
    )
    assert len(db_off.runs()) > 0 and len(runtime_off.runs()) > 0
    m = db_on.metrics()
    assert m["workflow_executions"]["failed"] == 0 and m["database_operations"]["total_operations"] > 0
    for db in (db_off, db_on):
        db.close()
    print(f"done: {label}", file=sys.stderr)
    return rows


def single_op(db: DataFlow) -> Callable[[], object]:
    @db.model
    class Item:
        name: str
        qty: int

    runtime = LocalRuntime()
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCreateNode", "create", {"name": "widget", "qty": 3})
    wf.add_node("ItemReadNode", "read", {})
    wf.add_connection("create", "id", "read", "id")
    workflow = wf.build()
    return lambda: runtime.execute(workflow)


def measure_health(label: str, url: str | None, n: int, interval: float | None = HEALTH_INTERVAL) -> tuple:
    """The single op with the health task off and probing every ``interval`` s, interleaved.

    ``interval=None``: both sides without probes, the noise floor of the comparison (A/A).
    """
    url = fresh(url)
    db_off = DataFlow(url, health_check_interval=None, min_connections=5)  # the same pool, no probes
    db_on = DataFlow(url, health_check_interval=interval, min_connections=5)
    off, on = single_op(db_off), single_op(db_on)
    monitor, probing = db_on.database.health, [0, 0.0]  # probes made, seconds inside them
    real_check = monitor.check

    async def timed_check():  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return await real_check()
        finally:
            probing[0] += 1
            probing[1] += time.perf_counter() - start

    monitor.check = timed_check  # type: ignore[method-assign]
    for fn in (off, on):
        for _ in range(max(1, n // 10)):
            fn()
    gc.collect()
    probing[:] = [0, 0.0]
    started = time.perf_counter()
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(HEALTH_BLOCKS):  # a ratio per block, then their median: load comes in bursts here
        wall: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for i in range(max(1, n // HEALTH_BLOCKS)):
            for probed in (False, True) if i % 2 == 0 else (True, False):
                w0, c0 = time.perf_counter(), time.process_time()
                (on if probed else off)()
                cpu[probed].append(time.process_time() - c0)
                wall[probed].append(time.perf_counter() - w0)
        for kind, times in (("wall", wall), ("cpu", cpu)):
            ratios[kind].append(statistics.median(times[True]) / max(1e-9, statistics.median(times[False])))
    elapsed = time.perf_counter() - started
    last = db_on.database.health.last
    assert interval is None or (last is not None and last.status == "ok"), last  # it probed; all well
    if interval is not None:
        each = probing[1] / max(1, probing[0])
        HEALTH_ACCOUNTING.append(
            f"- {label}: {probing[0]} probes in {elapsed:.1f} s, {each * 1e3:.2f} ms each: "
            f"{probing[1] / elapsed:.2%} of the time at {interval:g} s, {each / 60:.4%} at the presets' 60 s"
        )
    db_off.close()
    db_on.close()
    median = statistics.median
    print(f"done: health, {label}", file=sys.stderr)
    return (
        label if interval is not None else f"{label}, A/A: no probes either side",
        fmt_ms(median(wall[False])),
        fmt_ms(median(wall[True])),
        f"{median(ratios['wall']):.3f}x",
        f"{median(ratios['cpu']):.3f}x",
        f"{min(ratios['wall']):.2f}x to {max(ratios['wall']):.2f}x",
        "<= 1.05x" if interval is not None else "noise floor",
    )


def health_report(backends: list[tuple[str, str | None]], n: int) -> str:
    rows = [row for label, url in backends for row in (measure_health(label, url, n),
            measure_health(label, url, n, interval=None))]  # fmt: skip
    headers = ("backend", "probes off (wall, last block)", "probing (wall, last block)",
               "probing / off, wall", "CPU", "blocks, wall", "target")  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        "## Health task overhead\n\n"
        "`python benchmarks/bench_monitoring.py --health-only --write docs/performance.md`: the\n"
        "single-op workflow (create, then read by id) on a DataFlow whose health task pings its idle\n"
        f"pooled connections every {HEALTH_INTERVAL:g} s (the presets: every 60 s) and keeps 5 connections\n"
        "warm, against one with probes off (and the same 5 warm); calls interleaved one by one, in "
        f"{HEALTH_BLOCKS} blocks: the median\nof the blocks' ratios of median call times "
        "(and the range of the blocks' ratios). Each\nbackend's A/A row compares two DataFlows without "
        "probes the same way: the noise floor.\n\n"
        + table(rows, headers)
        + "\n\nTime inside the probes (an accounting figure, steadier than the A/B ratio on a busy\n"
        "machine: the loop spends no other time on the health task; it sleeps between probes):\n\n"
        + "\n".join(HEALTH_ACCOUNTING)
        + "\n\nA probe runs on the runtime's loop between runs and takes a pooled connection only while\n"
        "it pings it.\n"
        f"\nLoad average (1, 5, 15 min) at the end of the run: {load} on {os.cpu_count()} cores.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=3000, help="single-op calls per side")
    parser.add_argument("--bulk-n", type=int, default=40, help="bulk calls per side")
    parser.add_argument("--write", metavar="PATH", help="also write the figures as markdown to PATH")
    parser.add_argument("--health-only", action="store_true", help="measure only the health task")
    parser.add_argument("--no-health", action="store_true", help="skip the health task")
    args = parser.parse_args()
    pg = os.environ.get("DATAFLOW_TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    os.environ.pop("DATABASE_URL", None)
    backends = [("SQLite (memory)", None), ("DuckDB (memory)", "duckdb:///:memory:")]
    if pg:
        backends.append(("PostgreSQL", pg))
    if not args.no_health:
        health = health_report(backends, args.n)
        print(health)
        if args.write:
            write(args.write, health, key="bench_monitoring_health")
    if args.health_only:
        return 0
    rows = [row for label, url in backends for row in measure(label, url, args)]
    headers = ("backend", "workload", "off (wall)", "on (wall)", "on / off, wall", "on / off, CPU",
               "on / off, mean wall", "target")  # fmt: skip
    report = table(rows, headers)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = (
        "## Monitoring overhead\n\n"
        "`python benchmarks/bench_monitoring.py --write docs/performance.md`: the same workflow with\n"
        "monitoring off and on (MetricsCollector, query counting, transaction monitor, anomaly detector),\n"
        "calls interleaved one by one in one process (off, on, on, off, ...); the ratio of the median\n"
        "call times, in wall time and in process CPU time. One DataFlow and runtime serve both sides:\n"
        "monitoring is switched by swapping the DataFlow's hooks with and without its collector (and\n"
        'turning statement counting on and off); "run tracking" swaps an unmonitored DataFlow\'s and\n'
        "runtime's hooks holding their run trackers (`db.runs()`, `runtime.runs()`, always on) with\n"
        "empty ones. Each swap is followed by an untimed call; an A/A swap reads 0.99x-1.00x. The mean\n"
        "column (the slowest 1% of calls per side left out) also counts the calls in which the collector\n"
        "counts its queued runs (every 64 runs), which a median never shows.\n\n"
        + report
        + "\n\nTime spent inside the collector's hook methods (an accounting figure: hook dispatch and\n"
        + "query counting are not in it):\n\n"
        + "\n".join(ACCOUNTING)
        + "\n\nMonitoring costs a fixed amount per run, not per row: the collector subscribes to one\n"
        + "hook call per run (after_workflow, which carries the run's node records), which queues a\n"
        + "plain run and counts the queue in one batch every 64 runs or when anything reads the figures\n"
        + "(a failed, retried or slow run is counted at once); transactions are counted by the\n"
        + "database's own ledger and statements by its connections (an integer increment each), so\n"
        + "neither needs a hook call. The per-node memory figure reads the process's resident memory\n"
        + "(`/proc/self/statm`, 2-8 us a read under load) at most once per node and once per millisecond\n"
        + "on a thread: a node starts from the last reading on its thread, and one that ends within a\n"
        + "millisecond of it shares it (0.0; what it changed shows in the next node that reads), so\n"
        + "back-to-back single operations read it about once per millisecond instead of once per node\n"
        + "(process_memory.py). Bulk loads stay within noise; a sub-millisecond single operation pays\n"
        + "a small visible share: the collector's own work per run (queueing its record) and the\n"
        + "node records the runtime builds for it."
        + "\n\nRun tracking (always on, in every environment) is one after_workflow call per run to each\n"
        + "tracker (the runtime's and the DataFlow's, which share the record made once), which asks\n"
        + "for no node records (`node_records = False`), so the runtime builds none when nobody else\n"
        + "wants them. Time inside the trackers:\n\n"
        + "\n".join(TRACKING)
        + f"\n\nLoad average (1, 5, 15 min) at the end of the run: {load} on {os.cpu_count()} cores.\n"
    )
    print(report)
    if args.write:
        write(args.write, report, key="bench_monitoring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
