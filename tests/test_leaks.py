"""Leak detection (leaks.py): DataFlows collected unclosed, connections kept past their run, transactions open at exit."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
from test_faults import record

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder, _loop, leaks
from dataflow_lab.leaks import LeakWarning
from dataflow_lab.nodes import registry
from dataflow_lab.nodes.base import Node

# runs alone under pytest -n: it counts the database's backends in pg_stat_activity
pytestmark = pytest.mark.exclusive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDING = ["sqlite_file", "duckdb", "postgres"]  # an in-memory SQLite is its connection: nothing leaks


def define(db: DataFlow) -> None:
    @db.model
    class Item:
        name: str


def count(db: DataFlow) -> int:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCountNode", "n", {})
    return LocalRuntime().execute(wf.build())[0]["n"]["count"]


def used_and_dropped(url: str) -> None:
    db = DataFlow(url, health_check_interval=None)  # the site the warning names
    define(db)
    assert count(db) == 0


def leak_warnings(caught: list) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, LeakWarning)]


@pytest.mark.parametrize("backend", HOLDING)
def test_a_dataflow_collected_unclosed_warns_naming_where_it_was_made(backend, tmp_path):
    from conftest import url_for

    url = url_for(backend, tmp_path)
    before = leaks.count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        used_and_dropped(url)
        gc.collect()
    site = f"{__file__}:{used_and_dropped.__code__.co_firstlineno + 1}"
    found = leak_warnings(caught)
    assert len(found) == 1, found
    assert site in found[0] and "without close()" in found[0] and "connection" in found[0]
    assert leaks.count() == before + 1
    assert leaks.recent()[-1].kind == "collected" and leaks.recent()[-1].site == site
    record(
        f"leak: DataFlow collected unclosed ({backend})",
        fault=f"a {backend} DataFlow dropped without close() while holding connections",
        injected="del, gc.collect()",
        times=1,
        outcome="one LeakWarning naming the file:line of DataFlow(...); counted in leaks",
    )


def test_the_collected_dataflows_connections_are_closed_on_the_server(pg_url):
    import asyncpg

    async def backends() -> int:
        conn = await asyncpg.connect(pg_url.split("?")[0])
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        finally:
            await conn.close()

    for db in registry.live_dataflows():
        db.close()
    baseline = _loop.run(backends())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakWarning)
        db = DataFlow(pg_url, health_check_interval=None, min_connections=3)
        define(db)
        count(db)
        assert db.pool_status()["checkedin"] >= 1
        del db
        gc.collect()
    deadline = time.monotonic() + 10
    while _loop.run(backends()) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _loop.run(backends()) == baseline
    record(
        "leak: pool of a collected DataFlow",
        fault="a PostgreSQL DataFlow with 3 warm connections dropped without close()",
        injected="del, gc.collect(); backends counted in pg_stat_activity",
        times=1,
        outcome="its pool is closed on the loop: the server's backends are back to the baseline",
    )


def test_the_same_site_warns_once_and_counts_every_leak(tmp_path):
    before = leaks.count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            used_and_dropped(f"sqlite:///{tmp_path / 'same.db'}")
            gc.collect()
    assert len(leak_warnings(caught)) == 1
    assert leaks.count() == before + 3


def test_a_closed_or_unused_dataflow_is_no_leak(url):
    before = leaks.count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        db = DataFlow(url, health_check_interval=None)
        define(db)
        count(db)
        db.close()
        del db
        DataFlow(url)  # never used: it never held a connection
        gc.collect()
    assert leak_warnings(caught) == [] and leaks.count() == before


def test_a_connection_kept_past_its_run_is_warned_about_and_counted(url):
    db = DataFlow(url, monitoring=True, health_check_interval=None)
    define(db)
    kept = []

    class Keeper(Node):
        type_name = "Keeper"
        dataflow = db

        async def run(self, ctx) -> dict:
            kept.append(await db.database.acquire())  # and never released
            return {}

    try:
        before = db.monitor.dashboard()["safety_events"]["leaks"]
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node(Keeper, "keeper", {})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            LocalRuntime().execute(wf.build())
        found = leak_warnings(caught)
        assert len(found) <= 1  # warned once per place (and this place may have warned before)
        leak = leaks.recent()[-1]
        assert leak.kind == "checked_out" and "node 'keeper'" in leak.message
        assert "still checked out" in leak.message and leak.database == db.database.token
        assert db.monitor.dashboard()["safety_events"]["leaks"] == before + 1
        exported = [
            line for line in db.metrics_text().splitlines() if line.startswith("dataflow_leaks_total")
        ]
        assert exported and float(exported[0].rsplit(" ", 1)[1]) == before + 1  # and in Prometheus
        record(
            f"leak: connection kept past its run ({db.dialect})",
            fault="a node acquires a connection and never releases it",
            injected="a Node subclass calling db.database.acquire() in run()",
            times=1,
            outcome="warned when the run ends, naming the node; safety_events.leaks + 1",
        )
    finally:
        for conn in kept:
            _loop.run(db.database.release(conn))
        db.close()


def test_a_run_that_releases_everything_reports_no_leak(db):
    define(db)
    before = leaks.count(db.database.token)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            count(db)
        with db.transaction():
            count(db)
    assert leak_warnings(caught) == [] and leaks.count(db.database.token) == before


@pytest.mark.parametrize("backend", ["sqlite_file", "postgres"])
def test_a_transaction_left_open_at_exit_is_warned_about_and_rolled_back(backend, tmp_path):
    from conftest import url_for

    url = url_for(backend, tmp_path)
    script = textwrap.dedent(
        f"""
        from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
        db = DataFlow({url!r})

        @db.model
        class Item:
            name: str

        db.create_tables()
        block = db.transaction()
        block.__enter__()  # and never left
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("ItemCreateNode", "c", {{"name": "lost"}})
        LocalRuntime().execute(wf.build())
        print("exiting")
        """
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-W", "default::ResourceWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "exiting" in done.stdout
    assert "still open at exit" in done.stderr and "rolling it back" in done.stderr, done.stderr
    assert "LeakWarning" in done.stderr  # and without -W, the dataflow_lab.leaks log line still shows
    db = DataFlow(url)
    define(db)
    try:
        assert count(db) == 0  # the row was never committed
        record(
            f"leak: transaction open at exit ({backend})",
            fault="the process exits inside an open db.transaction() block",
            injected="a subprocess enters the block, writes a row, exits",
            times=1,
            outcome="warned at exit (LeakWarning and log line) and rolled back: the row is absent",
        )
    finally:
        db.close()
