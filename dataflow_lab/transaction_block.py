"""``db.transaction()``: one transaction for a block of code, sync or async.

A ``TransactionBlock`` opens a ``transactions.Scope`` and makes it the active one: workflows run
inside the block join it, and a nested block is a savepoint. The block commits at its end, or
rolls everything back on an exception, which propagates unchanged.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from . import _loop
from .errors import DataFlowError
from .transactions import ACTIVE_SCOPE, Scope, check_isolation

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces import DataFlow


class TransactionBlock:
    """``with db.transaction():`` / ``async with db.transaction():`` — one transaction for the block.

    Workflows run inside the block join it; a nested block is a savepoint. On an
    exception everything in the block is rolled back and the original exception
    propagates unchanged.
    """

    def __init__(self, dataflow: DataFlow, isolation: str | None = None):
        self.dataflow = dataflow
        self.isolation = check_isolation(isolation)
        self._scope: Scope | None = None
        self._token: contextvars.Token[Scope | None] | None = None

    def __repr__(self) -> str:
        state = "open" if self._scope is not None else "idle"
        return f"<transaction on {self.dataflow!r} ({self.isolation or 'default isolation'}, {state})>"

    def _enter(self) -> Scope:
        if self._scope is not None:
            raise DataFlowError("This transaction block is already open.", hint="use a new db.transaction().")
        parent = ACTIVE_SCOPE.get()
        self._scope = Scope(f"transaction-{id(self):x}", None, parent=parent, isolation=self.isolation)
        self._token = ACTIVE_SCOPE.set(self._scope)
        return self._scope

    @property
    def _open(self) -> Scope:
        """The block's scope (between _enter and _leave)."""
        assert self._scope is not None, "the transaction block is open"
        return self._scope

    async def _begin(self) -> None:
        await self._open.connection(self.dataflow, write=True)

    async def _end(self, failed: bool) -> None:
        if failed:
            await self._open.rollback()
        else:
            await self._open.commit()

    def _leave(self) -> None:
        if self._token is not None:
            ACTIVE_SCOPE.reset(self._token)
        self._scope = self._token = None

    def __enter__(self) -> TransactionBlock:
        self._enter()
        try:
            _loop.run(self._begin())
        except BaseException:
            _loop.run(self._open.rollback())
            self._leave()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            _loop.run(self._end(exc_type is not None))
        finally:
            self._leave()

    async def __aenter__(self) -> TransactionBlock:
        self._enter()
        try:
            await _loop.run_async(self._begin())
        except BaseException:
            await _loop.run_async(self._open.rollback())
            self._leave()
            raise
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await _loop.run_async(self._end(exc_type is not None))
        finally:
            self._leave()
