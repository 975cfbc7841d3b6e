"""Bulk chunks are sized by bytes (rows.ChunkSizer, ``bulk_memory_mb``), within the database's limit.

Memory is measured with tracemalloc's peak over the node's run, never with time.
"""

from __future__ import annotations

import csv
import tracemalloc
import weakref

import pytest

from dataflow_lab import DataFlow, LocalRuntime, ValidationError, WorkflowBuilder
from dataflow_lab.dialects import duckdb_bulk
from dataflow_lab.rows import SAMPLE_ROWS, ChunkSizer, iter_records

MB = 2**20
WIDE = 50 * 1024  # bytes of text per row
ROWS = 200  # 10 MB in all
BUDGET_MB = 1
CONSTANT = 2 * MB  # what a run allocates whatever its rows (asyncpg's COPY buffer, 0.5 MB, and its message)


@pytest.fixture
def wide(url):
    db = DataFlow(url, bulk_memory_mb=BUDGET_MB)

    @db.model
    class Doc:
        title: str
        body: str
        __dataflow__ = {"unique": ["title"]}

    bulk(db, [{"title": "warm", "body": "up"}])  # the table, the pool, compiled statements
    upsert(db, [{"title": "warm", "body": "up"}])
    yield db
    db.close()


class ProgressSpy:
    def __init__(self):
        self.done: list[int] = []

    def progress(self, *, run_id, node_id, done, total, **future):
        self.done.append(done)


def bulk(db, data, *, hooks=(), **params) -> dict:
    workflow = WorkflowBuilder(db)
    workflow.add_node("DocBulkCreateNode", "load", {"data": data, "progress": False, **params})
    return LocalRuntime(hooks=list(hooks)).execute(workflow.build())[0]["load"]


def upsert(db, data) -> dict:
    workflow = WorkflowBuilder(db)
    workflow.add_node(
        "DocBulkUpsertNode", "load", {"data": data, "conflict_on": ["title"], "progress": False}
    )
    return LocalRuntime().execute(workflow.build())[0]["load"]


def wide_rows(n: int = ROWS):
    """Made one at a time, as a stream of a big file is: each body is its own 50 KB string."""
    for i in range(n):
        yield {"title": f"doc {i}", "body": f"{i:06d}" + "x" * WIDE}


