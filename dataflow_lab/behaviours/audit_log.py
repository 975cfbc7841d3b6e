"""``audit_log``: every write of the model appends one entry per row to the audit log (audit.py).

It asks the nodes for the rows before and after each write (``wants_images``); they
hand them over in the write's own transaction, so a rolled-back write leaves no entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Behaviour, Change

__all__ = ["AuditLog"]


class AuditLog(Behaviour):
    name = "audit_log"
    wants_images = True

    async def prepare(self, dataflow: Any) -> None:
        """Its writes log to the audit table, in their own transaction: made before the model's."""
        from .. import audit  # loaded by the first model with audit_log (not with the package)

        await audit.ensure_table(dataflow)

    async def written(self, node: Any, ctx: Any, changes: Sequence[Change]) -> None:
        from .. import audit

        await audit.record(node, ctx, changes)
