"""Analysis queries: ``db.sql(..., engine="duckdb")`` over a SQLite table, against plain SQLite.

One GROUP BY over N rows (default 1,000,000) of a model's table in a SQLite file, three ways,
interleaved round by round, median of the rounds:

- raw ``sqlite3`` running the GROUP BY itself (the baseline);
- ``db.sql(query, engine="duckdb")``: DuckDB's sqlite scanner reads the file, DuckDB groups;
- pulling the rows into pandas through raw ``sqlite3`` and grouping there (what the issue
  says the scanner must beat).

The same again for the in-memory default, where engine="duckdb" first copies the database to
a snapshot file (SQLite's backup API), each query; and, with ``--postgres URL`` (default: the
tests' DATAFLOW_TEST_POSTGRES_URL), over a PostgreSQL table: PostgreSQL's own GROUP BY, DuckDB's
postgres scanner, and the rows pulled into pandas.

Where DuckDB cannot load a scanner (it downloads them; PyPI's wheels stop at DuckDB 1.5.5),
its rows say "skipped" and why.

Ratios, not absolute times: baseline time / ours, so > 1 means faster than plain SQLite.

Run: python benchmarks/bench_analysis.py [--rows N] [--rounds R] [--postgres URL] [--write docs/performance.md]
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

from dataflow_lab import DataFlow, DataFlowError, LocalRuntime, WorkflowBuilder  # noqa: E402

QUERY = "SELECT station, count(*) AS trips, avg(km) AS km FROM {table} GROUP BY station ORDER BY station"
TABLE = "bench_analysis_trips"


def load(db: DataFlow, n: int) -> None:
    @db.model
    class Trip:
        station: str
        km: float

        __tablename__ = TABLE

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


def scanner_missing(db: DataFlow) -> str | None:
    """Why ``db.sql(..., engine="duckdb")`` cannot run here (None: it can)."""
    try:
        db.sql("SELECT 1 AS one", engine="duckdb")
    except DataFlowError as exc:
        return exc.message.splitlines()[0].split(", and could not")[0]  # (not DuckDB's download address)
    return None


def row(work: str, ours: str, base: float, theirs: float, target: str) -> tuple:
    return (work, ours, f"{base * 1e3:.0f} ms", f"{theirs * 1e3:.0f} ms", f"{base / theirs:.2f}x", target)


def sqlite_rows(args: argparse.Namespace) -> list[tuple]:
    import pandas as pd

    query, work = QUERY.format(table=TABLE), f"GROUP BY, {args.rows:,} rows"
    out = []
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "trips.db")
        file_db = DataFlow(f"sqlite:///{path}", echo=False)
        missing = scanner_missing(file_db)
        if missing:
            file_db.close()
            return [(f"{work}, SQLite", "db.sql(engine='duckdb')", "-", "-", f"skipped: {missing}", "> 1")]
        load(file_db, args.rows)
        raw = sqlite3.connect(path)
        expected = raw.execute(query).fetchall()
        got = file_db.sql(query, engine="duckdb")
        assert [tuple(r) for r in got.itertuples(index=False)][0][:2] == expected[0][:2], "same answer"

        def pandas_groupby() -> None:
            frame = pd.read_sql_query(f"SELECT station, km FROM {TABLE}", raw)
            frame.groupby("station").agg(trips=("km", "size"), km=("km", "mean"))

        medians = compare(
            {
                "sqlite3": lambda: raw.execute(query).fetchall(),
                "duckdb": lambda: file_db.sql(query, engine="duckdb"),
                "pandas": pandas_groupby,
            },
            args.rounds,
        )
        base = medians["sqlite3"]
        out.append(row(f"{work}, SQLite file", "db.sql(engine='duckdb')", base, medians["duckdb"], "> 1"))
        out.append(row(f"{work}, SQLite file", "rows into pandas, groupby", base, medians["pandas"],
                       "slower than duckdb"))  # fmt: skip
        raw.close()
        file_db.close()

    memory_db = DataFlow(echo=False)
    load(memory_db, args.rows)
    medians = compare(
        {"plain": lambda: memory_db.sql(query), "duckdb": lambda: memory_db.sql(query, engine="duckdb")},
        args.rounds,
    )
    out.append(row(f"{work}, in-memory SQLite", "engine='duckdb' (snapshot each query)", medians["plain"],
                   medians["duckdb"], "-"))  # fmt: skip
    memory_db.close()
    return out


def postgres_rows(url: str, args: argparse.Namespace) -> list[tuple]:
    """The same GROUP BY over a PostgreSQL table: PostgreSQL's own, DuckDB's scanner, pandas."""
    query, work = QUERY.format(table=TABLE), f"GROUP BY, {args.rows:,} rows, PostgreSQL"
    db = DataFlow(url, echo=False)
    missing = scanner_missing(db)
    if missing:
        db.close()
        return [(work, "db.sql(engine='duckdb')", "-", "-", f"skipped: {missing}", "> 1")]
    try:
        db.sql(f"DROP TABLE IF EXISTS {TABLE}", write=True)  # a table an earlier run left
        load(db, args.rows)

        def pandas_groupby() -> None:
            frame = db.sql(f"SELECT station, km FROM {TABLE}")
            frame.groupby("station").agg(trips=("km", "size"), km=("km", "mean"))

        assert len(db.sql(query, engine="duckdb")) == len(db.sql(query)), "same answer"
        medians = compare(
            {
                "plain": lambda: db.sql(query),
                "duckdb": lambda: db.sql(query, engine="duckdb"),
                "pandas": pandas_groupby,
            },
            args.rounds,
        )
        base = medians["plain"]
        return [
            row(work, "db.sql(engine='duckdb')", base, medians["duckdb"], "-"),
            row(work, "rows into pandas, groupby", base, medians["pandas"], "slower than duckdb"),
        ]
    finally:
        db.sql(f"DROP TABLE IF EXISTS {TABLE}", write=True)
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", metavar="URL", default=os.environ.get("DATAFLOW_TEST_POSTGRES_URL"),
                        help="also over a PostgreSQL table there (default: $DATAFLOW_TEST_POSTGRES_URL)")  # fmt: skip
    parser.add_argument("--write", metavar="PATH", help="also write the figures as markdown to PATH")
    args = parser.parse_args()
    import duckdb

    rows = sqlite_rows(args)
    if args.postgres:
        rows += postgres_rows(args.postgres, args)
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = (
        "## Analysis: DuckDB over SQLite and PostgreSQL tables\n\n"
        "`python benchmarks/bench_analysis.py`: one GROUP BY, sides interleaved, "
        f"{args.rounds} rounds after a warm-up; speed-up = the plain database's median / the row's median "
        f"(DuckDB {duckdb.__version__}).\n\n"
        + table(rows, ("work", "ours", "plain database (median)", "ours (median)", "speed-up", "target"))
        + f"\n\nLoad average (1, 5, 15 min) at the end of the run: {load_avg} on {os.cpu_count()} cores.\n"
    )
    print(report)
    if args.write:
        from bench_core import write

        write(args.write, report, key="bench_analysis")
    return 0


if __name__ == "__main__":
    sys.exit(main())
