"""Fixtures: a fresh real database per test, on SQLite, DuckDB, PostgreSQL and MariaDB/MySQL.

PostgreSQL tests use the server named by DATAFLOW_TEST_POSTGRES_URL (``.ci/run``
starts one). Without it they are skipped, unless DATAFLOW_REQUIRE_POSTGRES=1,
in which case they fail: CI must never silently skip them. MySQL tests likewise use
DATAFLOW_TEST_MYSQL_URL (``.ci/mysql.sh``; any MySQL 8 or MariaDB server), required by
DATAFLOW_REQUIRE_MYSQL=1: each test process gets a database of its own, emptied per test.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import settings

from dataflow_lab import DataFlow
from dataflow_lab.nodes import registry

pytest_plugins = ["exclusive"]  # tests/exclusive.py: server-wide tests run alone under `pytest -n`

# CI (.ci/run) runs the property tests on Hypothesis's fixed examples, so a run on a fresh machine
# is repeatable; local runs explore new random examples (DATAFLOW_FUZZ_EXAMPLES for many more).
if os.environ.get("DATAFLOW_HYPOTHESIS_DERANDOMIZE"):
    settings.register_profile("ci", derandomize=True)
    settings.load_profile("ci")

# Kernels that tests start (nbval's for notebooks/, the magics' and browser tests') import
# dataflow_lab from this checkout, not from wherever `pip install -e` last pointed.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))

PG_URL = os.environ.get("DATAFLOW_TEST_POSTGRES_URL")
PG_URL2 = os.environ.get("DATAFLOW_TEST_POSTGRES_URL2")
REQUIRE_PG = os.environ.get("DATAFLOW_REQUIRE_POSTGRES") == "1"
MYSQL_URL = os.environ.get("DATAFLOW_TEST_MYSQL_URL")
MYSQL_URL2 = os.environ.get("DATAFLOW_TEST_MYSQL_URL2")
REQUIRE_MYSQL = os.environ.get("DATAFLOW_REQUIRE_MYSQL") == "1"
BACKENDS = ("sqlite", "duckdb", "postgres", "mysql")


SCHEMA = f"test_{os.getpid()}"  # one schema per test process, so parallel runs never collide


def reset_postgres(url: str, schema: str = SCHEMA) -> None:
    """Drop and recreate this process's schema, so each test starts empty."""
    import asyncpg

    async def reset() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; CREATE SCHEMA "{schema}";')
        finally:
            await conn.close()

    asyncio.run(reset())


def postgres_url(which: str | None = None) -> str:
    """A PostgreSQL URL whose tables live in an empty schema of this test process."""
    url = which or PG_URL
    if not url:
        if REQUIRE_PG:
            pytest.fail("DATAFLOW_REQUIRE_POSTGRES=1 but DATAFLOW_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL: set DATAFLOW_TEST_POSTGRES_URL (bash .ci/run does)")
    reset_postgres(url)
    return with_schema(url)


def with_schema(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={SCHEMA}"


def reset_mysql(url: str, database: str) -> None:
    """Drop and recreate ``database`` on the MySQL server of ``url``, so each test starts empty."""
    import asyncmy
    import sqlalchemy as sa

    parts = sa.engine.make_url(url)

    async def reset() -> None:
        conn = await asyncmy.connect(
            host=parts.host, port=parts.port or 3306, user=parts.username, password=parts.password or ""
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
                await cursor.execute("SELECT VERSION()")
                mariadb = "MariaDB" in (await cursor.fetchone())[0]
                collation = "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin"  # MySQL 8's NO PAD one
                await cursor.execute(
                    f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE {collation}"
                )
        finally:
            conn.close()

    asyncio.run(reset())


def mysql_url(which: str | None = None, suffix: str = "") -> str:
    """A MySQL URL of a database of this test process's own, empty."""
    url = which or MYSQL_URL
    if not url:
        if REQUIRE_MYSQL:
            pytest.fail("DATAFLOW_REQUIRE_MYSQL=1 but DATAFLOW_TEST_MYSQL_URL is not set")
        pytest.skip("no MySQL: set DATAFLOW_TEST_MYSQL_URL (bash .ci/run does; .ci/mysql.sh starts one)")
    import sqlalchemy as sa

    database = f"{SCHEMA}{suffix}"
    reset_mysql(url, database)
    return sa.engine.make_url(url).set(database=database).render_as_string(hide_password=False)


def url_for(backend: str, tmp_path) -> str | None:
    if backend == "sqlite":
        return None  # the zero-config default: in-memory SQLite
    if backend == "sqlite_file":
        return f"sqlite:///{tmp_path / 'test.db'}"
    if backend == "duckdb":
        return "duckdb:///:memory:"
    if backend == "duckdb_file":
        return f"duckdb:///{tmp_path / 'test.duckdb'}"
    if backend == "postgres":
        return postgres_url()
    if backend == "mysql":
        return mysql_url()
    raise ValueError(backend)


def spy_on_opens(monkeypatch, dataflow: DataFlow) -> list[str]:
    """Record each time ``dataflow`` is asked for its database: every connection goes through it."""
    opens: list[str] = []
    real = dataflow.database.open

    async def opened():
        opens.append("opened")
        return await real()

    monkeypatch.setattr(dataflow.database, "open", opened)
    return opens


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def url(backend, tmp_path) -> str | None:
    return url_for(backend, tmp_path)


@pytest.fixture
def db(url):
    """A fresh DataFlow on each backend."""
    dataflow = DataFlow(url)
    yield dataflow
    dataflow.close()


@pytest.fixture
def pg_url() -> str:
    return postgres_url()


@pytest.fixture
def pg_url2() -> str:
    """A second PostgreSQL database (for two-phase commit and cross-database tests)."""
    if not PG_URL2:
        if REQUIRE_PG:
            pytest.fail("DATAFLOW_REQUIRE_POSTGRES=1 but DATAFLOW_TEST_POSTGRES_URL2 is not set")
        pytest.skip("no second PostgreSQL database: set DATAFLOW_TEST_POSTGRES_URL2 (bash .ci/run does)")
    return postgres_url(PG_URL2)


@pytest.fixture
def my_url() -> str:
    return mysql_url()


@pytest.fixture
def my_url2() -> str:
    """A second MySQL database (two-phase commit across databases)."""
    return mysql_url(MYSQL_URL2 or MYSQL_URL, suffix="_2")


@pytest.fixture(autouse=True)
def _reset_registries(monkeypatch):
    """Each test starts with no live DataFlow and a development environment."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATAFLOW_ENV", raising=False)
    yield
    for dataflow in registry.live_dataflows():
        dataflow.close()
