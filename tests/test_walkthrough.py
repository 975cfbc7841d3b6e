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
