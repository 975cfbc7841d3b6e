"""The decision records of two-phase commit, shared by the commit (two_phase.py) and recovery (_in_doubt.py).

The coordinator's decision table, the gid prefix, the advisory-lock key of a
live commit, and this process's commits between PREPARE and COMMIT PREPARED.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .dialects import Connection
    from .interfaces import DataFlow

__all__ = [
    "DECISION_TABLE",
    "GID_PREFIX",
    "IN_FLIGHT",
    "LOCK_SQL",
    "ensure_decision_table",
    "forget_decision",
    "key_of",
]

DECISION_TABLE = "dataflow_lab_2pc_decisions"
GID_PREFIX = "dataflow_lab"
_KEY_SQL = "SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' || current_database()"
LOCK_SQL = "hashtextextended($1, 0)"
_DECISION_KEY = (DECISION_TABLE, "2pc")  # its readiness, kept with the database's tables

IN_FLIGHT: set[str] = set()  # this process's two-phase commits between PREPARE and COMMIT PREPARED


async def key_of(conn: Connection) -> str:
    ident = (await conn.fetch(_KEY_SQL))[0][0]
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


async def ensure_decision_table(db: DataFlow, conn: Connection) -> None:
    if db.database.is_ready(_DECISION_KEY):
        return
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {DECISION_TABLE} (gid text PRIMARY KEY, decided_at "
        "timestamptz NOT NULL DEFAULT now(), outcome text NOT NULL DEFAULT 'commit', participants text[])"
    )
    for column in ("outcome text NOT NULL DEFAULT 'commit'", "participants text[]"):  # older tables
        await conn.execute(f"ALTER TABLE {DECISION_TABLE} ADD COLUMN IF NOT EXISTS {column}")
    db.database.mark_ready(_DECISION_KEY)


async def forget_decision(db: DataFlow, conn: Connection | None, gid: str) -> None:
    """Every half committed: the decision row is not needed any more (a failure here is harmless)."""
    dialect = await db.database.open()
    own = conn is None
    try:
        if conn is None:
            conn = await dialect.acquire()
        await conn.execute(f"DELETE FROM {DECISION_TABLE} WHERE gid = $1", [gid])
    except Exception:  # recovery forgets it later, once it sees every participant resolved
        pass
    finally:
        if own and conn is not None:
            await dialect.release(conn)
