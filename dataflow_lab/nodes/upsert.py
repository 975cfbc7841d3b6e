"""Upsert: update the row matching ``where``, or create it.

``where`` matches within the node's guards, whatever a guard would hide of the row's
state (a deleted row is found). The model's behaviours may then have to write the row
even without an ``update`` (``revive_values``: a deleted row is revived, ``created``
False, since its unique key still holds the place). A conflict with a row the guards
leave out (another tenant's) inserts nothing and raises instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from .. import filters
from ..errors import ValidationError
from ..model import ModelSchema
from .base import Param, RunContext
from .model_node import ModelNode, check_conflict_on, insert_or_nothing, insert_returning, read_by_id
from .outputs import ROW
from .undo import RowUndo, rows_before

__all__ = ["Upsert"]


class Upsert(ModelNode):
    op_name = "Upsert"
    outputs = {"created": bool, "record": ROW}
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
        row = mt.new_row({**p["where"], **p["create"], **self.stamps()})
        conflict_on = self._conflict_on()
        insert = mt.dialect.insert(mt.table).values(mt.shown(row))
        if conflict_on is not None:
            insert = mt.dialect.insert_or_nothing(insert, conflict_on)
        statements = [self._find_statement(p["where"]), insert.returning(*mt.table.c)]
        if p["update"]:
            statements.append(self._update_statement("<the found id>", p["update"], include_deleted=True))
        return statements

    def _key(self) -> list[str] | None:
        """The unique fields ``where`` is matched on (None: no unique key)."""
        where = self.params["where"]
        return self.params["conflict_on"] or (sorted(where) if self.model.is_unique(where) else None)

    def _conflict_on(self) -> list[str] | None:
        names = self._key()
        return None if names is None else self.conflict_target(names)

    def _null_key(self) -> bool:
        """A conflict_on key holding NULL matches no row: UNIQUE treats NULLs as distinct, so it inserts.

        That is what the database does, and what BulkUpsert does with the same rows.
        """
        names, where = self._key(), self.params["where"]
        return names is not None and any(n in where and where[n] is None for n in names)

    def _find_statement(self, where: dict[str, Any]) -> Any:
        """The id of the guarded row matching ``where``, in any state, and what the behaviours read of it."""
        t = self.mt.table
        condition = filters.to_sql(self.mt, {k: {"$eq": v} for k, v in where.items()})
        stmt = sa.select(t.c.id, *self.behaviours.match_columns(t)).where(condition).order_by(t.c.id).limit(1)
        return self.guarded(stmt, include_deleted=True)

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        now, conn = self.now(), await ctx.connection(self.dataflow)
        for _attempt in range(2):  # a row inserted between our find and our insert: find it again
            found = None if self._null_key() else await self._find(conn, self.params["where"])
            if found is not None:
                return {"created": False, "record": await self._update_found(ctx, conn, *found, now)}
            inserted = await self._insert(conn, now)
            if inserted is not None:
                if self.behaviours.watched:
                    await self.behaviours.written(self, ctx, [(None, inserted)])
                return {"created": True, "record": inserted}
        raise ValidationError(
            f"{self.where(self.node_id)}: the row conflicts on {self._conflict_on()} but does not "
            f"match where={self.params['where']}{self.behaviours.why_conflict}.",
            hint="make 'where' name the conflict_on fields.",
        )

    async def _insert(self, conn: Any, now: dt.datetime) -> dict[str, Any] | None:
        """Insert the row (None: a row with its conflict_on key exists, so nothing was inserted)."""
        mt, p, conflict_on = self.mt, self.params, self._conflict_on()
        row = mt.new_row({**p["where"], **p["create"], **self.stamps(now)})
        missing = [f.name for f in self.model.user_fields if f.required and f.name not in row]
        if missing:
            raise ValidationError(
                f"{self.where(self.node_id)}: no {self.model.name} matches {p['where']}, and creating one "
                f"needs field(s) {', '.join(missing)}.",
                hint="put the values a new row needs in 'create'.",
            )
        values = mt.sealed(row, row.get("id"))  # encrypted fields bind the id (made before the INSERT)
        columns = tuple(values)
        if conflict_on is None:
            sql, names = mt.template(("insert", columns), lambda c=columns: insert_returning(mt, c))
        else:
            sql, names = mt.template(
                ("insert_or_nothing", columns, tuple(conflict_on)),
                lambda c=columns: insert_or_nothing(mt, c, conflict_on),
            )
        inserted = mt.rows(await conn.fetch(sql, [values[n] for n in names]))
        return inserted[0] if inserted else None

    async def _find(self, conn: Any, where: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
        """(the found id, the behaviours' columns of it by name), or None."""
        stmt = self._find_statement(where)
        found = await conn.fetch(*self.mt.dialect.compile(stmt))
        if not found:
            return None
        names = [c.name for c in stmt.selected_columns][1:]
        return self.mt.ids_from_db([found[0][0]])[0], dict(zip(names, found[0][1:], strict=True))

    async def _update_found(
        self, ctx: RunContext, conn: Any, row_id: Any, state: dict[str, Any], now: dt.datetime
    ) -> dict[str, Any]:
        """Apply ``update`` (and what the behaviours must set on the found row) and return the row."""
        revive = self.behaviours.revive_values(state)
        writes = bool(self.params["update"] or revive)
        before = await self.row_before(ctx, row_id) if writes and self.behaviours.watched else None
        record = await self._update(conn, row_id, now, revive)
        if before is not None:
            await self.behaviours.written(self, ctx, [(before, record)])
        return record

    async def _update(
        self, conn: Any, row_id: Any, now: dt.datetime, revive: dict[str, Any]
    ) -> dict[str, Any]:
        mt = self.mt
        if not self.params["update"] and not revive:
            return mt.rows(await conn.fetch(*read_by_id(self, row_id)))[0]
        touched = self.behaviours.touch_values(self, now)  # a reflected table may have no updated_at
        values = mt.sealed({**self.params["update"], **touched, **revive}, row_id)  # bound to the found row
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