def peak_of(work) -> tuple[int, object]:
    """Bytes allocated at the peak of ``work()`` above what was allocated before it, and its result."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = work()
        return tracemalloc.get_traced_memory()[1] - before, result
    finally:
        tracemalloc.stop()


def stored(db) -> tuple[int, int]:
    workflow = WorkflowBuilder(db)
    workflow.add_node("DocListNode", "all", {"limit": 10_000})
    records = LocalRuntime().execute(workflow.build())[0]["all"]["records"]
    return len(records), sum(len(r["body"]) for r in records)


def test_a_stream_of_wide_rows_stays_within_the_memory_budget(wide):
    peak, result = peak_of(lambda: bulk(wide, wide_rows()))
    assert result == {"inserted": ROWS}
    assert peak < BUDGET_MB * MB + CONSTANT, f"{peak / MB:.1f} MB for a {BUDGET_MB} MB budget"
    assert stored(wide) == (ROWS + 1, ROWS * (WIDE + 6) + 2)


def test_a_streamed_upsert_of_wide_rows_stays_within_the_memory_budget(wide):
    bulk(wide, wide_rows(ROWS // 2))  # half of them exist: updated, the rest inserted
    peak, result = peak_of(lambda: upsert(wide, wide_rows()))
    assert (result["inserted"], result["updated"]) == (ROWS // 2, ROWS // 2)
    assert peak < BUDGET_MB * MB + CONSTANT, f"{peak / MB:.1f} MB for a {BUDGET_MB} MB budget"
    assert stored(wide) == (ROWS + 1, ROWS * (WIDE + 6) + 2)


def test_a_csv_of_wide_rows_imports_within_the_memory_budget(wide, tmp_path):
    path = tmp_path / "docs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["title", "body"])
        writer.writeheader()
        writer.writerows(wide_rows())
    peak, result = peak_of(lambda: wide.import_csv("Doc", path, progress=False))
    assert result == {"inserted": ROWS}
    assert peak < BUDGET_MB * MB + CONSTANT, f"{peak / MB:.1f} MB for a {BUDGET_MB} MB budget"
    assert stored(wide)[0] == ROWS + 1


def test_wide_rows_are_written_in_chunks_that_fit_the_budget(wide):
    spy = ProgressSpy()
    bulk(wide, list(wide_rows()), hooks=[spy])
    sizes = [b - a for a, b in zip([0, *spy.done], spy.done, strict=False)]
    assert sum(sizes) == ROWS and len(sizes) >= 10  # one chunk would be 10 MB
    assert max(sizes) * WIDE <= BUDGET_MB * MB  # held as driver rows (the list's dicts are the caller's)


def test_the_arrow_table_of_a_duckdb_chunk_fits_the_budget(tmp_path, monkeypatch):
    db = DataFlow(f"duckdb:///{tmp_path / 'docs.duckdb'}", bulk_memory_mb=BUDGET_MB)

    @db.model
    class Doc:
        title: str
        body: str

    sizes: list[int] = []
    real = duckdb_bulk.arrow_source

    def measured(types, columns, by_column):
        arrow, select, params = real(types, columns, by_column)
        sizes.append(arrow.nbytes)  # pyarrow's own memory, which tracemalloc does not see
        return arrow, select, params

    monkeypatch.setattr(duckdb_bulk, "arrow_source", measured)
    assert bulk(db, wide_rows()) == {"inserted": ROWS}
    assert len(sizes) > 10 and max(sizes) <= BUDGET_MB * MB
    db.close()


@pytest.mark.parametrize("node", ["ItemBulkCreateNode", "ItemBulkUpsertNode"])
def test_a_duckdb_stream_lets_each_chunks_arrow_table_go_before_the_transaction_ends(monkeypatch, node):
    """One transaction for the whole stream: DuckDB must not keep every chunk's Arrow data until
    the commit (a registered view would, unregistered or not), or memory grows with the input."""
    db = DataFlow("duckdb:///:memory:")

    @db.model
    class Item:
        name: str
        qty: int
        __dataflow__ = {"unique": ["name"]}

    alive: list[int] = []
    tables: list[weakref.ref] = []
    real = duckdb_bulk.arrow_source

    def tracked(types, columns, by_column):
        arrow, select, params = real(types, columns, by_column)
        alive.append(sum(ref() is not None for ref in tables))  # earlier chunks' tables still held
        tables.append(weakref.ref(arrow))
        return arrow, select, params

    monkeypatch.setattr(duckdb_bulk, "arrow_source", tracked)
    rows = ({"name": f"item {i}", "qty": i} for i in range(2_000))
    workflow = WorkflowBuilder(db)
    params = {"data": rows, "batch_size": 100, **({"conflict_on": ["name"]} if "Upsert" in node else {})}
    workflow.add_node(node, "bulk", params)
    LocalRuntime().execute(workflow.build())
    assert len(alive) >= 20 and max(alive) <= 2  # at most the last statement's, not all 20
    db.close()


def test_narrow_rows_keep_the_databases_own_chunk_size(db):
    @db.model
    class Doc:
        title: str
        body: str

    cap = db.database.dialect.bulk_batch_size(len(db.table("Doc").columns))  # the bind limit, or a cap
    n = min(cap, 60_000) * 2 + 5
    rows = [{"title": f"t{i}", "body": "short"} for i in range(n)]
    for data in (rows, iter(rows)):
        spy = ProgressSpy()
        assert bulk(db, data, hooks=[spy]) == {"inserted": n}
        sizes = [b - a for a, b in zip([0, *spy.done], spy.done, strict=False)]
        assert sum(sizes) == n and min(cap, 60_000) <= max(sizes) <= cap  # 64 MB hold 77k on DuckDB
        assert sizes[0] == (max(sizes) if data is rows else SAMPLE_ROWS)  # a stream's first is measured


def test_batch_size_still_fixes_the_chunk(wide):
    spy = ProgressSpy()
    bulk(wide, wide_rows(30), hooks=[spy], batch_size=7)
    assert spy.done == [7, 14, 21, 28, 30]


def test_the_chunks_after_wider_rows_are_smaller():
    sizer = ChunkSizer(10_000, budget=1 * MB, copies=2)
    body = "x" * WIDE  # one string (the sizer counts it per row, as it must for a real stream)
    rows = [{"body": "x" * 100} for _ in range(40)] + [{"body": body} for _ in range(2_000)]
    chunks = [len(c) for c in iter_records(iter(rows), sizer)]
    assert chunks[0] == SAMPLE_ROWS and sum(chunks) == len(rows)
    assert chunks[1] > 1000 and max(chunks[2:]) * WIDE * 2 <= 1 * MB


@pytest.mark.parametrize("value", [0, -1, True, "64"])
def test_a_memory_budget_that_is_not_a_positive_number_is_refused(value):
    with pytest.raises(ValidationError, match="bulk_memory_mb"):
        DataFlow(bulk_memory_mb=value)


def test_a_dataframe_of_wide_rows_is_written_in_chunks_that_fit_the_budget(wide):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(list(wide_rows(60)))
    spy = ProgressSpy()
    assert bulk(wide, frame, hooks=[spy]) == {"inserted": 60}
    sizes = [b - a for a, b in zip([0, *spy.done], spy.done, strict=False)]
    assert len(sizes) > 3 and max(sizes) * WIDE * 2 <= BUDGET_MB * MB
