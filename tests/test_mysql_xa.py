"""Two-phase commit with MySQL/MariaDB's XA, on a real MariaDB (and a real PostgreSQL beside it).

XA START/END/PREPARE/COMMIT across databases; a failure before PREPARE rolls back every side;
a crash between PREPARE and COMMIT leaves XA branches that ``XA RECOVER`` lists, resolved from
the decision log (committed if it says commit, rolled back otherwise).
"""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from test_faults import record

from dataflow_lab import DataFlow, LocalRuntime, NotFoundError, TransactionError, WorkflowBuilder, _loop
from dataflow_lab._decisions import key_of
from dataflow_lab.modes import Auto, TwoPhase

# runs alone under pytest -n: XA RECOVER lists the whole server's branches, and it forces recovery
pytestmark = pytest.mark.exclusive

asyncmy = pytest.importorskip("asyncmy")


def with_notes(url: str, **options) -> DataFlow:
    db = DataFlow(url, **options)

    @db.model
    class Note:
        text: str

    return db


def notes(*dbs: DataFlow) -> list[int]:
    wf = WorkflowBuilder()
    for n, db in enumerate(dbs):
        wf.add_node(db.nodes["NoteCountNode"], f"c{n}", {})
    results = LocalRuntime().execute(wf.build())[0]
    return [results[f"c{n}"]["count"] for n in range(len(dbs))]


def both(first: DataFlow, second: DataFlow, *, fail: bool = False):
    wf = WorkflowBuilder()
    wf.add_node(first.nodes["NoteCreateNode"], "a", {"text": "x"})
    wf.add_node(second.nodes["NoteCreateNode"], "b", {"text": "y"})
    if fail:
        wf.add_node(first.nodes["NoteReadNode"], "fails", {"id": 999})
    return wf.build()


def xa_branches(db: DataFlow) -> list[str]:
    """What the server's XA RECOVER lists for ``db``'s database ('gtrid:bqual'), asked on a connection
    of our own."""

    async def key() -> str:
        dialect = await db.database.open()
        conn = await dialect.acquire()
        try:
            return await key_of(db, conn)
        finally:
            await dialect.release(conn)

    mine = _loop.run(key())
    url = sa.engine.make_url(db.url)

    async def recover() -> list[str]:
        conn = await asyncmy.connect(host=url.host, port=url.port or 3306, user=url.username,
                                     password=url.password or "")  # fmt: skip
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("XA RECOVER")
                rows = await cursor.fetchall()
        finally:
            conn.close()
        xids = [(data[:g].decode(), data[g : g + b].decode()) for _f, g, b, data in rows]
        return [f"{gtrid}:{bqual}" for gtrid, bqual in xids if bqual.endswith("@" + mine)]

    return asyncio.run(recover())


class Events:
    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def transaction(self, *, event, dataflow, **future):
        self.seen.append((event, dataflow.database.dialect.name))


@pytest.fixture
def two_mariadb(my_url, my_url2):
    return with_notes(my_url), with_notes(my_url2)


@pytest.fixture
def mariadb_and_postgres(my_url, pg_url):
    return with_notes(my_url), with_notes(pg_url)


def test_auto_resolves_to_two_phase_across_mariadb_databases_and_postgresql(mariadb_and_postgres, my_url2):
    mine, pg = mariadb_and_postgres
    other = with_notes(my_url2)
    for first, second in ((mine, pg), (mine, other)):
        assert isinstance(_loop.run(Auto().resolve(both(first, second))), TwoPhase)


@pytest.mark.parametrize("pair", ["two_mariadb", "mariadb_and_postgres"])
def test_a_run_across_databases_commits_every_side_with_xa_and_leaves_no_branch(pair, request):
    first, second = request.getfixturevalue(pair)
    events = Events()
    LocalRuntime(hooks=[events]).execute(both(first, second))  # transaction="auto"
    assert notes(first, second) == [1, 1]
    assert [e for e, _ in events.seen].count("prepare") == 2
    assert [e for e, _ in events.seen].count("commit") == 2
    assert xa_branches(first) == []


def test_a_failure_before_prepare_rolls_back_mariadb_and_postgresql(mariadb_and_postgres):
    mine, pg = mariadb_and_postgres
    events = Events()
    with pytest.raises(NotFoundError):
        LocalRuntime(transaction="2pc", hooks=[events]).execute(both(mine, pg, fail=True))
    assert notes(mine, pg) == [0, 0]
    assert ("prepare", "mysql") not in events.seen
    assert xa_branches(mine) == []


def test_a_two_phase_run_that_writes_one_mariadb_commits_it_in_one_phase(two_mariadb):
    first, second = two_mariadb
    wf = WorkflowBuilder()
    wf.add_node(first.nodes["NoteCreateNode"], "a", {"text": "x"})
    wf.add_node(second.nodes["NoteCountNode"], "b", {})
    events = Events()
    LocalRuntime(transaction="2pc", hooks=[events]).execute(wf.build())
    assert notes(first, second) == [1, 0]
    assert [e for e, _ in events.seen] == ["begin", "commit"]  # XA COMMIT ... ONE PHASE
    assert xa_branches(first) == []


