"""The process's memory: resident set size now and at its peak, and per-node probes.

``rss_bytes()`` reads ``/proc/self/statm`` through a descriptor kept open (about
a microsecond on Linux); elsewhere it asks psutil when it is installed, and
gives None otherwise. A ``MemoryProbe`` measures what one node did to memory:

- ``"rss"`` (the default): the change in resident memory across the node, in MB
  (pages the process took or gave back; small nodes mostly read 0.0);
- ``"tracemalloc"``: the most the node allocated above what was allocated when it
  began (``tracemalloc`` is started for it, which slows Python down; ask for it).

Both are process-wide: nodes that run at the same time (AsyncLocalRuntime's
branches) share their figures. A run measures its nodes through a ``RunProbe``,
which also reads the node's pool use. With "rss", ``/proc`` is read at most once
per node, and at most once per millisecond on a thread (a read costs 2-8 us inside
a run, the larger part of monitoring's cost on a sub-millisecond node):

- a node that starts while no other node is running on its thread, within
  CHAIN_WITHIN (a millisecond) of the last one's end (its predecessor's, or the
  previous run's last node's), starts from the last reading on that thread;
- a node that ends within SAMPLE_EVERY (a millisecond) of that reading takes no
  new one: it shows 0.0, and what it changed shows in the next node that reads
  (the next node on its thread that ends later, when it follows within
  CHAIN_WITHIN). A millisecond touches a few MB at most, so a node that takes or
  gives back more always reads its own end: its figure is its own.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from typing import Any

__all__ = ["MemoryProbe", "RunProbe", "memory_figures", "peak_rss_bytes", "probe_for", "rss_bytes"]

MB = 1024 * 1024
CHAIN_WITHIN = 0.001  # seconds: a node starting this soon after its predecessor's end starts from its reading
SAMPLE_EVERY = 0.001  # seconds: a node ending this soon after the last reading on its thread reads no new one
_statm: int | None = None  # an open descriptor of /proc/self/statm, or -1 where there is none
_page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_lock = threading.Lock()


def rss_bytes() -> int | None:
    """The process's resident set size now, in bytes (None where it cannot be read)."""
    global _statm
    fd = _statm
    if fd is None:
        with _lock:
            if _statm is None:
                try:
                    _statm = os.open("/proc/self/statm", os.O_RDONLY)
                except OSError:
                    _statm = -1
            fd = _statm
    if fd >= 0:
        try:
            # "size resident shared ...": only the second field is parsed
            return int(os.pread(fd, 64, 0).split(None, 2)[1]) * _page
        except (OSError, ValueError, IndexError):  # pragma: no cover - /proc went away (a fork?)
            return None
    return _psutil_rss()


def _forget_statm() -> None:
    """In a forked child: the inherited descriptor reads the parent's /proc entry, so open our own."""
    global _statm
    fd, _statm = _statm, None
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:  # pragma: no cover - closed already
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_statm)


def _psutil_rss() -> int | None:  # pragma: no cover - platforms without /proc
    try:
        psutil = importlib.import_module("psutil")  # optional: only where /proc is missing
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int | None:
    """The most resident memory the process has had, in bytes (None where it cannot be read)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if os.uname().sysname == "Darwin" else int(peak) * 1024  # kB on Linux


def memory_figures() -> dict[str, Any]:
    """The dashboard's ``process`` section: resident memory now and at peak, tracemalloc's if on."""
    rss, peak = rss_bytes(), peak_rss_bytes()
    if rss is not None and peak is not None:
        peak = max(peak, rss)  # the kernel updates the peak lazily; never show it below the present
    figures: dict[str, Any] = {
        "memory_rss_mb": None if rss is None else round(rss / MB, 3),
        "memory_peak_rss_mb": None if peak is None else round(peak / MB, 3),
        "tracemalloc_mb": None,
        "tracemalloc_peak_mb": None,
    }
    import tracemalloc  # here, not above: most processes never ask for it (0.5 ms at import)

    if tracemalloc.is_tracing():
        current, top = tracemalloc.get_traced_memory()
        figures["tracemalloc_mb"], figures["tracemalloc_peak_mb"] = round(current / MB, 3), round(top / MB, 3)
    return figures


class MemoryProbe:
    """Measures one node: ``start()`` before it, ``megabytes(start)`` after (see the module)."""

    __slots__ = ("kind", "chains")

    def __init__(self, kind: str):
        self.kind = kind
        # whether a node's end reading can serve as the next node's start (tracemalloc's peak
        # must be reset at each start)
        self.chains = kind == "rss"
        if kind == "tracemalloc":
            import tracemalloc

            if not tracemalloc.is_tracing():
                tracemalloc.start()

    def __repr__(self) -> str:
        return f"MemoryProbe({self.kind!r})"

    def start(self) -> int | None:
        if self.kind == "tracemalloc":
            import tracemalloc  # imported by __init__ already

            if not tracemalloc.is_tracing():
                return None
            tracemalloc.reset_peak()
            return tracemalloc.get_traced_memory()[0]
        return rss_bytes()

    def megabytes(self, start: int | None) -> float | None:
        if start is None:
            return None
        if self.kind == "tracemalloc":
            import tracemalloc

            if not tracemalloc.is_tracing():
                return None
            return round((tracemalloc.get_traced_memory()[1] - start) / MB, 3)
        now = rss_bytes()
        return None if now is None else round((now - start) / MB, 3)


class _Chain:
    """What the nodes measured on one thread leave for the next: the last reading, while no node of
    any run on this thread is running, when it was read, and when the last node ended."""

    __slots__ = ("mark", "marked_at", "ended_at", "running")

    def __init__(self) -> None:
        self.mark: int | None = None
        self.marked_at = 0.0  # time.perf_counter() of the reading
        self.ended_at = 0.0  # time.perf_counter() at the last node's end
        self.running = 0  # nodes started and not yet ended on this thread, of every run


_THREAD = threading.local()  # .chain: this thread's _Chain (one lookup per probe call, then plain slots)


def _chain() -> _Chain:
    """This thread's chain (made at its first node)."""
    try:
        return _THREAD.chain
    except AttributeError:
        chain = _THREAD.chain = _Chain()
        return chain


