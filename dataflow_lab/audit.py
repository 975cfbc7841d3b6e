"""The audit log: who changed which row, when, and its values before and after.

Opt in per model with ``__dataflow__ = {"audit_log": True}``. Every write node
of that model (Create, Update, Delete, Upsert and the four bulk nodes) then
appends one entry per row to the ``dataflow_audit_log`` table, on the run's own
connection and **in the run's transaction**: a rolled-back write leaves no
entry behind. Updates and deletes read the rows they change first, only when
the model is audited.

"Who" is the runtime's user, ``LocalRuntime(user="alice")``; a workflow run
from inside a running node inherits it. ``db.audit(Model, id)`` reads a row's
history back, oldest first, with values converted to the model's types.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import sqlalchemy as sa

from . import _loop, tenancy
from .access import current_user, run_as
from .errors import ValidationError
from .query_count import ACTIVE_SCOPE
from .schema import ModelTable, internal_table
from .transactions import borrowed

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow
    from .records import AuditEntry

__all__ = ["AUDIT_TABLE", "AuditEntry", "current_user", "history", "run_as"]

AUDIT_TABLE = "dataflow_audit_log"
T = TypeVar("T")


class _AuditRecord:
    """The audit table, declared as a model so each dialect stores it its own way."""

    __tablename__ = AUDIT_TABLE
    __dataflow__ = {"indexes": [["model", "record_id"]]}
    model: str
    record_id: str
    operation: str
    actor: str | None
    run_id: str | None
    node_id: str | None
    before: dict | None
    after: dict | None


_COLUMNS = (
    "model", "record_id", "operation", "actor", "run_id", "node_id", "before", "after", "created_at", "updated_at",
)  # fmt: skip


def audit_table(dataflow: DataFlow) -> ModelTable:
    return internal_table(_AuditRecord, dataflow)


async def ensure_table(dataflow: DataFlow) -> None:
    """Create the audit table (called before a run that writes an audited model takes its connection).

    It is dataflow_lab's own table: created even where auto_migrate is off (production).
    """
    await dataflow.database.ensure_table(audit_table(dataflow), create=True)


# -- writing (called by the audit_log behaviour, on the run's connection) -------------------
class Writer(Protocol):
    """What ``record`` needs of the node that wrote (a generated node of an audited model)."""

    dataflow: Any
    model: Any
    mt: Any  # its ModelTable: seals the images' encrypted fields
    operation: str
    node_id: str


async def record(node: Writer, ctx: Any, changes: Sequence[tuple[dict | None, dict | None]]) -> None:
    """Append one entry per (before, after) pair of row dicts, in the run's transaction."""
    if not changes:
        return
    dataflow = node.dataflow
    table = audit_table(dataflow)
    now, user, op = dataflow.clock.now(), current_user(), node.operation
    run_id, node_id = getattr(ctx, "run_id", None), node.node_id
    to_db, image = [table.to_db] * len(_COLUMNS), node.mt.sealed_image
    rows = []
    for before, after in changes:
        row_id = (after or before or {})["id"]
        values = (
            node.model.name,
            str(row_id),
            op,
            user,
            run_id,
            node_id,
            _jsonable(
                image(before, row_id)
            ),  # encrypted fields: ciphertexts (schema.ModelTable.sealed_image)
            _jsonable(image(after, row_id)),
        )
        rows.append(tuple(map(lambda f, c, v: f(c, v), to_db, _COLUMNS, (*values, now, now))))
    conn = await ctx.connection(dataflow)  # a write node's: its transaction has begun
    dialect = table.dialect
    if len(rows) == 1:
        await conn.execute(dialect.multirow_insert_sql(table.table, _COLUMNS, 1), rows[0])
    else:
        await dialect.bulk_insert(conn, table.table, _COLUMNS, rows)


