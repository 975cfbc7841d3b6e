"""Fault tests for multi-database commits: lost replies, closed connections, crashed coordinators.

Each test starts its OWN throwaway PostgreSQL (``.ci/pg.sh``; two clusters for the
cross-server test), never the shared one, and puts a loopback fault proxy between
dataflow_lab and a database. The proxy reads the client's protocol messages and, once
a chosen statement is seen, closes the connection before it reaches the server, swallows
the server's reply, closes right after the reply, or holds the statement back. Every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import uuid

import pytest
from test_faults import record

from dataflow_lab import DataFlow, LocalRuntime, TransactionError, WorkflowBuilder
from dataflow_lab.two_phase import InDoubtError, recover_in_doubt

# runs alone under pytest -n: its fault proxies and crash timings are load-sensitive
pytestmark = pytest.mark.exclusive

asyncpg = pytest.importorskip("asyncpg")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_names = itertools.count(1)


# --------------------------------------------------------------------------- throwaway servers


def _start_cluster(port_base: int) -> dict[str, str]:
    env = {**os.environ, "DATAFLOW_PG_PORT_BASE": str(port_base)}
    try:
        out = subprocess.run(
            ["bash", os.path.join(ROOT, ".ci", "pg.sh"), "start"],
            env=env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot start a throwaway PostgreSQL: {exc}")
    exports = {}
    for line in out.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        exports[key] = value.strip("'\"")
    return exports


def _stop_cluster(cluster: dict[str, str]) -> None:
    subprocess.run(
        ["bash", os.path.join(ROOT, ".ci", "pg.sh"), "stop", cluster["DATAFLOW_TEST_PG_DATA"]],
        capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server():
    cluster = _start_cluster(55431)
    yield int(cluster["DATAFLOW_TEST_PG_PORT"])
    _stop_cluster(cluster)


@pytest.fixture(scope="module")
def server2(server):
    cluster = _start_cluster(55481)
    yield int(cluster["DATAFLOW_TEST_PG_PORT"])
    _stop_cluster(cluster)


def admin(port: int, sql: str, *args, database: str = "postgres"):
    async def go():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database=database)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def fresh_database(port: int) -> str:
    name = f"faults_{next(_names)}_{uuid.uuid4().hex[:6]}"
    admin(port, f'CREATE DATABASE "{name}"')
    return name


# --------------------------------------------------------------------------- the fault proxy


class FaultProxy:
    """A loopback TCP proxy in front of PostgreSQL that can break one statement's round trip.

    ``arm(needle, action)``: the first simple Query, or the first Execute after a Parse, whose
    SQL contains ``needle`` triggers ``action``: "close" (never sent), "drop_reply" (sent, the
    reply lost, then closed), "close_after_reply" (sent and answered, then closed) or "hold"
    (sent only after ``release()``). ``down``: new connections are refused (closed at once).
    """

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.rule: tuple[bytes, str] | None = None
        self.fired = threading.Event()
        self.released = threading.Event()
        self.down = False
        self.down_after_fire = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def arm(self, needle: str, action: str, *, down_after: bool = False) -> None:
        self.fired.clear()
        self.released.clear()
        self.down_after_fire = down_after
        self.rule = (needle.encode(), action)

    def release(self) -> None:
        self.released.set()

    def _take(self, payload: bytes) -> str | None:
        with self.lock:
            if self.rule is None or self.rule[0] not in payload:
                return None
            action, self.rule = self.rule[1], None
            return action

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if self.down:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            state = {"swallow": False, "close_after": False}
            threading.Thread(target=self._upstream, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._downstream, args=(client, server, state), daemon=True).start()

    @staticmethod
    def _read(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError
            data += chunk
        return data

    def _upstream(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        typed, matched, kind = False, None, b""
        try:
            while True:
                head = self._read(client, 5 if typed else 4)
                length = struct.unpack("!I", head[-4:])[0]
                body = self._read(client, length - 4)
                message = head + body
                if not typed:
                    typed = struct.unpack("!I", body[:4])[0] not in (80877103, 80877104)  # SSL/GSS request
                else:
                    kind = head[:1]
                    if kind in (b"Q", b"P") and matched is None:
                        matched = self._take(body)
                    if matched is not None and kind in (b"Q", b"E"):
                        action, matched = matched, None
                        if self._fire(action, client, server, state, message):
                            return
                        if state["close_after"] and kind == b"Q":
                            return  # nothing after it reaches the server (the downstream closes both)
                        continue
                server.sendall(message)
                if state["close_after"] and kind == b"S":
                    return  # the statement's Sync is sent: a COMMIT sent after its reply must never arrive
        except OSError:
            pass
        finally:
            if not state["swallow"] and not state["close_after"]:
                self._close(client, server)

    def _fire(self, action: str, client, server, state: dict, message: bytes) -> bool:
        """Apply ``action`` to ``message``; True when the connection is finished."""
        if self.down_after_fire:
            self.down = True
        if action == "close":
            self.fired.set()
            self._close(client, server)
            return True
        if action == "hold":
            self.fired.set()
            self.released.wait(60)
        if action == "drop_reply":
            state["swallow"] = True
        if action == "close_after_reply":
            state["close_after"] = True
        server.sendall(message)
        if action != "hold":
            self.fired.set()
        return False

    def _downstream(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                if state["swallow"]:
                    break  # the reply is lost
                client.sendall(data)
                if state["close_after"]:
                    break
        except OSError:
            pass
        finally:
            self._close(client, server)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


# --------------------------------------------------------------------------- helpers


class Pair:
    """Two databases A (coordinator) and B, each behind its own proxy, with raw counts."""

    def __init__(self, port_a: int, port_b: int):
        self.ports = (port_a, port_b)
        self.names = (fresh_database(port_a), fresh_database(port_b))
        self.proxies = (FaultProxy(port_a), FaultProxy(port_b))
        self.a, self.b = self.open()

    def open(self) -> tuple[DataFlow, DataFlow]:
        a, b = (DataFlow(p.url(n), in_doubt_grace=0) for p, n in zip(self.proxies, self.names, strict=True))
        for db in (a, b):

            @db.model
            class Item:
                name: str

        return a, b

    def workflow(self, tag: str, *, a_first: bool = False):
        """One Create on A and one on B; ``a_first`` makes B wait for A, so A's connection opens
        (and commits) first. Without it the two nodes run concurrently in either order."""
        wf = WorkflowBuilder()
        wf.add_node(self.a.nodes["ItemCreateNode"], "a", {"name": tag})
        wf.add_node(self.b.nodes["ItemCreateNode"], "b", {} if a_first else {"name": tag})
        if a_first:
            wf.add_connection("a", "name", "b", "name")
        return wf.build()

    def counts(self, tag: str | None = None) -> tuple[int, int]:
        where, args = ("WHERE name = $1", [tag]) if tag else ("", [])
        return tuple(
            admin(port, f"SELECT count(*) FROM items {where}", *args, database=name)[0][0]
            for port, name in zip(self.ports, self.names, strict=True)
        )

    def prepared(self) -> list[str]:
        return [
            r[0]
            for port, name in zip(self.ports, self.names, strict=True)
            for r in admin(port, "SELECT gid FROM pg_prepared_xacts WHERE database = $1", name)
        ]

    def decisions(self) -> list[str]:
        rows = admin(
            self.ports[0],
            "SELECT to_regclass('dataflow_lab_2pc_decisions') IS NOT NULL",
            database=self.names[0],
        )
        if not rows[0][0]:
            return []
        return [
            r[0]
            for r in admin(
                self.ports[0], "SELECT gid FROM dataflow_lab_2pc_decisions", database=self.names[0]
            )
        ]

    def warm(self, runtime: LocalRuntime) -> None:
        """One clean run first: tables exist, so the fault hits the commit, not DDL."""
        runtime.execute(self.workflow("warm"))


def run(runtime: LocalRuntime, workflow) -> BaseException | None:
    try:
        runtime.execute(workflow)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc
    return None


# --------------------------------------------------------------------------- 1. 2PC never applies a run twice


RUNS = 10


def test_a_lost_commit_prepared_reply_commits_each_database_exactly_once(server):
    pair = Pair(server, server)
    runtime = LocalRuntime(transaction="2pc")
    pair.warm(runtime)
    duplicated = partial = 0
    for i in range(RUNS):
        pair.proxies[i % 2].arm("COMMIT PREPARED", "drop_reply")
        error = run(runtime, pair.workflow(f"run{i}"))
        assert pair.proxies[i % 2].fired.is_set()
        assert error is None, error  # every half committed once: the run succeeded
        a, b = pair.counts(f"run{i}")
        duplicated += a > 1 or b > 1
        partial += a != b
    assert (duplicated, partial) == (0, 0)
    assert pair.prepared() == [] and pair.decisions() == []
    record("2pc lost COMMIT PREPARED reply", runs=RUNS, duplicated=0, partial=0, leaked=0)


def test_a_lost_decision_reply_is_resolved_from_the_decision_row_not_retried(server):
    pair = Pair(server, server)
    runtime = LocalRuntime(transaction="2pc")
    pair.warm(runtime)
    for i in range(RUNS):
        pair.proxies[0].arm("dataflow_lab_2pc_decisions (gid, outcome", "drop_reply")
        error = run(runtime, pair.workflow(f"run{i}"))
        assert pair.proxies[0].fired.is_set()
        # the decision row was written, its reply lost: the run resolves it to 'commit'
        assert error is None, error
        assert pair.counts(f"run{i}") == (1, 1)
    assert pair.prepared() == [] and pair.decisions() == []
    record("2pc lost decision-row reply", runs=RUNS, duplicated=0, partial=0, leaked=0)


def test_an_unreachable_participant_after_the_decision_is_reported_as_prepared_not_as_nothing(server):
    pair = Pair(server, server)
    runtime = LocalRuntime(transaction="2pc")
    pair.warm(runtime)
    pair.proxies[1].arm("COMMIT PREPARED", "close", down_after=True)
    error = run(runtime, pair.workflow("x"))
    assert isinstance(error, InDoubtError), error
    assert "nothing was committed" not in str(error) + str(error.hint)
    assert error.states[pair.a.url] == "committed"
    assert error.states[pair.b.url].startswith("prepared, decision 'commit'")
    assert pair.counts("x") == (1, 0) and len(pair.prepared()) == 1
    pair.proxies[1].down = False
    outcome = pair.a.recover_in_doubt(pair.b, force=True)
    assert list(outcome.values()) == ["committed"]
    assert pair.counts("x") == (1, 1) and pair.prepared() == [] and pair.decisions() == []


# --------------------------------------------------------------------------- 2. no whole-run retry after a commit


@pytest.mark.parametrize("mode", ["workflow", "node", "saga"])
def test_a_connection_closed_after_another_database_committed_is_never_retried_as_a_whole(server, mode):
    pair = Pair(server, server)
    runtime = LocalRuntime(transaction=mode)  # no warm-up run: B's INSERT is parsed on each new connection
    duplicated = 0
    # B's last statement before COMMIT: in saga mode the step's saga log entry follows its INSERT
    last = "INSERT INTO dataflow_lab_saga_log" if mode == "saga" else "INSERT INTO items"
    for i in range(RUNS):
        pair.proxies[1].arm(last, "close_after_reply")
        error = run(runtime, pair.workflow(f"run{i}", a_first=True))
        assert pair.proxies[1].fired.is_set()
        a, b = pair.counts(f"run{i}")
        duplicated += a > 1 or b > 1
        assert a <= 1 and b <= 1, (a, b)
        if mode == "workflow":
            assert isinstance(error, TransactionError), error
            assert "committed on" in str(error) and pair.a.url.split("@")[-1] in str(error)
            assert (a, b) == (1, 0)
    assert duplicated == 0
    record(
        f"2 databases, B closed after A committed ({mode})",
        runs=RUNS,
        duplicated=0,
        partial="reported",
        leaked=0,
    )


# --------------------------------------------------------------------------- 3. the default runtime


def test_the_default_runtime_commits_two_postgresql_databases_with_2pc_all_or_nothing(server):
    pair = Pair(server, server)
    runtime = LocalRuntime(retry=False)  # the default transaction: "auto" -> 2PC across these two
    pair.warm(runtime)
    pair.proxies[1].arm("PREPARE TRANSACTION", "close")  # the second database never prepares
    error = run(runtime, pair.workflow("x", a_first=True))
    assert pair.proxies[1].fired.is_set() and error is not None
    assert pair.counts("x") == (0, 0)  # nothing committed anywhere
    assert pair.prepared() == [] and pair.decisions() == []
    pair.proxies[1].arm("COMMIT PREPARED", "close", down_after=True)  # the second COMMIT fails
    error = run(runtime, pair.workflow("y", a_first=True))
    assert isinstance(error, InDoubtError), error  # it names what committed where
    assert error.states[pair.a.url] == "committed"
    assert error.states[pair.b.url].startswith("prepared, decision 'commit'")
    pair.proxies[1].down = False
    pair.a.recover_in_doubt(pair.b, force=True)
    assert pair.counts("y") == (1, 1) and pair.prepared() == []
    record(
        "default runtime, 2 PostgreSQL databases: the 2nd PREPARE TRANSACTION never arrives",
        injected="fault proxy closes B's connection on its PREPARE TRANSACTION",
        times=1,
        outcome="error; nothing committed on either database, nothing left prepared",
    )
    record(
        "default runtime, 2 PostgreSQL databases: the 2nd COMMIT PREPARED fails",
        injected="fault proxy closes B's connection on COMMIT PREPARED, then refuses connections",
        times=1,
        outcome="InDoubtError naming A committed, B prepared with decision 'commit'; recovery commits B",
    )


def sqlite_then_postgres(tmp_path, server: int, *, postgres_first: bool = False):
    """A SQLite file and a PostgreSQL behind a proxy (no 2PC across them), one Create on each."""
    proxy = FaultProxy(server)
    lite, pg = DataFlow(f"sqlite:///{tmp_path / 'lite.db'}"), DataFlow(proxy.url(fresh_database(server)))
    for db in (lite, pg):

        @db.model
        class Item:
            name: str

    def workflow(tag: str):
        first, second = (pg, lite) if postgres_first else (lite, pg)
        wf = WorkflowBuilder()
        wf.add_node(first.nodes["ItemCreateNode"], "first", {"name": tag})
        wf.add_node(second.nodes["ItemCreateNode"], "second", {})
        wf.add_connection("first", "name", "second", "name")  # the first database commits first
        return wf.build()

    def names(db: DataFlow) -> list[str]:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("ItemListNode", "list", {"limit": 100})
        return sorted(r["name"] for r in LocalRuntime().execute(wf.build())[0]["list"]["records"])

    return proxy, lite, pg, workflow, names


def test_the_default_runtime_across_sqlite_and_postgresql_names_what_committed_where(tmp_path, server):
    proxy, lite, pg, workflow, names = sqlite_then_postgres(tmp_path, server)
    runtime = LocalRuntime(retry=False)  # "auto" -> one transaction per database: no 2PC on SQLite
    runtime.execute(workflow("warm"))
    proxy.arm("COMMIT", "close")  # SQLite committed; PostgreSQL's COMMIT never reaches the server
    error = run(runtime, workflow("x"))
    assert proxy.fired.is_set()
    assert isinstance(error, TransactionError), error
    assert f"committed on {lite!r}" in str(error) and f"COMMIT failed on {pg!r}" in str(error)
    assert "unknown outcome there" in str(error)  # the connection broke during COMMIT: it cannot know
    assert names(lite) == ["warm", "x"] and names(pg) == ["warm"]
    record(
        "default runtime, SQLite then PostgreSQL (no 2PC): the 2nd COMMIT fails",
        injected="fault proxy closes PostgreSQL's connection on its COMMIT, after SQLite committed",
        times=1,
        outcome="TransactionError naming SQLite committed and PostgreSQL's outcome unknown (it was not kept)",
    )
    lite.close()
    pg.close()


def test_a_failed_first_commit_rolls_the_other_database_back_and_frees_its_connection(tmp_path, server):
    proxy, lite, pg, workflow, names = sqlite_then_postgres(tmp_path, server, postgres_first=True)
    runtime = LocalRuntime(retry=False)
    runtime.execute(workflow("warm"))
    proxy.arm("COMMIT", "close")  # PostgreSQL's COMMIT is lost before SQLite's is sent
    error = run(runtime, workflow("x"))
    assert proxy.fired.is_set() and error is not None
    assert "committed on" not in str(error)  # nothing committed anywhere
    assert names(lite) == ["warm"] and names(pg) == ["warm"]
    assert lite.pool_status()["checked_out"] == 0
    runtime.execute(workflow("after"))  # SQLite's connection came back with no transaction open
    assert names(lite) == ["after", "warm"] and names(pg) == ["after", "warm"]
    record(
        "default runtime, PostgreSQL then SQLite (no 2PC): the 1st COMMIT fails",
        injected="fault proxy closes PostgreSQL's connection on its COMMIT, before SQLite's",
        times=1,
        outcome="error; nothing committed on either; SQLite's connection returned with no open transaction",
    )
    lite.close()
    pg.close()


# --------------------------------------------------------------------------- 4. cross-server decisions


def test_a_recovery_that_sees_only_the_coordinator_keeps_the_decision_for_the_other_server(server, server2):
    pair = Pair(server, server2)
    runtime = LocalRuntime(transaction="2pc")
    pair.warm(runtime)
    pair.proxies[1].arm("COMMIT PREPARED", "close", down_after=True)
    error = run(runtime, pair.workflow("x"))
    assert isinstance(error, InDoubtError), error
    assert len(pair.prepared()) == 1 and len(pair.decisions()) == 1
    asyncio_run_recovery([pair.a])  # a start-up that sees only the coordinator
    assert len(pair.decisions()) == 1, "the decision was deleted while server 2 still holds its half"
    pair.proxies[1].down = False
    outcome = asyncio_run_recovery([pair.a, pair.b])
    assert list(outcome.values()) == ["committed"]
    assert pair.counts("x") == (1, 1) and pair.prepared() == [] and pair.decisions() == []
    record("2pc across two servers, partial recovery first", runs=1, duplicated=0, partial=0, leaked=0)


def asyncio_run_recovery(dataflows: list[DataFlow]) -> dict[str, str]:
    from dataflow_lab import _loop

    return _loop.run(recover_in_doubt(dataflows, min_age=0))


# --------------------------------------------------------------------------- 5. lost PREPARE reply


def test_a_lost_prepare_reply_leaves_nothing_that_recovery_does_not_resolve(server):
    pair = Pair(server, server)
    runtime = LocalRuntime(transaction="2pc")
    pair.warm(runtime)
    leaked = 0
    for i in range(RUNS // 2):
        pair.proxies[1].arm("PREPARE TRANSACTION", "drop_reply", down_after=True)
        error = run(runtime, pair.workflow(f"run{i}"))
        assert isinstance(error, TransactionError), error
        assert "nothing was committed" in str(error.hint)
        pair.proxies[1].down = False
        pair.a.recover_in_doubt(pair.b, force=True)
        leaked += len(pair.prepared())
        assert pair.counts(f"run{i}") == (0, 0)
    assert leaked == 0
    record("2pc lost PREPARE reply", runs=RUNS // 2, duplicated=0, partial=0, leaked=0)


# --------------------------------------------------------------------------- 6. recovery leaves live commits alone

RECOVER = """
import json, sys
from dataflow_lab import DataFlow
a, b = DataFlow(sys.argv[1], in_doubt_grace=0), DataFlow(sys.argv[2], in_doubt_grace=0)
print(json.dumps(a.recover_in_doubt(b, force=True)))
"""


def test_a_forced_recovery_in_another_process_never_touches_a_live_commit(server):
    pair = Pair(server, server)
    runtime = LocalRuntime(transaction="2pc")
    pair.warm(runtime)
    pair.proxies[1].arm("COMMIT PREPARED", "hold")  # A has committed, B's COMMIT PREPARED waits
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("error", run(runtime, pair.workflow("x"))))
    worker.start()
    try:
        assert pair.proxies[1].fired.wait(30)
        urls = [f"postgresql://postgres@127.0.0.1:{server}/{n}" for n in pair.names]
        done = subprocess.run(
            [sys.executable, "-c", RECOVER, *urls], capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": ROOT},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "{}", done.stdout
    finally:
        pair.proxies[1].release()
        worker.join(60)
    assert not worker.is_alive()
    assert outcome["error"] is None, outcome["error"]
    assert pair.counts("x") == (1, 1) and pair.prepared() == [] and pair.decisions() == []
    record("forced recover_in_doubt() during a live 2PC", runs=1, duplicated=0, partial=0, leaked=0)


def test_manual_recovery_keeps_the_grace_period_unless_forced(server):
    pair = Pair(server, server)
    pair.a.close(), pair.b.close()
    a, b = (DataFlow(p.url(n)) for p, n in zip(pair.proxies, pair.names, strict=True))  # grace 60 s
    for db in (a, b):

        @db.model
        class Item:
            name: str

    from dataflow_lab import transactions

    real = transactions.Scope.commit

    async def crash(self, *, two_phase=False):
        self._crash_after_decision = True
        return await real(self, two_phase=two_phase)

    transactions.Scope.commit = crash
    try:
        wf = WorkflowBuilder()
        wf.add_node(a.nodes["ItemCreateNode"], "a", {"name": "x"})
        wf.add_node(b.nodes["ItemCreateNode"], "b", {"name": "x"})
        assert isinstance(run(LocalRuntime(transaction="2pc"), wf.build()), TransactionError)
    finally:
        transactions.Scope.commit = real
    assert len(pair.prepared()) == 2
    assert a.recover_in_doubt(b) == {}  # younger than the grace period: left alone
    assert sorted(a.recover_in_doubt(b, force=True).values()) == ["committed", "committed"]
    assert pair.counts("x") == (1, 1) and pair.prepared() == []
