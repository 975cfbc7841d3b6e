"""Model options as behaviours: composed once per model, asked by every node.

``compose(model)`` turns a model's options into its ordered behaviours, and
``Behaviours`` asks them all at once: a node calls ``node.behaviours.guards(...)``,
never an option by name. The interface a behaviour implements is ``base.Behaviour``
(its docstring lists the hooks). A behaviour of your own goes in
``__dataflow__ = {"behaviours": [MyBehaviour()]}``; it applies to every node of the
model, as the built-in ones do.
"""

from __future__ import annotations

import datetime as dt
import importlib
import weakref
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from .base import Behaviour, Change
from .timestamps import Timestamps

if TYPE_CHECKING:  # pragma: no cover
    import sqlalchemy as sa

    from ..model import ModelSchema
    from ..nodes.base import Param
    from ..schema import ModelTable
    from .audit_log import AuditLog
    from .encrypted import Encryption
    from .multi_tenant import MultiTenant
    from .soft_delete import SoftDelete
    from .versioned import Versioned

__all__ = ["AuditLog", "Behaviour", "Behaviours", "Encryption", "MultiTenant", "SoftDelete", "Timestamps", "Versioned",
           "compose", "of"]  # fmt: skip

# The option behaviours' modules load with the first model that turns one on (not with every model):
# public name -> its module.
_OPTIONAL = {"MultiTenant": "multi_tenant", "SoftDelete": "soft_delete", "Versioned": "versioned",
             "Encryption": "encrypted", "AuditLog": "audit_log"}  # fmt: skip
_FLAGS = (("multi_tenant", "MultiTenant"), ("soft_delete", "SoftDelete"), ("versioned", "Versioned"))
_TIMESTAMPS = ("created_at", "updated_at")
_COMPOSED: weakref.WeakKeyDictionary[Any, Behaviours] = weakref.WeakKeyDictionary()


def compose(model: ModelSchema) -> Behaviours:
    """A model's behaviours, in order: timestamps, the flag options, the model's own, audit_log last."""
    found: list[Behaviour] = []
    times = tuple(n for n in _TIMESTAMPS if n in model.by_name)  # a reflected table may lack them
    if times:
        found.append(Timestamps(times))
    found += [_optional(name)() for option, name in _FLAGS if option in model.options]
    for own in model.behaviours:
        if not isinstance(own, Behaviour):
            raise ValidationError(
                f"Model '{model.name}': {own!r} in __dataflow__['behaviours'] is not a Behaviour.",
                hint="subclass dataflow_lab.behaviours.Behaviour and override the hooks you need.",
            )
        found.append(own)
    if model.encrypted:  # before audit_log, whose images it encrypts (ModelTable.sealed_image)
        found.append(_optional("Encryption")(model.encrypted, model.searchable))
    if "audit_log" in model.options:
        found.append(_optional("AuditLog")())
    return Behaviours(found)


def _optional(name: str) -> Any:
    return getattr(importlib.import_module(f"{__name__}.{_OPTIONAL[name]}"), name)


