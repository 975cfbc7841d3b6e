"""Every Dialect class defined so far: what ``transient_reason`` asks (no imports: cheap).

``Dialect.__init_subclass__`` (dialects/base.py) registers each class; retry.py asks
``dialects.transient_reason`` without loading SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register_kind", "transient_reason"]

_KINDS: list[Any] = []  # every Dialect class defined so far, each registered by its definition


def register_kind(dialect_class: Any) -> None:
    """Called by ``Dialect.__init_subclass__``: ``transient_reason`` asks every dialect defined."""
    _KINDS.append(dialect_class)


def transient_reason(error: BaseException) -> str | None:
    """Why a driver's ``error`` is worth retrying, as its dialect sees it (None: no dialect's transient).

    Only dialects whose module is loaded are asked: a driver's error comes from a dialect built here.
    """
    for kind in _KINDS:
        reason = kind.transient_reason(error)
        if reason is not None:
            return reason
    return None
