"""Fault test for sagas: the server dies while a failed run's compensations run.

The test starts its OWN throwaway PostgreSQL (``.ci/pg.sh``) and stops it with
``pg_ctl stop -m immediate`` from the ``compensation`` hook, right after the first
compensation committed: the rest fail with the server down. Before the saga log, those
compensations lived only on the raised error, and the run stayed partial for good. Now
they are owed in the database; after the restart, a new DataFlow's first use (or
``db.resume_compensations()``) runs them. Every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from test_faults import record
from test_faults_2pc import _start_cluster, _stop_cluster, admin, fresh_database

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
from dataflow_lab.retry import RetryPolicy

# runs alone under pytest -n: it kills a server mid-compensation and times the restart
pytestmark = pytest.mark.exclusive

RUNS = 6


@pytest.fixture(scope="module")
def cluster():
    exports = _start_cluster(56131)
    yield exports
    _stop_cluster(exports)


def control(cluster: dict[str, str], *args: str) -> None:
    ctl, data, user = (
        cluster[k] for k in ("DATAFLOW_TEST_PG_CTL", "DATAFLOW_TEST_PG_DATA", "DATAFLOW_TEST_PG_USER")
    )
    log = cluster.get("DATAFLOW_TEST_PG_LOG", os.path.join(os.path.dirname(data), "log"))
    command = [ctl, "-D", data, "-l", log, *args]
    if os.geteuid() == 0 and user and user != "root":
        command = ["su", user, "-s", "/bin/sh", "-c", " ".join(command)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def define(db: DataFlow) -> None:
    @db.model
    class Item:
        name: str
        qty: int = 0


def state(db: DataFlow) -> list[tuple]:
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemListNode", "n", {"order_by": ["id"], "limit": 10_000})
    return [(r["id"], r["name"], r["qty"]) for r in LocalRuntime().execute(wf.build())[0]["n"]["records"]]


class KillAfterFirstCompensation:
    """Stops the server as soon as the first compensation has committed."""

    def __init__(self, cluster: dict[str, str]):
        self.cluster, self.fired = cluster, False

    def compensation(self, **future: object) -> None:
        if not self.fired:
            self.fired = True
            control(self.cluster, "-m", "immediate", "stop")


def boom(x: object = None) -> None:
    raise ValueError("the last step fails: compensate the others")


def test_a_server_killed_during_compensation_leaves_no_partial_run_after_restart(cluster):
    port = int(cluster["DATAFLOW_TEST_PG_PORT"])
    name = fresh_database(port)
    admin(port, f'ALTER DATABASE "{name}" SET synchronous_commit TO on')  # commits survive the kill
    url = f"postgresql://postgres@127.0.0.1:{port}/{name}"
    partial = owed_after_failure = resumed_at_start = resumed_by_call = 0
    for attempt in range(RUNS):
        db = DataFlow(url, in_doubt_grace=0)
        define(db)
        if attempt == 0:
            wf = WorkflowBuilder(dataflow=db)
            wf.add_node(
                "ItemBulkCreateNode", "seed", {"data": [{"name": f"s{i}", "qty": i} for i in range(50)]}
            )
            LocalRuntime().execute(wf.build())
        before = state(db)
        killer = KillAfterFirstCompensation(cluster)

        wf = WorkflowBuilder(dataflow=db)
        wf.add_node("ItemBulkUpdateNode", "bump", {"filter": {"qty": {"$lt": 25}}, "fields": {"qty": 1000}})
        wf.add_node("ItemBulkDeleteNode", "drop", {"filter": {"qty": {"$gte": 40}}})
        wf.add_node("ItemBulkCreateNode", "load", {"data": [{"name": f"n{attempt}-{i}"} for i in range(100)]})
        wf.add_node("ItemCreateNode", "one", {"name": f"one{attempt}"})
        wf.add_node(boom, "fails", {})  # LocalRuntime runs them one at a time, in this order
        runtime = LocalRuntime(transaction="saga", retry=RetryPolicy(attempts=2, base_delay=0.01),
                               hooks=[killer])  # fmt: skip
        with pytest.raises(Exception) as raised:
            runtime.execute(wf.build())
        assert killer.fired, "no compensation ran"
        failed = [c for c in raised.value.compensations if c["status"] == "failed"]
        assert failed, "the server stopped, yet every compensation succeeded"
        owed_after_failure += len(failed)
        control(cluster, "-w", "start")
        if attempt % 2:
            done = db.resume_compensations()
            # a compensation whose COMMIT reached the server before it died is reported failed, yet
            # done, and its entry went with it: resuming never runs it twice
            assert {d.node_id for d in done} <= {c["node_id"] for c in failed}
            assert {d.status for d in done} == {"compensated"}
            resumed_by_call += len(done)
            after = state(db)
        else:
            db.close()
            db = DataFlow(url, in_doubt_grace=0)  # the next start: resumes at first use
            define(db)
            after = state(db)
            resumed_at_start += 1
        partial += after != before
        assert after == before, f"run {attempt} left partial: {len(after)} rows, {len(before)} before"
        assert db.pending_compensations() == 0
        db.close()
    record("saga: server killed during compensation", runs=RUNS, owed_when_killed=owed_after_failure,
           restarts_resumed_at_start=resumed_at_start, compensations_resumed_by_call=resumed_by_call, partial=partial,
           duplicated=0, leaked=0)  # fmt: skip
    assert partial == 0