# -- key rotation (db.rotate_key) ----------------------------------------------------------
async def rotate_images(dataflow: DataFlow, source: ModelTable, key_id: str, batch: int = 1000) -> int:
    """Re-encrypt under ``key_id`` the encrypted values in ``source``'s audit images, in batches,
    each in its own transaction (resumable: an image already under the key is left alone), so the
    history still reads once the old key is gone. Returns the entries rewritten."""
    table = audit_table(dataflow)
    await dataflow.database.ensure_table(table, create=True)
    t, dialect, after, done = table.table, table.dialect, 0, 0
    while True:
        stmt = (
            sa.select(*t.c)
            .where(t.c.model == source.model.name, t.c.id > after)
            .order_by(t.c.id)
            .limit(batch)
        )
        async with borrowed(dataflow, None) as conn:
            await conn.begin()
            try:
                rows = table.rows(await conn.fetch(*dialect.compile(stmt)))
                for row in rows:
                    fresh = {
                        c: source.rekeyed_image(row[c], row["record_id"], key_id) for c in ("before", "after")
                    }
                    new = {c: table.to_db(c, image) for c, image in fresh.items() if image is not None}
                    if new:
                        await conn.execute(
                            *dialect.compile(sa.update(t).where(t.c.id == row["id"]).values(new))
                        )
                        done += 1
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
        if len(rows) < batch:
            return done
        after = rows[-1]["id"]


# -- reading ---------------------------------------------------------------------------------
def history(
    dataflow: DataFlow, model: type | str, record_id: Any = None, *, tenant: str | None = None
) -> list[AuditEntry]:
    """The audit entries of one row of ``model`` (or of all its rows), oldest first.

    A multi_tenant model's entries are the caller's tenant's only (``tenant=``, else
    ``with db.tenant(...)``), like every other read; no tenant set is an error.
    """
    source = dataflow.table(model)  # raises for an unknown model, naming it and the fix
    schema = source.model
    if not schema.audit_log:
        raise ValidationError(
            f"Model '{schema.name}' is not audited, so it has no audit history.",
            hint="declare __dataflow__ = {'audit_log': True} on the model; writes from then on are logged.",
        )
    owner = None
    if schema.multi_tenant:
        owner = tenancy.check_tenant(tenant) if tenant is not None else None
        owner = owner or tenancy.require(dataflow, schema, f"db.audit({schema.name!r})")

    return _loop.run(_history(dataflow, source, record_id, owner, ACTIVE_SCOPE.get()))


def _owned_by(row: dict[str, Any], tenant: str | None) -> bool:
    """Whether an audit row is of ``tenant``'s row (its tenant_id is in the row's stored values)."""
    if tenant is None:
        return True
    values = row["after"] or row["before"] or {}
    return values.get("tenant_id") == tenant


async def _history(
    dataflow: DataFlow, source: Any, record_id: Any, tenant: str | None = None, scope: Any = None
) -> list[AuditEntry]:
    schema, opened = source.model, source.opened_image

    table = audit_table(dataflow)
    # inside db.transaction(): on the block's connection
    await dataflow.database.ensure_table(table, scope, create=True)
    t = table.table
    stmt = sa.select(*t.c).where(t.c.model == schema.name).order_by(t.c.id)
    if record_id is not None:
        stmt = stmt.where(t.c.record_id == str(record_id))
    sql, params = table.dialect.compile(stmt)
    async with borrowed(dataflow, scope) as conn:
        rows = table.rows(await conn.fetch(sql, params))
    from .records import AuditEntry

    return [
        AuditEntry(
            r["id"],
            r["model"],
            r["record_id"],
            r["operation"],
            r["actor"],
            r["run_id"],
            r["node_id"],
            r["created_at"],
            _typed(schema, opened(r["before"], r["record_id"])),
            _typed(schema, opened(r["after"], r["record_id"])),
        )  # fmt: skip
        for r in rows
        if _owned_by(r, tenant)
    ]


# -- values <-> JSON -------------------------------------------------------------------------
@overload
def _jsonable(row: dict[str, Any]) -> dict[str, Any]: ...
@overload
def _jsonable(row: None) -> None: ...
def _jsonable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: _json_value(v) for k, v in row.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


@overload
def _typed(schema: Any, values: dict[str, Any]) -> dict[str, Any]: ...
@overload
def _typed(schema: Any, values: None) -> None: ...
def _typed(schema: Any, values: dict[str, Any] | None) -> dict[str, Any] | None:
    """JSON values back to the model's Python types (fields the model no longer has stay as stored)."""
    if values is None:
        return None
    out = {}
    for name, value in values.items():
        f = schema.by_name.get(name)
        if f is None or value is None or f.type.name == "json":
            out[name] = value
        elif f.type.name == "bytes":
            out[name] = base64.b64decode(value)
        else:
            try:
                out[name] = f.type.check(value)
            except TypeError:
                out[name] = value
    return out


def __getattr__(name: str) -> Any:
    if name == "AuditEntry":  # made at the first read, in records.py
        from .records import AuditEntry

        return AuditEntry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
