"""The runtime's one background thread and its event loop.

Sync calls submit coroutines to this loop and wait; async calls await them
through ``asyncio.wrap_future``. This works the same in a script, from many
threads, and inside a running Jupyter kernel, where ``asyncio.run`` raises.
The thread is a daemon and is stopped at exit, so a process never hangs.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .errors import ConnectionError, DataFlowError

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_at_exit: list[Callable[[], Awaitable[None]]] = []


def loop() -> asyncio.AbstractEventLoop:
    """The background loop, started on first use."""
    global _loop, _thread
    if _loop is not None:
        return _loop
    with _lock:
        if _loop is None:
            new_loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(new_loop)
                new_loop.call_soon(ready.set)
                new_loop.run_forever()

            _thread = threading.Thread(target=run, name="dataflow-lab-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = new_loop
    return _loop


def in_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run a coroutine on the background loop and wait for its result.

    On KeyboardInterrupt the coroutine is cancelled and waited for (a run rolls back, a saga
    compensates) before the interrupt is re-raised; a second interrupt stops the waiting.
    """
    if in_loop_thread():
        coro.close()
        raise DataFlowError(
            "A blocking dataflow_lab call was made from inside a running workflow.",
            hint="use `await AsyncLocalRuntime().execute_async(...)` from async code instead.",
        )
    future, run = _submit(coro)
    try:
        return future.result(timeout)
    except KeyboardInterrupt:
        run.cancel(future).result()
        raise
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise
    except ConnectionError as exc:  # a wrong URL: the loop thread's frames would only hide the message
        raise exc.with_traceback(None) from None


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await a coroutine that must run on the background loop, from any loop.

    Cancelling the caller cancels the coroutine, and waits for it to end (a run rolls back, a
    saga compensates) before the cancellation reaches the caller.
    """
    if in_loop_thread():
        return await coro
    future, run = _submit(coro)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        await asyncio.wrap_future(run.cancel(future))  # cancelled again meanwhile: stop waiting
        raise


def can_run_here() -> bool:
    """Whether this thread may run a coroutine on a loop of its own (``run_here``): it is not the
    background thread, and no event loop runs in it (Jupyter's kernel runs one in its main thread)."""
    if in_loop_thread():
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


class _Own:
    """This thread's own event loop (``run_here``), closed when the thread ends."""

    __slots__ = ("loop",)

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        self.loop.close()


_own = threading.local()


def elsewhere() -> bool:
    """Whether the code calling runs on a thread's own loop (``run_here``), not the background one:
    work that must outlive the run (a monitor's timer, a queued EXPLAIN) goes to the background loop."""
    own = getattr(_own, "value", None)
    return own is not None and own.loop.is_running()


def run_here(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on this thread's own loop, no hand-off to the background thread.

    Only for work that needs nothing of the background loop (a run on SQLite, whose statements
    are calls, see dialects/sqlite.py); ``can_run_here()`` must say yes. An interrupt (Ctrl-C)
    cancels the coroutine and waits for it to end (a run rolls back) before it is re-raised.
    """
    own = getattr(_own, "value", None)
    if own is None:
        own = _own.value = _Own()
    task = own.loop.create_task(coro)
    try:
        return own.loop.run_until_complete(task)
    except BaseException:
        if not task.done():  # interrupted outside the task's own code: end it, so it rolls back
            task.cancel()
            try:
                own.loop.run_until_complete(task)
            except BaseException:  # its own outcome: the interrupt is what the caller sees
                pass
        raise


class _Submitted:
    """A coroutine submitted to the loop, and whether it began and ended there (loop thread only).

    ``ended`` (a Future set once it stopped, or never began) is made only when the caller cancels:
    a run that is never cancelled makes no second Future (and no Condition) per run.
    """

    __slots__ = ("abandoned", "began", "over", "ended")

    def __init__(self) -> None:
        self.began = self.abandoned = self.over = False
        self.ended: concurrent.futures.Future[None] | None = None

    async def settled(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.abandoned:  # cancelled before it began: it never begins
            coro.close()
            raise asyncio.CancelledError
        self.began = True
        try:
            return await coro
        finally:
            self.end()

    def cancel(self, future: concurrent.futures.Future) -> concurrent.futures.Future[None]:
        """From the caller's thread: cancel it; the Future returned is set once it stopped (or never
        began)."""
        ended = self.ended = concurrent.futures.Future()  # before the loop thread can look for it
        future.cancel()
        loop().call_soon_threadsafe(self._abandon)
        return ended

    def _abandon(self) -> None:
        if not self.began:
            self.abandoned = True
            self.end()
        elif self.over:  # it ended before the cancellation reached the loop
            self.end()

    def end(self) -> None:
        self.over = True
        ended = self.ended
        if ended is not None and not ended.done():
            ended.set_result(None)


def _submit(coro: Coroutine[Any, Any, T]) -> tuple[concurrent.futures.Future[T], _Submitted]:
    submitted = _Submitted()
    return asyncio.run_coroutine_threadsafe(submitted.settled(coro), loop()), submitted


def on_exit(callback: Callable[[], Awaitable[None]]) -> None:
    """Register an async cleanup to run on the loop at interpreter exit."""
    _at_exit.append(callback)


def _shutdown() -> None:
    global _loop
    if _loop is None or not _loop.is_running():
        return

    async def cleanup() -> None:
        for callback in list(_at_exit):
            try:
                await asyncio.wait_for(callback(), timeout=2.0)
            except Exception:  # best effort at exit: never block or raise here
                pass

    try:
        asyncio.run_coroutine_threadsafe(cleanup(), _loop).result(timeout=5.0)
    except Exception:
        pass
    _loop.call_soon_threadsafe(_loop.stop)
    if _thread is not None:
        _thread.join(timeout=2.0)


atexit.register(_shutdown)


async def shielded(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile (again and again): what
    must not stop half-way (a saga's compensations, learning a sent statement's outcome) finishes;
    the caller's own cancellation is already on its way up."""
    task = asyncio.ensure_future(work)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
