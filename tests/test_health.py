"""Health that probes (health.py): db.health(), the background probe task, pool_status and the dashboard."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid

import pytest
from test_faults import record

from dataflow_lab import AsyncLocalRuntime, DataFlow, LocalRuntime, WorkflowBuilder, _loop
from dataflow_lab.errors import DataFlowError, ValidationError
from dataflow_lab.health import HealthReport

# runs alone under pytest -n: it kills backends and stops servers, and times probes
pytestmark = pytest.mark.exclusive


def define(db: DataFlow) -> None:
    @db.model
    class Item:
        name: str
        qty: int = 0


def count(db: DataFlow) -> int:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCountNode", "n", {})
    return LocalRuntime().execute(wf.build())[0]["n"]["count"]


def test_health_probes_now_on_every_backend(url):
    db = DataFlow(url, health_check_interval=None)
    try:
        assert db.pool_status()["health_status"] == "unknown"  # nothing probed yet
        report = db.health()
        assert isinstance(report, HealthReport)
        assert report.status == "ok" and report.error is None
        assert report.latency_ms is not None and report.latency_ms >= 0
        assert report.pinged >= 1 and report.discarded == 0
        assert db.pool_status()["health_status"] == "ok"
        assert "HealthReport(ok" in repr(report) and "health: ok" in report._repr_html_()
        with pytest.raises(AttributeError):
            report.status = "down"  # frozen
    finally:
        db.close()


def test_the_background_task_probes_on_its_own(url):
    db = DataFlow(url, health_check_interval=0.05)
    try:
        define(db)
        assert count(db) == 0
        deadline = time.monotonic() + 20
        while db.database.health.last is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert db.database.health.last is not None and db.database.health.last.status == "ok"
    finally:
        db.close()
    assert db.database.health._task is None  # close() stops the task


def test_no_background_task_when_the_interval_is_none(url):
    db = DataFlow(url, health_check_interval=None)
    try:
        define(db)
        count(db)
        assert db.database.health._task is None and db.database.health.last is None
    finally:
        db.close()


@pytest.mark.parametrize("bad", [0, -1, "60", True])
def test_a_bad_interval_is_refused(bad):
    with pytest.raises(ValidationError, match="health_check_interval"):
        DataFlow(health_check_interval=bad)


def _backend_pids(db: DataFlow, n: int) -> list[int]:
    """Open n pooled connections at once (so n stay idle in the pool) and return their server pids."""

    async def grab() -> list[int]:
        dialect = await db.database.open()
        conns = [await dialect.acquire() for _ in range(n)]
        try:
            return [(await c.fetch("SELECT pg_backend_pid()"))[0][0] for c in conns]
        finally:
            for c in conns:
                await dialect.release(c)

    return _loop.run(grab())


def _terminate(url: str, pids: list[int]) -> None:
    import asyncpg

    async def kill() -> None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://").split("?")[0])
        try:
            for pid in pids:
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()

    asyncio.run(kill())


def test_the_health_task_discards_a_connection_the_server_killed(pg_url):
    db = DataFlow(pg_url, health_check_interval=0.1)
    try:
        define(db)
        assert count(db) == 0
        pids = _backend_pids(db, 2)
        # the health task (every 0.1 s) checks idle connections out to ping them: wait for it
        deadline = time.monotonic() + 10
        while db.pool_status()["checkedin"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert db.pool_status()["checkedin"] >= 2
        _terminate(pg_url, pids[:1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            last = db.database.health.last
            if last is not None and last.discarded:
                break
            time.sleep(0.05)
        assert last is not None and last.discarded == 1, last
        assert last.status == "degraded" and "dead connection" in (last.error or "")
        assert db.pool_status()["invalidated"] >= 1
        assert db.database.health.last_error is not None
        # the killed connection is gone from the pool: every remaining one answers
        assert sorted(set(_backend_pids(db, 2)) & set(pids[:1])) == []
        assert count(db) == 0
    finally:
        db.close()
    record(
        "health: one backend killed",
        fault="one idle pooled connection killed on the server",
        injected="pg_terminate_backend(pid) of one of two idle pooled connections",
        times=1,
        outcome="discarded by the next background probe (degraded, 'discarded 1 dead connection'); "
        "the other kept; the next run succeeds",
    )


def test_the_dashboard_reads_the_probe(pg_url):
    db = DataFlow(pg_url, monitoring=True, health_check_interval=None)
    try:
        define(db)
        count(db)
        pids = _backend_pids(db, 1)
        _terminate(pg_url, pids)
        assert db.health().status == "degraded"
        pool = db.monitor.dashboard()["connection_pool"]
        assert pool["health_status"] == "degraded" and pool["probe_status"] == "degraded"
        assert db.health().status == "ok"  # the dead one was discarded; the next probe is clean
        assert db.monitor.dashboard()["connection_pool"]["health_status"] == "excellent"
    finally:
        db.close()


def test_health_is_down_when_the_server_cannot_be_reached():
    db = DataFlow("postgresql://postgres@127.0.0.1:1/nowhere", health_check_interval=None, pool_timeout=2)
    try:
        report = db.health()
        assert report.status == "down" and report.latency_ms is None and report.error
        assert db.pool_status()["health_status"] == "down"
    finally:
        db.close()


# --------------------------------------------------------------------------- a server of our own
# These tests stop and start a throwaway PostgreSQL they start themselves (.ci/pg.sh), never the
# suite's server; each uses a database of its own on it, so its backends are the test's own.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pg_sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", os.path.join(ROOT, ".ci", "pg.sh"), *args],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def own_server():
    pytest.importorskip("asyncpg")
    try:
        out = _pg_sh("start", env={**os.environ, "DATAFLOW_PG_PORT_BASE": "55160"})
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot start a throwaway PostgreSQL: {exc}")
    cluster = {}
    for line in out.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        cluster[key] = value.strip("'\"")
    yield cluster
    _pg_sh("stop", cluster["DATAFLOW_TEST_PG_DATA"])


def pg_ctl(cluster: dict[str, str], *args: str) -> None:
    command = [cluster["DATAFLOW_TEST_PG_CTL"], "-D", cluster["DATAFLOW_TEST_PG_DATA"]]
    command += ["-l", cluster["DATAFLOW_TEST_PG_LOG"], "-w", *args]
    user = cluster.get("DATAFLOW_TEST_PG_USER")
    if os.geteuid() == 0 and user and user != "root":
        command = ["su", user, "-s", "/bin/sh", "-c", " ".join(command)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def admin(cluster: dict[str, str], sql: str, *args: object) -> list:
    import asyncpg

    async def go() -> list:
        port = int(cluster["DATAFLOW_TEST_PG_PORT"])
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture
def own_pg(own_server):
    """A fresh database on the throwaway server: (url, database name)."""
    name = f"health_{uuid.uuid4().hex[:8]}"
    admin(own_server, f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:{own_server['DATAFLOW_TEST_PG_PORT']}/{name}", name


def backends(cluster: dict[str, str], database: str) -> int:
    rows = admin(cluster, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database)
    return rows[0][0]


def test_a_stopped_server_gives_down_and_its_restart_ok_again(own_server, own_pg):
    url, _ = own_pg
    db = DataFlow(url, monitoring=True, health_check_interval=None, pool_timeout=3)
    try:
        define(db)
        assert count(db) == 0 and db.health().status == "ok"
        pg_ctl(own_server, "stop", "-m", "fast")
        try:
            report = db.health()
            assert report.status == "down" and report.latency_ms is None and report.error
            assert db.pool_status()["health_status"] == "down"
            assert db.monitor.dashboard()["connection_pool"]["health_status"] == "critical"
            assert db.database.health.last_error == report.error
        finally:
            pg_ctl(own_server, "start")
        # the pooled connections died with the server: discarded now, then all is well
        assert db.health().status in ("ok", "degraded")
        ok = db.health()
        assert ok.status == "ok" and ok.error is None and count(db) == 0
        assert ok.last_error is not None  # the last error seen is kept (the outage's, or a discard's)
        assert ok.last_error == db.database.health.last_error
    finally:
        db.close()
    record(
        "health: server stopped",
        fault="PostgreSQL stopped under a pooled DataFlow",
        injected="pg_ctl stop -m fast on a throwaway server, probe, pg_ctl start",
        times=1,
        outcome="db.health() down (no latency, error kept), dashboard critical; after the restart "
        "the dead pooled connections are discarded, the next probe is ok and runs succeed",
    )


def test_min_connections_are_opened_in_the_background_at_first_use(own_server, own_pg):
    url, name = own_pg
    db = DataFlow(url, min_connections=4, pool_size=6, health_check_interval=None)
    try:
        define(db)
        assert backends(own_server, name) == 0  # nothing is opened before the first use
        assert count(db) == 0
        deadline = time.monotonic() + 20
        while backends(own_server, name) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backends(own_server, name) >= 4  # really opened, on the server
        assert db.pool_status()["checkedin"] >= 4  # and idle in the pool, ready for the next runs
    finally:
        db.close()
    assert backends(own_server, name) == 0  # close() closes them


def test_concurrent_runs_after_the_first_use_open_no_connection_of_their_own(own_server, own_pg):
    url, name = own_pg
    db = DataFlow(url, min_connections=3, pool_size=5, health_check_interval=None)
    try:
        define(db)
        assert count(db) == 0
        deadline = time.monotonic() + 20
        while db.pool_status()["checkedin"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        opened = backends(own_server, name)
        assert opened >= 3
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("ItemCreateNode", "c", {"name": "x"})
        workflow, runtime = wf.build(), AsyncLocalRuntime()

        async def three() -> list:
            return await asyncio.gather(*(runtime.execute_async(workflow) for _ in range(3)))

        assert len(asyncio.run(three())) == 3 and count(db) == 3
        assert backends(own_server, name) == opened  # the warm ones served them: no connect paid
    finally:
        db.close()


def test_the_health_task_replaces_the_connections_it_discards(own_server, own_pg):
    url, name = own_pg
    db = DataFlow(url, min_connections=3, pool_size=5, health_check_interval=0.1)
    try:
        define(db)
        count(db)
        deadline = time.monotonic() + 20
        while db.pool_status()["checkedin"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = admin(
            own_server,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            name,
        )
        assert killed and all(row[0] for row in killed)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if db.pool_status()["invalidated"] and backends(own_server, name) >= 3:
                break
            time.sleep(0.05)
        assert db.pool_status()["invalidated"] >= 1  # a probe discarded the dead ones...
        assert "dead connection" in (db.database.health.last_error or "")
        assert backends(own_server, name) >= 3  # ...and the pool was topped up again after it
        assert count(db) == 0
    finally:
        db.close()
    record(
        "health: every backend killed",
        fault="every pooled connection killed on the server",
        injected="pg_terminate_backend() of all the database's backends (throwaway server)",
        times=len(killed),
        outcome="the next background probe discards the dead ones (degraded), min_connections are "
        "opened again, the next run succeeds",
    )


def test_min_connections_is_capped_by_the_pool_size_and_checked():
    assert DataFlow(min_connections=50, pool_size=4).config.min_connections == 4
    assert DataFlow(min_connections=0).config.min_connections == 0
    with pytest.raises(ValidationError, match="min_connections"):
        DataFlow(min_connections=-1)
    with pytest.raises(ValidationError, match="min_connections"):
        DataFlow(min_connections=2.5)


@pytest.mark.parametrize(("env", "expected"), [("development", 1), ("testing", 5), ("production", 25)])
def test_min_connections_presets(monkeypatch, env, expected):
    monkeypatch.setenv("DATAFLOW_ENV", env)
    assert DataFlow().config.min_connections == expected


def test_min_connections_warm_a_sqlite_file_pool_too(tmp_path):
    db = DataFlow(f"sqlite:///{tmp_path / 'warm.db'}", min_connections=3, health_check_interval=None)
    try:
        define(db)
        count(db)
        deadline = time.monotonic() + 20
        while db.pool_status()["checkedin"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert db.pool_status()["checkedin"] >= 3
    finally:
        db.close()


# --------------------------------------------------------------------------- DuckDB has no pool


@pytest.mark.parametrize(
    "option", [{"pool_size": 10}, {"max_overflow": 5}, {"pool_recycle": 60}, {"pool_pre_ping": True}]
)
def test_duckdb_refuses_pool_options_it_cannot_honour_and_says_why(option):
    with pytest.raises(ValidationError, match="one connection") as info:
        DataFlow("duckdb:///:memory:", **option)
    name = next(iter(option))
    assert name in str(info.value) and "DuckDB" in str(info.value) and "PostgreSQL" in str(info.value)


def test_duckdb_accepts_what_it_does_and_the_presets(monkeypatch):
    DataFlow("duckdb:///:memory:", pool_size=1, max_overflow=0, pool_pre_ping=False).close()
    monkeypatch.setenv("DATAFLOW_ENV", "production")  # pool_size=100 by preset: not the user's ask
    DataFlow("duckdb:///:memory:").close()


def test_duckdb_waits_for_its_connection_at_most_pool_timeout():
    db = DataFlow("duckdb:///:memory:", pool_timeout=0.2, health_check_interval=None)

    async def two() -> None:
        first = await db.database.acquire()
        try:
            with pytest.raises(DataFlowError, match="pool_timeout=0.2") as info:
                await db.database.acquire()
            assert "another run or transaction" in str(info.value)
        finally:
            await db.database.release(first)
        await db.database.release(await db.database.acquire())  # free again

    try:
        _loop.run(two())
        assert db.pool_status()["failures"] == 1 and db.pool_status()["checked_out"] == 0
    finally:
        db.close()
