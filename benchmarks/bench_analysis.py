"""Analysis queries: ``db.sql(..., engine="duckdb")`` over a SQLite table, against plain SQLite.

One GROUP BY over N rows (default 1,000,000) of a model's table in a SQLite file, three ways,
interleaved round by round, median of the rounds:

- raw ``sqlite3`` running the GROUP BY itself (the baseline);
- ``db.sql(query, engine="duckdb")``: DuckDB's sqlite scanner reads the file, DuckDB groups;
- pulling the rows into pandas through raw ``sqlite3`` and grouping there (what the issue
  says the scanner must beat).

The same again for the in-memory default, where engine="duckdb" first copies the database to
a snapshot file (SQLite's backup API), each query.

Ratios, not absolute times: baseline time / ours, so > 1 means faster than plain SQLite.

Run: python benchmarks/bench_analysis.py [--rows N] [--rounds R] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(__file__), _ROOT]
from _harness import table  # noqa: E402

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder  # noqa: E402

QUERY = "SELECT station, count(*) AS trips, avg(km) AS km FROM trips GROUP BY station ORDER BY station"


def load(db: DataFlow, n: int) -> None:
    @db.model
    class Trip:
        station: str
        km: float

    rows = ({"station": f"s{i % 50}", "km": float(i % 997) / 10} for i in range(n))
    workflow = WorkflowBuilder(dataflow=db)
    workflow.add_node("TripBulkCreateNode", "load", {"data": rows, "progress": False})
    LocalRuntime().execute(workflow.build())


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def compare(sides: dict[str, object], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in sides}
    for fn in sides.values():
        fn()  # warm-up: the scanner loads, the page cache fills
    for _ in range(rounds):
        for name, fn in sides.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", metavar="PATH", help="also write the figures as markdown to PATH")
    args = parser.parse_args()
    import pandas as pd

    rows = []
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "trips.db")
        file_db = DataFlow(f"sqlite:///{path}")
        load(file_db, args.rows)
        raw = sqlite3.connect(path)
        expected = raw.execute(QUERY).fetchall()
        got = file_db.sql(QUERY, engine="duckdb")
        assert [tuple(r) for r in got.itertuples(index=False)][0][:2] == expected[0][:2], "same answer"

        def pandas_groupby() -> None:
            frame = pd.read_sql_query("SELECT station, km FROM trips", raw)
            frame.groupby("station").agg(trips=("km", "size"), km=("km", "mean"))

        medians = compare(
            {
                "sqlite3": lambda: raw.execute(QUERY).fetchall(),
                "duckdb": lambda: file_db.sql(QUERY, engine="duckdb"),
                "pandas": pandas_groupby,
            },
            args.rounds,
        )
        base = medians["sqlite3"]
        rows.append((f"GROUP BY, {args.rows:,} rows, SQLite file", "db.sql(engine='duckdb')", f"{base * 1e3:.0f} ms",
                     f"{medians['duckdb'] * 1e3:.0f} ms", f"{base / medians['duckdb']:.2f}x", "> 1"))  # fmt: skip
        rows.append((f"GROUP BY, {args.rows:,} rows, SQLite file", "rows into pandas, groupby", f"{base * 1e3:.0f} ms",
                     f"{medians['pandas'] * 1e3:.0f} ms", f"{base / medians['pandas']:.2f}x", "slower than duckdb"))  # fmt: skip
        raw.close()
        file_db.close()

        memory_db = DataFlow()
        load(memory_db, args.rows)
        medians = compare(
            {"plain": lambda: memory_db.sql(QUERY), "duckdb": lambda: memory_db.sql(QUERY, engine="duckdb")},
            args.rounds,
        )
        rows.append((f"GROUP BY, {args.rows:,} rows, in-memory SQLite", "engine='duckdb' (snapshot each query)",
                     f"{medians['plain'] * 1e3:.0f} ms", f"{medians['duckdb'] * 1e3:.0f} ms",
                     f"{medians['plain'] / medians['duckdb']:.2f}x", "-"))  # fmt: skip
        memory_db.close()
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = (
        "## Analysis: DuckDB over SQLite tables\n\n"
        "`python benchmarks/bench_analysis.py`: one GROUP BY, sides interleaved, "
        f"{args.rounds} rounds after a warm-up; speed-up = plain SQLite's median / the row's median.\n\n"
        + table(rows, ("work", "ours", "plain SQLite (median)", "ours (median)", "speed-up", "target"))
        + f"\n\nLoad average (1, 5, 15 min) at the end of the run: {load_avg} on {os.cpu_count()} cores.\n"
    )
    print(report)
    if args.write:
        from bench_core import write

        write(args.write, report, key="bench_analysis")
    return 0


if __name__ == "__main__":
    sys.exit(main())
