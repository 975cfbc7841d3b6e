"""MySQL's and MariaDB's two-phase commit: XA START/END/PREPARE/COMMIT, and XA RECOVER.

How XA differs from PostgreSQL's prepared transactions, and what is done about it:

- The branch is named at XA START, so a two-phase run's MySQL transaction begins as an XA
  branch (``begin``); one that ends up alone in its run commits with ``XA COMMIT ... ONE PHASE``.
- An xid is a gtrid and a bqual of 64 bytes each: the gtrid is the commit's base gid, the bqual
  ``<n>@<unix time of XA START>@<this database's key>``. XA RECOVER lists the branches of the
  whole server and says nothing of their age or database: the bqual says both (the age counts
  from XA START, at least the time since PREPARE).
- Between XA END and XA PREPARE the session may send nothing else: ``prepare`` sends them back
  to back. A prepared branch stays bound to its session until XA COMMIT/ROLLBACK or the
  session's end (MariaDB 10.5+, MySQL 5.7+ keep it then, for XA RECOVER): the committing
  process finishes it on that same connection; a connection that gives up on its branch is
  closed, never pooled, so the server hands the branch to recovery. Another session's
  XA COMMIT of a branch still bound is refused (1397): ``finish`` waits briefly for a closing
  session, then leaves the branch in doubt.
- Savepoints work inside an XA branch (nested scopes keep theirs).
- XA RECOVER needs the XA_RECOVER_ADMIN privilege on MySQL 8; MariaDB lets any user run it.
  ``two_phase_enabled`` asks it, and the server's version (older servers roll a prepared branch
  back at disconnect), so 2PC runs only where recovery can work.
- The liveness lock is GET_LOCK on a hash of the base (named locks end with their session);
  the decision table is InnoDB, its participants a JSON list.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from typing import TYPE_CHECKING, Any

from .mysql_connection import errno, literal
from .two_phase_sql import DECISION_TABLE, TwoPhaseSQL

if TYPE_CHECKING:  # pragma: no cover
    from .connection import Connection
    from .mysql_connection import MySQLConnection

__all__ = ["Branch", "MySQLTwoPhase", "recover_allowed"]

_PREFIX = "dataflow_lab:"
_UNKNOWN_XID = 1397  # XAER_NOTA: no such branch, or one still bound to another session
_NOT_IN_THAT_STATE = 1399  # XAER_RMFAIL: e.g. XA END of a branch already ended
# XA END of a branch the server has marked rollback-only (XA_RBROLLBACK, XA_RBTIMEOUT, XA_RBDEADLOCK):
# it is ended; XA ROLLBACK follows
_ENDED = (_NOT_IN_THAT_STATE, 1402, 1613, 1614)
_DUPLICATE_KEY = 1062
_NO_PRIVILEGE = (1227, 1044, 1045, 1142)
_BOUND_WAIT = 2.0  # seconds a closing session may take to hand its branch to recovery


def xid(gid: str) -> str:
    """'<base>:<bqual>' -> the SQL xid 'base','bqual'."""
    gtrid, _, bqual = gid.rpartition(":")
    return f"{literal(gtrid)},{literal(bqual)}"


class Branch:
    """The XA branch a connection's transaction is (``MySQLConnection.xa``)."""

    __slots__ = ("gid", "prepared")

    def __init__(self, gid: str):
        self.gid, self.prepared = gid, False

    @property
    def start_sql(self) -> str:
        return f"XA START {xid(self.gid)}"

    async def commit_one_phase(self, conn: MySQLConnection) -> None:
        """The run's only branch: END and COMMIT ONE PHASE (no PREPARE, nothing left in doubt)."""
        try:
            await conn.execute(f"XA END {xid(self.gid)}")
            await conn.execute(f"XA COMMIT {xid(self.gid)} ONE PHASE")
        except BaseException:
            conn._broken = True  # its XA state is unknown now: the pool drops it
            raise
        conn.xa = None

    async def rollback(self, conn: MySQLConnection) -> None:
        try:
            await _end(conn, self.gid)
            await conn.execute(f"XA ROLLBACK {xid(self.gid)}")
        except BaseException:
            conn._broken = True  # its XA state is unknown now: the pool drops it
            raise
        conn.xa = None

    async def prepare(self, conn: MySQLConnection) -> None:
        await conn.execute(f"XA END {xid(self.gid)}")  # nothing else may run between END and PREPARE
        await conn.execute(f"XA PREPARE {xid(self.gid)}")
        self.prepared = True


