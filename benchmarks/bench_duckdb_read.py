"""Where a one-node DuckDB Read or Count spends its time: the statement itself, or our Python around it.

bench_single.py compares a whole run with the raw driver; this splits our run. On one DataFlow on
DuckDB in memory (the benchmarks' Item model, 1,000 rows) it times, in interleaved blocks:

- the run (``LocalRuntime.execute`` of a one-node ItemReadNode / ItemCountNode),
- the statement that run sends (captured from it), sent bare on the same DuckDB connection,
- the raw benchmark's statement (``SELECT *`` / ``count(*)`` with unqualified names), sent bare.

Each figure is the median block of the main thread's CPU time per call (``time.thread_time``: not
DuckDB's worker threads, and not time spent waiting for a core on a loaded machine). "python" is
run minus our statement; "column list" is our statement minus the raw one.

Run: python benchmarks/bench_duckdb_read.py [--blocks 15] [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _harness import item_db, table  # noqa: E402

from dataflow_lab import LocalRuntime, WorkflowBuilder  # noqa: E402

RAW = {"read": ("SELECT * FROM items WHERE id = ?", [1]),
       "count": ("SELECT count(*) FROM items WHERE qty >= ? AND active = ?", [500, True])}  # fmt: skip


class _Recording:
    """The dialect's DuckDB connection, noting each statement sent through it (for one run)."""

    def __init__(self, con: Any):
        self.con, self.sent = con, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)

    def execute(self, sql: str, params: Any = None) -> Any:
        self.sent.append((sql, params))
        return self.con.execute(sql, params)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    db, _ = item_db("duckdb:///:memory:")
    runtime = LocalRuntime()

    def one(node_type: str, params: dict) -> Any:
        workflow = WorkflowBuilder(dataflow=db)
        workflow.add_node(node_type, "a", params)
        return workflow.build()

    runtime.execute(one("ItemBulkCreateNode", {"data": [{"name": f"item {i}", "qty": i, "price": i * 0.5}
                                                        for i in range(1000)]}))  # fmt: skip
    workflows = {"read": one("ItemReadNode", {"id": 1}),
                 "count": one("ItemCountNode", {"filter": {"qty": {"$gte": 500}, "active": True}})}  # fmt: skip
    dialect = db.database.dialect
    con = dialect.con
    ours: dict[str, tuple[str, list]] = {}
    for op, workflow in workflows.items():
        runtime.execute(workflow)  # its table is checked: the next run sends only its statement
        dialect._con = recording = _Recording(con)
        try:
            runtime.execute(workflow)
        finally:
            dialect._con = con
        assert len(recording.sent) == 1, f"a one-node {op} sent {len(recording.sent)} statements"
        ours[op] = (recording.sent[0][0], list(recording.sent[0][1]))

    paths: dict[tuple[str, str], Callable[[], object]] = {}
    for op, workflow in workflows.items():
        paths[op, "run"] = lambda wf=workflow: runtime.execute(wf)
        paths[op, "our statement"] = lambda s=ours[op]: con.execute(s[0], s[1]).fetchall()
        paths[op, "raw statement"] = lambda s=RAW[op]: con.execute(s[0], s[1]).fetchall()
    blocks: dict[tuple[str, str], list[float]] = {k: [] for k in paths}
    for fn in paths.values():
        fn()
    for _ in range(args.blocks):
        for key, fn in paths.items():
            started = time.thread_time()
            for _ in range(args.calls):
                fn()
            blocks[key].append((time.thread_time() - started) / args.calls * 1000)
    ms = {k: statistics.median(v) for k, v in blocks.items()}
    rows = [(op, f"{ms[op, 'run']:.3f}", f"{ms[op, 'our statement']:.3f}", f"{ms[op, 'raw statement']:.3f}",
             f"{ms[op, 'run'] - ms[op, 'our statement']:.3f}",
             f"{ms[op, 'our statement'] - ms[op, 'raw statement']:.3f}",
             f"{ms[op, 'run'] / ms[op, 'raw statement']:.2f}x") for op in workflows]  # fmt: skip
    print(table(rows, ("op", "run (ms CPU)", "our statement", "raw statement", "python", "column list",
                       "run / raw statement")))  # fmt: skip
    for op, (sql, _) in ours.items():
        print(f"\n{op}: {' '.join(sql.split())}")
    print(f"\nLoad average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    db.close()


if __name__ == "__main__":
    main()
