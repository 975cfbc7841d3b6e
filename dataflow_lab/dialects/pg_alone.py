"""A PostgreSQL statement that is its own transaction: one round trip instead of three.

A run that writes exactly one statement (a one-node Create, ``transactions.Scope.alone``) sends
it without BEGIN and COMMIT: the server commits it when it ends. Every guarantee of the
BEGIN ... COMMIT form is kept, because its outcome is always learned before the run reports:

- the server refused it (an ERROR: a constraint, a deadlock, ``statement_timeout``, a cancel):
  nothing was written, as after a ROLLBACK; the error is the one the BEGIN form raises, and
  a transient one is retried the same way;
- it was never sent (the connection was known dead): nothing was written; retried;
- a time limit (or any cancellation) reaches the run while it is on its way: the statement
  is cancelled on the server (PostgreSQL's cancel request) and its outcome is awaited. The
  server cancelled it: nothing was written, and the time limit is reported as a rollback,
  truthfully. It had completed first: it committed, and the run returns its result (the
  limit came too late to stop anything; never a rollback reported for a row that stands).
  The connection is then discarded: a cancel request that lands late could cancel its next
  statement;
- the connection broke while it was on its way, or its outcome did not come within
  OUTCOME_WAIT seconds of the cancel: the outcome is unknown, as with a COMMIT lost on its
  way, and the run raises the same ``TransactionError`` (never retried, so nothing is
  applied twice).

After it, the connection takes reads only, each its own snapshot (an Update or Delete that
matched no row reads why: a version conflict, or no such row). A second write is refused
before it is sent: the first has committed, so the two would not be one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from .._loop import shielded
from ..errors import TransactionError
from ..sqltext import writes

__all__ = ["OUTCOME_WAIT", "Alone", "refused_by_server"]

log = logging.getLogger("dataflow_lab.sql")

OUTCOME_WAIT = 5.0  # seconds a cancelled statement's outcome is awaited before it counts as unknown


def refused_by_server(error: BaseException) -> bool:
    """Whether the server answered the statement with an ERROR, which ends (rolls back) the
    implicit transaction it ran in. FATAL and PANIC may come after a commit; they do not count."""
    severity = getattr(error, "severity_en", None) or getattr(error, "severity", None)
    return severity == "ERROR"


class Alone:
    """The state of one connection's statement that commits alone: armed, then sent once."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = "armed"  # -> "sent" -> "committed" | "rolled back" | "unknown"

    @property
    def committed(self) -> bool:
        return self.state == "committed"

    def refuse(self, where: str) -> NoReturn:
        """A statement this state does not take (a second one, or a kind that never runs alone)."""
        raise TransactionError(
            f"A statement on {where} that a run committing its one statement alone cannot take: "
            "it would not be in one transaction with the other.",
            hint="this is a bug in dataflow_lab (a node that declared one statement sent more); "
            "please report it. Nothing of this statement was sent.",
        )

    async def run(
        self,
        sql: str,
        send: Callable[[], Awaitable[Any]],
        *,
        cancel: Callable[[], Awaitable[None]],
        never_sent: Callable[[BaseException], bool],
        where: str,
    ) -> Any:
        """Send the statement ``sql`` (``send()``) and return its result once it has committed."""
        if self.state == "committed" and not writes(sql):
            return await send()  # a read after the write: it changes nothing
        if self.state != "armed":
            self.refuse(where)
        self.state = "sent"
        statement = asyncio.ensure_future(send())
        try:
            result = await asyncio.shield(statement)
        except asyncio.CancelledError:
            if not statement.done():
                await self._cancelled(statement, cancel, where)  # returns only if it committed
            elif statement.cancelled():  # only the loop's teardown cancels it: asyncpg's own cancel ran
                self.state = "unknown"
                raise
            elif (error := statement.exception()) is not None:
                self._failed(error, never_sent, where)
            self.state = "committed"  # it ended as the cancellation came: it stands
            return statement.result()
        except Exception as exc:
            self._failed(exc, never_sent, where)
        self.state = "committed"
        return result

    async def _cancelled(
        self, statement: asyncio.Future, cancel: Callable[[], Awaitable[None]], where: str
    ) -> None:
        """The caller was cancelled with the statement on its way: stop it on the server, learn its
        outcome, and raise the cancellation again unless it committed (then return)."""
        try:
            await shielded(asyncio.wait_for(cancel(), OUTCOME_WAIT))
        except Exception:  # the outcome below still tells what happened
            log.warning("sending a cancel request for a statement on %s failed", where, exc_info=True)
        done, _ = await shielded(asyncio.wait({statement}, timeout=OUTCOME_WAIT))
        if not done:
            statement.cancel()
            self.state = "unknown"
            raise TransactionError(
                f"A time limit (or a cancellation) stopped a run while its one statement was on its way "
                f"to {where}, and the server did not answer the cancel within {OUTCOME_WAIT:g} s: whether "
                "it committed is unknown.",
                hint="check the data before running the workflow again (it is not retried, so nothing "
                "is applied twice).",
            )
        error = statement.exception()
        if error is None:
            log.info("a statement on %s committed before its cancel arrived; the run keeps it", where)
            return
        if refused_by_server(error):
            self.state = "rolled back"
            raise asyncio.CancelledError  # the time limit reports it: nothing was written
        self.state = "unknown"
        raise _unknown(where, error) from error

    def _failed(
        self, error: BaseException, never_sent: Callable[[BaseException], bool], where: str
    ) -> NoReturn:
        if refused_by_server(error) or never_sent(error):
            self.state = "rolled back"
            raise error
        self.state = "unknown"
        raise _unknown(where, error) from error


def _unknown(where: str, error: BaseException) -> TransactionError:
    return TransactionError(
        f"The connection to {where} broke while a statement that commits on its own was on its way "
        f"({type(error).__name__}): whether it committed is unknown.",
        hint="check the data before running the workflow again (it is not retried, so nothing is "
        "applied twice).",
    )
