"""Read, List and Count through the DataFlow's result cache (result_cache.py), when it has one.

A node hands over its compiled statement, the statement's values and how to run it. The cache
is asked only outside a transaction (``RunContext.transacting``), for a table the cache can
watch, unless the node says ``cache=False``. The key is the SQL text (model, filter shape,
ordering, guards), its values (filter values, tenant, paging) with their types, and the user the
run acts for; access control has already passed the run (``access.py``) before any node runs.
Rows are copied into the cache and out of it, so no caller can change what another will read.
"""

from __future__ import annotations

import copy
import datetime as dt
import enum
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from ..access import current_user
from .base import Param, RunContext

if TYPE_CHECKING:  # pragma: no cover
    from .model_node import ModelNode

__all__ = ["CACHE_PARAM", "copy_rows", "through_cache"]

T = TypeVar("T")

CACHE_PARAM = Param(
    "cache",
    bool,
    default=True,
    description="use the DataFlow's result cache, when it has one (False: always ask the database)",
)

# immutable values a row copy may share (JSON's dicts and lists are deep-copied)
_PLAIN = frozenset(
    {str, int, float, bool, bytes, type(None), dt.datetime, dt.date, dt.time, uuid.UUID, Decimal}
)


async def through_cache(
    node: ModelNode,
    ctx: RunContext,
    sql: str,
    params: Sequence[Any],
    fetch: Callable[[], Awaitable[T]],
    copied: Callable[[T], T],
) -> T:
    """``await fetch()``, or the cached result of the same statement and values (a copy of it)."""
    cache = node.dataflow.database.cache
    if cache.settings is None:
        return await fetch()
    table = node.mt.model.table_name
    key = _key(sql, params) if node.params.get("cache", True) else None
    if key is None or not cache.covers(table) or ctx.transacting(node.dataflow):
        cache.bypass()
        return await fetch()
    found, value = cache.get(key)
    if found:
        return copied(value)
    ticket = cache.ticket(table)  # after get(), which may have emptied the cache (SQLite's data_version)
    value = await fetch()
    cache.put(key, table, copied(value), ticket)
    return value


def _key(sql: str, params: Sequence[Any]) -> tuple | None:
    """A hashable key for the statement and its values, each with its type (1, 1.0 and True differ);
    None when a value cannot be part of a key."""
    try:
        values = tuple((type(v), _frozen(v)) for v in params)
        key = (sql, values, current_user())
        hash(key)
    except TypeError:
        return None
    return key


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple((type(v), _frozen(v)) for v in value)
    return value


def copy_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows a caller may change freely: each dict copied, and JSON values (dicts, lists) deep-copied."""
    out = []
    for row in rows:
        fresh = dict(row)
        for name, value in fresh.items():
            if type(value) not in _PLAIN and not isinstance(value, enum.Enum):
                fresh[name] = copy.deepcopy(value)
        out.append(fresh)
    return out
