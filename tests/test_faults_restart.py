"""A PostgreSQL restart of about a second during in-flight runs: the default retry budget rides it out.

The test starts its OWN throwaway PostgreSQL (``.ci/pg.sh``), never the suite's, and restarts it
with ``pg_ctl stop -m fast`` (every session is terminated: 57P01), a second's pause, and
``pg_ctl start``. Runs in flight meet a lost connection, runs that start meanwhile cannot connect;
both are retried whole (their transactions were rolled back) with the default policy, and succeed.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from test_faults import record
from test_faults_2pc import _start_cluster, _stop_cluster, admin, fresh_database

from dataflow_lab import DataFlow, LocalRuntime, RunHooks, WorkflowBuilder

# runs alone under pytest -n: it times runs through a server restart
pytestmark = pytest.mark.exclusive

pytest.importorskip("asyncpg")
RUNS = 12


@pytest.fixture(scope="module")
def cluster():
    cluster = _start_cluster(55511)
    yield cluster
    _stop_cluster(cluster)


def pg_ctl(cluster: dict[str, str], *args: str) -> None:
    command = [cluster["DATAFLOW_TEST_PG_CTL"], "-D", cluster["DATAFLOW_TEST_PG_DATA"]]
    command += ["-l", cluster["DATAFLOW_TEST_PG_LOG"], *args]
    user = cluster.get("DATAFLOW_TEST_PG_USER")
    if os.geteuid() == 0 and user and user != "root":
        command = ["su", user, "-s", "/bin/sh", "-c", " ".join(command)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def restart(cluster: dict[str, str], down_for: float = 1.0) -> float:
    """Stop the server (fast: sessions terminated), wait, start it; the seconds it was down."""
    pg_ctl(cluster, "-w", "-m", "fast", "stop")
    stopped = time.monotonic()
    time.sleep(down_for)
    pg_ctl(cluster, "-w", "start")
    return time.monotonic() - stopped


class Retries(RunHooks):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def retry(self, *, reason, **future):
        self.reasons.append(reason)


def test_runs_in_flight_during_a_one_second_restart_succeed_with_the_default_retry(cluster):
    port = int(cluster["DATAFLOW_TEST_PG_PORT"])
    name = fresh_database(port)
    db = DataFlow(f"postgresql://postgres@127.0.0.1:{port}/{name}", pool_size=RUNS)

    @db.model
    class Item:
        name: str

    def pause(name: str) -> dict:
        time.sleep(0.4)  # the run holds its transaction open across the restart
        return {"name": name}

    def workflow(tag: str):
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("ItemCreateNode", "first", {"name": f"{tag}-1"})
        wf.add_node(pause, "pause", {"name": f"{tag}-2"})
        wf.add_node("ItemCreateNode", "second", {})
        wf.add_connection("pause", "name", "second", "name")
        return wf.build()

    spy = Retries()
    runtime = LocalRuntime(hooks=[spy])  # the default: transaction "auto", the 10 s retry budget
    runtime.execute(workflow("warm"))
    errors: dict[str, BaseException] = {}

    def one(tag: str, delay: float) -> None:
        time.sleep(delay)
        try:
            runtime.execute(workflow(tag))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors[tag] = exc

    threads = [threading.Thread(target=one, args=(f"run{i}", 0.1 * i)) for i in range(RUNS)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # the first runs are in flight; the later ones start while the server is down
    down = restart(cluster)
    for thread in threads:
        thread.join(60)
    assert errors == {}
    assert "connection lost" in spy.reasons or "server shut down" in spy.reasons, spy.reasons
    rows = admin(port, "SELECT name, count(*) FROM items GROUP BY name", database=name)
    counts = {r[0]: r[1] for r in rows}
    assert all(counts.get(f"run{i}-{k}") == 1 for i in range(RUNS) for k in (1, 2)), counts
    assert len(counts) == 2 * RUNS + 2  # each run's two rows once, no duplicates, nothing half-written
    assert db.pool_status()["checked_out"] == 0
    record(
        f"PostgreSQL restarted, about {down:.1f} s down, under {RUNS} runs in flight or starting",
        injected="pg_ctl stop -m fast (sessions terminated), 1 s pause, pg_ctl start, on a test-owned server",
        times=1,
        outcome=f"{RUNS} of {RUNS} runs succeeded (default retry); 0 duplicated, 0 lost, 0 left checked out",
        retries=len(spy.reasons),
    )
    db.close()
