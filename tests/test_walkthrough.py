"""The spec's walkthrough (steps 1-5), word for word but for the import line."""

from __future__ import annotations

import uuid

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder


def test_the_spec_walkthrough_creates_alice_and_returns_her_row_with_an_id(url):
    # 1. Zero configuration (or the backend under test)
    db = DataFlow(url)

    # 2. Define your model
    @db.model
    class User:
        name: str
        email: str
        active: bool = True

    # 3. Use in workflows
    workflow = WorkflowBuilder()
    workflow.add_node("UserCreateNode", "create_user", {"name": "Alice", "email": "alice@example.com"})

    # 4. Execute
    runtime = LocalRuntime()
    results, run_id = runtime.execute(workflow.build())

    created = results["create_user"]
    assert created["id"] == 1
    assert created["name"] == "Alice"
    assert created["active"] is True
    assert created["created_at"] == created["updated_at"]
    assert uuid.UUID(run_id)

    follow_up = WorkflowBuilder()
    follow_up.add_node("UserListNode", "users", {})
    follow_up.add_node("UserReadNode", "alice", {"id": created["id"]})
    results, _ = runtime.execute(follow_up.build())
    assert results["users"]["count"] == 1
    assert results["alice"] == created
    db.close()


def test_the_readme_opens_with_a_virtual_environment_and_ci_makes_its_own():
    """First contact: a stock Debian/Ubuntu python3 refuses `pip install` (PEP 668)."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block[0].startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e . && ")
    assert "python -m dataflow_lab demo" in first_block[0]
    assert first_block[1].startswith("bash .ci/run")
    ci = (root / ".ci" / "run").read_text(encoding="utf-8")
    assert 'python3 -m venv "$VENV"' in ci and 'source "$VENV/bin/activate"' in ci
    assert "DPkg::Lock::Timeout=600" in ci