def crash_after_prepare(monkeypatch, first: DataFlow, second: DataFlow, *, decided: bool) -> None:
    """The commit 'dies' after both PREPAREs: with its commit decision recorded, or before it."""
    from dataflow_lab import transactions, two_phase

    if decided:
        real = transactions.Scope.commit

        async def commit(self, *, two_phase=False):
            self._crash_after_decision = True
            return await real(self, two_phase=two_phase)

        monkeypatch.setattr(transactions.Scope, "commit", commit)
    else:

        async def no_decision(*args):
            raise two_phase._SimulatedCrash("simulated crash after PREPARE, before the decision")

        async def dead(scope, begun, gids, gid, exc, committed):  # the process died: nothing resolves
            raise exc

        monkeypatch.setattr(two_phase, "_record_decision", no_decision)
        monkeypatch.setattr(two_phase, "_resolve_after_prepare", dead)
    with pytest.raises(TransactionError, match="simulated crash"):
        LocalRuntime(transaction="2pc").execute(both(first, second))
    monkeypatch.undo()


def test_xa_branches_in_doubt_with_a_commit_decision_are_committed_by_recovery(
    mariadb_and_postgres, monkeypatch
):
    mine, pg = mariadb_and_postgres
    crash_after_prepare(monkeypatch, mine, pg, decided=True)
    assert len(xa_branches(mine)) == 1  # the MariaDB branch is prepared, listed by XA RECOVER
    assert notes(mine, pg) == [0, 0]
    outcome = mine.recover_in_doubt(pg, force=True)
    assert sorted(outcome.values()) == ["committed", "committed"]
    assert xa_branches(mine) == []
    assert notes(mine, pg) == [1, 1]
    record(
        "xa: crash after the commit decision",
        fault="MariaDB + PostgreSQL, 2PC: the process 'dies' after both PREPAREs and the commit decision",
        injected="fault injection in two_phase.py; the prepared XA session closed, as at a process exit",
        times=1,
        outcome="XA RECOVER lists the branch; recover_in_doubt() commits it and the PostgreSQL half",
    )


def test_xa_branches_in_doubt_without_a_decision_are_rolled_back_at_start_up(two_mariadb, monkeypatch):
    first, second = two_mariadb
    crash_after_prepare(monkeypatch, first, second, decided=False)
    assert len(xa_branches(first)) == 1 and len(xa_branches(second)) == 1
    urls = first.url, second.url
    first.close()
    second.close()
    # a new process starts: its first workflow resolves what the crash left behind
    restarted = [with_notes(url, in_doubt_grace=0) for url in urls]
    assert notes(*restarted) == [0, 0]
    assert xa_branches(restarted[0]) == [] and xa_branches(restarted[1]) == []
    record(
        "xa: crash before the commit decision",
        fault="2 MariaDB databases, 2PC: the process 'dies' after both XA PREPAREs, before the decision",
        injected="fault injection in two_phase.py; both DataFlows closed, new ones opened",
        times=1,
        outcome="the new process's first run rolls both branches back (presumed abort); none left",
    )


def test_recovery_leaves_a_young_xa_branch_alone_unless_forced(two_mariadb, monkeypatch):
    first, second = two_mariadb
    crash_after_prepare(monkeypatch, first, second, decided=True)
    assert first.recover_in_doubt(second) == {}  # younger than in_doubt_grace (60 s)
    assert len(xa_branches(first)) == 1
    assert sorted(first.recover_in_doubt(second, force=True).values()) == ["committed", "committed"]
    assert notes(first, second) == [1, 1]


def test_a_connection_lost_at_prepare_rolls_back_the_branch_already_prepared(two_mariadb, monkeypatch):
    from dataflow_lab.dialects.mysql_xa import MySQLTwoPhase
    from dataflow_lab.two_phase import InDoubtError

    first, second = two_mariadb
    real = MySQLTwoPhase.prepare
    calls = []

    async def lose_the_second(self, conn, gid):
        calls.append(gid)
        if len(calls) == 2:  # the server ends the second session just before its XA PREPARE
            await first.database.dialect._kill(conn.raw.thread_id())
        return await real(self, conn, gid)

    monkeypatch.setattr(MySQLTwoPhase, "prepare", lose_the_second)
    with pytest.raises(InDoubtError, match="PREPARE failed") as raised:
        LocalRuntime(transaction="2pc", retry=False).execute(both(first, second))
    monkeypatch.undo()
    assert set(raised.value.states.values()) == {"rolled back"}, (raised.value.states, raised.value.__cause__)
    assert "nothing was committed" in raised.value.hint
    assert notes(first, second) == [0, 0]
    assert xa_branches(first) == [] and xa_branches(second) == []
    record(
        "xa: connection lost at PREPARE",
        fault="2 MariaDB databases, 2PC: the 2nd session is killed just before its XA PREPARE",
        injected="KILL <thread id> from another connection",
        times=1,
        outcome="InDoubtError saying nothing was committed; the 1st branch, prepared, rolled back on its "
        "own session; no branch left",
    )


