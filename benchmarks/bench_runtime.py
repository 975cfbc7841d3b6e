"""Runtime benchmark: concurrent branches (AsyncLocalRuntime) and scale-out (DaskRuntime).

Two fan-outs, each timed against sequential execution in the same run, sides
interleaved round by round; we report the ratio of the medians:

- I/O-bound: 100 independent nodes that each wait on I/O. Two kinds of wait:
  ``asyncio.sleep(20 ms)`` (a remote call's latency), and PostgreSQL's
  ``SELECT pg_sleep(0.02)`` through an asyncpg pool (a real server round trip;
  needs DATAFLOW_TEST_POSTGRES_URL). Sequential is ``LocalRuntime(transaction="node")``;
  concurrent is ``AsyncLocalRuntime(transaction="node", max_concurrency=N)``.
- CPU-bound: independent pure-Python nodes (~0.2 s of arithmetic each) on
  ``LocalRuntime`` versus ``DaskRuntime`` on a ``LocalCluster(processes=True,
  n_workers=2, threads_per_worker=1)``, started once and warmed up first. Dask's
  figure includes scheduling and (de)serialising each task; the cluster's
  start-up is reported on its own line.

Run: python benchmarks/bench_runtime.py [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(__file__), _ROOT]  # this checkout, here and in the Dask workers
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))
from _harness import table  # noqa: E402

from dataflow_lab import AsyncLocalRuntime, DaskRuntime, LocalRuntime, WorkflowBuilder, _loop  # noqa: E402

WIDTH = 100
WAIT = 0.02
PG_POOL = 20
_POOL: dict[str, object] = {}


async def wait_io(i: int) -> dict:
    await asyncio.sleep(WAIT)
    return {"i": i}


async def wait_postgres(i: int) -> dict:
    import asyncpg

    pool = _POOL.get("pool")
    if pool is None:
        pool = _POOL["pool"] = await asyncpg.create_pool(_POOL["url"], min_size=PG_POOL, max_size=PG_POOL)
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT pg_sleep($1)", WAIT)
    return {"i": i}


def burn(i: int, loops: int) -> dict:
    """About 0.2 s of pure-Python arithmetic (holds the GIL: threads cannot overlap it)."""
    total = 0
    for k in range(loops):
        total += (k * i) % 7
    return {"i": i, "total": total}


def fan_out(fn, width: int, **params) -> WorkflowBuilder:
    wf = WorkflowBuilder(name=f"fan-out of {width}")
    for i in range(width):
        wf.add_node(fn, f"n{i}", i=i, **params)
    return wf


def timed(runtime, workflow) -> float:
    started = time.perf_counter()
    runtime.execute(workflow)
    return time.perf_counter() - started


def compare(baseline, candidate, workflow, rounds: int) -> tuple[float, float, list[float]]:
    """Median seconds of each side over interleaved rounds, and each round's ratio."""
    timed(baseline, workflow), timed(candidate, workflow)  # warm-up: loops, pools, workers
    base, cand = [], []
    for _ in range(rounds):
        base.append(timed(baseline, workflow))
        cand.append(timed(candidate, workflow))
    ratios = [b / c for b, c in zip(base, cand)]
    return statistics.median(base), statistics.median(cand), ratios


def io_rows(rounds: int, pg: str | None) -> list[tuple]:
    rows = []
    sequential = LocalRuntime(transaction="node")
    cases = [("asyncio.sleep(20 ms)", wait_io, (10, WIDTH))]
    if pg:
        _POOL["url"] = pg
        cases.append((f"PostgreSQL pg_sleep(0.02), pool of {PG_POOL}", wait_postgres, (PG_POOL,)))
    for label, fn, limits in cases:
        workflow = fan_out(fn, WIDTH).build()
        for limit in limits:
            concurrent = AsyncLocalRuntime(transaction="node", max_concurrency=limit)
            base, cand, ratios = compare(sequential, concurrent, workflow, rounds)
            rows.append(_row(f"I/O: {WIDTH} x {label}", f"AsyncLocalRuntime, max_concurrency={limit}",
                             "LocalRuntime (sequential)", base, cand, ratios, "≥ 5x"))  # fmt: skip
    if "pool" in _POOL:
        _loop.run(_POOL.pop("pool").close())
    return rows


