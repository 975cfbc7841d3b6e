"""``python -m dataflow_lab demo``: the spec's walkthrough on in-memory SQLite, narrated.

``python -m dataflow_lab keygen [--id ID]``: a new encryption key, as DATAFLOW_ENCRYPTION_KEY takes it.
"""

from __future__ import annotations

import argparse
import sys

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
from dataflow_lab.encryption import ENV_KEY, keygen

IN_MEMORY = "sqlite:///:memory:"


def demo(database_url: str | None = None) -> int:
    """Run the walkthrough on ``database_url``; without one, always in-memory SQLite.

    ``DATABASE_URL`` is deliberately not read: the demo creates a ``users`` table and
    writes to it, which must never happen to a real database by accident.
    """

    # echo off: the walkthrough prints what each step made; the development preset's SQL on stderr
    # would bury it under the table checks and the migration history's statements
    db = DataFlow(database_url or IN_MEMORY, echo=False)
    print(f"1. db = DataFlow()          -> {db!r} ({db.dialect}, {db.config.environment})")

    @db.model
    class User:
        name: str
        email: str
        active: bool = True

    table = db.table(User)
    print(f"2. @db.model class User     -> table '{table.table.name}', {len(db.nodes)} generated nodes:")
    print("   " + ", ".join(db.nodes))

    workflow = WorkflowBuilder()
    workflow.add_node("UserCreateNode", "create_user", {"name": "Alice", "email": "alice@example.com"})
    workflow.add_node("UserReadNode", "read_user", {})
    workflow.add_connection("create_user", "id", "read_user", "id")
    workflow.add_node("UserListNode", "active_users", {"filter": {"active": True}})
    built = workflow.build()
    print(f"3. workflow.add_node(...)   -> {built!r}, run order {list(built.order)}")

    runtime = LocalRuntime()
    results, run_id = runtime.execute(built)
    print(f"4. runtime.execute(...)     -> run_id {run_id}")
    for node_id in built.order:
        print(f"   {node_id}: {_show(results[node_id])}")

    bulk = WorkflowBuilder()
    bulk.add_node(
        "UserBulkCreateNode",
        "load",
        {
            "data": [
                {"name": "Bob", "email": "bob@example.com"},
                {"name": "Carol", "email": "carol@example.com", "active": False},
            ]
        },
    )
    bulk.add_node("UserCountNode", "still_active", {"filter": {"active": True}})
    results, _ = runtime.execute(bulk.build())
    print(
        f"5. bulk create + count      -> {results['load']}, active users: {results['still_active']['count']}"
    )

    failing = WorkflowBuilder()
    failing.add_node("UserCreateNode", "dave", {"name": "Dave", "email": "dave@example.com"})
    failing.add_node("UserReadNode", "ghost", {"id": 999})
    try:
        runtime.execute(failing.build())
    except Exception as exc:  # the demo shows the error, then that nothing was kept
        print(f"6. a failing workflow       -> {type(exc).__name__}: {exc}")
    check = WorkflowBuilder()
    check.add_node("UserCountNode", "users", {})
    count = runtime.execute(check.build())[0]["users"]["count"]
    print(f"   rolled back as a whole   -> users in the table: {count} (Dave was not kept)")
    db.close()
    return 0


def _show(value: object) -> str:
    if isinstance(value, dict) and "records" in value:
        return f"{value['count']} record(s): " + ", ".join(r["name"] for r in value["records"])
    if isinstance(value, dict):
        shown = {
            k: (v.isoformat(timespec="seconds") if hasattr(v, "isoformat") else v) for k, v in value.items()
        }
        return str(shown)
    return repr(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflow_lab", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    run_demo = sub.add_parser("demo", help="run the spec's walkthrough and print what happened")
    run_demo.add_argument(
        "--url",
        default=None,
        help="database URL (default: in-memory SQLite; DATABASE_URL is ignored)",
    )
    make_key = sub.add_parser("keygen", help=f"print a new encryption key as {ENV_KEY}=id:key")
    make_key.add_argument("--id", default="k1", help="the key's id in the keyring (default: k1)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.url)
    if args.command == "keygen":
        print(f"{ENV_KEY}={keygen(args.id)}")
        print(f"# keep it secret; to rotate later, append a new id:key after a comma ({ENV_KEY}=old,new)",
              file=sys.stderr)  # fmt: skip
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
