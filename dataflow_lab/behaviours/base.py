"""The behaviour interface: what a model option does to the statements the nodes run.

A model option (``__dataflow__ = {"soft_delete": True}``, the managed timestamps, a
behaviour object of your own in ``__dataflow__ = {"behaviours": [...]}``) is a
``Behaviour``. The behaviours of a model are composed once, when ``@db.model``
generates its nodes (``compose``), in a fixed order: timestamps, multi_tenant,
soft_delete, versioned, your own, audit_log. A node builds its statement once, asks
its model's behaviours (``node.behaviours``, a ``Behaviours``) what to add, and runs
it; no node knows any option by name.

Every hook has a no-op default, so a behaviour overrides only what it changes:

- ``fields``: managed columns it adds to the model (callers cannot write them); ``managed``:
  how a caller sets such a column instead, for the error that refuses it. ``counters``: columns
  an upsert counts up; ``key_scope``: columns that lead every unique key and index (a key holds
  within them). These three are read when the model is parsed, as the built-in options'
  declarations are (declarations.py): the table is built from them.
- ``before_run(node_class, where)``: before a run opens any transaction (access.py), in the
  caller's thread: refuse a run that cannot succeed (a multi_tenant node with no tenant set).
- ``prepare(dataflow)``: before the model's table is first used, make what the behaviour writes
  to besides it (the audit log's table).
- ``parameters(operation)``: node parameters it adds (``include_deleted``, ``version``).
- ``guards(node, table, include_deleted=)``: conditions every statement's WHERE takes.
- ``binds(node)``: values of the bind names its conditions use (``_tenant``, ``_version``).
- ``insert_values(node, now)``: values stamped on every new row.
- ``touch_values(node, now)``: values every write that changes a row sets (updated_at).
- ``update_set(table)``: SQL expressions an Update sets (``version = version + 1``).
- ``update_where(node, table)``: conditions an Update or Delete checks (the version read).
- ``delete_values(node, now)``: a dict turns Delete into an UPDATE setting it (soft delete).
- ``refreshed``: managed columns an upsert meeting an existing row writes again.
- ``conflict_target(names)``, ``upsert_guard(conflict_on)``: the key an upsert conflicts on,
  and columns an existing row must share for an upsert to change it (tenant_id).
- ``match_columns(table)``, ``revive_values(found)``: what an Upsert reads of the row it finds,
  and what it must then set even without an ``update`` (a deleted row is revived).
- ``wants_images`` and ``written(node, ctx, changes)``: the rows before and after each write,
  handed over in the write's transaction (the audit log).
- ``unchanged(node, conn, row_id, ...)``: a single-row write changed nothing (a version conflict).
- ``upserted(node, conn, columns, rows, conflict_on)``: after a guarded bulk upsert wrote ``rows``.
- ``shape(node)``: what of a node's parameters changes the SQL this behaviour adds
  (part of the key its compiled statements are cached under).
- ``companions``: managed column -> the field it follows: an upsert that updates the field
  updates it too (a searchable field's blind index).
- ``sealing(node, conn, chunk)``: a BulkUpsert's staged chunk, made driver-ready once each row's
  id is known (encrypted fields bind it: behaviours/encrypted.py).

Encrypted fields (``encrypted``) are sealed by the table (``schema.ModelTable.sealed``); their
behaviour finds an upsert's row ids first. Caching is meant to become a behaviour too (issue 19).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import sqlalchemy as sa

    from ..model import Field
    from ..nodes.base import Param

__all__ = ["Behaviour", "Change"]

Change = tuple[dict[str, Any] | None, dict[str, Any] | None]  # (row before, row after); None: absent


class Behaviour:
    """What one model option adds to the nodes' statements. Every hook defaults to nothing."""

    name: str = "behaviour"
    fields: tuple[Field, ...] = ()
    counters: tuple[str, ...] = ()
    key_scope: tuple[str, ...] = ()
    refreshed: tuple[str, ...] = ()
    wants_images: bool = False
    why_conflict: str = ""  # appended to the error of an Upsert whose row conflicts elsewhere
    managed: Mapping[str, str] = {}  # column -> how a caller sets it instead (for error hints)
    companions: Mapping[str, str] = {}  # managed column -> the field whose writes rewrite it

    def parameters(self, operation: str) -> tuple[Param, ...]:
        """Parameters it adds to the node of ``operation`` ('read', 'bulk_update'...)."""
        return ()

    def shape(self, node: Any) -> Hashable:
        return None

    def binds(self, node: Any) -> Mapping[str, Any]:
        return {}

    def guards(self, node: Any, table: sa.Table, *, include_deleted: bool | None) -> list[Any]:
        """``include_deleted``: True or False when the node decides, None when its parameters do."""
        return []

    def insert_values(self, node: Any, now: dt.datetime) -> Mapping[str, Any]:
        return {}

    def touch_values(self, node: Any, now: dt.datetime) -> Mapping[str, Any]:
        return {}

    def update_set(self, table: sa.Table) -> Mapping[str, Any]:
        return {}

    def update_where(self, node: Any, table: sa.Table) -> list[Any]:
        return []

    def delete_values(self, node: Any, now: dt.datetime) -> Mapping[str, Any] | None:
        return None

    def conflict_target(self, names: list[str]) -> list[str]:
        return names

    def upsert_guard(self, conflict_on: Sequence[str]) -> tuple[str, ...]:
        return ()

    def match_columns(self, table: sa.Table) -> list[Any]:
        return []

    def revive_values(self, found: Mapping[str, Any]) -> Mapping[str, Any]:
        return {}

    def before_run(self, node_class: Any, where: str) -> None:
        """Before a run of a node of ``node_class`` (``where`` names it), with the run's tenants set."""
        return None

    async def prepare(self, dataflow: Any) -> None:
        """Before the model's table is first used on ``dataflow``: the internal tables it writes to."""
        return None

    async def written(self, node: Any, ctx: Any, changes: Sequence[Change]) -> None:
        return None

    async def unchanged(
        self, node: Any, conn: Any, row_id: Any, *, action: str, include_deleted: bool | None
    ) -> None:
        return None

    async def upserted(
        self,
        node: Any,
        conn: Any,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict_on: Sequence[str],
    ) -> None:
        return None

    async def sealing(self, node: Any, conn: Any, chunk: Any) -> Any:
        """A BulkUpsert's chunk of staged rows, driver-ready (its encrypted fields sealed)."""
        return chunk

    def __repr__(self) -> str:
        return f"<behaviour {self.name}>"
