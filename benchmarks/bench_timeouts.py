"""What the time limits cost a single Create: LocalRuntime() (timeout=300, node_timeout=30) against
LocalRuntime(timeout=None, node_timeout=None), the same workflow on the same DataFlow.

Calls alternate one by one (off, on, on, off, ...) and we compare median call times, in wall time
and in process CPU time, so drift on a shared machine hits both sides alike. With limits, each run
arms one asyncio timer for the run and one per node, and disarms them as they end.

Target (issue 16): no measurable cost; at most 1.05x, the monitoring benchmark's budget.
Run: python benchmarks/bench_timeouts.py [-n 2000]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _harness import fmt_ms, table  # noqa: E402

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder  # noqa: E402


def compare(url: str | None, n: int) -> dict[str, float]:
    db = DataFlow(url, monitoring=False)

    @db.model
    class LimitProbe:  # a table of its own: the other benchmarks' "items" differ
        name: str
        qty: int

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("LimitProbeCreateNode", "create", {"name": "widget", "qty": 3})
    workflow = wf.build()
    sides = {False: LocalRuntime(timeout=None, node_timeout=None), True: LocalRuntime()}
    for runtime in sides.values():
        for _ in range(max(1, n // 10)):
            runtime.execute(workflow)  # warm up both sides
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    gc.collect()
    for i in range(n):
        for limited in (False, True) if i % 2 == 0 else (True, False):
            w0, c0 = time.perf_counter(), time.process_time()
            sides[limited].execute(workflow)
            cpu[limited].append(time.process_time() - c0)
            wall[limited].append(time.perf_counter() - w0)
    db.close()
    median = statistics.median
    return {
        "off": median(wall[False]),
        "on": median(wall[True]),
        "wall": median(wall[True]) / median(wall[False]),
        "cpu": median(cpu[True]) / median(cpu[False]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=2000, help="calls per side and backend")
    args = parser.parse_args()
    backends = [("sqlite (memory)", None)]
    if os.environ.get("DATAFLOW_TEST_POSTGRES_URL"):
        backends.append(("postgresql", os.environ["DATAFLOW_TEST_POSTGRES_URL"]))
    rows = []
    for name, url in backends:
        figures = compare(url, args.n)
        rows.append(
            [
                name,
                fmt_ms(figures["off"]),
                fmt_ms(figures["on"]),
                f"{figures['wall']:.3f}x",
                f"{figures['cpu']:.3f}x",
            ]
        )
    print(table(rows, ("backend", "no limits", "limits (300 s / 30 s)", "wall ratio", "CPU ratio")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
