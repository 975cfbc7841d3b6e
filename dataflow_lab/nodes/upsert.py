"""Upsert: update the row matching ``where``, or create it.

On a soft_delete model a matching row that was deleted is revived (``deleted_at``
cleared, ``update`` applied, ``created`` False), because its unique key still
holds the place. On a multi_tenant model, ``where`` only ever matches the
tenant's own rows, and a conflict with another tenant's row inserts nothing and
raises instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from .. import audit, filters
from ..errors import ValidationError
from ..model import ModelSchema
from .base import Param, RunContext
from .model_node import ModelNode, check_conflict_on, insert_or_nothing, insert_returning, read_by_id
from .undo import RowUndo, rows_before

__all__ = ["Upsert"]


class Upsert(ModelNode):
    op_name = "Upsert"
    outputs = ("created", "record")
    writes = True
    description = "Update the row matching `where`, or create it; returns {'created': bool, 'record': row}."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param(
                "where",
                dict,
                required=True,
                description="field -> value that identifies the row",
                check=cls._fields_checker("where", allow_id=True),
            ),
            Param(
                "create",
                dict,
                default={},
                description="extra fields when creating (a caller-supplied id goes here)",
                check=cls._fields_checker("create", supplied_id=True),
            ),
            Param(
                "update",
                dict,
                default={},
                description="fields to change when the row exists",
                check=cls._fields_checker("update"),
            ),
            Param(
                "conflict_on",
                (list, type(None)),
                default=None,
                description="unique fields (primary key or unique constraint) to resolve conflicts on",
                check=lambda v: check_conflict_on(model, v, what="conflict_on"),
            ),
        )

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        if "where" in params and not params["where"]:
            raise ValidationError(f"{cls.where(node_id)}: 'where' must name at least one field.")

    def statements(self) -> list[Any]:
        """Find the row; then update it (when found) or insert it (when not)."""
        mt, p = self.mt, self.params
        row = mt.new_row({**p["where"], **p["create"], **self.stamps()}, now=self.now())
        conflict_on = self._conflict_on()
        insert = mt.dialect.insert(mt.table).values(mt.db_values(row))
        if conflict_on is not None:
            insert = insert.on_conflict_do_nothing(index_elements=conflict_on)
        statements = [self._find_statement(p["where"]), insert.returning(*mt.table.c)]
        if p["update"]:
            found = "<the found id>"
            statements.append(
                self._update_statement(found, p["update"], check_version=False, include_deleted=True)
            )
        return statements

    def _conflict_on(self) -> list[str] | None:
        where = self.params["where"]
        names = self.params["conflict_on"] or (sorted(where) if self.model.is_unique(where) else None)
        return None if names is None else self.conflict_target(names)

    def _find_statement(self, where: dict[str, Any]) -> Any:
        """The tenant's row matching ``where``, deleted or not (a deleted one is revived)."""
        t = self.mt.table
        condition = filters.to_sql(self.mt, {k: {"$eq": v} for k, v in where.items()})
        found = [t.c.id, t.c.deleted_at] if self.model.soft_delete else [t.c.id]
        stmt = sa.select(*found).where(condition).order_by(t.c.id).limit(1)
        return self.guarded(stmt, include_deleted=True)

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, p, now = self.mt, self.params, self.now()
        where = p["where"]
        conflict_on = self._conflict_on()
        conn = await ctx.connection(self.dataflow)
        for _attempt in range(2):
            found = await self._find(conn, where)
            if found is not None:
                found, deleted = found
                audited = self.model.audit_log and (self.params["update"] or deleted)
                before = await audit.row_before(self, ctx, found) if audited else None
                record = await self._update(conn, found, now, revive=deleted)
                if before is not None:
                    await audit.record(self, ctx, [(before, record)])
                return {"created": False, "record": record}
            row = mt.new_row({**where, **p["create"], **self.stamps()}, now=now)
            missing = [f.name for f in self.model.user_fields if f.required and f.name not in row]
            if missing:
                raise ValidationError(
                    f"{self.where(self.node_id)}: no {self.model.name} matches {where}, and creating one "
                    f"needs field(s) {', '.join(missing)}.",
                    hint="put the values a new row needs in 'create'.",
                )
            columns = tuple(row)
            if conflict_on is None:
                sql, names = mt.template(("insert", columns), lambda c=columns: insert_returning(mt, c))
            else:
                sql, names = mt.template(
                    ("insert_or_nothing", columns, tuple(conflict_on)),
                    lambda c=columns: insert_or_nothing(mt, c, conflict_on),
                )
            inserted = mt.rows(await conn.fetch(sql, [mt.to_db(n, row[n]) for n in names]))
            if inserted:
                if self.model.audit_log:
                    await audit.record(self, ctx, [(None, inserted[0])])
                return {"created": True, "record": inserted[0]}
        other_tenant = " (it may belong to another tenant)" if self.model.multi_tenant else ""
        raise ValidationError(
            f"{self.where(self.node_id)}: the row conflicts on {conflict_on} but does not "
            f"match where={where}{other_tenant}.",
            hint="make 'where' name the conflict_on fields.",
        )

    async def _find(self, conn: Any, where: dict[str, Any]) -> tuple[Any, bool] | None:
        found = await conn.fetch(*self.mt.dialect.compile(self._find_statement(where)))
        if not found:
            return None
        return self.mt.ids_from_db([found[0][0]])[0], len(found[0]) > 1 and found[0][1] is not None

    async def _update(self, conn: Any, row_id: Any, now: dt.datetime, *, revive: bool) -> dict[str, Any]:
        mt = self.mt
        if not self.params["update"] and not revive:
            return mt.rows(await conn.fetch(*read_by_id(self, row_id)))[0]
        values = mt.touched(self.params["update"], now)  # a reflected table may have no updated_at
        if revive:
            values["deleted_at"] = None
        values = mt.db_values(values)
        columns = tuple(values)
        sql, names = mt.template(
            ("upsert_update", columns),
            lambda: self.update_one(columns, check_version=False, include_deleted=True),
        )
        return mt.rows(await conn.fetch(sql, self.bind(names, {**values, "_id": row_id})))[0]

    # -- compensation (nodes/undo.py) -------------------------------------------------
    async def before_image(self, conn: Any) -> list[dict[str, Any]]:
        return await rows_before(self, conn, {k: {"$eq": v} for k, v in self.params["where"].items()})

    async def undo(self, conn: Any, before: list[dict[str, Any]], result: dict[str, Any]) -> RowUndo:
        """Delete the row it created, or write back the row it updated (or revived)."""
        created = [result["record"]["id"]] if result["created"] else []
        return RowUndo.of(self, created=created, before=before)
