"""build() scaling and the cost of a sync Python node's thread hand-off.

- build(): a fan-out (one root, N children) and a chain of N nodes, at N = 1,000 and 4,000.
  The figure is time(4,000) / time(1,000): 4.0 is linear. Before the ready nodes waited in a
  heap, the fan-out re-sorted its ready list per step and went quadratic (434 ms at 4,000, against
  57 ms for the chain).
- Sync callables: the runtime's hand-off of a sync function to a kept daemon worker
  (``nodes.python``), against starting one OS thread per call, the way it used to, both awaited
  from an event loop; calls interleaved round by round.

Ratios, not absolute times: these machines are shared.

Run: python benchmarks/bench_build.py [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(__file__), _ROOT]
from _harness import table  # noqa: E402

from dataflow_lab import WorkflowBuilder  # noqa: E402
from dataflow_lab.nodes.python import _in_daemon_thread  # noqa: E402


def one(x: int = 1) -> int:
    return x


def builder(shape: str, width: int) -> WorkflowBuilder:
    workflow = WorkflowBuilder(name=f"{shape} of {width}")
    workflow.add_node(one, "root", {"x": 1})
    previous = "root"
    for i in range(width):
        workflow.add_node(one, f"n{i}")
        workflow.add_connection("root" if shape == "fan-out" else previous, "result", f"n{i}", "x")
        previous = f"n{i}"
    return workflow


def build_seconds(shape: str, width: int, rounds: int) -> float:
    workflow = builder(shape, width)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        workflow.build()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def thread_per_call(fn, params) -> asyncio.Future:
    """The old hand-off: one new daemon thread per call."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def work() -> None:
        value = fn(**params)
        loop.call_soon_threadsafe(future.set_result, value)

    threading.Thread(target=work, daemon=True).start()
    return future


async def hand_offs(rounds: int, calls: int) -> tuple[float, float]:
    kept, fresh = [], []
    for _ in range(calls // 10):
        await _in_daemon_thread(one, {"x": 1})
    for _ in range(rounds):
        for side, times in ((_in_daemon_thread, kept), (thread_per_call, fresh)):
            started = time.perf_counter()
            for _ in range(calls):
                await side(one, {"x": 1})
            times.append((time.perf_counter() - started) / calls)
    return statistics.median(kept), statistics.median(fresh)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", metavar="PATH", help="also write the figures as markdown to PATH")
    args = parser.parse_args()
    rows = []
    for shape in ("fan-out", "chain"):
        small = build_seconds(shape, 1000, args.rounds)
        large = build_seconds(shape, 4000, args.rounds)
        rows.append(
            (
                f"build(), {shape}",
                f"{small * 1e3:.1f} ms",
                f"{large * 1e3:.1f} ms",
                f"{large / small:.2f}",
                "≈ 4 (linear)",
            )
        )
    kept, fresh = asyncio.run(hand_offs(args.rounds, 2000))
    rows.append(("sync node hand-off", f"new thread {fresh * 1e6:.0f} µs", f"kept worker {kept * 1e6:.0f} µs",
                 f"{fresh / kept:.2f}x faster", "> 1"))  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = (
        "## build() scaling and sync-node hand-off\n\n"
        "`python benchmarks/bench_build.py`: build() at 1,000 and 4,000 nodes (the last column but one is\n"
        "their time ratio, 4 = linear); a sync callable's hand-off to a kept worker thread against a new\n"
        f"thread per call, interleaved, {args.rounds} rounds.\n\n"
        + table(rows, ("work", "1,000 / old", "4,000 / new", "ratio", "target"))
        + f"\n\nLoad average (1, 5, 15 min) at the end of the run: {load} on {os.cpu_count()} cores.\n"
    )
    print(report)
    if args.write:
        from bench_core import write

        write(args.write, report, key="bench_build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
