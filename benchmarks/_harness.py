"""Timing helpers shared by the benchmarks: best-of-rounds per-operation time."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable


def per_op(fn: Callable[[], object], *, n: int, rounds: int = 5) -> float:
    """Seconds per call of fn: the median of `rounds` rounds of `n` calls (after one warm-up round)."""
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
