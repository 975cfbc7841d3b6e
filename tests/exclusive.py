"""Tests that must not share the servers with another test while they run, under ``pytest -n``.

The suite runs in parallel worker processes (pytest-xdist). Each worker has its own PostgreSQL
schema and MySQL database (conftest's ``SCHEMA``), so most tests never see each other. A few look at
what is server-wide: they count every backend (``pg_stat_activity``), list every prepared
transaction, kill sessions, change a server setting, or time something that a busy neighbour would
slow. Such a test is marked ``@pytest.mark.exclusive`` (or its module sets ``pytestmark``), and it
runs only while no other test runs.

The lock is a reader-writer lock on two files, shared by the run's workers: every test holds the
``run`` lock shared, an exclusive test holds it exclusively. To enter, a test first passes through
the ``turnstile`` lock; an exclusive test keeps the turnstile while it waits and runs, so the others
cannot keep it waiting by taking turns (writer preference), and each of them waits at most for one
exclusive test. Without ``-n`` there is no lock: one process runs one test at a time anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator

import pytest

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # set in every worker of one `pytest -n` run


def _lock_file(name: str) -> int:
    path = os.path.join(tempfile.gettempdir(), f"dataflow-lab-tests-{_RUN}.{name}")
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def _held(exclusive: bool) -> Iterator[None]:
    turnstile, run = _lock_file("turnstile"), _lock_file("run")
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(run, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield
    finally:
        os.close(run)  # closing a descriptor releases its flock
        os.close(turnstile)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Setup, call and teardown of each test under the lock (fixtures such as a reset schema too)."""
    if _RUN is None:
        yield
        return
    with _held(exclusive=item.get_closest_marker("exclusive") is not None):
        yield
