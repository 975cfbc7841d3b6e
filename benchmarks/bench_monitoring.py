"""Monitoring overhead: the same workloads with monitoring off and on, in the same run.

- single-op: a two-node workflow (Create, then Read by id), as in bench_core.py;
- bulk: BulkCreate of 10,000 rows.

Each backend gets two DataFlows, one monitored and one not, both warmed up.
Calls alternate between them one by one (off, on, on, off, ...) and we compare
median call times, in wall time and in process CPU time, so drift on a shared
machine hits both sides alike. While the unmonitored side runs, the monitored
side's collector is unsubscribed, so the "off" figures carry no hook calls.

Targets (issue 6): single-op at most 5% slower, bulk at most 2%.
Run: python benchmarks/bench_monitoring.py [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(__file__))
from _harness import fmt_ms, table  # noqa: E402
from bench_core import write  # noqa: E402

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder, hooks  # noqa: E402
from dataflow_lab.monitoring import MetricsCollector  # noqa: E402

BULK_ROWS = 10_000
ACCOUNTING: list[str] = []


def make(url: str | None, monitoring: bool) -> tuple[DataFlow, Callable[[], object], Callable[[], object]]:
    db = DataFlow(url, monitoring=monitoring, echo=False)  # no SQL on stderr: the monitoring cost alone

    @db.model
    class Item:
        name: str
        qty: int
        price: float
        active: bool = True

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
    return db, (lambda: runtime.execute(single_wf)), (lambda: runtime.execute(bulk_wf))


def compare(
    off: Callable[[], object], on: Callable[[], object], collector: object, *, n: int
) -> dict[str, float]:
    """Median seconds per call with monitoring off and on, calls interleaved one by one.

    Call i runs the unmonitored workflow and then the monitored one (the other way round
    on odd i), so load that drifts during the run hits both sides alike; the collector is
    unsubscribed around each unmonitored call, so those carry no hook calls at all.
    Wall time and process CPU time are both kept.
    """
    for fn in (off, on):
        for _ in range(max(1, n // 10)):
            fn()  # warm up both sides
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    gc.collect()
    for i in range(n):
        for monitored in (False, True) if i % 2 == 0 else (True, False):
            if monitored:
                hooks.subscribe(collector)
            else:
                hooks.unsubscribe(collector)
            fn = on if monitored else off
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            cpu[monitored].append(time.process_time() - c0)
            wall[monitored].append(time.perf_counter() - w0)
    hooks.subscribe(collector)
    median = statistics.median
    return {
        "off": median(wall[False]),
        "on": median(wall[True]),
        "wall": median(wall[True]) / median(wall[False]),
        "cpu": median(cpu[True]) / median(cpu[False]),
    }


def time_in_collector(
    collector: MetricsCollector, single_on: Callable[[], object], single_off: Callable[[], object], n: int
) -> tuple[float, float]:
    """(seconds inside the collector's hook methods per single-op run, seconds per unmonitored run).

    An accounting figure, steadier than the A/B ratio on a busy machine: each hook method is
    wrapped in a timer (whose own cost is subtracted); hook dispatch and query counting are not in it.
    """
    spent = [0.0]
    clock = time.perf_counter
    names = ("after_workflow",)
    originals = {name: getattr(MetricsCollector, name) for name in names}

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
    for name in names:
        setattr(MetricsCollector, name, timed(originals[name]))
    hooks.unsubscribe(collector)
    hooks.subscribe(collector)  # hooks keep bound methods: subscribe again to pick up the timers
    try:
        start = clock()
        for _ in range(n):
            single_on()
        calls_per_run = 1  # after_workflow (it gets the node records)
        inside = spent[0] / n - calls_per_run * wrapper_cost
    finally:
        for name in names:
            setattr(MetricsCollector, name, originals[name])
        hooks.unsubscribe(collector)
        hooks.subscribe(collector)
    start = clock()
    for _ in range(n):
        single_off()
    return inside, (clock() - start) / n


def measure(label: str, url: str | None, args: argparse.Namespace) -> list[tuple]:
    db_off, single_off, bulk_off = make(url, monitoring=False)
    db_on, single_on, bulk_on = make(url, monitoring=True)
    rows = []
    for workload, off, on, n, target in (
        ("single-op (create + read)", single_off, single_on, args.n, "<= 1.05x"),
        (f"bulk create {BULK_ROWS:,} rows", bulk_off, bulk_on, args.bulk_n, "<= 1.02x"),
    ):
        r = compare(off, on, db_on.monitor, n=n)
        rows.append(
            (
                label,
                workload,
                fmt_ms(r["off"]),
                fmt_ms(r["on"]),
                f"{r['wall']:.3f}x",
                f"{r['cpu']:.3f}x",
                target,
            )
        )
    inside, per_run = time_in_collector(db_on.monitor, single_on, single_off, args.n)
    ACCOUNTING.append(
        f"- {label}: {inside * 1e6:.1f} us inside the collector per single-op run, "
        f"{inside / per_run:.1%} of an unmonitored run ({fmt_ms(per_run)})"
    )
    m = db_on.metrics()
    assert m["workflow_executions"]["failed"] == 0 and m["database_operations"]["total_operations"] > 0
    db_off.close()
    db_on.close()
    print(f"done: {label}", file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=3000, help="single-op calls per side")
    parser.add_argument("--bulk-n", type=int, default=40, help="bulk calls per side")
    parser.add_argument("--write", metavar="PATH", help="also write the figures as markdown to PATH")
    args = parser.parse_args()
    pg = os.environ.get("DATAFLOW_TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    os.environ.pop("DATABASE_URL", None)
    backends = [("SQLite (memory)", None), ("DuckDB (memory)", "duckdb:///:memory:")]
    if pg:
        backends.append(("PostgreSQL", pg))
    rows = [row for label, url in backends for row in measure(label, url, args)]
    headers = ("backend", "workload", "off (wall)", "on (wall)", "on / off, wall", "on / off, CPU", "target")
    report = table(rows, headers)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = (
        "## Monitoring overhead\n\n"
        "`python benchmarks/bench_monitoring.py --write docs/performance.md`: the same workflow with\n"
        "monitoring off and on (MetricsCollector, query counting, transaction monitor, anomaly detector),\n"
        "calls interleaved one by one in one process (off, on, on, off, ...); the ratio of the median\n"
        "call times, in wall time and in process CPU time.\n\n"
        + report
        + "\n\nTime spent inside the collector's hook methods (an accounting figure: hook dispatch and\n"
        + "query counting are not in it):\n\n"
        + "\n".join(ACCOUNTING)
        + "\n\nMonitoring costs a fixed amount per run, not per row: the collector subscribes to one\n"
        + "hook call per run (after_workflow, which carries the run's node records); transactions are\n"
        + "counted by the database's own ledger and statements by its connections (an integer increment\n"
        + "each), so neither needs a hook call. Bulk loads stay within noise; a sub-millisecond single\n"
        + "operation pays a small visible share."
        + f"\n\nLoad average (1, 5, 15 min) at the end of the run: {load} on {os.cpu_count()} cores.\n"
    )
    print(report)
    if args.write:
        write(args.write, report, key="bench_monitoring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
