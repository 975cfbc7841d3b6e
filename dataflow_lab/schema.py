"""A model's table on one database: columns, value conversion, and DDL.

``ModelTable`` is what the nodes use: the SQLAlchemy ``Table`` built with the
dialect's storage types, the per-field converters to and from the driver, and
``ensure``, which creates the table on first use and migrates it as the
environment allows (``migrations/``).
"""

from __future__ import annotations

import base64
import functools
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .clock import SystemClock
from .dialects import Connection, Dialect
from .errors import EncryptionError
from .migrations.engine import ensure_table
from .migrations.ops import typed_literal
from .model import BLIND_SUFFIX, MISSING, TIMESTAMP_FIELDS, Field, ModelSchema, check_value, parse_model

if TYPE_CHECKING:  # pragma: no cover
    from .cipher import Cipher

__all__ = ["ModelTable", "internal_table"]


MAX_TEMPLATES = 1000  # compiled statements kept per table
IMAGE_LABELS = (
    "@audit",
    "@saga",
)  # a log's image of an encrypted field binds '<column>@audit' (sealed_image)


def _enum_reader(enum_cls: Any) -> Any:
    by_text = {str(m.value): m for m in enum_cls}
    return lambda value: by_text[str(value)]


class ModelTable:
    """One model bound to one dialect.

    ``cipher``: seals and opens the model's encrypted fields (encryption.py). Their ciphertexts
    bind the row id, so only the writes that know each row's id seal them (``sealed``,
    ``seal_rows``); any other write of an encrypted field is refused by its writer, never stored
    as plaintext.
    """

    def __init__(
        self,
        model: ModelSchema,
        dialect: Dialect,
        cipher: Cipher | None = None,
        *,
        server_defaults: bool = True,
        spare_cipher: Callable[[], Cipher | None] | None = None,
    ):
        self.model = model
        self.dialect = dialect
        self.cipher = cipher
        # the DataFlow's keys for this table even where the model declares nothing encrypted: a
        # migration that turns encryption off (or rolls it back) needs them (data_steps)
        self._spare_cipher = spare_cipher
        if model.encrypted and cipher is None:
            raise EncryptionError(f"Model '{model.name}' has encrypted fields but no cipher was given.")
        self._server_defaults = server_defaults  # False: dataflow_lab's own tables, which only it writes
        self.writers = {f.name: self._writer(f) for f in model.fields}  # field -> to-database converter
        self.table = self._build_table(sa.MetaData())
        self.columns = tuple(f.name for f in model.fields)
        self._row_dict = _row_builder(model.fields, [self._reader(f) for f in model.fields])
        self._sealed = tuple((f.name, f.type.name) for f in model.fields if f.name in model.encrypted)
        # (sql, bind names) from compile_named, or (sql, params) from compile: keyed apart by the caller
        self._sql: dict[Any, tuple[str, Any]] = {}

    def template(self, key: Any, build: Any) -> tuple[str, tuple[str, ...]]:
        """Compile ``build()`` once per key: (sql, bind names in order).

        At most ``MAX_TEMPLATES`` are kept (filters of many shapes, such as $in lists of every
        length, would grow it without end): the oldest goes first.
        """
        hit = self._sql.get(key)
        if hit is None:
            if len(self._sql) >= MAX_TEMPLATES:
                del self._sql[next(iter(self._sql))]
            hit = self._sql[key] = self.dialect.compile_named(build())
        return hit

    def compiled(self, key: Any, build: Any) -> tuple[str, list[Any]]:
        """Compile ``build()`` once per key, values included: (sql, params)."""
        hit = self._sql.get(key)
        if hit is None:
            hit = self._sql[key] = self.dialect.compile(build())
        return hit

    # -- building --------------------------------------------------------
    def _build_table(self, metadata: sa.MetaData) -> sa.Table:
        d, m = self.dialect, self.model
        unique, indexed = _blinded(m.unique, m.searchable), _blinded(m.indexes, m.searchable)
        if m.key_scope:  # uniqueness holds within it (a tenant), and every query filters on it
            unique = tuple(_scoped(m.key_scope, g) for g in unique)
            indexed = tuple(dict.fromkeys((m.key_scope, *(_scoped(m.key_scope, g) for g in indexed))))
        columns = [d.id_column(m.table_name, m.id_field.type.name)]
        for f in m.fields[1:]:
            info = {"counter": True} if f.name in m.counters else {}  # an upsert counts it up
            kind = self._column_type(f)
            default = self._server_default(f, kind)
            columns.append(sa.Column(f.name, kind, nullable=f.nullable, info=info, server_default=default))
        constraints = [
            sa.UniqueConstraint(*group, name=f"uq_{m.table_name}_{'_'.join(group)}") for group in unique
        ]
        by_name = {c.name: c for c in columns}
        indexes = [
            sa.Index(
                f"ix_{m.table_name}_{'_'.join(group)}", *group, **d.index_options([by_name[c] for c in group])
            )
            for group in indexed
        ]
        return sa.Table(m.table_name, metadata, *columns, *constraints, *indexes, **d.table_kwargs())

    def _column_type(self, f: Field) -> sa.types.TypeEngine:
        if f.name in self.model.encrypted:  # the ciphertext, as text on every backend
            return self.dialect.column_type("text")
        if f.type.name == "decimal":
            return self.dialect.decimal_type(self.model.name, f.name, f.type.digits)
        return self.dialect.column_type(f.type.name)

    def _server_default(self, f: Field, kind: sa.types.TypeEngine) -> sa.ColumnClause | None:
        """The column's DEFAULT, so that rows other tools insert are valid: the moment of insert for
        created_at / updated_at, a field's literal default (None: no DEFAULT, NULL is implied).

        literal_column, not text(): the SQL is kept as written (text() would take ':00' for a bind).
        """
        if not self._server_defaults:
            return None
        if f.generated and f.name in TIMESTAMP_FIELDS and f.type.name == "datetime":
            return sa.literal_column(self.dialect.now_default)
        if f.default is MISSING or f.default is None:
            return None
        return sa.literal_column(typed_literal(self.dialect, self.to_db(f.name, f.default), kind))

    def _writer(self, f: Field) -> Any:
        if f.name in self.model.encrypted:
            return _refuse_plaintext(self.model.name, f.name)
        return self.dialect.to_db.get(f.type.name)

    def reader(self, name: str) -> Any:
        """The from-database converter of field ``name`` (None: the driver's value is the Python value)."""
        return self._reader(self.model.by_name[name])

    def _reader(self, f: Field) -> Any:
        if f.name in self.model.encrypted:
            return None  # the stored ciphertext: rows() opens it, knowing the row's id
        if f.type.name == "enum":
            return _enum_reader(f.type.python)
        return self.dialect.from_db.get(f.type.name)

    # -- values ----------------------------------------------------------
    def check(self, name: str, value: Any, *, node: str = "") -> Any:
        """Validate (and losslessly coerce) one value for field ``name``."""
        f = self.model.field(name, context=node)
        return check_value(self.model, f, value, node=node)

    def to_db(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        convert = self.writers[name]
        return convert(value) if convert is not None else value

    def db_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A dict of Python values -> driver values."""
        return {k: self.to_db(k, v) for k, v in values.items()}

    def ids_from_db(self, raw_ids: Iterable[Any]) -> list[Any]:
        """Driver id values -> Python ids (a UUID stored as text comes back as uuid.UUID)."""
        read = self._reader(self.model.id_field)
        return [read(i) for i in raw_ids] if read is not None else list(raw_ids)

    def rows(self, raw_rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        """Driver rows (in column order) -> dicts of Python values, encrypted fields decrypted."""
        rows = list(map(self._row_dict, raw_rows))
        if self._sealed:
            rows = [self._opened(r) for r in rows]
        return rows

    # -- encrypted fields (encryption.py) ------------------------------------
    def _opened(self, row: dict[str, Any]) -> dict[str, Any]:
        assert self.cipher is not None
        for name, kind in self._sealed:
            if row[name] is not None:
                row[name] = self.cipher.open(name, kind, row["id"], row[name])
        for name in self.model.searchable:  # the blind index is the filters' own, not a result
            del row[name + BLIND_SUFFIX]
        return row

    def sealed(self, values: Mapping[str, Any], row_id: Any) -> dict[str, Any]:
        """``db_values`` of one row whose id is known: encrypted fields sealed, blind indexes added."""
        out = {k: self.to_db(k, v) for k, v in values.items() if k not in self.model.encrypted}
        for name, kind in self._sealed:
            if name in values:
                out.update(self._seal_one(name, kind, row_id, values[name]))
        return out

    def _seal_one(
        self, name: str, kind: str, row_id: Any, value: Any, key_id: str | None = None
    ) -> dict[str, Any]:
        assert self.cipher is not None
        sealed = None if value is None else self.cipher.seal(name, kind, row_id, value, key_id)
        if name not in self.model.searchable:
            return {name: sealed}
        blind = None if value is None else self.cipher.blind(name, kind, value, key_id)
        return {name: sealed, name + BLIND_SUFFIX: blind}

    async def rotate(self, conn: Connection, key_id: str, after: Any, batch: int) -> tuple[Any, int, int]:
        """Re-encrypt under ``key_id`` the values of the next ``batch`` rows (by id, after ``after``)
        that another key sealed: (the last raw id read, rows read, rows rewritten).

        A value already under ``key_id`` is left alone, so a rotation that stopped part-way resumes
        where it stopped. Each UPDATE checks the ciphertexts it read are still there: a row written
        meanwhile (under the current key) is not overwritten with its older value.
        """
        assert self.cipher is not None
        t, names = self.table, [n for n, _ in self._sealed]
        stmt = sa.select(t.c.id, *(t.c[n] for n in names)).order_by(t.c.id).limit(batch)
        if after is not None:
            stmt = stmt.where(t.c.id > sa.bindparam("after", after, type_=t.c.id.type))
        raw = await conn.fetch(*self.dialect.compile(stmt))
        rewritten = 0
        for raw_id, *stored in raw:
            row_id = self.ids_from_db([raw_id])[0]
            stale = {
                n: v
                for n, v in zip(names, stored, strict=True)
                if v is not None and self.cipher.key_of(v) != key_id
            }
            if not stale:
                continue
            values: dict[str, Any] = {}
            for name, kind in self._sealed:
                if name in stale:
                    plain = self.cipher.open(name, kind, row_id, stale[name])
                    values.update(self._seal_one(name, kind, row_id, plain, key_id))
            same = [t.c[n] == sa.bindparam(f"was_{n}", v, type_=t.c[n].type) for n, v in stale.items()]
            update = (
                sa.update(t)
                .values(values)
                .where(t.c.id == sa.bindparam("_id", raw_id, type_=t.c.id.type), *same)
            )
            rewritten += await conn.execute(*self.dialect.compile(update))
        return (raw[-1][0] if raw else after), len(raw), rewritten

    def stage(self, name: str, value: Any) -> Any:
        """``to_db``, except that an encrypted field's value waits, checked, for ``seal_rows``."""
        return value if name in self.model.encrypted else self.to_db(name, value)

    def stager(self, name: str) -> Any:
        """The converter ``stage`` applies to field ``name`` (None: none)."""
        return None if name in self.model.encrypted else self.writers[name]

    def seal_rows(
        self, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """Staged rows -> driver rows: each encrypted column sealed to its row's id, blind indexes appended."""
        if not self._sealed:
            return columns, rows
        # column by column (zip builds the row tuples in C)
        sealed_columns, by_column = self.seal_columns(
            columns, [[r[j] for r in rows] for j in range(len(columns))]
        )
        return sealed_columns, list(zip(*by_column, strict=True))

    def seal_columns(
        self, columns: tuple[str, ...], by_column: list[Any], *, packed: bool = False
    ) -> tuple[tuple[str, ...], list[Any]]:
        """``seal_rows`` of a chunk held by column (a list per column, or a ``Same`` for a column
        with one value on every row): each encrypted column a list of ciphertexts, each sealed to the
        id on its row, the blind index columns appended. This is BulkCreate's hot path.
        ``packed``: the chunk goes to an Arrow bulk path, which takes an ``encryption.Packed``."""
        if not self._sealed:
            return columns, by_column
        assert self.cipher is not None
        ids = by_column[columns.index("id")]  # an encrypted model's id is made before the INSERT (model.py)
        assert isinstance(ids, list), "each row has its own id"
        out, blinds, cipher = list(by_column), [], self.cipher
        for name, kind in self._sealed:
            if name not in columns:
                continue
            at = columns.index(name)
            plains = by_column[at] if isinstance(by_column[at], list) else [by_column[at].value] * len(ids)
            seal = cipher.seal_packed if packed else cipher.seal_many  # one per row, even of one value
            out[at] = seal(name, kind, ids, plains)
            if name in self.model.searchable:
                blinds.append((name + BLIND_SUFFIX, cipher.blind_many(name, kind, plains)))
        return (*columns, *(n for n, _ in blinds)), [*out, *(b for _, b in blinds)]

    async def ids_by_keys(
        self, conn: Connection, keys: Sequence[str], wanted: Iterable[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], Any]:
        """The raw id of the row holding each of ``wanted`` (driver values of ``keys``), by key.

        A searchable encrypted key column is matched through its blind index under every key of the
        ring (``wanted`` holds the plaintext then); a key holding a NULL matches nothing.
        """
        wanted = [k for k in dict.fromkeys(wanted) if None not in k]
        t, found = self.table, {}
        blind = [n in self.model.encrypted for n in keys]
        kinds = [self.model.by_name[n].type.name for n in keys]
        rings = len(self.cipher.key_ids) if self.cipher is not None else 1
        per_key = sum(rings if b else 1 for b in blind)  # a blind key binds its index under each key
        step = max(1, self.dialect.max_bind_params // (2 * per_key) - 1)
        cols = [t.c[n + BLIND_SUFFIX] if b else t.c[n] for n, b in zip(keys, blind, strict=True)]
        for start in range(0, len(wanted), step):
            index: dict[tuple[str, Any], Any] = {}  # (column, blind index) -> the plaintext key value
            terms: list[list[Any]] = []  # per key of ``part``: the values each column may hold
            for key in wanted[start : start + step]:
                row = []
                for n, v, is_blind, kind in zip(keys, key, blind, kinds, strict=True):
                    if is_blind:
                        assert self.cipher is not None
                        hashes = self.cipher.blinds(n, kind, v)
                        index.update(((n, h), v) for h in hashes)
                        row.append(hashes)
                    else:
                        row.append([v])
                terms.append(row)
            if len(keys) == 1:  # one IN list, bound as one parameter where the database can
                where: Any = self.dialect.in_array(cols[0], [v for row in terms for v in row[0]])
            else:
                where = sa.or_(
                    *[sa.and_(*[c.in_(vs) for c, vs in zip(cols, row, strict=True)]) for row in terms]
                )
            for raw_id, *values in await conn.fetch(
                *self.dialect.compile(sa.select(t.c.id, *cols).where(where))
            ):
                key = tuple(index[(n, v)] if b else v for n, v, b in zip(keys, values, blind, strict=True))
                found[key] = raw_id
        return found

    # A logged image's encrypted value binds the source row and column, under the log's label
    # ('<column>@audit', '<column>@saga'): it cannot be copied back into the live row (an old value
    # restored), to another row or column, or to the other log; only between entries of one log
    # for the same row and column.
    def sealed_image(
        self, row: Mapping[str, Any] | None, row_id: Any, label: str = "@audit"
    ) -> dict[str, Any] | None:
        """A row as the audit log (or the saga log) stores it: each encrypted field's value a ciphertext."""
        assert label in IMAGE_LABELS
        if row is None or not self._sealed:
            return None if row is None else dict(row)
        assert self.cipher is not None
        out = dict(row)
        for name, kind in self._sealed:
            if out.get(name) is not None:
                out[name] = self.cipher.seal(name + label, kind, row_id, out[name])
        return out

    def opened_image(
        self, image: Mapping[str, Any] | None, row_id: Any, label: str = "@audit"
    ) -> dict[str, Any] | None:
        """A logged image read back: each encrypted field decrypted (bytes as base64, as logs keep them)."""
        if image is None or not self._sealed:
            return None if image is None else dict(image)
        assert self.cipher is not None
        out = dict(image)
        for name, kind in self._sealed:
            if out.get(name) is not None:
                value = self.cipher.open(name + label, kind, row_id, out[name])
                out[name] = base64.b64encode(value).decode("ascii") if kind == "bytes" else value
        return out

    def rekeyed_image(
        self, image: Mapping[str, Any] | None, row_id: Any, key_id: str, label: str = "@audit"
    ) -> dict[str, Any] | None:
        """A logged image with its encrypted values sealed again under ``key_id`` (None: none needed it)."""
        if image is None or self.cipher is None:
            return None
        out, changed = dict(image), False
        for name, kind in self._sealed:
            stored = out.get(name)
            if isinstance(stored, str) and self.cipher.key_of(stored) not in (None, key_id):
                plain = self.cipher.open(name + label, kind, row_id, stored)
                out[name], changed = self.cipher.seal(name + label, kind, row_id, plain, key_id), True
        return out if changed else None

    def bound_to_rows(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Those of ``values`` that are encrypted fields: a write of them seals each row's own."""
        return {k: v for k, v in values.items() if k in self.model.encrypted}

    def sealed_for_rows(
        self, values: Mapping[str, Any], raw_ids: Sequence[Any]
    ) -> tuple[dict[str, Any], Any]:
        """An UPDATE of rows ``raw_ids`` writing encrypted fields' ``values``, each row its own
        ciphertext: (its SET clause, its join condition). The ciphertexts come from a VALUES list
        joined on the id (``UPDATE ... FROM (VALUES (id, sealed), ...) AS sealed_rows``: one hash
        join, where a CASE per id would be quadratic); a blind index is one hash per value."""
        assert self.cipher is not None
        t, ids = self.table, self.ids_from_db(raw_ids)
        out: dict[str, Any] = {}
        sealed_columns: dict[str, list[Any]] = {}
        for name, kind in self._sealed:
            if name not in values:
                continue
            value = values[name]
            if value is None:
                out[name] = None
            else:
                sealed_columns[name] = self.cipher.seal_many(name, kind, ids, [value] * len(ids))
            if name in self.model.searchable:
                out[name + BLIND_SUFFIX] = None if value is None else self.cipher.blind(name, kind, value)
        if not sealed_columns:
            return out, None
        columns = [sa.column("id", t.c.id.type), *(sa.column(n, t.c[n].type) for n in sealed_columns)]
        rows = list(zip(raw_ids, *sealed_columns.values(), strict=True))
        joined = self.dialect.rows_table("sealed_rows", columns, rows)
        out.update({n: joined.c[n] for n in sealed_columns})
        return out, t.c.id == joined.c.id

    def shown(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``db_values`` for a statement shown, not run (``sql()``): encrypted values are '<encrypted>'."""
        out = {k: self.to_db(k, v) for k, v in values.items() if k not in self.model.encrypted}
        out.update({k: "<encrypted>" for k in values if k in self.model.encrypted})
        out.update({k + BLIND_SUFFIX: "<blind index>" for k in values if k in self.model.searchable})
        return out

    def new_row(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A complete row for INSERT: ``values`` (the caller's and the behaviours' stamps, such as the
        timestamps), then defaults (a server default: left out)."""
        row: dict[str, Any] = {}
        for f in self.model.fields:
            if f.name in values:
                row[f.name] = values[f.name]
            elif f.default is not MISSING:
                row[f.name] = _fresh(f.default)
            elif f.default_factory is not None:
                row[f.name] = f.default_factory()
            elif f.nullable and not f.server_default:
                row[f.name] = None
        return row

    # -- DDL -------------------------------------------------------------
    async def ensure(self, conn: Connection, *, auto_migrate: bool, existing_schema: bool = False,
                     clock: Any = None, create: bool = False) -> None:  # fmt: skip
        """Create the table if missing, and migrate it as the environment allows (migrations/engine.py).

        ``clock`` (the DataFlow's) dates the migration history; None: the system clock. ``create``:
        a missing table is made even without auto_migrate (``db.create_tables()``).
        """

        await ensure_table(conn, self, auto_migrate=auto_migrate, existing_schema=existing_schema,
                           clock=clock or SystemClock(), create=create)  # fmt: skip
        if self._sealed and existing_schema:  # (a migration check looked at every encrypted value)
            from .migrations.sealing import refuse_plaintext_rows  # loaded for encrypted models only

            await refuse_plaintext_rows(conn, self)

    # -- migrations of encrypted columns (migrations/sealing.py) ------------------------------------
    def migration_cipher(self) -> Cipher | None:
        """The model's cipher, else one from the DataFlow's keys (None: it has none)."""
        if self.cipher is None and self._spare_cipher is not None:
            self.cipher_for_migrations = self._spare_cipher()
            self._spare_cipher = None
        return self.cipher or getattr(self, "cipher_for_migrations", None)


_INTERNAL: weakref.WeakKeyDictionary[Any, dict[type, ModelTable]] = weakref.WeakKeyDictionary()


def internal_table(model_class: type, dataflow: Any) -> ModelTable:
    """The table of one of dataflow_lab's own models (the audit log, the saga log) on ``dataflow``.

    Parsed once per class, bound once per DataFlow (and forgotten with it).
    """
    tables = _INTERNAL.setdefault(dataflow, {})
    table = tables.get(model_class)
    if table is None:
        schema = _internal_schema(model_class)
        table = tables[model_class] = ModelTable(schema, dataflow.database.dialect, server_defaults=False)
    return table


@functools.cache
def _internal_schema(model_class: type) -> ModelSchema:
    return parse_model(model_class, internal=True)


def _blinded(groups: tuple[tuple[str, ...], ...], searchable: frozenset[str]) -> tuple[tuple[str, ...], ...]:
    """Key and index groups with each searchable encrypted field as its blind index column: equal
    values have equal indexes (under one key), so a unique key on it holds and an index serves
    its equality filters."""
    if not searchable:
        return groups
    return tuple(tuple(c + BLIND_SUFFIX if c in searchable else c for c in group) for group in groups)


def _scoped(scope: tuple[str, ...], group: tuple[str, ...]) -> tuple[str, ...]:
    """``group`` led by the key scope's columns (a unique group holds within a tenant)."""
    return (*scope, *(c for c in group if c not in scope))


def _row_builder(fields: Sequence[Field], readers: Sequence[Any]) -> Any:
    """A function row -> dict for these fields, generated once per table.

    This is the hot path of every read (a List of 1,000 rows calls it 1,000
    times), so instead of looping over columns per row, it is one dict display:
    ``lambda r: {"id": r[0], "active": _r4(r[4]) if r[4] is not None else None, ...}``.
    Field names are validated identifiers, so the generated source is safe.
    """
    namespace: dict[str, Any] = {}
    items = []
    for i, (f, read) in enumerate(zip(fields, readers, strict=True)):
        if read is None:
            items.append(f"{f.name!r}: r[{i}]")
        else:
            namespace[f"_r{i}"] = read
            guard = "" if (not f.nullable and f.generated) else f" if r[{i}] is not None else None"
            items.append(f"{f.name!r}: _r{i}(r[{i}]){guard}")
    return eval(f"lambda r: {{{', '.join(items)}}}", namespace)  # noqa: S307 - built from identifiers only


def _refuse_plaintext(model: str, name: str) -> Any:
    def refuse(value: Any) -> Any:
        raise EncryptionError(
            f"Model '{model}': field '{name}' is encrypted at rest, and this write cannot seal it: its "
            "ciphertext binds the row id, which this path does not know for each row.",
            hint="write encrypted fields through the nodes (Create, Update, Upsert, the bulk nodes), "
            "which seal each value to its row.",
        )

    return refuse


def _fresh(default: Any) -> Any:
    if isinstance(default, dict | list):
        import copy

        return copy.deepcopy(default)
    return default
