"""Encrypted fields (encryption.py): the nodes that cannot seal them yet refuse the model.

Sealing itself is the table's (``ModelTable.sealed``, ``seal_rows``): Create, Update by id and
BulkCreate (its COPY and Arrow paths included) seal each value to its row's id, and every read
opens it. An Upsert or BulkUpsert may meet an existing row whose id it cannot know before it
writes, so its ciphertexts could not bind that row: this behaviour refuses those nodes before
their run opens a transaction. (A write that still reaches an encrypted field elsewhere, a
BulkUpdate's ``fields`` say, is refused by the field's writer: plaintext is never stored.)
"""

from __future__ import annotations

from typing import Any

from ..errors import EncryptionError
from .base import Behaviour

__all__ = ["Encryption"]

_UNSEALED = ("upsert", "bulk_upsert")  # the operations that do not encrypt yet


class Encryption(Behaviour):
    name = "encrypted"

    def __init__(self, fields: frozenset[str], searchable: frozenset[str]):
        self.encrypted = fields
        self.managed = {
            f"{n}_blind": f"dataflow_lab computes it from '{n}' (its blind index)" for n in searchable
        }

    def before_run(self, node_class: Any, where: str) -> None:
        if node_class.operation in _UNSEALED:
            raise EncryptionError(
                f"{where}: {node_class.model.name} has encrypted fields ({', '.join(sorted(self.encrypted))}), "
                "and Upsert and BulkUpsert do not encrypt yet: a row they meet keeps its id, which its "
                "new ciphertexts must bind before the write.",
                hint="read the row and then Create or Update it by id, or load new rows with BulkCreate.",
            )
