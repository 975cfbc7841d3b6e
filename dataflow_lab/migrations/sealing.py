"""Migrations of encrypted columns: their existing rows encrypted, decrypted or blind-indexed.

A field turned encrypted has its rows sealed in the migration, and one turned plain has them
opened (destructive: it writes plaintext, so it needs confirming); each rolls back as the other.
These data steps run in Python, with the key, in the migration's transaction; their statements
are ``DATAFLOW_LAB ENCRYPT COLUMN t.c`` (or DECRYPT, INDEX), which any other tool refuses rather
than skipping them.

An encrypted field is stored as text on every backend, so a JSON or bytes field that changes also
changes its column's type (JSONB or BLOB to text and back). The plaintext a text column holds
during the change is the value's text: JSON text, and for bytes hex, which the retype makes and
reads in SQL (``Dialect.hex_sql`` / ``unhex_sql``): lossless, so no backup copy of the plaintext
is left behind. A column turned encrypted is retyped first, then sealed; one turned plain is
opened first, while it is still text, then retyped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..dialects import Connection
from ..encryption import ENCRYPTABLE, HOW_TO_MAKE_A_KEY, PREFIX
from ..errors import EncryptionError, MigrationError
from ..model import BLIND_SUFFIX
from .live import TableShape, read_table
from .ops import DATA_STEP, Recast, Step

if TYPE_CHECKING:  # pragma: no cover
    from .diff import Change

__all__ = ["DATA_STEP", "PROBE_ROWS", "data_steps", "recasts", "refuse_plaintext_rows", "rewrite_column"]

PROBE_ROWS = 1000  # rows a migration samples to tell whether a plain text column was encrypted


def _text_type(mt: Any) -> str:
    """How the live table spells the type of a text column (an encrypted field's) on this dialect."""
    return str(mt.dialect.declared_type(sa.Column("_", mt.dialect.column_type("text"))))


async def data_steps(conn: Connection, mt: Any, live: TableShape) -> tuple[list[Step], list[Step]]:
    """The data steps of ``mt``'s table: (those to run before its DDL, those to run after).

    Before: decrypt a column turned plain, while it is text. After: encrypt a column turned
    encrypted (once it is text), build the blind index of a field turned searchable."""
    before: list[Step] = []
    after: list[Step] = []
    text = _text_type(mt)
    cipher = mt.migration_cipher() if mt.model.encrypted or _encryptable_fields(mt) else None
    for f in mt.model.fields:
        shape = live.columns.get(f.name)
        if shape is None or f.generated:
            continue
        is_text = shape.type == text  # only a text column is probed as text (JSONB, BLOB: all plaintext)
        if f.name in mt.model.encrypted:
            if await _any(conn, mt, f.name, "plaintext" if is_text else "value"):
                after.append(_step(mt, "encrypt", f.name, "decrypt"))
            elif f.name in mt.model.searchable:
                indexed = f.name + BLIND_SUFFIX in live.columns
                if await _any(conn, mt, f.name, "unindexed" if indexed else "value"):
                    after.append(_step(mt, "index", f.name, None))
        elif (
            cipher is not None
            and f.type.name in ENCRYPTABLE
            and is_text
            and await _any(conn, mt, f.name, "sealed", sampled=True)
        ):
            before.append(_step(mt, "decrypt", f.name, "encrypt", destructive=True))
    return before, after


def _encryptable_fields(mt: Any) -> bool:
    return any(f.type.name in ENCRYPTABLE and not f.generated for f in mt.model.fields[1:])


async def _any(conn: Connection, mt: Any, name: str, holding: str, *, sampled: bool = False) -> bool:
    """Whether a row holding a value in column ``name`` holds a ``holding`` one: "value" (any),
    "plaintext", "sealed", or "unindexed" (no blind index).

    ``sampled``: among the first ``PROBE_ROWS`` rows (by id) only, an index range, not a scan: a
    migration rewrites a column whole, so its first values say what state it is in. It serves
    the question asked of every text column of every model at each start (was it encrypted?).
    An encrypted column is checked whole (so ``ensure`` needs no ``refuse_plaintext_rows`` after
    it), and a plaintext value written later by another tool is encrypted, not only refused. The sample is
    a derived table: MySQL has no LIMIT in an IN subquery."""
    blind = name + BLIND_SUFFIX
    columns = [
        sa.column("id"),
        sa.column(name, sa.Text()),
        *([sa.column(blind)] if holding == "unindexed" else []),
    ]
    t = sa.table(mt.table.name, *columns)
    rows = sa.select(t).where(t.c[name].is_not(None))
    sample = (rows.order_by(t.c.id).limit(PROBE_ROWS) if sampled else rows).subquery("sample")
    value = sample.c[name]
    where = {"value": None, "plaintext": sa.not_(value.startswith(PREFIX)), "sealed": value.startswith(PREFIX),
             "unindexed": sample.c[blind].is_(None) if holding == "unindexed" else None}[holding]  # fmt: skip
    probe = sa.select(sample.c.id).limit(1)
    return bool(await conn.fetch(*mt.dialect.compile(probe if where is None else probe.where(where))))


def _step(mt: Any, action: str, column: str, undo: str | None, *, destructive: bool = False) -> Step:
    name = mt.table.name
    what = {"encrypt": "encrypt the existing values of", "decrypt": "decrypt (store as plaintext)",
            "index": "build the blind index of"}[action]  # fmt: skip
    statement = f"{DATA_STEP} {action.upper()} COLUMN {name}.{column}"
    down = () if undo is None else (f"{DATA_STEP} {undo.upper()} COLUMN {name}.{column}",)
    return Step(name, f"{name}: {what} '{column}'", (statement,), down, destructive=destructive,
                slug=f"{name}_{action}_{column}")  # fmt: skip


def recasts(mt: Any, changes: Sequence[Change]) -> tuple[list[Change], dict[str, Recast]]:
    """The retypes of bytes fields turned encrypted (BLOB to text) or plain (text to BLOB): each
    converts through hex (lossless, so not destructive, and nothing is backed up)."""
    text, out, casts = _text_type(mt), [], {}
    hexed, unhexed = mt.dialect.hex_sql, mt.dialect.unhex_sql
    for c in changes:
        f = mt.model.by_name.get(c.name)
        if c.kind == "retype" and f is not None and f.type.name == "bytes":
            to_text = f.name in mt.model.encrypted
            if (c.new.type == text) == to_text:  # type: ignore[union-attr]
                casts[c.name] = Recast(hexed, unhexed, to_text) if to_text else Recast(unhexed, hexed, False)
                c = c._replace(destructive=False)
        out.append(c)
    return out, casts


async def rewrite_column(conn: Connection, mt: Any, action: str, column: str, batch: int = 1000) -> int:
    """Run one data step (``encrypt``, ``decrypt``, ``index``) on ``column`` of ``mt``'s table: its
    rows rewritten in batches by id, in the caller's transaction (the migration's). Returns the
    rows rewritten."""
    cipher = mt.migration_cipher()
    if cipher is None:
        raise EncryptionError(
            f"Migrating column '{column}' of table '{mt.table.name}' ({action}) needs the encryption "
            f"key, and this DataFlow has none: {HOW_TO_MAKE_A_KEY}.",
        )
    kind = mt.model.by_name[column].type.name if column in mt.model.by_name else "text"
    live = await read_table(mt.dialect, conn, mt.table.name)
    blind = column + BLIND_SUFFIX
    has_blind = live is not None and blind in live.columns
    t = sa.table(mt.table.name, sa.column("id"), sa.column(column), sa.column(blind))
    values: dict[str, Any] = {column: sa.bindparam("v"), **({blind: sa.bindparam("b")} if has_blind else {})}
    if action == "index":
        values = {blind: sa.bindparam("b")}
    sql, names = mt.dialect.compile_named(sa.update(t).values(values).where(t.c.id == sa.bindparam("i")))
    after, done = None, 0
    while True:
        stmt = sa.select(t.c.id, t.c[column]).where(t.c[column].is_not(None)).order_by(t.c.id).limit(batch)
        if after is not None:
            stmt = stmt.where(t.c.id > sa.bindparam("after", after, type_=mt.table.c.id.type))
        rows = await conn.fetch(*mt.dialect.compile(stmt))
        if not rows:
            return done
        updates = []
        new: dict[str, Any]
        for raw_id, stored in rows:
            row_id, sealed = mt.ids_from_db([raw_id])[0], str(stored).startswith(PREFIX)
            if action == "encrypt" and not sealed:
                plain = _plaintext(kind, stored)
                new = {"v": cipher.seal(column, kind, row_id, plain), "b": cipher.blind(column, kind, plain)}
            elif action == "decrypt" and sealed:
                new = {"v": _as_text(kind, cipher.open(column, kind, row_id, stored)), "b": None}
            elif action == "index" and sealed:
                new = {"b": cipher.blind(column, kind, cipher.open(column, kind, row_id, stored))}
            else:
                continue
            updates.append([{**new, "i": raw_id}[n] for n in names])
        if updates:
            await conn.executemany(sql, updates)
        done, after = done + len(updates), rows[-1][0]


def _plaintext(kind: str, stored: Any) -> Any:
    """A value as a text column holds it mid-migration (JSON text, bytes as hex) -> the field's value."""
    if kind == "json":
        return json.loads(stored)
    if kind == "bytes":
        return bytes.fromhex(stored) if isinstance(stored, str) else bytes(stored)
    return stored


def _as_text(kind: str, value: Any) -> str:
    """A decrypted value as its column holds it until the retype (the inverse of ``_plaintext``)."""
    if kind == "json":
        return json.dumps(value)
    if kind == "bytes":
        return bytes(value).hex()
    return str(value)


async def refuse_plaintext_rows(conn: Connection, mt: Any) -> None:
    """An encrypted field whose column still holds plaintext in a table never migrated
    (existing_schema=True): refused, never read as if it were a ciphertext."""
    t = mt.table
    for name in mt.model.encrypted:
        col = t.c[name]
        probe = sa.select(t.c.id).where(col.is_not(None), sa.not_(col.startswith(PREFIX))).limit(1)
        if await conn.fetch(*mt.dialect.compile(probe)):
            raise MigrationError(
                f"Model '{mt.model.name}': field '{name}' is declared encrypted, but table "
                f"'{t.name}' still holds unencrypted values in it.",
                hint="encrypt them with a migration: db.migrations.apply() (or generate a file and "
                "apply it), with the key set.",
            )
        if name not in mt.model.searchable:
            continue
        unindexed = sa.select(t.c.id).where(col.is_not(None), t.c[name + BLIND_SUFFIX].is_(None)).limit(1)
        if await conn.fetch(*mt.dialect.compile(unindexed)):  # equality filters would miss them
            raise MigrationError(
                f"Model '{mt.model.name}': field '{name}' is declared searchable, but rows of table "
                f"'{t.name}' written before have no blind index, so equality filters would miss them.",
                hint="build it with a migration: db.migrations.apply() (or generate a file and apply it).",
            )
