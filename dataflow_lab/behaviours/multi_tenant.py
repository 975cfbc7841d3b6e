"""``multi_tenant``: a ``tenant_id`` column, and every node works within one tenant's rows.

The tenant is the run's (``with db.tenant(...)``, ``runtime.execute(..., tenant=...)``,
tenancy.py); a node of the model run without one raises TenantRequiredError. Every
statement is guarded by ``tenant_id = :_tenant``, new rows are stamped with it, unique
keys hold within a tenant (tenant_id leads them), and an upsert never changes another
tenant's row: a conflict with one is an error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from .. import tenancy
from ..errors import ValidationError
from .base import Behaviour

__all__ = ["MultiTenant"]


class MultiTenant(Behaviour):
    name = "multi_tenant"
    why_conflict = " (it may belong to another tenant)"
    managed = {"tenant_id": "it is the tenant of `with db.tenant(...)`"}

    def tenant(self, node: Any) -> str:
        """The run's tenant; a missing one is refused (``sql()`` shows '<tenant>' instead)."""
        if node.previewing:
            return tenancy.current(node.dataflow) or "<tenant>"
        return tenancy.require(node.dataflow, node.model, node.where(node.node_id))

    def before_run(self, node_class: Any, where: str) -> None:
        """A run with no tenant is refused before it opens a transaction (TenantRequiredError)."""
        tenancy.require(node_class.dataflow, node_class.model, where)

    def binds(self, node: Any) -> Mapping[str, Any]:
        return {"_tenant": self.tenant(node)}

    def guards(self, node: Any, table: sa.Table, *, include_deleted: bool | None) -> list[Any]:
        return [table.c.tenant_id == sa.bindparam("_tenant", self.tenant(node))]

    def insert_values(self, node: Any, now: dt.datetime) -> Mapping[str, Any]:
        return {"tenant_id": self.tenant(node)}

    def conflict_target(self, names: list[str]) -> list[str]:
        """A unique group holds within a tenant: tenant_id leads it (the primary key stays alone)."""
        if names == ["id"]:
            return names
        return ["tenant_id", *(n for n in names if n != "tenant_id")]

    def upsert_guard(self, conflict_on: Sequence[str]) -> tuple[str, ...]:
        """On ids (unique across tenants), an upsert changes only the rows of the same tenant."""
        return ("tenant_id",) if list(conflict_on) == ["id"] else ()

    async def upserted(
        self,
        node: Any,
        conn: Any,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict_on: Sequence[str],
    ) -> None:
        """Ids that another tenant's rows hold after the guarded write (which left them unchanged): an error.

        Raised inside the run's transaction, so the batch leaves the database as it was
        (with on_error='skip', just those rows are skipped and reported).
        """
        if not self.upsert_guard(conflict_on):
            return
        mt, tenant = node.mt, self.tenant(node)
        t, at = mt.table, list(columns).index("id")
        ids = [row[at] for row in rows]
        step = max(1, mt.dialect.max_bind_params - 2)
        for start in range(0, len(ids), step):
            others = sa.or_(t.c.tenant_id != tenant, t.c.tenant_id.is_(None))
            stmt = sa.select(t.c.id).where(t.c.id.in_(ids[start : start + step]), others).limit(5)
            taken = [r[0] for r in await conn.fetch(*mt.dialect.compile(stmt))]
            if taken:
                raise ValidationError(
                    f"{node.where(node.node_id)}: id(s) {taken} belong to rows of another tenant; "
                    "nothing was written.",
                    hint="leave out 'id' to insert new rows, or use ids of your own tenant's rows.",
                )
