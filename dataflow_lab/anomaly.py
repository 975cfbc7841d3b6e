"""Anomaly detection: a rolling baseline of durations per node type, and a deviation threshold.

The spec's detector: each node type (``UserCreateNode``, a callable's name...)
keeps its last ``window`` durations; a run is an anomaly when it is more than
``sigma`` standard deviations (2 by default) above that baseline's mean.

Timings on real machines have long tails (a GC pause, a busy neighbour), and
sub-millisecond operations have a tiny standard deviation, so a z-score alone
would page someone every few dozen runs. Two guards keep the detector quiet
under steady load without hiding real slowdowns: the run must also take at
least ``min_ratio`` times the baseline mean (3x) and at least ``min_delta_ms``
more than it (50 ms; lower it to watch fast operations closely), and nothing
is judged before ``min_samples`` runs (20) have formed a baseline. Every run,
anomalous or not, joins the rolling window, so a lasting change becomes the
new baseline. A stall of the whole process (a machine short of CPU) slows
every operation and is reported like any other slowdown.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["Anomaly", "AnomalyDetector", "Window"]


@dataclass(frozen=True)
class Anomaly:
    """One run that deviated from its node type's baseline."""

    node_type: str
    node_id: str
    run_id: str
    at: dt.datetime
    baseline_response_time_ms: float
    current_response_time_ms: float
    std_ms: float
    deviation: float  # in standard deviations
    samples: int
    recommended_action: str

    def as_dict(self) -> dict[str, Any]:
        """The spec's ``performance_anomaly`` shape (plus where and when)."""
        return {
            "node_type": self.node_type,
            "node_id": self.node_id,
            "run_id": self.run_id,
            "at": self.at.isoformat(),
            "baseline_response_time_ms": round(self.baseline_response_time_ms, 3),
            "current_response_time_ms": round(self.current_response_time_ms, 3),
            "deviation": f"{self.deviation:.1f} standard deviations",
            "alert_triggered": True,
            "recommended_action": self.recommended_action,
        }


class Window:
    """The last ``window`` values, with running sums for O(1) mean and variance."""

    __slots__ = ("values", "total", "squares")

    def __init__(self, window: int):
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.squares = 0.0

    def add(self, value: float) -> None:
        values = self.values
        if len(values) == values.maxlen:
            old = values[0]
            self.total -= old
            self.squares -= old * old
        values.append(value)
        self.total += value
        self.squares += value * value

    def clear(self) -> None:
        self.values.clear()
        self.total = self.squares = 0.0

    def stats(self) -> tuple[int, float, float]:
        n = len(self.values)
        if n < 2:
            return n, (self.total / n if n else 0.0), 0.0
        mean = self.total / n
        variance = max(self.squares / n - mean * mean, 0.0) * n / (n - 1)
        return n, mean, math.sqrt(variance)


class AnomalyDetector:
    """Judge each duration against its key's rolling baseline; ``observe`` returns an Anomaly or None."""

    def __init__(
        self,
        *,
        sigma: float = 2.0,
        window: int = 100,
        min_samples: int = 20,
        min_ratio: float = 3.0,
        min_delta_ms: float = 50.0,
    ):
        self.sigma = sigma
        self.window = window
        self.min_samples = min_samples
        self.min_ratio = min_ratio
        self.min_delta_ms = min_delta_ms
        self._baselines: dict[str, Window] = {}

    def __repr__(self) -> str:
        return (
            f"AnomalyDetector(sigma={self.sigma}, window={self.window}, min_samples={self.min_samples}, "
            f"min_ratio={self.min_ratio}, min_delta_ms={self.min_delta_ms})"
        )

    def baseline(self, key: str) -> dict[str, float] | None:
        """The current baseline of ``key``: samples, mean_ms, std_ms (None before any run)."""
        found = self._baselines.get(key)
        if found is None or not found.values:
            return None
        n, mean, std = found.stats()
        return {"samples": n, "mean_ms": mean, "std_ms": std}

    def window_of(self, key: str) -> Window:
        """The rolling window of ``key``'s durations, made at first use. A duration below
        ``min_delta_ms`` is never an anomaly, so a caller may ``add`` it there without ``observe``."""
        window = self._baselines.get(key)
        if window is None:
            window = self._baselines[key] = Window(self.window)
        return window

    def observe(
        self, key: str, duration_ms: float, node_id: str = "", run_id: str = "", database: bool = True
    ) -> Anomaly | None:
        baseline = self.window_of(key)
        n = len(baseline.values)
        mean = baseline.total / n if n else 0.0
        excess = duration_ms - mean
        if n < self.min_samples or excess < self.min_delta_ms or duration_ms < mean * self.min_ratio:
            baseline.add(duration_ms)
            return None  # the common case: no variance needed
        n, mean, std = baseline.stats()
        baseline.add(duration_ms)
        deviation = excess / std if std > 0 else math.inf
        if deviation < self.sigma:
            return None
        return Anomaly(
            node_type=key,
            node_id=node_id,
            run_id=run_id,
            at=dt.datetime.now(dt.UTC),
            baseline_response_time_ms=mean,
            current_response_time_ms=duration_ms,
            std_ms=std,
            deviation=deviation,
            samples=n,
            recommended_action=_advice(key, duration_ms / mean if mean > 0 else math.inf, database),
        )

    def reset(self) -> None:
        """Forget every baseline (emptied in place: a window handed out by ``window_of`` stays this key's)."""
        for window in self._baselines.values():
            window.clear()


def _advice(key: str, ratio: float, database: bool) -> str:
    if database:
        return (
            f"Check database load: {key} ran {ratio:.1f}x slower than its baseline "
            "(look for locks, long transactions and missing indexes)."
        )
    return f"Check the code of {key}: it ran {ratio:.1f}x slower than its baseline."
