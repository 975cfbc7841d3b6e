"""Which failures are transient, and how long to wait before trying again.

Connection errors (ours, and the builtin ``ConnectionError`` family), timeouts and
SQLite's "database is locked" are retried with exponential backoff and jitter;
deadlocks (PostgreSQL 40P01) and serialization failures (40001) retry the whole
transaction. The default policy is a time budget: it keeps trying for 10 s, so a
server restart of a second or two costs the runs in flight a delay, not an error.
A failed COMMIT is never retried: its outcome is unknown, and retrying could apply
a write twice. Neither is a run or node that passed its time limit, nor a full pool
(``PoolExhaustedError``: it already waited ``pool_timeout``). Which driver errors are
transient is each dialect's fact (``Dialect.transient_reason``); this module knows
the generic ones.
"""

from __future__ import annotations

import asyncio
import builtins
import random
from dataclasses import dataclass

from .dialects import transient_reason
from .errors import ConnectionError as DataFlowConnectionError
from .errors import DataFlowError, RunTimeoutError, TransactionError, ValidationError

__all__ = ["RetryPolicy", "note_attempts", "retry_reason"]

_FINAL = (TransactionError, RunTimeoutError)  # never retried, whatever caused them


@dataclass(frozen=True)
class RetryPolicy:
    """Retry while ``attempts`` (tries in all; None: no count) and ``budget`` (seconds since the
    first try; None: no limit) both allow. Waits base_delay * 2**n (capped at max_delay), times
    1 +/- jitter. The default: as many tries as fit in 10 s.
    """

    attempts: int | None = None
    base_delay: float = 0.05
    max_delay: float = 1.0
    jitter: float = 0.5
    budget: float | None = 10.0

    def __post_init__(self) -> None:
        counted = self.attempts is None or (isinstance(self.attempts, int) and self.attempts >= 1)
        timed = self.budget is None or self.budget >= 0
        bounded = self.attempts is not None or self.budget is not None
        delays = self.base_delay >= 0 and self.max_delay >= 0 and 0 <= self.jitter <= 1
        if not (counted and timed and bounded and delays):
            raise ValidationError(
                f"{self!r} is not valid.",
                hint="attempts >= 1 or None, budget >= 0 seconds or None (not both None), delays >= 0, "
                "0 <= jitter <= 1.",
            )

    def allows(self, attempt: int, elapsed: float, delay: float) -> bool:
        """Whether to try again after failed attempt ``attempt``, ``elapsed`` s after the first began."""
        if self.attempts is not None and attempt >= self.attempts:
            return False
        return self.budget is None or elapsed + delay <= self.budget

    @classmethod
    def of(cls, value: RetryPolicy | int | bool | None) -> RetryPolicy:
        if isinstance(value, RetryPolicy):
            return value
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(attempts=1)
        if isinstance(value, int):
            return cls(attempts=value, budget=None)  # a count of attempts, however long they take
        raise ValidationError(f"retry must be a RetryPolicy, an int (attempts) or a bool, got {value!r}.")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


def note_attempts(error: BaseException, attempts: int, elapsed: float) -> None:
    """Say on the final error how many attempts were made, over how long (``error.attempts``...)."""
    if attempts <= 1 or getattr(error, "attempts", None) is not None:
        return
    error.attempts, error.retried_for = attempts, elapsed  # type: ignore[attr-defined]
    said = f"(gave up after {attempts} attempts over {elapsed:.1f} s)"
    if isinstance(error, DataFlowError) and error.args and isinstance(error.args[0], str):
        text, hint = error.args[0], f" Hint: {error.hint}" if error.hint else ""
        body = text[: -len(hint)] if hint and text.endswith(hint) else text
        error.args = (f"{body} {said}{hint if body != text else ''}", *error.args[1:])
    else:
        error.add_note(said.strip("()"))


def retry_reason(error: BaseException | None) -> str | None:
    """Why ``error`` is worth retrying (None: it is not)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        reason = _reason_of(error)
        if reason is not None or isinstance(error, _FINAL):
            return reason
        error = getattr(error, "cause", None) or error.__cause__
    return None


def _reason_of(error: BaseException) -> str | None:
    if isinstance(error, _FINAL):
        return None  # a failed COMMIT (outcome unknown), or a time limit passed: never retried
    if isinstance(error, DataFlowConnectionError):
        return "cannot connect"
    reason = transient_reason(error)  # a driver's own transient errors, as its dialect knows them
    if reason is not None:
        return reason
    if isinstance(error, builtins.ConnectionError):  # refused, reset, aborted, broken pipe
        return "connection lost"
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    return None
