"""Plain Python callables as nodes: parameters are inputs, the return is the output.

The return annotation, when there is one, is the node's output type (``outputs.py``):
``-> dict`` says little, a TypedDict or a dataclass names each output and its type.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any

from ..errors import ValidationError
from ..model import MISSING
from .base import Node, NodeRef, Param, RunContext, Undo

__all__ = ["CallableUndo", "compensate_with", "python_node"]

_PLAIN = (str, int, float, bool, dict, list, tuple, bytes)
_COMPENSATION = "__dataflow_compensation__"  # where compensate_with marks a callable


def compensate_with(undo: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare how to undo a Python node: ``undo(result=..., **params)`` (sync or async).

    The saga calls it when a later node fails, with the node's output and parameters.
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _COMPENSATION, undo)
        return fn

    return mark


@functools.lru_cache(maxsize=1024)
def _node_class(fn: Callable[..., Any]) -> type[Node]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"Callable {fn!r} has no inspectable signature.", hint="wrap it in a def with named parameters."
        ) from exc
    try:
        hints = __import__("typing").get_type_hints(fn)
    except Exception:
        hints = {}
    params = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise ValidationError(
                f"Callable '{fn.__name__}' has parameter '{p.name}' of kind {p.kind.description}.",
                hint="node callables take named (keyword-capable) parameters only.",
            )
        annotation = hints.get(p.name, Any)
        kind = annotation if annotation in _PLAIN else Any
        if annotation is float:
            kind = (int, float)
        default = MISSING if p.default is p.empty else p.default
        params.append(
            Param(
                p.name,
                kind,
                required=default is MISSING,
                default=default,
                description=f"argument of {fn.__name__}",
            )
        )
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", "callable"))
    return type(
        f"PythonNode[{name}]",
        (PythonNode,),
        {
            "type_name": name,
            "parameters": tuple(params),
            "fn": staticmethod(fn),
            "returns": hints.get("return", Any),
            "description": (inspect.getdoc(fn) or "").split("\n")[0],
        },
    )


def python_node(fn: Callable[..., Any]) -> type[Node]:
    """The node class for a callable (cached per callable)."""
    try:
        return _node_class(fn)
    except TypeError:  # unhashable callable
        return _node_class.__wrapped__(fn)


class _DaemonPool:
    """Daemon worker threads that are kept and reused: starting an OS thread per call cost
    130-171 µs, a queue hand-off to an idle worker a few µs.

    Not concurrent.futures (nor asyncio.to_thread): its threads are joined at interpreter
    exit, so a Ctrl-C during a slow callable would keep the process alive until it returned.
    A job never waits for a busy worker: when none is idle, a new one starts, so a slow
    callable cannot hold up a parallel branch's.
    """

    def __init__(self, keep: int = 8) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._keep = keep  # idle workers beyond this many exit

    def submit(self, job: Callable[[], None], name: str) -> None:
        self._jobs.put(job)
        with self._lock:
            if self._idle:  # an idle worker takes it
                self._idle -= 1
                return
        # A new worker takes it (or another queued job). The job is never the thread's argument: a
        # Thread keeps its arguments while it lives, and the job's closure holds the run's future,
        # whose result or exception holds the run and its DataFlow.
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            job: Callable[[], None] | None = self._jobs.get()
            assert job is not None
            job()
            job = None  # let the finished job go before waiting for the next one
            with self._lock:
                if self._idle >= self._keep:
                    return
                self._idle += 1


_WORKERS = _DaemonPool()


def _in_daemon_thread(fn: Callable[..., Any], params: dict[str, Any]) -> asyncio.Future:
    """Run a sync callable off the loop, on one of the kept daemon threads (``_DaemonPool``)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    context = contextvars.copy_context()  # so a workflow run from inside joins this run

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def work() -> None:
        try:
            outcome = (True, context.run(fn, **params))
        except BaseException as exc:  # delivered to the awaiting node
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: the process is exiting
            pass

    _WORKERS.submit(work, name=f"dataflow-node-{getattr(fn, '__name__', 'fn')}")
    return future


class PythonNode(Node):
    operation = "python"
    fn: Callable[..., Any]
    returns: Any = Any  # the return annotation: what build() checks connections from it against

    @classmethod
    def output_type(cls) -> Any:
        return cls.returns

    @classmethod
    def pickle_ref(cls) -> NodeRef:
        return python_node, (cls.fn,)

    async def run(self, ctx: RunContext) -> Any:
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**self.params)
        result = await _in_daemon_thread(self.fn, self.params)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def undo(self, conn: Any, before: Any, result: Any) -> Undo | None:
        """The callable's ``@compensate_with(undo)``, if it declared one."""
        undo = getattr(self.fn, _COMPENSATION, None)
        return None if undo is None else CallableUndo(undo, result, dict(self.params))


class CallableUndo(Undo):
    """A Python node's own undo: ``undo(result=..., **params)``. The saga log cannot store it."""

    def __init__(self, fn: Callable[..., Any], result: Any, params: dict[str, Any]):
        self.fn = fn
        self.result = result
        self.params = params

    def __repr__(self) -> str:
        return f"CallableUndo(fn={self.fn!r}, result={self.result!r}, params={self.params!r})"

    async def apply(self, conn: Any) -> None:
        outcome = self.fn(result=self.result, **self.params)
        if inspect.isawaitable(outcome):
            await outcome
