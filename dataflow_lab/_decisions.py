"""The decision records of two-phase commit, shared by the commit (two_phase.py) and recovery (_in_doubt.py).

The coordinator's decision table, the gid prefix, the key naming each database,
and this process's commits between PREPARE and COMMIT. The statements are the
dialect's (``dialect.two_phase_sql``: PostgreSQL's prepared transactions, MySQL's XA).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .dialects.two_phase_sql import DECISION_TABLE, TwoPhaseSQL

if TYPE_CHECKING:  # pragma: no cover
    from .dialects import Connection
    from .interfaces import DataFlow

__all__ = [
    "DECISION_TABLE",
    "GID_PREFIX",
    "IN_FLIGHT",
    "ensure_decision_table",
    "forget_decision",
    "key_of",
    "sql_of",
]

GID_PREFIX = "dataflow_lab"
_DECISION_KEY = (DECISION_TABLE, "2pc")  # its readiness, kept with the database's tables

IN_FLIGHT: set[str] = set()  # this process's two-phase commits between PREPARE and COMMIT


def sql_of(db: DataFlow) -> TwoPhaseSQL:
    """The two-phase statements of ``db``'s database (asked only where supports_two_phase)."""
    ops = db.database.dialect.two_phase_sql
    assert isinstance(ops, TwoPhaseSQL), "supports_two_phase dialects have two_phase_sql"
    return ops


async def key_of(db: DataFlow, conn: Connection) -> str:
    """A short name of the database ``conn`` is on, the same from any process: 16 hex digits."""
    ident = await sql_of(db).identity(conn)
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


async def ensure_decision_table(db: DataFlow, conn: Connection) -> None:
    if db.database.is_ready(_DECISION_KEY):
        return
    await sql_of(db).create_decisions(conn)
    db.database.mark_ready(_DECISION_KEY)


async def forget_decision(db: DataFlow, conn: Connection | None, gid: str) -> None:
    """Every half committed: the decision row is not needed any more (a failure here is harmless)."""
    dialect = await db.database.open()
    own = conn is None
    try:
        if conn is None:
            conn = await dialect.acquire()
        await sql_of(db).forget(conn, gid)
    except Exception:  # recovery forgets it later, once it sees every participant resolved
        pass
    finally:
        if own and conn is not None:
            await dialect.release(conn)
