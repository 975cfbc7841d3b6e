"""CSV to chart in a notebook: dataflow_lab's six cells against JupySQL's, timed in fresh kernels.

Both notebooks do the same: load the extension, bring ``notebooks/data/bike_trips.csv`` into a
table, show the first rows, count trips per station, draw a bar chart. Each is run in a fresh
kernel by nbclient; "first result" is the time from the kernel being ready to the end of the
first-rows cell, "all" to the end of the chart. Median of ``--rounds`` runs.

JupySQL is not one of our dependencies. Run the script once per side, with the interpreter that
has that side installed:

    python benchmarks/bench_analysis_notebooks.py --side dataflow_lab
    /path/to/venv-with-jupysql/bin/python benchmarks/bench_analysis_notebooks.py --side jupysql

Cells and lines are counted from the notebooks below (magic lines included, blank lines not).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CSV = os.path.join(os.path.dirname(HERE), "notebooks", "data", "bike_trips.csv")

SIDES = {
    "dataflow_lab": [
        "%load_ext dataflow_lab",
        "%%dataflow model\nfrom datetime import date\n\n\nclass Trip:\n    station: str\n    day: date\n"
        "    minutes: float\n    km: float\n    member: bool",
        f'Trip.import_csv("{CSV}")',
        "Trip.frame(limit=5)",
        "%%dataflow sql -o by_station\nSELECT station, count(*) AS trips FROM trips\n"
        "GROUP BY station ORDER BY trips DESC",
        "%dataflow plot bar --x station --y trips",
    ],
    "jupysql": [
        "%load_ext sql",
        "%sql duckdb://",
        f"%sql CREATE TABLE trips AS SELECT * FROM read_csv_auto('{CSV}')",
        "%sql SELECT * FROM trips LIMIT 5",
        "%%sql by_station <<\nSELECT station, count(*) AS trips FROM trips\nGROUP BY station ORDER BY trips DESC",
        "by_station.bar()",
    ],
}
FIRST_ROWS = {"dataflow_lab": 3, "jupysql": 3}  # index of the first-rows cell


def lines(cells: list[str]) -> int:
    return sum(1 for cell in cells for line in cell.splitlines() if line.strip())


def run_once(cells: list[str], first: int) -> tuple[float, float]:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(notebook, timeout=120, kernel_name="python3")
    marks = []
    with client.setup_kernel():
        started = time.perf_counter()
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
            errors = [o for o in cell.outputs if o.output_type == "error"]
            if errors:
                raise RuntimeError(f"cell {index} failed: {errors[0].ename}: {errors[0].evalue}")
            marks.append(time.perf_counter() - started)
    return marks[first], marks[-1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", choices=tuple(SIDES), required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cells = SIDES[args.side]
    runs = [run_once(cells, FIRST_ROWS[args.side]) for _ in range(args.rounds)]
    first = statistics.median(r[0] for r in runs)
    whole = statistics.median(r[1] for r in runs)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.side}: {len(cells)} cells, {lines(cells)} lines; first rows after {first:.2f} s, "
          f"chart after {whole:.2f} s (median of {args.rounds}; load {load})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
