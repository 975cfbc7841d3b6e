"""Health that probes (health.py): db.health(), the background probe task, pool_status and the dashboard."""

from __future__ import annotations

import asyncio
import time

import pytest

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder, _loop
from dataflow_lab.errors import ValidationError
from dataflow_lab.health import HealthReport


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
