#!/usr/bin/env python3
"""Run the fault and reliability tests and write docs/reliability.md from their figures.

    python scripts/reliability_report.py                 # CI sizes
    python scripts/reliability_report.py --steps 100000 --fuzz-examples 100000   # the long run

Tests report figures in either of two ways, and both end up in the document:

- ``record_property(name, value)`` (pytest's fixture): read back from the JUnit XML
  file this script asks pytest to write; one table per test function, one row per
  parametrization (backend...);
- a JSON line ``{"test": "<title>", "<figure>": value, ...}`` appended to the file named
  by the environment variable ``DATAFLOW_RELIABILITY_FIGURES`` (set by this script);
  one table per title. A line with ``injected`` (how the fault was made), ``times`` and
  ``outcome`` is a row of the "Faults injected" table instead, its title the fault.

PostgreSQL tests need ``DATAFLOW_TEST_POSTGRES_URL`` (``.ci/run`` and
``eval "$(bash .ci/pg.sh start)"`` set it); without it they are skipped, and the
document says so. The exit code is pytest's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "reliability.md"
OWN_TESTS = ["tests/test_stateful.py", "tests/test_injection.py", "tests/test_filter_fuzz.py"]
GLOBS = [
    "tests/test_faults*.py",
    "tests/test_transactions*.py",
    "tests/test_health.py",
    "tests/test_leaks.py",
    "tests/test_timeouts.py",
    "tests/test_retry.py",
    "tests/test_mysql_xa.py",
]
FAULT_COLUMNS = ("fault", "injected", "times", "outcome")  # a figure with these goes to "Faults injected"

ABOUT = {
    "test_faults": "Server crashes, pool pressure and deadlock storms against a real PostgreSQL.",
    "test_faults_saga": "Sagas whose compensations are cut off by a server kill: owed compensations are "
    "resumed after the restart, at the next start or by db.resume_compensations().",
    "test_faults_monitoring": "Hundreds of monitored DataFlows created and closed on PostgreSQL: none stays "
    "alive, no connection leaks.",
    "test_health": "Health probes against a PostgreSQL the tests start, stop and restart themselves: killed "
    "and dead connections are discarded, a stopped server reads down; min_connections; DuckDB's pool options.",
    "test_leaks": "DataFlows collected unclosed, connections kept past their run, transactions open at exit: "
    "warned about once, counted, cleaned up.",
    "test_faults_restart": "A test-owned PostgreSQL restarted (about 1 s down) under in-flight runs: the "
    "default 10 s retry budget carries every run through.",
    "test_timeouts": "Hung Python nodes and statements cancelled by run and node time limits, on every "
    "backend and transaction mode: the database is left as the mode says, the connection returned.",
    "test_retry": "The retry policy: its time budget, what is transient, what the final error says, and "
    "a full pool (PoolExhaustedError).",
    "test_mysql_xa": "Two-phase commit with XA on a real MariaDB (beside PostgreSQL or a second MariaDB "
    "database): crashes between PREPARE and COMMIT resolved through XA RECOVER and the decision log.",
    "test_transactions": "Transaction blocks, savepoints, isolation levels, sagas, two-phase commit, retries.",
    "test_stateful": "Random Create/Read/Update/Delete/Upsert/List/Count and bulk operations, each a real "
    "workflow, compared with an in-memory reference model after every step.",
    "test_injection": "SQL-injection payloads as values (must round-trip exactly and filter exactly) and as "
    "identifiers (must be refused with ValidationError); the tables must stay intact.",
    "test_filter_fuzz": "Hypothesis-generated filter documents and order_by values: the filter compiler may "
    "raise only ValidationError, and accepted filters must run.",
}


def test_files() -> list[str]:
    files = [f for f in OWN_TESTS if (ROOT / f).exists()]
    for pattern in GLOBS:
        files += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))
    return list(dict.fromkeys(files))


def run_pytest(files: list[str], junit: Path, figures: Path, extra: list[str]) -> tuple[int, float]:
    env = {**os.environ, "DATAFLOW_RELIABILITY_FIGURES": str(figures), "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
        f"--junitxml={junit}", *extra, *files,
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    started = dt.datetime.now()
    rc = subprocess.call(command, cwd=ROOT, env=env)
    return rc, (dt.datetime.now() - started).total_seconds()


# -- reading the results ------------------------------------------------------------------------
class Case:
    def __init__(self, element: ET.Element):
        self.file = element.get("file") or element.get("classname", "").replace(".", "/") + ".py"
        self.name = element.get("name", "")
        self.time = float(element.get("time") or 0)
        self.function, _, self.param = self.name.partition("[")
        self.param = self.param.rstrip("]")
        self.properties = [(p.get("name", ""), p.get("value", "")) for p in element.iter("property")]
        self.outcome, self.message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = element.find(tag)
            if found is not None:
                self.outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                self.message = (found.get("message") or found.text or "").strip()
                break

    @property
    def module(self) -> str:
        return Path(self.file).stem


def read_junit(path: Path) -> list[Case]:
    if not path.exists():
        return []
    return [Case(e) for e in ET.parse(path).getroot().iter("testcase")]


def read_figures(path: Path) -> dict[str, list[dict]]:
    by_title: dict[str, list[dict]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                by_title[str(entry.pop("test", "?"))].append(entry)
    return by_title


# -- writing the document ----------------------------------------------------------------------
def cell(value: object) -> str:
    text = str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = f"{value:,}" if isinstance(value, int) else f"{value:,.2f}".rstrip("0").rstrip(".")
    elif re.fullmatch(r"-?\d{4,}", text):
        text = f"{int(text):,}"
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def short(message: str, limit: int = 220) -> str:
    first = " ".join(message.split())
    return first if len(first) <= limit else first[: limit - 1] + "…"


def git(*args: str) -> str:
    try:
        return subprocess.check_output(["git", *args], cwd=ROOT, text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def render(cases: list[Case], figures: dict[str, list[dict]], rc: int, seconds: float) -> str:
    counts = defaultdict(int)
    for case in cases:
        counts[case.outcome] += 1
    commit = git("rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if git("status", "--porcelain") not in ("", "?") else ""
    pg = "yes" if os.environ.get("DATAFLOW_TEST_POSTGRES_URL") else "no (PostgreSQL tests skipped)"
    out = [
        "# Reliability figures",
        "",
        "Generated by `python scripts/reliability_report.py` — do not edit by hand; run the script again.",
        "",
        f"- When: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit `{commit}`{dirty}",
        f"- Python {platform.python_version()} on {platform.system()} {platform.machine()}; PostgreSQL: {pg}",
        f"- Sizes: stateful operations per backend "
        f"{os.environ.get('DATAFLOW_STATEFUL_STEPS') or 'CI default (2,000)'}, "
        f"filter fuzz examples {os.environ.get('DATAFLOW_FUZZ_EXAMPLES') or 'CI default (2,000)'}",
        f"- Result: {counts['passed']} passed, {counts['FAILED']} failed, {counts['ERROR']} errors, "
        f"{counts['skipped']} skipped in {seconds:,.0f} s (pytest exit code {rc})",
        "",
        "## Summary",
        "",
    ]
    by_module: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_module[case.module].append(case)
    summary = []
    for module, module_cases in by_module.items():
        outcome = defaultdict(int)
        for case in module_cases:
            outcome[case.outcome] += 1
        status = ", ".join(f"{n} {o}" for o, n in sorted(outcome.items()))
        summary.append(
            [f"`{module}.py`", len(module_cases), status, f"{sum(c.time for c in module_cases):.1f}"]
        )
    out += table(["Test file", "Tests", "Outcome", "Seconds"], summary)

    for module, module_cases in by_module.items():
        out += ["", f"## `tests/{module}.py`", ""]
        if module in ABOUT:
            out += [ABOUT[module], ""]
        by_function: dict[str, list[Case]] = defaultdict(list)
        for case in module_cases:
            by_function[case.function].append(case)
        plain = []
        for function, function_cases in by_function.items():
            names = list(dict.fromkeys(n for c in function_cases for n, _ in c.properties))
            if not names:
                for case in function_cases:
                    plain.append(
                        [f"`{case.name}`", case.outcome, f"{case.time:.1f}", short(case.message, 160)]
                    )
                continue
            out += [f"### `{function}`", ""]
            rows = []
            for case in function_cases:
                values = dict(case.properties)
                rows.append(
                    [case.param or "—", case.outcome, f"{case.time:.1f}", *(values.get(n, "") for n in names)]
                )
            out += table(["Case", "Outcome", "Seconds", *names], rows)
            failed = [c for c in function_cases if c.outcome in ("FAILED", "ERROR")]
            for case in failed:
                out += ["", f"- `{case.name}` {case.outcome}: {short(case.message)}"]
            out += [""]
        if plain:
            out += ["### Other tests", ""]
            out += table(["Test", "Outcome", "Seconds", "Message"], plain)
            out += [""]

    # one row per fault: a figure names it ("fault"), or its test's title does
    faults = _merged(
        [
            (e.get("fault") or title, e)
            for title, entries in figures.items()
            for e in entries
            if "injected" in e
        ]
    )
    if faults:
        out += ["", "## Faults injected", ""]
        rows = [
            [title, e["injected"], e.get("times", ""), e.get("outcome", ""), _others(e)]
            for title, e in faults
        ]
        out += table(["Fault", "How it was injected", "Times", "Outcome", "Figures"], rows)
    figures = {t: [e for e in es if "injected" not in e] for t, es in figures.items()}
    figures = {t: es for t, es in figures.items() if es}
    if figures:
        out += ["", "## Figures reported through `DATAFLOW_RELIABILITY_FIGURES`", ""]
        for title, entries in figures.items():
            names = list(dict.fromkeys(k for e in entries for k in e))
            out += [f"### {title}", ""]
            out += table(names, [[e.get(n, "") for n in names] for e in entries])
            out += [""]
    return "\n".join(out).rstrip() + "\n"


def _merged(faults: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """One row per fault, injection and outcome: their ``times`` (and ``cases``) add up."""
    rows: dict[tuple, tuple[str, dict]] = {}
    for title, entry in faults:
        key = (title, entry["injected"], entry.get("outcome"), *sorted(k for k in entry if k != "times"))
        if key in rows:
            rows[key][1]["times"] = rows[key][1].get("times", 0) + entry.get("times", 0)
        else:
            rows[key] = (title, dict(entry))
    return list(rows.values())


def _others(entry: dict) -> str:
    return ", ".join(f"{k} {cell(v)}" for k, v in entry.items() if k not in FAULT_COLUMNS)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, help="stateful operations per backend (DATAFLOW_STATEFUL_STEPS)")
    parser.add_argument("--fuzz-examples", type=int, help="filter fuzz examples (DATAFLOW_FUZZ_EXAMPLES)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT.relative_to(ROOT)}")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    if args.steps:
        os.environ["DATAFLOW_STATEFUL_STEPS"] = str(args.steps)
    if args.fuzz_examples:
        os.environ["DATAFLOW_FUZZ_EXAMPLES"] = str(args.fuzz_examples)
    extra = list(args.pytest_args)
    if args.steps or args.fuzz_examples:
        extra += ["-o", "addopts=-ra -q"]  # the long run may exceed the per-test timeout
    files = test_files()
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        junit, figures = Path(tmp) / "junit.xml", Path(tmp) / "figures.jsonl"
        rc, seconds = run_pytest(files, junit, figures, extra)
        document = render(read_junit(junit), read_figures(figures), rc, seconds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(document)
    print(f"wrote {args.output} ({len(document.splitlines())} lines)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
