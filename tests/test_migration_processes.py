"""Two real OS processes applying the same pending migration at the same moment.

test_migrations.py covers two appliers on threads of one process; here each
applier is its own Python process (its own SQLite connection or PostgreSQL
session), started together and released at once through a file barrier.
Exactly one applies the migration; the other, planning inside the lock, finds
nothing to do. DuckDB is left out: a DuckDB file admits one writing process at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder

APPLIER = textwrap.dedent(
    """
    import json, pathlib, sys, time
    from dataflow_lab import DataFlow

    url, barrier, me = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    db = DataFlow(url)

    @db.model
    class User:  # v2: email dropped, score narrowed to int, age added
        name: str
        score: int
        age: int = 30

    db.migrations.history()  # connect before the barrier, so both start applying together
    (barrier / me).touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < 2:  # wait for the other process (bounded: never hang)
        if time.monotonic() > deadline:
            sys.exit("the other applier never arrived")
        time.sleep(0.005)
    applied = db.migrations.apply(confirm_destructive=True)
    print(json.dumps([m.name for m in applied]))
    db.close()
    """
)


def execute(db, build) -> dict:
    wf = WorkflowBuilder(dataflow=db)
    build(wf)
    return LocalRuntime().execute(wf.build())[0]


def seed_v1(url: str) -> None:
    db = DataFlow(url)

    @db.model
    class User:
        name: str
        email: str
        score: float
        __dataflow__ = {"indexes": ["email"]}

    data = [{"name": n, "email": f"{n}@x", "score": s} for n, s in (("Alice", 2.0), ("Bob", 7.0))]
    execute(db, lambda wf: wf.add_node("UserBulkCreateNode", "b", {"data": data}))
    db.close()


@pytest.mark.parametrize("kind", ["sqlite_file", "postgres"])
def test_two_os_processes_applying_at_once_apply_exactly_once(kind, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'app.db'}" if kind == "sqlite_file" else request.getfixturevalue("pg_url")
    seed_v1(url)
    script, barrier = tmp_path / "applier.py", tmp_path / "barrier"
    script.write_text(APPLIER)
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(barrier), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outcomes = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outcomes, strict=True):
        assert p.returncode == 0, err  # neither applier failed (no lock error, no duplicate DDL)
    applied = [json.loads(out.strip().splitlines()[-1]) for out, _ in outcomes]
    assert sorted(len(a) for a in applied) == [0, 1]  # one applied it; the other found nothing to do
    (name,) = applied[0] or applied[1]

    db = DataFlow(url)

    @db.model
    class User:
        name: str
        score: int
        age: int = 30

    history = [m.name for m in db.migrations.history()]
    assert history == ["0001_create_users", name]  # one row for the migration, not two
    records = execute(db, lambda wf: wf.add_node("UserListNode", "l", {"order_by": ["id"]}))["l"]["records"]
    assert [(r["name"], r["score"], r["age"]) for r in records] == [("Alice", 2, 30), ("Bob", 7, 30)]
    assert not db.migrations.plan()
    db.close()
