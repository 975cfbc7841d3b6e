"""PostgreSQL's two-phase commit: PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED, pg_prepared_xacts.

A prepared transaction leaves its session at once, so any connection can finish it.
The liveness lock is a session advisory lock on a hash of the commit's base gid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from .two_phase_sql import DECISION_TABLE, TwoPhaseSQL

if TYPE_CHECKING:  # pragma: no cover
    from .connection import Connection, TwoPhaseConnection

__all__ = ["PostgresTwoPhase"]

_LOCK = "hashtextextended($1, 0)"


class PostgresTwoPhase(TwoPhaseSQL):
    async def identity(self, conn: Connection) -> str:
        sql = "SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' || current_database()"
        return str((await conn.fetch(sql))[0][0])

    async def prepare(self, conn: Connection, gid: str) -> None:
        await cast("TwoPhaseConnection", conn).prepare(gid)

    async def finish(self, conn: Connection, gid: str, *, commit: bool) -> bool:
        await cast("TwoPhaseConnection", conn).finish_prepared(gid, commit=commit)
        return True

    async def prepared(self, conn: Connection, key: str, min_age: float) -> list[str]:
        rows = await conn.fetch(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE $1 "
            "AND prepared <= now() - make_interval(secs => $2)",
            ["dataflow_lab:%", float(min_age)],
        )
        return [r[0] for r in rows]

    async def is_prepared(self, conn: Connection, gid: str) -> bool:
        return bool(await conn.fetch("SELECT 1 FROM pg_prepared_xacts WHERE gid = $1", [gid]))

    async def any_prepared(self, conn: Connection, key: str, base: str) -> bool:
        return bool(await conn.fetch("SELECT 1 FROM pg_prepared_xacts WHERE gid LIKE $1", [base + ":%"]))

    async def lock(self, conn: Connection, base: str) -> None:
        await conn.fetch(f"SELECT pg_advisory_lock({_LOCK})", [base])

    async def try_lock(self, conn: Connection, base: str) -> bool:
        return bool((await conn.fetch(f"SELECT pg_try_advisory_lock({_LOCK})", [base]))[0][0])

    async def unlock(self, conn: Connection, base: str) -> None:
        await conn.fetch(f"SELECT pg_advisory_unlock({_LOCK})", [base])

    async def create_decisions(self, conn: Connection) -> None:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {DECISION_TABLE} (gid text PRIMARY KEY, decided_at "
            "timestamptz NOT NULL DEFAULT now(), outcome text NOT NULL DEFAULT 'commit', participants text[])"
        )
        for column in ("outcome text NOT NULL DEFAULT 'commit'", "participants text[]"):  # older tables
            await conn.execute(f"ALTER TABLE {DECISION_TABLE} ADD COLUMN IF NOT EXISTS {column}")

    async def has_decisions(self, conn: Connection) -> bool:
        return bool((await conn.fetch("SELECT to_regclass($1) IS NOT NULL", [DECISION_TABLE]))[0][0])

    async def record_commit(self, conn: Connection, base: str, participants: list[str]) -> bool:
        rows = await conn.fetch(
            f"INSERT INTO {DECISION_TABLE} (gid, outcome, participants) VALUES ($1, 'commit', $2) "
            "ON CONFLICT DO NOTHING RETURNING gid",
            [base, participants],
        )
        return bool(rows)

    async def record_abort(self, conn: Connection, base: str) -> str | None:
        await conn.execute(
            f"INSERT INTO {DECISION_TABLE} (gid, outcome) VALUES ($1, 'abort') ON CONFLICT DO NOTHING", [base]
        )
        rows = await conn.fetch(f"SELECT outcome FROM {DECISION_TABLE} WHERE gid = $1", [base])
        return rows[0][0] if rows else None

    async def decisions(self, conn: Connection) -> dict[str, tuple[str, Any]]:
        rows = await conn.fetch(f"SELECT gid, outcome, participants FROM {DECISION_TABLE}")
        return {r[0]: (r[1], r[2]) for r in rows}

    async def forget(self, conn: Connection, base: str) -> None:
        await conn.execute(f"DELETE FROM {DECISION_TABLE} WHERE gid = $1", [base])
