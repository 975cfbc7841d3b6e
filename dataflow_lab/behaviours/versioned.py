"""``versioned``: a ``version`` column for optimistic locking.

A new row starts at version 1 and every Update adds one. Update must name the
version it read, and changes the row only while it is still at that version; Delete
may name one. A write that changed nothing because the row moved on raises
ConcurrencyError (the run's transaction rolls back).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Mapping
from typing import Any

import sqlalchemy as sa

from ..errors import ConcurrencyError, ValidationError
from ..nodes.base import Param
from ..types import LOGICAL_TYPES
from .base import Behaviour

__all__ = ["Versioned"]


class Versioned(Behaviour):
    name = "versioned"
    refreshed = ("version",)  # the column is a counter: an upsert counts it up (dialects)
    managed = {"version": "pass the version you read as the node's 'version' parameter"}

    def parameters(self, operation: str) -> tuple[Param, ...]:
        """Update must name the version it read; Delete may (then a row that moved on is not deleted)."""
        if operation not in ("update", "delete"):
            return ()
        return (
            Param(
                "version",
                int,
                required=operation == "update",
                description="the version you read (versioned model); if the row moved on, ConcurrencyError",
                check=_non_negative,
            ),
        )

    def shape(self, node: Any) -> Hashable:
        return node.params.get("version") is not None

    def insert_values(self, node: Any, now: dt.datetime) -> Mapping[str, Any]:
        return {"version": 1}

    def update_set(self, table: sa.Table) -> Mapping[str, Any]:
        return {"version": table.c.version + sa.literal_column("1")}

    def binds(self, node: Any) -> Mapping[str, Any]:
        return {"_version": node.params.get("version")}

    def update_where(self, node: Any, table: sa.Table) -> list[Any]:
        version = node.params.get("version")
        if version is None:  # an Upsert's update, or a Delete that names none
            return []
        return [table.c.version == sa.bindparam("_version", version)]

    async def unchanged(
        self, node: Any, conn: Any, row_id: Any, *, action: str, include_deleted: bool
    ) -> None:
        """Raise ConcurrencyError if the row is there, at another version than the one given."""
        if node.params.get("version") is None:
            return
        mt = node.mt
        select = sa.select(mt.table.c.version).where(mt.table.c.id == mt.to_db("id", row_id))
        sql, params = mt.dialect.compile(node.guarded(select, include_deleted=include_deleted))
        found = await conn.fetch(sql, params)
        if not found:
            return
        expected, actual = node.params["version"], found[0][0]
        raise ConcurrencyError(
            f"{node.where(node.node_id)}: {node.model.name} with id {row_id!r} is at version {actual}, "
            f"not the expected {expected}; someone else changed it. Nothing was {action}.",
            model=node.model.name,
            id=row_id,
            expected=expected,
            actual=actual,
            hint="read the row again, reapply your change to what it holds now, and update with its version.",
        )


def _non_negative(value: Any) -> int:
    try:
        number = LOGICAL_TYPES[int].check(value)
    except TypeError:
        number = -1
    if number < 0:
        raise ValidationError(f"parameter 'version' must be a non-negative int, got {value!r}.")
    return number
