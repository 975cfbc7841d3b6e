"""Where generated timestamps come from (created_at, updated_at, ...).

Every node asks its DataFlow's ``clock`` for "now". The development and
production presets use the system clock; the testing preset (``deterministic=True``)
uses a ``SteppingClock``, so two runs of the same test write the same timestamps.
"""

from __future__ import annotations

import datetime as dt
import threading

__all__ = ["SystemClock", "SteppingClock", "clock_for"]

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def peek(self) -> dt.datetime:
        """The time now (for bookkeeping such as the migration history)."""
        return self.now()

    def __repr__(self) -> str:
        return "SystemClock()"


class SteppingClock:
    """A clock that starts at ``start`` and moves ``step`` forward on each call.

    >>> clock = SteppingClock()
    >>> clock.now(), clock.now()  # doctest: +SKIP
    (2024-01-01 00:00:00+00:00, 2024-01-01 00:00:01+00:00)
    """

    def __init__(self, start: dt.datetime = EPOCH, step: dt.timedelta = dt.timedelta(seconds=1)):
        self._lock = threading.Lock()
        self.step = step
        self.set(start)

    def set(self, instant: dt.datetime) -> None:
        """The next ``now()`` returns ``instant`` (naive datetimes are taken as UTC)."""
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=dt.UTC)
        with self._lock:
            self._next = instant.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        with self._lock:
            current, self._next = self._next, self._next + self.step
        return current

    def peek(self) -> dt.datetime:
        """What ``now()`` would return, without stepping: bookkeeping (the migration history)
        does not shift the timestamps that rows get."""
        with self._lock:
            return self._next

    def __repr__(self) -> str:
        return f"SteppingClock(next={self._next.isoformat()}, step={self.step})"


def clock_for(deterministic: bool) -> SystemClock | SteppingClock:
    return SteppingClock() if deterministic else SystemClock()
