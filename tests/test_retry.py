"""The retry policy (retry.py): a time budget, what is transient, and what the final error says."""

from __future__ import annotations

import threading

import pytest
from test_faults import record

from dataflow_lab import (
    DataFlow,
    LocalRuntime,
    NodeExecutionError,
    PoolExhaustedError,
    RetryPolicy,
    RunHooks,
    ValidationError,
    WorkflowBuilder,
)
from dataflow_lab.retry import retry_reason


class Retries(RunHooks):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def retry(self, *, reason, **future):
        self.reasons.append(reason)


def test_a_pooled_connection_the_server_is_shutting_down_is_a_lost_connection():
    # asyncpg's error for a statement on a connection that received the server's unsolicited
    # FATAL (57P01, pg_ctl stop -m fast) and has not yet seen the socket close: never sent, retried
    asyncpg = pytest.importorskip("asyncpg")
    from dataflow_lab.dialects.postgres import PostgresDialect

    dying = asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    )
    assert retry_reason(dying) == "connection lost"
    assert PostgresDialect.commit_never_sent(PostgresDialect.__new__(PostgresDialect), dying)
    busy = asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (11) is in progress"
    )
    assert retry_reason(busy) is None  # a statement still running on it: our bug, never retried


def test_the_default_policy_is_a_ten_second_budget_with_backoff_and_jitter():
    policy = RetryPolicy()
    assert (policy.attempts, policy.budget) == (None, 10.0)
    assert policy.allows(50, 9.0, 0.5) and not policy.allows(50, 9.8, 0.5)
    delays = [policy.delay(n) for n in range(1, 12)]
    assert all(0.05 * 0.5 <= d <= 1.5 for d in delays) and delays[-1] >= 0.5  # grows, capped near 1 s
    assert len({round(policy.delay(3), 6) for _ in range(20)}) > 1  # jittered
    assert RetryPolicy.of(3) == RetryPolicy(attempts=3, budget=None)  # a count, however long
    assert RetryPolicy.of(False).attempts == 1
    with pytest.raises(ValidationError, match="not both None"):
        RetryPolicy(attempts=None, budget=None)


@pytest.mark.parametrize("error", [ConnectionAbortedError, ConnectionResetError, ConnectionRefusedError])
def test_the_builtin_connection_error_family_is_retried(error):
    assert retry_reason(error("gone")) == "connection lost"
    failures = [error("the peer went away"), error("again")]

    def flaky() -> int:
        if failures:
            raise failures.pop()
        return 1

    wf = WorkflowBuilder()
    wf.add_node(flaky, "flaky")
    spy = Retries()
    results, _ = LocalRuntime(hooks=[spy], retry=RetryPolicy(base_delay=0.001)).execute(wf.build())
    assert results["flaky"] == 1 and spy.reasons == ["connection lost", "connection lost"]


def test_the_final_error_says_how_many_attempts_were_made_over_how_long():
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionResetError("connection reset by peer")

    wf = WorkflowBuilder()
    wf.add_node(down, "down")
    policy = RetryPolicy(base_delay=0.01, max_delay=0.05, budget=0.3)
    with pytest.raises(NodeExecutionError) as info:
        LocalRuntime(retry=policy).execute(wf.build())
    error = info.value
    assert error.attempts == len(calls) >= 4
    assert error.retried_for > 0.2  # it stops only when the next wait (<= 0.075 s) would pass 0.3 s
    assert f"gave up after {len(calls)} attempts over 0." in str(error)


def test_a_limit_passed_is_never_retried():
    from dataflow_lab import NodeTimeoutError

    error = NodeTimeoutError("x", node_id="n", limit=1.0)
    assert retry_reason(error) is None
    assert retry_reason(NodeExecutionError.wrap("n", "T", error)) is None


def test_a_full_pool_is_pool_exhausted_not_could_not_connect(pg_url):
    db = DataFlow(pg_url, pool_size=1, max_overflow=0, pool_timeout=0.3)

    @db.model
    class Item:
        name: str

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("ItemCountNode", "n", {})
    LocalRuntime().execute(wf.build())  # the table exists; the one connection is back in the pool
    caught: list[BaseException] = []

    def elsewhere() -> None:
        try:
            LocalRuntime().execute(wf.build())
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            caught.append(exc)

    with db.transaction():  # holds the pool's only connection
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(30)
    assert len(caught) == 1
    error = caught[0]
    assert isinstance(error, PoolExhaustedError), error
    assert (error.size, error.overflow, error.checked_out, error.timeout) == (1, 0, 1, 0.3)
    assert "Could not connect" not in str(error) and "pool_timeout=0.3 s" in str(error)
    assert "1 are checked out, of pool_size=1 + max_overflow=0" in str(error)
    assert not hasattr(error, "attempts")  # not retried: it already waited pool_timeout
    assert LocalRuntime().execute(wf.build())[0]["n"] == {"count": 0}
    record(
        "a full pool (PostgreSQL, pool_size=1, max_overflow=0, pool_timeout=0.3)",
        injected="a db.transaction() block holds the only connection while another thread runs",
        times=1,
        outcome="PoolExhaustedError naming size 1, overflow 0, 1 checked out; not retried, "
        "not 'could not connect'; the next run succeeds",
    )
    db.close()