def test_a_failed_nested_run_inside_an_xa_branch_undoes_only_its_own_writes(two_mariadb):
    first, second = two_mariadb
    events = Events()

    async def nested(x: int) -> int:
        inner = WorkflowBuilder()
        inner.add_node(first.nodes["NoteCreateNode"], "c", {"text": "inner"})
        inner.add_node(first.nodes["NoteReadNode"], "fails", {"id": 999})
        with pytest.raises(NotFoundError):  # its savepoint, inside the XA branch, is rolled back
            await LocalRuntime(hooks=[events]).execute_async(inner.build())
        return x

    wf = WorkflowBuilder()
    wf.add_node(first.nodes["NoteCreateNode"], "a", {"text": "outer"})
    wf.add_node(nested, "nested", {})
    wf.add_connection("a", "id", "nested", "x")
    wf.add_node(second.nodes["NoteCreateNode"], "b", {"text": "y"})
    LocalRuntime(transaction="2pc", hooks=[events]).execute(wf.build())
    assert ("savepoint", "mysql") in events.seen and ("prepare", "mysql") in events.seen
    assert notes(first, second) == [1, 1]


def test_mariadb_lets_a_user_without_super_run_xa_recover_so_two_phase_commit_is_allowed(my_url, my_url2):
    url = sa.engine.make_url(my_url)
    user = f"xa_{url.database}"[:32]

    async def admin(*statements: str) -> None:
        conn = await asyncmy.connect(host=url.host, port=url.port or 3306, user=url.username,
                                     password=url.password or "")  # fmt: skip
        try:
            async with conn.cursor() as cursor:
                for statement in statements:
                    await cursor.execute(statement)
        finally:
            conn.close()

    asyncio.run(admin(f"DROP USER IF EXISTS '{user}'@'%'", f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'",
                      f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'"))  # fmt: skip
    try:
        plain = with_notes(url.set(username=user, password="pw").render_as_string(hide_password=False))
        other = with_notes(my_url2)
        assert _loop.run(plain.database.allows_two_phase())  # (MySQL 8 would need XA_RECOVER_ADMIN)
        LocalRuntime(transaction="2pc").execute(both(plain, other))
        assert notes(plain, other) == [1, 1]
        plain.close()
    finally:
        asyncio.run(admin(f"DROP USER IF EXISTS '{user}'@'%'"))


@pytest.mark.parametrize(
    ("server", "keeps"),
    [("5.5.5-10.11.19-MariaDB-0+deb12u1", True), ("11.4.2-MariaDB", True), ("5.5.5-10.4.30-MariaDB", False),
     ("8.0.36", True), ("5.7.44-log", True), ("5.7.6", False)],
)  # fmt: skip
def test_two_phase_commit_needs_a_server_that_keeps_a_prepared_branch_past_its_session(server, keeps):
    from dataflow_lab.dialects.mysql_xa import _keeps_prepared_branches

    assert _keeps_prepared_branches(server) is keeps  # older ones roll it back at disconnect


def test_two_phase_commit_is_refused_before_anything_commits_where_xa_recover_is_not_allowed(
    two_mariadb, monkeypatch
):
    first, second = two_mariadb

    async def refused(self, conn):  # as MySQL 8 answers a user without XA_RECOVER_ADMIN
        return False

    monkeypatch.setattr(type(second.database.dialect), "two_phase_enabled", refused)
    assert not isinstance(_loop.run(Auto().resolve(both(first, second))), TwoPhase)
    with pytest.raises(TransactionError, match="not enabled") as raised:
        LocalRuntime(transaction="2pc").execute(both(first, second))
    assert "XA_RECOVER_ADMIN" in raised.value.hint
    assert notes(first, second) == [0, 0]
    assert xa_branches(first) == []


def test_recovery_never_touches_an_xa_commit_whose_coordinating_process_holds_its_lock(
    two_mariadb, monkeypatch
):
    from dataflow_lab.dialects.mysql_xa import _lock_name

    first, second = two_mariadb
    crash_after_prepare(monkeypatch, first, second, decided=True)
    base = xa_branches(first)[0].rpartition(":")[0]
    url = sa.engine.make_url(first.url)

    async def alive_elsewhere() -> dict:  # another process, still committing: it holds GET_LOCK
        conn = await asyncmy.connect(host=url.host, port=url.port or 3306, user=url.username,
                                     password=url.password or "", autocommit=True)  # fmt: skip
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT GET_LOCK(%s, 5)", (_lock_name(base),))
            return await asyncio.to_thread(first.recover_in_doubt, second, force=True)
        finally:
            conn.close()

    assert asyncio.run(alive_elsewhere()) == {}
    assert len(xa_branches(first)) == 1 and notes(first, second) == [0, 0]
    assert sorted(first.recover_in_doubt(second, force=True).values()) == ["committed", "committed"]
