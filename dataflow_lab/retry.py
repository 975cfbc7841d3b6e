"""Which failures are transient, and how long to wait before trying again.

Connection errors, timeouts and SQLite's "database is locked" are retried
with exponential backoff and jitter; deadlocks (PostgreSQL 40P01) and
serialization failures (40001) retry the whole transaction. A failed COMMIT
is never retried: its outcome is unknown, and retrying could apply a write
twice. Which driver errors are transient is each dialect's fact
(``Dialect.transient_reason``); this module knows the generic ones.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from .dialects import transient_reason
from .errors import ConnectionError as DataFlowConnectionError
from .errors import TransactionError, ValidationError

__all__ = ["RetryPolicy", "retry_reason"]


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; waits base_delay * 2**n (capped), times 1 +/- jitter."""

    attempts: int = 4
    base_delay: float = 0.05
    max_delay: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or not 0 <= self.jitter <= 1:
            raise ValidationError(
                f"RetryPolicy{(self.attempts, self.base_delay, self.max_delay, self.jitter)} is not valid.",
                hint="attempts >= 1, delays >= 0, 0 <= jitter <= 1.",
            )

    @classmethod
    def of(cls, value: RetryPolicy | int | bool | None) -> RetryPolicy:
        if isinstance(value, RetryPolicy):
            return value
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(attempts=1)
        if isinstance(value, int):
            return cls(attempts=value)
        raise ValidationError(f"retry must be a RetryPolicy, an int (attempts) or a bool, got {value!r}.")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


def retry_reason(error: BaseException) -> str | None:
    """Why ``error`` is worth retrying (None: it is not)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        reason = _reason_of(error)
        if reason is not None or isinstance(error, TransactionError):
            return reason
        error = getattr(error, "cause", None) or error.__cause__
    return None


def _reason_of(error: BaseException) -> str | None:
    if isinstance(error, TransactionError):
        return None  # a failed COMMIT: outcome unknown, never retried
    if isinstance(error, DataFlowConnectionError):
        return "cannot connect"
    reason = transient_reason(error)  # a driver's own transient errors, as its dialect knows them
    if reason is not None:
        return reason
    if isinstance(error, ConnectionRefusedError | ConnectionResetError | BrokenPipeError):
        return "connection lost"
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    return None