class RunProbe:
    """One run's node figures: ``start()`` before a node, ``end(start, node_class, at)`` after it
    (``at``: the runtime's own ``time.perf_counter()`` reading at the node's end) gives
    (memory_mb, pool_usage) as ``hooks.NodeRecord`` holds them. ``pools`` (node class -> its
    dialect's ``pool_usage``) may be shared by every run of one workflow (``probe_for``).

    With a chaining probe ("rss"), a node that starts while no node is running on its thread, within
    CHAIN_WITHIN of the last one's end, starts from the reading that one ended on (what the runtime
    does between two nodes, or between two runs of a loop, is counted in the second); with two nodes
    in flight (an AsyncLocalRuntime's branches, or another run's), or after a longer gap (a retried
    run's backoff), a node reads its own start. A node that ends within SAMPLE_EVERY of the last
    reading on its thread shares that reading as its end (the module says what that shows). A node's
    start and end are on one thread.
    """

    __slots__ = ("probe", "pools")

    def __init__(self, probe: MemoryProbe, pools: dict[type, Any] | None = None):
        self.probe = probe
        # node class -> its dialect's pool_usage (None: no database); a node class's DataFlow and
        # its database's dialect never change, so the runs of one workflow share one
        self.pools: dict[type, Any] = {} if pools is None else pools

    def start(self) -> int | None:
        try:  # _chain(), inlined: this runs per node while monitored
            chain = _THREAD.chain
        except AttributeError:
            chain = _chain()
        mark = chain.mark  # only a chaining probe leaves one
        if mark is None or not self.probe.chains or chain.running:
            mark = self.probe.start()
        elif (now := time.perf_counter()) - chain.ended_at > CHAIN_WITHIN:
            mark = self.probe.start()
            if mark is not None:  # the reading the node's end may share (SAMPLE_EVERY)
                chain.mark, chain.marked_at = mark, now
        chain.running += 1
        return mark

    def end(self, start: int | None, node_class: Any, at: float) -> tuple[float | None, str | None]:
        try:
            chain = _THREAD.chain
        except AttributeError:
            chain = _chain()
        chain.running -= 1
        usage = self.pools.get(node_class, False)
        if usage is False:
            db = node_class.dataflow
            usage = self.pools[node_class] = db.database.dialect.pool_usage if db is not None else None
        pool = usage() if usage is not None else None
        if start is None:
            return None, pool
        if not self.probe.chains:
            return self.probe.megabytes(start), pool
        mark = chain.mark
        if chain.running:  # another node is in flight on this thread: no reading is shared
            now = rss_bytes()
            chain.mark = None
        elif mark is not None and at - chain.marked_at < SAMPLE_EVERY:
            chain.ended_at = at  # read under a millisecond ago: sampled (see the module)
            return (0.0 if mark == start else round((mark - start) / MB, 3)), pool
        else:
            now = rss_bytes()
            chain.mark, chain.marked_at = now, at
        chain.ended_at = at
        if now is None:  # pragma: no cover - /proc went away
            chain.mark = None
            return None, pool
        return round((now - start) / MB, 3), pool


_PROBES: dict[str, MemoryProbe] = {}


def probe_for(kind: str | None, pools: dict[type, Any] | None = None) -> RunProbe | None:
    """A run's probe of ``kind`` ("rss" or "tracemalloc"; None: no probe); the MemoryProbe under it
    is one per kind per process. ``pools``: the pool lookups to share (see RunProbe)."""
    if kind is None:
        return None
    probe = _PROBES.get(kind)
    if probe is None:
        probe = _PROBES[kind] = MemoryProbe(kind)
    return RunProbe(probe, pools)
