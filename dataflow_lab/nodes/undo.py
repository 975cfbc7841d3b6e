"""Undoing model rows: the generated nodes' answer to ``Node.undo``.

A write node answers two questions (``nodes/base.py``): its ``before_image``, read
on its connection just before it runs, and its ``undo``, asked right after it ran
(in the same transaction), which returns an ``Undo``: how to reverse what it did.
The saga (``saga.py``) applies the undos of committed nodes newest first when a later
node fails; a nested ``db.transaction()`` on a database without SAVEPOINT applies
those of its own nodes when it fails (``transactions.py``).

``RowUndo`` is the generated nodes' answer, and the only kind the saga log
(``saga_log.py``) can store: delete the rows the node created, write back the
rows it changed. Any node class may return it, or an ``Undo`` of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .base import Undo
from .model_node import select_rows

if TYPE_CHECKING:  # pragma: no cover
    from ..interfaces import DataFlow
    from .model_node import ModelNode

__all__ = ["RowUndo", "rows_before"]

_DELETE_CHUNK = 500  # ids per DELETE ... WHERE id IN (...): well under every dialect's bind limit


class RowUndo(Undo):
    """Delete the rows a node created; write back the rows it changed, as they were before it ran.

    It names its table by DataFlow and model, so it pickles (Dask runs compensations on
    a worker) and the saga log can store it as data. (A plain class, not a dataclass: one
    costs about 0.5 ms at import, on every cold start's path.)
    """

    def __init__(
        self,
        dataflow: DataFlow,
        model: str,
        created: list[Any] | None = None,
        before: list[dict[str, Any]] | None = None,
    ):
        self.dataflow = dataflow
        self.model = model
        self.created: list[Any] = [] if created is None else created  # ids of the rows the node inserted
        self.before: list[dict[str, Any]] = [] if before is None else before  # whole rows, before the change

    def __repr__(self) -> str:
        return f"RowUndo(dataflow={self.dataflow!r}, model={self.model!r}, created={self.created!r}, before={self.before!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it was

    @classmethod
    def of(
        cls, node: ModelNode, *, created: Sequence[Any] = (), before: Sequence[dict[str, Any]] = ()
    ) -> RowUndo:
        """The undo of a generated node: its own DataFlow and model."""
        assert node.dataflow is not None and node.model is not None
        return cls(node.dataflow, node.model.name, list(created), list(before))

    @property
    def empty(self) -> bool:
        return not (self.created or self.before)

    async def apply(self, conn: Any) -> None:
        mt = self.dataflow.table(self.model)
        for start in range(0, len(self.created), _DELETE_CHUNK):
            ids = self.created[start : start + _DELETE_CHUNK]
            await conn.execute(*mt.dialect.compile(sa.delete(mt.table).where(mt.table.c.id.in_(ids))))
        if self.before:
            sealed = [mt.sealed(row, row["id"]) for row in self.before]  # encrypted fields: to their row
            columns = tuple(sealed[0])
            rows = [tuple(values[c] for c in columns) for values in sealed]
            update = [c for c in columns if c != "id"]
            await mt.dialect.bulk_upsert(conn, mt.table, columns, rows, ["id"], update)


async def rows_before(node: ModelNode, conn: Any, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole rows matching the filter ``doc`` that ``node`` may change: its tenant's, deleted or not."""
    mt = node.mt
    stmt = select_rows(mt, doc, (), None, 0, node.guards(include_deleted=True))
    return mt.rows(await conn.fetch(*mt.dialect.compile(stmt)))
