"""Helpers shared by the benchmarks: best-of-rounds per-operation time, tables, the Item model."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any


def per_op(fn: Callable[[], object], *, n: int, rounds: int = 5) -> float:
    """Seconds per call of fn: the median of `rounds` rounds of `n` calls (after one warm-up round)."""
    import statistics  # here, not above: a cold-start process imports this module for item_db

    for _ in range(max(1, n // 10)):
        fn()
    results = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - start) / n)
    return statistics.median(results)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    cells = [headers, *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "| " + " | ".join("-" * w for w in widths) + " |"
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |", line]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    return "\n".join(out)


def item_db(url: str | None, **options: Any) -> tuple[Any, type]:
    """A DataFlow with the benchmarks' Item model, and the model. Echo is off (the engine, not the
    development preset's SQL on stderr); ``options`` go to ``DataFlow`` (``monitoring=False``...)."""
    from dataflow_lab import DataFlow  # imported here: a cold-start process times this import

    db = DataFlow(url, **{"echo": False, **options})

    @db.model
    class Item:
        name: str
        qty: int
        price: float
        active: bool = True

    return db, Item


def sa_item_table(name: str, url: str) -> tuple[Any, Any]:
    """(MetaData, Table): the Item table as SQLAlchemy Core defines it, for a database ``url``."""
    import sqlalchemy as sa

    md = sa.MetaData()
    items = sa.Table(
        name,
        md,
        sa.Column(
            "id",
            sa.Integer if url.startswith("sqlite") else sa.BigInteger,
            sa.Sequence(f"{name}_seq") if url.startswith("duckdb") else sa.Identity(),
            primary_key=True,
        ),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("qty", sa.BigInteger, nullable=False),
        sa.Column("price", sa.Double, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    return md, items
