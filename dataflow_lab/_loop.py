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
    """Run a coroutine on the background loop and wait for its result."""
    if in_loop_thread():
        coro.close()
        raise DataFlowError(
            "A blocking dataflow_lab call was made from inside a running workflow.",
            hint="use `await AsyncLocalRuntime().execute_async(...)` from async code instead.",
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop())
    try:
        return future.result(timeout)
    except KeyboardInterrupt:
        future.cancel()
        raise
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise
    except ConnectionError as exc:  # a wrong URL: the loop thread's frames would only hide the message
        raise exc.with_traceback(None) from None


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await a coroutine that must run on the background loop, from any loop."""
    if in_loop_thread():
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop()))


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
