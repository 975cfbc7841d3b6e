"""The four bulk nodes: BulkCreate, BulkUpdate, BulkDelete, BulkUpsert.

They are atomic by default: rows are checked (``rows.RowShaper``) as they are
written, inside the run's transaction, so a bad row anywhere leaves the
database as it was. ``on_error="skip"`` is the explicit opt-in that skips bad
rows and reports them. Inserts take the dialect's fastest path (SQLite
executemany, PostgreSQL COPY, DuckDB Arrow); ``data`` is consumed chunk by
chunk, so a generator of a million rows never sits in memory at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from .. import audit, filters
from ..errors import ValidationError
from ..model import ModelSchema
from ..rows import Chunk, RowShaper, is_dataframe, is_sized
from .base import Param, RunContext
from .model_node import ModelNode, check_conflict_on

__all__ = ["BULK_OPERATIONS"]

ON_ERROR = ("raise", "skip")
PROGRESS_DELAY = 1.0  # seconds before a progress bar appears (tqdm's delay)


def _data_check(value: Any) -> Any:
    """Lists, DataFrames and other iterables of dicts; iterables are not consumed here."""
    if isinstance(value, list | tuple) or is_dataframe(value):
        return value
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return value
    raise ValidationError(
        f"'data' must be a list of dicts, a DataFrame or an iterable of dicts, got {type(value).__name__}."
    )


def _batch_check(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"'batch_size' must be a positive int, got {value!r}.")
    return value


def _on_error_check(value: Any) -> str:
    if value not in ON_ERROR:
        raise ValidationError(
            f"'on_error' must be 'raise' or 'skip', got {value!r}.",
            hint="'raise' (the default) writes nothing when any row is bad.",
        )
    return value


def _common_parameters() -> tuple[Param, ...]:
    return (
        Param(
            "data",
            list,
            required=True,
            description="a list of dicts, a DataFrame, or an iterable of dicts",
            check=_data_check,
        ),
        Param(
            "batch_size",
            (int, type(None)),
            default=None,
            description="rows per chunk (default: the database's best)",
            check=_batch_check,
        ),
        Param(
            "on_error",
            str,
            default="raise",
            description="'raise': a bad row means nothing is written; 'skip': skip and report bad rows",
            check=_on_error_check,
        ),
        Param(
            "progress",
            (bool, type(None)),
            default=None,
            description="progress bar: None shows one for operations over a second, False never",
        ),
    )


class _BulkRows(ModelNode):
    """Shared by the nodes that take ``data``: chunking, checking, progress, skipping."""

    def __init__(self, node_id: str, params: Mapping[str, Any]):
        super().__init__(node_id, params)
        self.refused: list[dict[str, Any]] = []  # rows the database refused, with on_error="skip"

    def shaper(self, *, allow_id: bool) -> RowShaper:
        return RowShaper(
            self.mt,
            node=self.where(self.node_id),
            now=self.now(),
            allow_id=allow_id,
            on_error=self.params.get("on_error", "raise"),
        )

    def chunks(self, ctx: RunContext, shaper: RowShaper) -> Iterator[Chunk]:
        """Checked chunks of ``data``, reporting progress to hooks and the progress bar."""
        data = self.params["data"]
        total = is_sized(data)
        size = self.params.get("batch_size") or self.mt.dialect.bulk_batch_size(len(self.model.fields))
        done = 0
        with _progress_bar(self, total) as bar:
            for chunk in shaper.chunks(data, size):
                seen = len(chunk.rows) + len(chunk.skipped)  # input rows, before the node reshapes them
                yield chunk
                done += seen
                ctx.progress(done, total)
                if bar is not None:
                    bar.update(seen)

    async def write_or_skip(
        self, conn: Any, chunk: Chunk, write: Any, indexes: list[int] | None = None
    ) -> list[tuple]:
        """Write a chunk; with on_error='skip', retry a refused chunk row by row in savepoints.

        ``indexes`` are the input positions of ``chunk.rows`` (default: consecutive from the chunk's first).
        """
        if self.params.get("on_error") != "skip" or not self.mt.dialect.supports_savepoints:
            await write(chunk.rows)
            return chunk.rows
        await conn.execute("SAVEPOINT dataflow_chunk")
        try:
            await write(chunk.rows)
            await conn.execute("RELEASE SAVEPOINT dataflow_chunk")
            return chunk.rows
        except Exception:
            await conn.execute("ROLLBACK TO SAVEPOINT dataflow_chunk")
            await conn.execute("RELEASE SAVEPOINT dataflow_chunk")
        written = []
        for offset, row in enumerate(chunk.rows):
            await conn.execute("SAVEPOINT dataflow_row")
            try:
                await write([row])
                written.append(row)
            except Exception as exc:
                await conn.execute("ROLLBACK TO SAVEPOINT dataflow_row")
                index = indexes[offset] if indexes else chunk.first_index + offset
                self.refused.append({"index": index, "error": self.mt.dialect.scrub(str(exc))})
            await conn.execute("RELEASE SAVEPOINT dataflow_row")
        return written


@contextlib.contextmanager
def _progress_bar(node: _BulkRows, total: int | None) -> Iterator[Any]:
    wanted = node.params.get("progress")
    if wanted is False:
        yield None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional (the notebook extra)
        yield None
        return
    bar = tqdm(
        total=total,
        desc=f"{node.node_id} ({node.type_name})",
        unit="rows",
        leave=False,
        delay=0 if wanted else PROGRESS_DELAY,
    )
    try:
        yield bar
    finally:
        bar.close()


class BulkCreate(_BulkRows):
    outputs = ("inserted", "ids", "skipped")
    op_name = "Create"
    writes = True
    description = "Insert many rows, all or nothing; ids follow input order."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            *_common_parameters(),
            Param("return_ids", bool, default=False, description="also return the new ids, in input order"),
        )

    def statements(self) -> list[Any]:
        """One INSERT, run for every row (the dialect may use a faster path: COPY, Arrow)."""
        columns = [f.name for f in self.model.fields if f.name != "id" or not f.generated]
        return [sa.insert(self.mt.table).values({c: sa.bindparam(c) for c in columns})]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, dialect = self.mt, self.mt.dialect
        conn = await ctx.connection(self.dataflow)
        shaper = self.shaper(allow_id=False)
        return_ids, text_ids = self.params.get("return_ids"), self.model.id_field.type.name == "text"
        inserted, ids, skipped = 0, [], []
        for chunk in self.chunks(ctx, shaper):
            skipped.extend(chunk.skipped)
            if not chunk.rows:
                continue
            if self.model.audit_log:  # learn the new ids, to log each row as stored

                async def write(rows: list[tuple], columns: tuple[str, ...] = chunk.columns) -> None:
                    new_ids = await audit.insert_and_record(self, ctx, conn, columns, rows)
                    if return_ids and not text_ids:
                        ids.extend(new_ids)
            elif return_ids and not text_ids:

                async def write(rows: list[tuple], columns: tuple[str, ...] = chunk.columns) -> None:
                    ids.extend(await dialect.bulk_insert_returning_ids(conn, mt.table, columns, rows))
            else:

                async def write(rows: list[tuple], columns: tuple[str, ...] = chunk.columns) -> None:
                    await dialect.bulk_insert(conn, mt.table, columns, rows)

            written = await self.write_or_skip(conn, chunk, write)
            inserted += len(written)
            if return_ids and text_ids:
                ids.extend(row[chunk.columns.index("id")] for row in written)
        result: dict[str, Any] = {"inserted": inserted}
        if return_ids:
            result["ids"] = ids
        if self.params.get("on_error") == "skip":
            result["skipped"] = sorted(skipped + self.refused, key=lambda s: s["index"])
        return result


class _FilterWrite(ModelNode):
    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        if partial and "filter" not in params:
            return
        if not params.get("filter") and not params.get("confirmed", False):
            raise ValidationError(
                f"{cls.where(node_id)}: an empty filter would {cls.verb} every {cls.model.name} row.",
                hint="pass a filter, or confirmed=True if you really mean every row.",
            )

    def where_clause(self) -> Any:
        return filters.to_sql(self.mt, self.params.get("filter") or {})


class BulkUpdate(_FilterWrite):
    outputs = ("updated",)
    op_name = "Update"
    verb = "update"
    writes = True
    description = "Update every row matching a filter in one statement; returns {'updated': n}."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param("filter", dict, default={}, description="which rows", check=cls._filter_checker()),
            Param(
                "fields",
                dict,
                required=True,
                description="field -> new value",
                check=cls._fields_checker("fields"),
            ),
            Param("confirmed", bool, default=False, description="required with an empty filter"),
        )

    def statements(self) -> list[Any]:
        return [self._statement()]

    def _statement(self) -> Any:
        mt = self.mt
        values = {**self.params["fields"], "updated_at": self.now()}
        stmt = sa.update(mt.table).values({k: mt.to_db(k, v) for k, v in values.items()})
        where = self.where_clause()
        return stmt if where is None else stmt.where(where)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        conn = await ctx.connection(self.dataflow)
        if self.model.audit_log:
            updated = await audit.update_and_record(self, ctx, conn, self._statement(), self.where_clause())
            return {"updated": updated}
        return {"updated": await conn.execute(*self.mt.dialect.compile(self._statement()))}


class BulkDelete(_FilterWrite):
    outputs = ("deleted",)
    op_name = "Delete"
    verb = "delete"
    writes = True
    description = "Delete every row matching a filter in one statement; returns {'deleted': n}."

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            Param("filter", dict, default={}, description="which rows", check=cls._filter_checker()),
            Param("confirmed", bool, default=False, description="required with an empty filter"),
        )

    def statements(self) -> list[Any]:
        return [self._statement()]

    def _statement(self) -> Any:
        where = self.where_clause()
        stmt = sa.delete(self.mt.table)
        return stmt if where is None else stmt.where(where)

    async def run(self, ctx: RunContext) -> dict[str, int]:
        conn = await ctx.connection(self.dataflow)
        if self.model.audit_log:
            return {"deleted": await audit.delete_and_record(self, ctx, conn, self._statement())}
        return {"deleted": await conn.execute(*self.mt.dialect.compile(self._statement()))}


class BulkUpsert(_BulkRows):
    outputs = ("inserted", "updated", "skipped")
    op_name = "Upsert"
    writes = True
    description = (
        "Insert rows, or update those whose conflict_on key exists; when the input holds a key "
        "twice, the last row wins. Returns {'inserted': a, 'updated': b}."
    )

    @classmethod
    def make_parameters(cls, model: ModelSchema) -> tuple[Param, ...]:
        return (
            *_common_parameters(),
            Param(
                "conflict_on",
                list,
                default=["id"],
                description="primary key or unique fields",
                check=lambda v: check_conflict_on(model, v, what="conflict_on"),
            ),
            Param(
                "update_fields",
                (list, type(None)),
                default=None,
                description="fields an update may change (default: every field given)",
                check=lambda v: (
                    None if v is None else [model.field(n, context="update_fields").name for n in v]
                ),
            ),
        )

    def statements(self) -> list[Any]:
        """One INSERT ... ON CONFLICT DO UPDATE over all rows (PostgreSQL: from a COPY-filled temp table)."""
        columns = [f.name for f in self.model.fields]
        conflict_on = self.params["conflict_on"]
        update = self._update_columns(tuple(columns), conflict_on)
        return [self.mt.dialect.upsert_statement(self.mt.table, columns, conflict_on, update)]

    async def run(self, ctx: RunContext) -> dict[str, Any]:
        mt, dialect, conflict_on = self.mt, self.mt.dialect, self.params["conflict_on"]
        conn = await ctx.connection(self.dataflow)
        inserted = updated = 0
        seen: set[tuple] = set()
        ours: set[tuple] = set()  # keys this node inserted (tracked when update_fields is given)
        skipped: list[dict[str, Any]] = []
        wrote_ids = False
        shaper = self.shaper(allow_id=True)
        for chunk in self.chunks(ctx, shaper):
            skipped.extend(chunk.skipped)
            columns = chunk.columns
            missing = [c for c in conflict_on if c not in columns]
            if missing == ["id"] and conflict_on == ["id"]:  # no ids given: every row is new
                written = await self.write_or_skip(
                    conn,
                    chunk,
                    lambda rows, c=columns: (
                        audit.insert_and_record(self, ctx, conn, c, rows)
                        if self.model.audit_log
                        else dialect.bulk_insert(conn, mt.table, c, rows)
                    ),
                )
                inserted += len(written)
                continue
            if missing:
                raise ValidationError(
                    f"{self.where(self.node_id)}: rows lack conflict_on field(s) {missing}.",
                    hint="every row needs a value for each conflict_on field.",
                )
            key_index = [columns.index(c) for c in conflict_on]
            rows, indexes, repeats = self._last_wins(chunk, key_index, seen)
            update_columns = self._update_columns(columns, conflict_on, shaper.given)
            new_keys = [k for k in self._keys(rows, columns, conflict_on) if k not in repeats]
            existing = None
            counts: list[tuple[int, int] | None] = []
            # With update_fields, a key this node itself inserted in an earlier chunk is overwritten
            # whole (the last row wins), while rows that existed before get only update_fields.
            mine = set(ours) if self.params["update_fields"] is not None else set()
            if self.params["update_fields"] is not None:
                before_keys = await self._existing_keys(conn, conflict_on, new_keys)
                ours.update(k for k in new_keys if k not in before_keys)
            overwrite = self._update_columns(columns, conflict_on, shaper.given, restricted=False)

            async def write(
                part: list[tuple],
                c: tuple[str, ...] = columns,
                u: list[str] = update_columns,
                out: list = counts,
                k: list[int] = key_index,
                m: set = mine,
                o: list[str] = overwrite,
            ) -> None:
                audited = self.model.audit_log
                before = await audit.rows_by_keys(self, conn, c, part, conflict_on) if audited else None
                own = [r for r in part if tuple(r[i] for i in k) in m] if m else []
                rest = [r for r in part if tuple(r[i] for i in k) not in m] if m else part
                if own:
                    found = await dialect.bulk_upsert(conn, mt.table, c, own, conflict_on, o)
                    out.append((0, len(own)) if found is not None else None)
                if rest:
                    out.append(await dialect.bulk_upsert(conn, mt.table, c, rest, conflict_on, u))
                if before is not None:
                    await audit.record_upsert(self, ctx, conn, c, part, conflict_on, before)

            if not dialect.upsert_reports_counts:
                existing = await self._count_existing(conn, conflict_on, new_keys)
            chunk.rows = rows
            written = await self.write_or_skip(conn, chunk, write, indexes)
            if existing is None:  # the database counted for us (PostgreSQL)
                got_inserted = sum(c[0] for c in counts if c)
                inserted += got_inserted
                updated += len(written) - got_inserted - len(repeats)
            else:
                fresh = len(new_keys) - existing
                inserted += fresh
                updated += len(written) - fresh - len(repeats)
            wrote_ids = wrote_ids or "id" in columns
        if wrote_ids and not self.model.id_field.required and inserted:
            sync = dialect.sync_id_sequence_sql(mt.table)
            if sync:
                await conn.fetch(sync)
        result: dict[str, Any] = {"inserted": inserted, "updated": updated}
        if self.params.get("on_error") == "skip":
            result["skipped"] = sorted(skipped + self.refused, key=lambda s: s["index"])
        return result

    @staticmethod
    def _last_wins(
        chunk: Chunk, key_index: list[int], seen: set[tuple]
    ) -> tuple[list[tuple], list[int], set[tuple]]:
        """Keep the last row of each key (with its input index); say which keys earlier chunks wrote."""
        unique: dict[tuple, tuple[int, tuple]] = {}
        for offset, row in enumerate(chunk.rows):
            key = tuple(row[i] for i in key_index)
            unique.pop(key, None)
            unique[key] = (chunk.first_index + offset, row)
        repeats = {k for k in unique if k in seen}
        seen.update(unique)
        return [r for _, r in unique.values()], [i for i, _ in unique.values()], repeats

    @staticmethod
    def _keys(rows: list[tuple], columns: tuple[str, ...], conflict_on: list[str]) -> list[tuple]:
        index = [columns.index(c) for c in conflict_on]
        return [tuple(row[i] for i in index) for row in rows]

    def _update_columns(
        self,
        columns: tuple[str, ...],
        conflict_on: list[str],
        given: tuple[str, ...] | None = None,
        *,
        restricted: bool = True,
    ) -> list[str]:
        """What an update changes: the fields the rows give (not defaults filled in), within update_fields."""
        allowed = self.params["update_fields"] if restricted else None
        given = columns if given is None else given
        keep = {"id", "created_at", *conflict_on}
        return [
            c
            for c in columns
            if c == "updated_at" or (c not in keep and c in given and (allowed is None or c in allowed))
        ]

    async def _existing_keys(self, conn: Any, conflict_on: list[str], keys: list[tuple]) -> set[tuple]:
        """Which of ``keys`` are in the table now."""
        mt = self.mt
        cols = [mt.table.c[c] for c in conflict_on]
        chunk = max(1, mt.dialect.max_bind_params // (len(cols) * 2) - 1)
        found: set[tuple] = set()
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            if len(cols) == 1:
                cond = cols[0].in_([k[0] for k in part])
            else:
                cond = sa.or_(*[sa.and_(*[c == v for c, v in zip(cols, k, strict=True)]) for k in part])
            sql, params = mt.dialect.compile(sa.select(*cols).where(cond))
            found.update(tuple(r) for r in await conn.fetch(sql, params))
        return found

    async def _count_existing(self, conn: Any, conflict_on: list[str], keys: list[tuple]) -> int:
        mt = self.mt
        cols = [mt.table.c[c] for c in conflict_on]
        chunk = max(1, mt.dialect.max_bind_params // (len(cols) * 2) - 1)
        total = 0
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            if len(cols) == 1:
                cond = cols[0].in_([k[0] for k in part])
            else:
                cond = sa.or_(*[sa.and_(*[c == v for c, v in zip(cols, k, strict=True)]) for k in part])
            sql, params = mt.dialect.compile(sa.select(sa.func.count()).select_from(mt.table).where(cond))
            total += int((await conn.fetch(sql, params))[0][0])
        return total


BULK_OPERATIONS = (BulkCreate, BulkUpdate, BulkDelete, BulkUpsert)
