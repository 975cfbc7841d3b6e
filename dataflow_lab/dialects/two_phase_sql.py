"""What two-phase commit asks of a database: its prepared transactions, decision rows and locks.

``two_phase.py`` (the commit) and ``_in_doubt.py`` (recovery) speak only through a
dialect's ``two_phase_sql``, one of these. PostgreSQL's (``pg_two_phase.py``) is
PREPARE TRANSACTION and ``pg_prepared_xacts``; MySQL's and MariaDB's
(``mysql_xa.py``) is XA START/END/PREPARE/COMMIT and ``XA RECOVER``.

A gid is ``<base>:<branch>``: the base names the whole commit (and its decision
row), the branch one database's part. The decision table lives on the
coordinator; ``lock`` is a session lock that the committing process holds on the
coordinator for as long as it commits, so recovery elsewhere never touches a live
commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .connection import Connection

__all__ = ["DECISION_TABLE", "TwoPhaseSQL"]

DECISION_TABLE = "dataflow_lab_2pc_decisions"


class TwoPhaseSQL:
    """One database's statements of two-phase commit (every method runs on ``conn``)."""

    # The branch is named when its transaction begins (XA START takes it), not at PREPARE.
    named_at_begin = False
    # A prepared branch stays bound to the session that prepared it until it is finished or the
    # session ends (MySQL): that session finishes it, and another one only once it has closed.
    bound_to_session = False

    async def identity(self, conn: Connection) -> str:
        """Text naming this database on its server, the same after a restart (hashed to a key)."""
        raise NotImplementedError

    async def begin(self, conn: Connection, gid: str, isolation: str | None, key: str) -> str:
        """Begin ``conn``'s transaction as the branch ``gid`` of this database (``key``); its gid."""
        await conn.begin(isolation)
        return gid

    async def prepare(self, conn: Connection, gid: str) -> None:
        raise NotImplementedError

    async def finish(self, conn: Connection, gid: str, *, commit: bool) -> bool:
        """Commit or roll back the prepared ``gid``; False when a live session still holds it."""
        raise NotImplementedError

    def let_go(self, conn: Connection) -> None:
        """Give up on the branch ``conn``'s session holds (bound_to_session): close the session, so
        the server hands the branch to recovery (the pool then drops the connection)."""

    async def prepared(self, conn: Connection, key: str, min_age: float) -> list[str]:
        """The gids (of our prefix) this database (``key``) holds prepared ``min_age`` seconds or more."""
        raise NotImplementedError

    async def is_prepared(self, conn: Connection, gid: str) -> bool:
        raise NotImplementedError

    async def any_prepared(self, conn: Connection, key: str, base: str) -> bool:
        """Whether this database still holds a branch of the commit ``base``."""
        raise NotImplementedError

    # -- the coordinator's liveness lock (a session lock: a dead process's is free) --------------
    async def lock(self, conn: Connection, base: str) -> None:
        raise NotImplementedError

    async def try_lock(self, conn: Connection, base: str) -> bool:
        raise NotImplementedError

    async def unlock(self, conn: Connection, base: str) -> None:
        raise NotImplementedError

    # -- the decision table on the coordinator ---------------------------------------------------
    async def create_decisions(self, conn: Connection) -> None:
        raise NotImplementedError

    async def has_decisions(self, conn: Connection) -> bool:
        raise NotImplementedError

    async def record_commit(self, conn: Connection, base: str, participants: list[str]) -> bool:
        """Record 'commit' for ``base``; False when a decision was recorded first."""
        raise NotImplementedError

    async def record_abort(self, conn: Connection, base: str) -> str | None:
        """Record 'abort' unless a decision exists; the decision that stands."""
        raise NotImplementedError

    async def decisions(self, conn: Connection) -> dict[str, tuple[str, Any]]:
        """{base: (outcome, participant keys or None)} of every recorded decision."""
        raise NotImplementedError

    async def forget(self, conn: Connection, base: str) -> None:
        raise NotImplementedError
