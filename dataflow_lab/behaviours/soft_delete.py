"""``soft_delete``: a ``deleted_at`` column; Delete marks rows instead of removing them.

Reads, counts and filtered writes see only live rows unless they pass
``include_deleted=True``; Delete and BulkDelete take ``hard=True`` to remove rows for
good. A row written again (an upsert meeting a deleted row) is revived: its unique key
still holds the place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Mapping
from typing import Any

import sqlalchemy as sa

from ..nodes.base import Param
from .base import Behaviour

__all__ = ["SoftDelete"]

_FILTERING = ("read", "list", "count", "aggregate", "bulk_update")  # the nodes that take include_deleted
_DELETING = ("delete", "bulk_delete")  # the nodes that take hard


class SoftDelete(Behaviour):
    name = "soft_delete"
    refreshed = ("deleted_at",)  # written as NULL on every upserted row: a deleted one is revived
    managed = {"deleted_at": "use the model's Delete nodes"}

    def parameters(self, operation: str) -> tuple[Param, ...]:
        if operation in _FILTERING:
            return (
                Param(
                    "include_deleted",
                    bool,
                    default=False,
                    description="also rows marked deleted (soft_delete)",
                ),
            )
        if operation in _DELETING:
            return (
                Param(
                    "hard", bool, default=False, description="remove rows for good instead of marking them"
                ),
            )
        return ()

    def shape(self, node: Any) -> Hashable:
        return bool(node.params.get("include_deleted")), bool(node.params.get("hard"))

    def guards(self, node: Any, table: sa.Table, *, include_deleted: bool | None) -> list[Any]:
        """Live rows only, unless the node says otherwise (include_deleted=True; hard=True deletes any)."""
        if include_deleted is None:
            include_deleted = bool(node.params.get("include_deleted") or node.params.get("hard"))
        return [] if include_deleted else [table.c.deleted_at.is_(None)]

    def insert_values(self, node: Any, now: dt.datetime) -> Mapping[str, Any]:
        return {"deleted_at": None}

    def delete_values(self, node: Any, now: dt.datetime) -> Mapping[str, Any] | None:
        return None if node.params.get("hard") else {"deleted_at": now}

    def match_columns(self, table: sa.Table) -> list[Any]:
        return [table.c.deleted_at]

    def revive_values(self, found: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"deleted_at": None} if found.get("deleted_at") is not None else {}