def cpu_rows(rounds: int, width: int, loops: int) -> tuple[list[tuple], float, float]:
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    cluster = LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=40
    )
    client = Client(cluster)
    startup = time.perf_counter() - started
    try:
        workflow = fan_out(burn, width, loops=loops).build()
        dask = DaskRuntime(client)
        base, cand, ratios = compare(LocalRuntime(transaction="node"), dask, workflow, rounds)
        rows = [_row(f"CPU: {width} x ~0.2 s of Python", "DaskRuntime, 2 worker processes",
                     "LocalRuntime", base, cand, ratios, "≥ 1.6x")]  # fmt: skip
        overlap = _overlap(client, dask, workflow)
    finally:
        client.close()
        cluster.close()
    rows.append(_ceiling(rounds, width, loops))
    return rows, startup, overlap


class _Plain:
    """The same CPU fan-out without dataflow_lab: a loop, or a 2-process pool (what the cores allow)."""

    def __init__(self, width: int, loops: int, pool: Any = None):
        self.width, self.loops, self.pool = width, loops, pool

    def execute(self, _workflow: Any) -> None:
        if self.pool is None:
            [burn(i, self.loops) for i in range(self.width)]
        else:
            list(self.pool.map(burn, range(self.width), [self.loops] * self.width))


def _ceiling(rounds: int, width: int, loops: int) -> tuple:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        base, cand, ratios = compare(_Plain(width, loops), _Plain(width, loops, pool), None, rounds)
    return _row(f"CPU, no dataflow_lab: {width} x ~0.2 s", "ProcessPoolExecutor(2): the machine's ceiling",
                "a Python loop", base, cand, ratios, "-")  # fmt: skip


def _overlap(client, dask, workflow) -> float:
    """One more Dask run: the workers' summed compute time over its wall span (2.0 = both always busy)."""
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        dask.execute(workflow)
    spans = [s for task in stream.data for s in task["startstops"] if s["action"] == "compute"]
    busy = sum(s["stop"] - s["start"] for s in spans)
    return busy / (max(s["stop"] for s in spans) - min(s["start"] for s in spans))


def _row(workload, candidate, baseline, base, cand, ratios, target) -> tuple:
    spread = f"{min(ratios):.1f}x-{max(ratios):.1f}x"
    return (
        workload,
        candidate,
        baseline,
        f"{base:.3f} s",
        f"{cand:.3f} s",
        f"{base / cand:.2f}x",
        spread,
        target,
    )


def calibrate(target: float = 0.2) -> int:
    """Loops of ``burn`` that take about ``target`` seconds here."""
    loops = 200_000
    started = time.perf_counter()
    burn(3, loops)
    return int(loops * target / (time.perf_counter() - started))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side")
    parser.add_argument("--cpu-width", type=int, default=16, help="CPU-bound nodes in the Dask fan-out")
    parser.add_argument("--write", metavar="PATH", help="also write the figures as markdown to PATH")
    args = parser.parse_args()
    pg = os.environ.get("DATAFLOW_TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL")
    os.environ.pop("DATABASE_URL", None)
    rows = io_rows(args.rounds, pg)
    loops = calibrate()
    cpu, startup, overlap = cpu_rows(args.rounds, args.cpu_width, loops)
    rows += cpu
    headers = ("workload", "runtime", "against", "against (median)", "runtime (median)", "speed-up",
               "per-round range", "target")  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = (
        "## Concurrent branches and Dask\n\n"
        "`python benchmarks/bench_runtime.py --write docs/performance.md`: fan-outs of independent nodes,\n"
        "each timed against sequential execution in the same run (sides interleaved, "
        f"{args.rounds} rounds after a warm-up);\n"
        "speed-up = median sequential time / median time of the runtime.\n\n"
        + table(rows, headers)
        + "\n\nThe last row runs the same arithmetic with no dataflow_lab and no Dask, in a loop and on a\n"
        "2-process pool, right after the Dask rows: the speed-up two processes get on this shared\n"
        "machine at that time. Read DaskRuntime's figure against that ceiling.\n"
        + f"\nLocalCluster start-up (2 worker processes): {startup:.2f} s, not included above.\n"
        + f"Dask workers' compute time over wall time in one more CPU run: {overlap:.2f} (2.00 = both "
        "workers busy throughout; below that, the 2 cores were shared with other processes).\n"
        + f"Load average (1, 5, 15 min) at the end of the run: {load} on {os.cpu_count()} cores.\n"
    )
    print(report)
    if args.write:
        from bench_core import write

        write(args.write, report, key="bench_runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
