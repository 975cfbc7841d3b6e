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
