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
    from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder

    url, barrier, me, mode = sys.argv[1:5]
    barrier = pathlib.Path(barrier)
    db = DataFlow(url)

    if mode == "apply":
        @db.model
        class User:  # v2: email dropped, score narrowed to int, age added
            name: str
            score: int
            age: int = 30
    else:
        @db.model
        class User:  # v1 and an added field: an additive change, migrated at first use
            name: str
            email: str
            score: float
            age: int = 30
            __dataflow__ = {"indexes": ["email"]}

    db.migrations.history()  # connect before the barrier, so both start applying together
    (barrier / me).touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < 2:  # wait for the other process (bounded: never hang)
        if time.monotonic() > deadline:
            sys.exit("the other applier never arrived")
        time.sleep(0.005)
    if mode == "apply":
        applied = [m.name for m in db.migrations.apply(confirm_destructive=True)]
    else:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("UserCountNode", "n", {})
        applied = [LocalRuntime().execute(wf.build())[0]["n"]["count"]]
    print(json.dumps(applied))
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


def start_appliers(url: str, tmp_path, mode: str) -> list:
    script, barrier = tmp_path / "applier.py", tmp_path / "barrier"
    script.write_text(APPLIER)
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(barrier), name, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outcomes = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outcomes, strict=True):
        assert p.returncode == 0, err  # neither applier failed (no lock error, no duplicate DDL)
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outcomes]


def url_of(kind: str, tmp_path, request) -> str:
    if kind == "sqlite_file":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return request.getfixturevalue("pg_url" if kind == "postgres" else "my_url")


@pytest.mark.parametrize("kind", ["sqlite_file", "postgres", "mysql"])
def test_two_os_processes_applying_at_once_apply_exactly_once(kind, tmp_path, request):
    url = url_of(kind, tmp_path, request)
    seed_v1(url)
    applied = start_appliers(url, tmp_path, "apply")
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


@pytest.mark.mysql_subset  # MySQL: its lock is the one test_two_os_processes_applying_at_once takes
@pytest.mark.parametrize("kind", ["sqlite_file", "postgres"])
def test_two_os_processes_migrating_at_first_use_migrate_once(kind, tmp_path, request):
    url = url_of(kind, tmp_path, request)
    seed_v1(url)
    counts = start_appliers(url, tmp_path, "first_use")
    assert counts == [[2], [2]]  # both ran their node on the migrated table

    db = DataFlow(url)
    history = db.migrations.history()
    assert [m.name for m in history] == ["0001_create_users", "0002_users_add_age"]
    assert history[1].source == "auto"
    db.close()
