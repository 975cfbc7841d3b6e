"""Encrypted fields (encryption.py): every ciphertext binds its row's id, so every write knows it.

Sealing itself is the table's (``ModelTable.sealed``, ``seal_rows``): Create, Update by id and
BulkCreate (its COPY and Arrow paths included) seal each value to its row's id, and every read
opens it. An upsert may meet an existing row, whose id its new ciphertexts must bind: this
behaviour makes an upsert of an encrypted model go by id (``conflict_target``), after finding,
inside the run's transaction, the id of the row each input row's key meets (``sealing``): an
existing row's, or the one made for a new row (the same for every input row of one new key).
A concurrent writer that inserts the same key in between makes the INSERT fail on the unique
key (all or nothing), never an update of a row its ciphertexts do not bind.

A searchable field's blind index is refreshed whenever its field is written
(``companions``), and a searchable field may be an upsert's key: it is matched through its blind
index under every key of the ring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..model import BLIND_SUFFIX
from .base import Behaviour

if TYPE_CHECKING:  # pragma: no cover
    from ..rows import Chunk

__all__ = ["Encryption"]


class Encryption(Behaviour):
    name = "encrypted"

    def __init__(self, fields: frozenset[str], searchable: frozenset[str]):
        self.encrypted = fields
        self.managed = {
            f"{n}_blind": f"dataflow_lab computes it from '{n}' (its blind index)" for n in searchable
        }
        self.companions = {n + BLIND_SUFFIX: n for n in searchable}

    def conflict_target(self, names: list[str]) -> list[str]:
        """An upsert of an encrypted model conflicts on the id ``sealing`` found for each row."""
        return ["id"]

    def lookup_key(self, node: Any) -> list[str]:
        """The key an upsert's rows are matched on: its ``conflict_on`` as the behaviours before
        this one lead it (tenant_id first)."""
        names = list(node.params.get("conflict_on") or ["id"])
        for b in node.behaviours:
            if b is self:
                break
            names = b.conflict_target(names)
        return names

    async def sealing(self, node: Any, conn: Any, chunk: Chunk) -> Chunk:
        """A BulkUpsert's staged chunk, its rows given the ids of the rows their keys meet, sealed."""
        mt, columns, rows = node.mt, chunk.columns, chunk.rows
        keys = self.lookup_key(node)
        if keys == ["id"] and rows and getattr(node, "new_ids", None) is not None:  # its undo deletes them
            at_id = columns.index("id")
            found = await mt.ids_by_keys(conn, keys, [(r[at_id],) for r in rows])
            node.new_ids.extend(mt.ids_from_db([r[at_id] for r in rows if (r[at_id],) not in found]))
        if keys != ["id"] and rows:
            missing = [k for k in keys if k not in columns]
            if missing:
                raise ValidationError(
                    f"{node.where(node.node_id)}: rows lack conflict_on field(s) {missing}.",
                    hint="every row needs a value for each conflict_on field.",
                )
            at_id, index = columns.index("id"), [columns.index(k) for k in keys]
            row_keys = [tuple(r[i] for i in index) for r in rows]
            found = await mt.ids_by_keys(conn, keys, row_keys)
            for key, row in zip(row_keys, rows, strict=True):  # a new key: its last row's id
                if None not in key and key not in found:
                    found[key] = row[at_id]
            rows = [
                r if None in k else (*r[:at_id], found[k], *r[at_id + 1 :])
                for k, r in zip(row_keys, rows, strict=True)
            ]
        sealed_columns, sealed = mt.seal_rows(columns, rows)
        from ..rows import Chunk  # loaded by the bulk write calling (not with every model)

        return Chunk(sealed_columns, sealed, chunk.first_index, chunk.skipped)