def __getattr__(name: str) -> Any:
    if name in _OPTIONAL:
        return _optional(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")  # a submodule's name: imported


def of(mt: ModelTable) -> Behaviours:
    """The behaviours of a model bound to a database, composed on first ask (when its nodes are made)."""
    composed = _COMPOSED.get(mt)
    if composed is None:
        composed = _COMPOSED[mt] = compose(mt.model)
    return composed


class Behaviours:
    """A model's behaviours, asked together. Each hook only asks the behaviours that define it."""

    def __init__(self, items: Sequence[Behaviour]):
        self.items = tuple(items)
        self.watched = any(b.wants_images for b in self.items)  # some behaviour wants before/after rows
        self.refreshed = frozenset(c for b in self.items for c in b.refreshed)
        self.why_conflict = "".join(b.why_conflict for b in self.items)
        self.companions = {c: f for b in self.items for c, f in b.companions.items()}
        self._hooks: dict[str, tuple[Behaviour, ...]] = {}

    def __iter__(self) -> Iterator[Behaviour]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Behaviours({', '.join(b.name for b in self.items)})"

    def _having(self, hook: str) -> tuple[Behaviour, ...]:
        """The behaviours that override ``hook`` (cached: asked on every run)."""
        hit = self._hooks.get(hook)
        if hit is None:
            default = getattr(Behaviour, hook)
            hit = self._hooks[hook] = tuple(b for b in self.items if getattr(type(b), hook) is not default)
        return hit

    def how(self, column: str) -> str:
        """How a caller sets a managed ``column`` instead (': ...'), for the error that refuses it."""
        hint = next((b.managed[column] for b in self.items if column in b.managed), "")
        return f": {hint}" if hint else ""

    # -- parameters and statement shapes -------------------------------------------------------
    def parameters(self, operation: str) -> tuple[Param, ...]:
        return tuple(p for b in self.items for p in b.parameters(operation))

    def shape(self, node: Any) -> Hashable:
        return tuple(b.shape(node) for b in self._having("shape"))

    def binds(self, node: Any) -> dict[str, Any]:
        return {k: v for b in self._having("binds") for k, v in b.binds(node).items()}

    def guards(self, node: Any, table: sa.Table, *, include_deleted: bool | None) -> list[Any]:
        return [
            g for b in self._having("guards") for g in b.guards(node, table, include_deleted=include_deleted)
        ]

    # -- values ---------------------------------------------------------------------------------
    def insert_values(self, node: Any, now: dt.datetime) -> dict[str, Any]:
        return {k: v for b in self._having("insert_values") for k, v in b.insert_values(node, now).items()}

    def touch_values(self, node: Any, now: dt.datetime) -> dict[str, Any]:
        return {k: v for b in self._having("touch_values") for k, v in b.touch_values(node, now).items()}

    def update_set(self, table: sa.Table) -> dict[str, Any]:
        return {k: v for b in self._having("update_set") for k, v in b.update_set(table).items()}

    def update_where(self, node: Any, table: sa.Table) -> list[Any]:
        return [c for b in self._having("update_where") for c in b.update_where(node, table)]

    def delete_values(self, node: Any, now: dt.datetime) -> dict[str, Any] | None:
        """What a Delete sets instead of removing rows (touched as any write), or None: remove them."""
        marks = [m for b in self._having("delete_values") if (m := b.delete_values(node, now)) is not None]
        if not marks:
            return None
        return {k: v for m in [*marks, self.touch_values(node, now)] for k, v in m.items()}

    # -- upserts --------------------------------------------------------------------------------
    def conflict_target(self, names: list[str]) -> list[str]:
        for b in self._having("conflict_target"):
            names = b.conflict_target(names)
        return names

    def upsert_guard(self, conflict_on: Sequence[str]) -> tuple[str, ...]:
        return tuple(c for b in self._having("upsert_guard") for c in b.upsert_guard(conflict_on))

    @property
    def checks_upserts(self) -> bool:
        """Some behaviour checks a BulkUpsert's written rows (``upserted``): it needs them as rows."""
        return bool(self._having("upserted"))

    def match_columns(self, table: sa.Table) -> list[Any]:
        return [c for b in self._having("match_columns") for c in b.match_columns(table)]

    def revive_values(self, found: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for b in self._having("revive_values") for k, v in b.revive_values(found).items()}

    # -- before a run, and before the table's first use ------------------------------------------
    def before_run(self, node_class: Any, where: str) -> None:
        for b in self._having("before_run"):
            b.before_run(node_class, where)

    async def prepare(self, dataflow: Any) -> None:
        for b in self._having("prepare"):
            await b.prepare(dataflow)

    # -- around a write -------------------------------------------------------------------------
    async def written(self, node: Any, ctx: Any, changes: Sequence[Change]) -> None:
        """Hand the rows before and after a write to the behaviours that want them."""
        for b in self.items:
            if b.wants_images:
                await b.written(node, ctx, changes)

    async def unchanged(
        self, node: Any, conn: Any, row_id: Any, *, action: str, include_deleted: bool | None
    ) -> None:
        for b in self._having("unchanged"):
            await b.unchanged(node, conn, row_id, action=action, include_deleted=include_deleted)

    async def upserted(
        self,
        node: Any,
        conn: Any,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        conflict_on: Sequence[str],
    ) -> None:
        for b in self._having("upserted"):
            await b.upserted(node, conn, columns, rows, conflict_on)

    async def sealing(self, node: Any, conn: Any, chunk: Any) -> Any:
        """A BulkUpsert's staged chunk, driver-ready: the encrypted fields sealed to their rows' ids
        (``ModelTable.seal_rows``: nothing to do for a model without them)."""
        having = self._having("sealing")
        if not having:
            return chunk
        for b in having:
            chunk = await b.sealing(node, conn, chunk)
        return chunk
