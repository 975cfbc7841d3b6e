"""Monitoring overhead: the same workloads with monitoring off and on, in the same run.

- single-op: a two-node workflow (Create, then Read by id), as in bench_core.py;
- bulk: BulkCreate of 10,000 rows.

Each backend gets two DataFlows, one monitored and one not, both warmed up.
Rounds alternate between them (off, on, on, off, ...); each on-round is paired
with the off-round next to it and we report the median of those ratios, in
wall time and in process CPU time, so drift on a shared machine hits both sides.
While the unmonitored side runs, the monitored side's collector is
unsubscribed, so the "off" figures carry no hook calls at all.

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

BULK_ROWS = 10_000


def make(url: str | None, monitoring: bool) -> tuple[DataFlow, Callable[[], object], Callable[[], object]]:
    db = DataFlow(url, monitoring=monitoring)

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
    off: Callable[[], object], on: Callable[[], object], collector: object, *, n: int, rounds: int
) -> dict[str, float]:
    """Seconds per call with monitoring off and on, and the median of the paired per-round ratios.

    Rounds alternate (off, on, on, off, ...), and each on-round is compared with the off-round
    next to it, so load that drifts during the run cancels out. Wall time and process CPU time
    are both kept: on a busy shared machine the CPU figure is the steadier of the two.
    """
    for fn in (off, on):
        for _ in range(max(1, n // 5)):
            fn()  # warm up both sides
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for monitored in (False, True) if r % 2 == 0 else (True, False):
            if monitored:
                hooks.subscribe(collector)
            else:
                hooks.unsubscribe(collector)
            fn = on if monitored else off
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            cpu[monitored].append((time.process_time() - c0) / n)
            wall[monitored].append((time.perf_counter() - w0) / n)
    hooks.subscribe(collector)

    def paired(times: dict[bool, list[float]]) -> float:
        return statistics.median(b / a for a, b in zip(times[False], times[True]))

    return {
        "off": statistics.median(wall[False]),
        "on": statistics.median(wall[True]),
        "wall": paired(wall),
        "cpu": paired(cpu),
    }


def measure(label: str, url: str | None, args: argparse.Namespace) -> list[tuple]:
    db_off, single_off, bulk_off = make(url, monitoring=False)
    db_on, single_on, bulk_on = make(url, monitoring=True)
    rows = []
    for workload, off, on, n, target in (
        ("single-op (create + read)", single_off, single_on, args.n, "<= 1.05x"),
        (f"bulk create {BULK_ROWS:,} rows", bulk_off, bulk_on, args.bulk_n, "<= 1.02x"),
    ):
        r = compare(off, on, db_on.monitor, n=n, rounds=args.rounds)
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
    parser.add_argument("-n", type=int, default=50, help="single-op calls per round")
    parser.add_argument("--bulk-n", type=int, default=2, help="bulk calls per round")
    parser.add_argument("--rounds", type=int, default=40, help="rounds per side (alternating)")
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
    report = (
        "## Monitoring overhead\n\n"
        "`python benchmarks/bench_monitoring.py --write docs/performance.md`: the same workflow with\n"
        "monitoring off and on (MetricsCollector, query counting, transaction monitor, anomaly detector),\n"
        "alternating rounds in one process; medians of the per-round times.\n\n" + report + "\n"
    )
    print(report)
    if args.write:
        write(args.write, report, key="bench_monitoring")
    return 0


if __name__ == "__main__":
    sys.exit(main())
