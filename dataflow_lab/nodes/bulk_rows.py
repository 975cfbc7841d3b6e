"""What the bulk nodes that take ``data`` share: parameters, chunking, progress, skipping.

Rows are checked (``rows.RowShaper``) as they are written, inside the run's
transaction, so a bad row anywhere leaves the database as it was;
``on_error="skip"`` is the explicit opt-in that skips bad rows and reports them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .._panel import PANEL_PROGRESS
from ..errors import ValidationError
from ..rows import Chunk, ChunkSizer, RowShaper, is_dataframe, is_sized
from . import images
from .base import Param, RunContext
from .model_node import ModelNode

__all__ = ["BulkRows", "common_parameters"]

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


def common_parameters() -> tuple[Param, ...]:
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


class BulkRows(ModelNode):
    """Shared by the nodes that take ``data``: chunking, checking, progress, skipping."""

    def __init__(self, node_id: str, params: Mapping[str, Any]):
        super().__init__(node_id, params)
        self.refused: list[dict[str, Any]] = []  # rows the database refused, with on_error="skip"

    def shaper(
        self, *, allow_id: bool, seal: bool = True, columnar: bool = False, keep: Sequence[str] = ()
    ) -> RowShaper:
        """Checks and shapes ``data``; every row carries the behaviours' stamps (timestamps, tenant...).

        The stamps are written even where they equal a default, so that an upsert meeting an
        existing row writes them again (``Behaviour.refreshed``: a deleted row is revived).
        ``seal=False``: encrypted fields stay staged (``behaviours.sealing`` seals them).
        ``columnar``: chunks by column, where the dialect's bulk path takes columns (DuckDB's Arrow);
        ``keep``: the columns that stay lists there (the keys an upsert reads).
        """
        now = self.now()
        return RowShaper(
            self.mt,
            node=self.where(self.node_id),
            now=now,
            allow_id=allow_id,
            on_error=self.params.get("on_error", "raise"),
            stamps=self.stamps(now),
            seal=seal,
            columnar=columnar and self.mt.dialect.columnar,
            keep=keep,
        )

    async def insert_rows(
        self, ctx: RunContext, conn: Any, columns: tuple[str, ...], rows: list[tuple], *, ids: bool
    ) -> list[Any]:
        """Insert driver-ready rows; with ``ids``, return the new ids (in order).

        When a behaviour wants the rows as stored (the audit log), they are read back and handed over.
        """
        mt, behaviours = self.mt, self.behaviours
        if behaviours.watched:
            new_ids, changes = await images.inserted_rows(mt, conn, columns, rows)
            await behaviours.written(self, ctx, changes)
            return new_ids if ids else []
        if ids:
            return await mt.dialect.bulk_insert_returning_ids(conn, mt.table, columns, rows)
        await mt.dialect.bulk_insert(conn, mt.table, columns, rows)
        return []

    def chunks(self, ctx: RunContext, shaper: RowShaper) -> Iterator[Chunk]:
        """Checked chunks of ``data``, reporting progress to hooks and the progress bar."""
        data = self.params["data"]
        total = is_sized(data)
        size = self.params.get("batch_size") or self.chunk_sizer()
        done = 0
        with _progress_bar(self, total) as bar:
            for chunk in shaper.chunks(data, size):
                seen = chunk.count + len(chunk.skipped)  # input rows, before the node reshapes them
                yield chunk
                del chunk  # let it go before the next chunk is read (rows.iter_records)
                done += seen
                ctx.progress(done, total)
                if bar is not None:
                    bar.update(seen)

    def chunk_sizer(self) -> ChunkSizer:
        """Rows per chunk within the database's limit and the memory budget (``bulk_memory_mb``).

        A chunk is held as the input's records (a stream's, or a DataFrame's, made here; a list's
        are the caller's, held anyway), as driver-ready rows, and in any copy the database's bulk
        path makes (DuckDB's Arrow table).
        """
        dialect = self.mt.dialect
        cap = dialect.bulk_batch_size(len(self.model.fields))
        if self.model.encrypted:  # sealing holds a chunk's ids, plaintexts and ciphertexts at once
            cap = min(cap, dialect.sealed_chunk_rows)
        made = 0 if isinstance(self.params["data"], list | tuple) else 1  # records made for the chunk
        return ChunkSizer(cap, dialect.config.bulk_memory_mb * 2**20, copies=1 + made + dialect.bulk_copies)

    async def write_or_skip(
        self, conn: Any, chunk: Chunk, write: Any, indexes: list[int] | None = None
    ) -> list[tuple]:
        """Write a chunk; with on_error='skip', retry a refused chunk row by row in savepoints.

        ``indexes`` are the input positions of ``chunk.rows`` (default: ``chunk.indexes``).
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
        written, indexes = [], indexes or chunk.indexes
        for offset, row in enumerate(chunk.rows):
            await conn.execute("SAVEPOINT dataflow_row")
            try:
                await write([row])
                written.append(row)
            except Exception as exc:
                await conn.execute("ROLLBACK TO SAVEPOINT dataflow_row")
                self.refused.append({"index": indexes[offset], "error": self.mt.dialect.scrub(str(exc))})
            await conn.execute("RELEASE SAVEPOINT dataflow_row")
        return written


@contextlib.contextmanager
def _progress_bar(node: BulkRows, total: int | None) -> Iterator[Any]:
    wanted = node.params.get("progress")
    if wanted is False or (wanted is None and PANEL_PROGRESS.get()):
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