async def _end(conn: Connection, gid: str) -> None:
    """XA END, where the branch is still active (after a failed PREPARE it may be idle already)."""
    try:
        await conn.execute(f"XA END {xid(gid)}")
    except Exception as exc:
        if errno(exc) not in _ENDED:
            raise


def _own(conn: Connection, gid: str) -> Branch | None:
    branch = getattr(conn, "xa", None)
    return branch if isinstance(branch, Branch) and branch.gid == gid else None


async def _recover(conn: Connection) -> list[str]:
    """XA RECOVER: every prepared branch on the server, as '<gtrid>:<bqual>' of our prefix."""
    gids = []
    for _format, gtrid_length, bqual_length, data in await conn.fetch("XA RECOVER"):
        raw = data if isinstance(data, bytes) else str(data).encode()
        gtrid = raw[: int(gtrid_length)].decode(errors="replace")
        bqual = raw[int(gtrid_length) : int(gtrid_length) + int(bqual_length)].decode(errors="replace")
        if gtrid.startswith(_PREFIX):
            gids.append(f"{gtrid}:{bqual}")
    return gids


def _branch_of(gid: str) -> tuple[float, str] | None:
    """(XA START's unix time, the database's key) from a gid's bqual; None if not ours."""
    parts = gid.rpartition(":")[2].split("@")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return float(parts[1]), parts[2]


def _keeps_prepared_branches(server: str) -> bool:
    """Whether a prepared branch outlives its session on this server version (MariaDB 10.5+,
    MySQL 5.7.7+; older ones roll it back at disconnect, so a crash would break atomicity)."""
    version = server.removeprefix("5.5.5-")  # MariaDB's handshake prefix before 11.0
    numbers = [int(n) for n in re.findall(r"\d+", version.split("-", 1)[0])[:3]]
    return tuple(numbers) >= ((10, 5) if "MariaDB" in server else (5, 7, 7))


async def recover_allowed(conn: Connection) -> bool:
    """Whether two-phase commit can be recovered here: a server that keeps prepared branches
    past their session, and a user who may run XA RECOVER (MySQL 8: XA_RECOVER_ADMIN)."""
    if not _keeps_prepared_branches(str(conn.raw.get_server_info())):  # type: ignore[attr-defined]
        return False
    try:
        await conn.fetch("XA RECOVER")
    except Exception as exc:
        if errno(exc) in _NO_PRIVILEGE:
            return False
        raise
    return True


def _lock_name(base: str) -> str:
    return "dataflow_lab_2pc:" + hashlib.sha1(base.encode()).hexdigest()[:40]  # names: 64 characters


