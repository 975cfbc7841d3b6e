"""What a new user meets first: the demo, missing drivers, connection errors (each in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import url_for

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full, timeout=120)


@pytest.mark.parametrize("backend", ["sqlite_file", "duckdb_file", "postgres"])
def test_the_demo_never_writes_to_database_url(backend, tmp_path):
    url = url_for(backend, tmp_path)
    done = run_python(["-m", "dataflow_lab", "demo"], {"DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    assert "sqlite" in done.stdout.splitlines()[0]
    db = DataFlow(url)

    @db.model
    class User:  # the demo's model: the table must not exist yet, so it has no rows
        name: str

    wf = WorkflowBuilder()
    wf.add_node("UserCountNode", "n", {})
    assert LocalRuntime().execute(wf.build())[0]["n"]["count"] == 0
    db.close()


def test_the_demo_uses_an_explicit_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    done = run_python(["-m", "dataflow_lab", "demo", "--url", url])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "demo.db").stat().st_size > 0


COUNT_USERS = """
import sys
from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
db = DataFlow(sys.argv[1])
@db.model
class User:
    name: str
wf = WorkflowBuilder()
wf.add_node("UserCountNode", "n", {})
LocalRuntime().execute(wf.build())
"""


@pytest.mark.parametrize(
    "module, url, extra",
    [
        ("asyncpg", "postgresql://app:s3cret@db.example/app", "postgres"),
        ("duckdb", "duckdb:///:memory:", "duckdb"),
        ("asyncmy", "mysql://app:s3cret@db.example/app", "mysql"),
    ],
)
def test_a_missing_driver_says_what_to_install_at_dataflow(module, url, extra):
    script = (
        f"import sys; sys.modules[{module!r}] = None\nfrom dataflow_lab import DataFlow\nDataFlow({url!r})"
    )
    done = run_python(["-c", script])
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert (
        f"pip install 'dataflow-lab[{extra}]'" in last and "in __init__" in done.stderr
    )  # raised by DataFlow(...)
    assert "s3cret" not in done.stderr


def _pg_parts() -> tuple[str, int, str]:
    from conftest import PG_URL
    from sqlalchemy.engine import make_url

    if not PG_URL:
        pytest.skip("no PostgreSQL")
    parts = make_url(PG_URL)
    return parts.host, parts.port or 5432, parts.database


@pytest.mark.parametrize("wrong", ["host", "port", "database"])
def test_a_connection_error_is_one_line_naming_what_is_wrong(wrong):
    host, port, database = _pg_parts()
    if wrong == "host":
        host = "no-such-host.invalid"
    elif wrong == "port":
        port = 1
    else:
        database = "no_such_database"
    url = f"postgresql://postgres:s3cretpw@{host}:{port}/{database}"
    done = run_python(["-c", COUNT_USERS, url])
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("dataflow_lab.errors.ConnectionError: ")
    assert f"{host}:{port}" in last and f"'{database}'" in last
    said = {"host": f"the host '{host}' is unknown", "port": f"port {port}", "database": "does not exist"}
    assert said[wrong] in last
    assert "s3cretpw" not in done.stderr and "sqlalche.me" not in done.stderr
    assert done.stderr.count('File "') <= 4  # the script, execute and the re-raise: no driver internals


def test_the_readme_names_resolve_after_a_plain_import():
    script = (
        "import dataflow_lab\nfrom dataflow_lab import RetryPolicy\n"
        "assert callable(dataflow_lab.saga.compensate_with)\nprint(RetryPolicy(attempts=4).attempts)"
    )
    done = run_python(["-c", script])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"