class MySQLTwoPhase(TwoPhaseSQL):
    named_at_begin = True
    bound_to_session = True

    async def identity(self, conn: Connection) -> str:
        """MySQL's server_uuid, else (MariaDB has none) its hostname, port and data directory."""
        server = str(conn.raw.get_server_info())  # type: ignore[attr-defined]  # asyncmy's version string
        which = "CONCAT_WS(':', @@hostname, @@port, @@datadir)" if "MariaDB" in server else "@@server_uuid"
        found, database = (await conn.fetch(f"SELECT {which}, DATABASE()"))[0]
        return f"{found}/{database}"

    async def begin(self, conn: Connection, gid: str, isolation: str | None, key: str) -> str:
        base, _, n = gid.rpartition(":")
        branch = Branch(f"{base}:{n}@{int(time.time())}@{key}")
        conn.xa = branch  # type: ignore[attr-defined]  # a MySQLConnection: its begin sends XA START
        try:
            await conn.begin(isolation)
        except BaseException:
            conn.xa = None  # type: ignore[attr-defined]
            raise
        return branch.gid

    async def prepare(self, conn: Connection, gid: str) -> None:
        await conn.prepare(gid)  # type: ignore[attr-defined]  # MySQLConnection.prepare

    async def finish(self, conn: Connection, gid: str, *, commit: bool) -> bool:
        own = _own(conn, gid)
        if own is not None:  # the session that prepared it (or began it: a rollback ends it first)
            if not commit and not own.prepared:
                await _end(conn, gid)
            try:
                await conn.execute(f"XA {'COMMIT' if commit else 'ROLLBACK'} {xid(gid)}")
            except Exception as exc:
                if errno(exc) == _UNKNOWN_XID:
                    conn.xa = None  # type: ignore[attr-defined]  # the session holds no such branch
                raise
            conn.xa = None  # type: ignore[attr-defined]
            return True
        deadline = time.monotonic() + _BOUND_WAIT
        while True:
            try:
                await conn.execute(f"XA {'COMMIT' if commit else 'ROLLBACK'} {xid(gid)}")
                return True
            except Exception as exc:
                if errno(exc) != _UNKNOWN_XID or gid not in await _recover(conn):
                    raise
            if time.monotonic() >= deadline:  # still bound to a live session: leave it in doubt
                return False
            await asyncio.sleep(0.05)  # a session closing now hands its branch over in a moment

    def let_go(self, conn: Connection) -> None:
        conn._broken = True  # type: ignore[attr-defined]  # a MySQLConnection: never pooled again
        try:
            conn.raw.close()  # type: ignore[attr-defined]
        except Exception:  # closed already
            pass

    async def prepared(self, conn: Connection, key: str, min_age: float) -> list[str]:
        now = time.time()
        found = []
        for gid in await _recover(conn):
            branch = _branch_of(gid)
            if branch is not None and branch[1] == key and now - branch[0] >= min_age:
                found.append(gid)
        return found

    async def is_prepared(self, conn: Connection, gid: str) -> bool:
        return gid in await _recover(conn)

    async def any_prepared(self, conn: Connection, key: str, base: str) -> bool:
        return any(
            g.rpartition(":")[0] == base and (_branch_of(g) or (0, ""))[1] == key
            for g in await _recover(conn)
        )

    async def lock(self, conn: Connection, base: str) -> None:
        await conn.fetch("SELECT GET_LOCK(%s, 60)", [_lock_name(base)])  # raises unless held

    async def try_lock(self, conn: Connection, base: str) -> bool:
        return (await conn.fetch("SELECT COALESCE(GET_LOCK(%s, 0), 0)", [_lock_name(base)]))[0][0] == 1

    async def unlock(self, conn: Connection, base: str) -> None:
        await conn.fetch("SELECT RELEASE_LOCK(%s)", [_lock_name(base)])

    async def create_decisions(self, conn: Connection) -> None:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {DECISION_TABLE} (gid VARCHAR(128) NOT NULL PRIMARY KEY, "
            "decided_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
            "outcome VARCHAR(16) NOT NULL DEFAULT 'commit', participants LONGTEXT NULL) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )

    async def has_decisions(self, conn: Connection) -> bool:
        rows = await conn.fetch(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            [DECISION_TABLE],
        )
        return bool(rows[0][0])

    async def record_commit(self, conn: Connection, base: str, participants: list[str]) -> bool:
        return await _insert(conn, base, "commit", json.dumps(participants))

    async def record_abort(self, conn: Connection, base: str) -> str | None:
        await _insert(conn, base, "abort", None)
        rows = await conn.fetch(f"SELECT outcome FROM {DECISION_TABLE} WHERE gid = %s", [base])
        return rows[0][0] if rows else None

    async def decisions(self, conn: Connection) -> dict[str, tuple[str, Any]]:
        rows = await conn.fetch(f"SELECT gid, outcome, participants FROM {DECISION_TABLE}")
        return {r[0]: (r[1], json.loads(r[2]) if r[2] is not None else None) for r in rows}

    async def forget(self, conn: Connection, base: str) -> None:
        await conn.execute(f"DELETE FROM {DECISION_TABLE} WHERE gid = %s", [base])


async def _insert(conn: Connection, base: str, outcome: str, participants: str | None) -> bool:
    """INSERT a decision (autocommitted); False when one for ``base`` exists already."""
    try:
        await conn.execute(
            f"INSERT INTO {DECISION_TABLE} (gid, outcome, participants) VALUES (%s, %s, %s)",
            [base, outcome, participants],
        )
    except Exception as exc:
        if errno(exc) == _DUPLICATE_KEY:
            return False
        raise
    return True
