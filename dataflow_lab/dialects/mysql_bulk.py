"""MySQL's bulk writes: multi-row INSERTs sized to the server, ``ON DUPLICATE KEY UPDATE``, and the
new ids of a bulk insert with or without ``INSERT ... RETURNING`` (MariaDB 10.5+ has it, MySQL 8 not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

STATEMENT_BYTES = 2**20  # 1 MB statements: 8 MB ones took MariaDB longer per row (measured)


def statements(
    rows: Sequence[Sequence[Any]], n_columns: int, max_binds: int, max_bytes: int
) -> Iterator[Sequence[Any]]:
    """``rows`` in runs of one statement each: within the bind limit and ``max_bytes`` of SQL text,
    as the largest of 64 rows sampled from each run counts them."""
    most = max(1, max_binds // max(1, n_columns))
    start = 0
    while start < len(rows):
        sample = rows[start : start + most : max(1, most // 64)]  # the next statement's, evenly spaced
        per_row = max(_text_size(r) for r in sample) if sample else 1
        count = max(1, min(most, max_bytes // max(1, per_row)))
        yield rows[start : start + count]
        start += count


def _text_size(row: Sequence[Any]) -> int:
    """About how many bytes of SQL a row's values make (escaping doubles a few characters)."""
    return sum(len(v) * 2 + 4 if isinstance(v, str | bytes) else 28 for v in row)


def flat(rows: Sequence[Sequence[Any]]) -> list[Any]:
    return [v for row in rows for v in row]


def on_conflict_sql(
    quote: Callable[[str], str],
    table: sa.Table,
    conflict_on: Sequence[str],
    update_columns: Sequence[str],
    guard: Sequence[str] = (),
) -> str:
    """``ON DUPLICATE KEY UPDATE``: a guard keeps each column as it was unless the guard matches.

    The guard is tested in every assignment before any of them changes a guarded column
    (the guard's columns are never among those updated).
    """
    if not update_columns:  # DO NOTHING: assign the key to itself
        first = quote(conflict_on[0])
        return f"ON DUPLICATE KEY UPDATE {first} = {first}"
    matches = " AND ".join(f"{quote(c)} <=> VALUES({quote(c)})" for c in guard)
    sets = []
    for c in update_columns:
        col = quote(c)
        new = f"{col} + 1" if table.c[c].info.get("counter") else f"VALUES({col})"
        sets.append(f"{col} = IF({matches}, {new}, {col})" if matches else f"{col} = {new}")
    return "ON DUPLICATE KEY UPDATE " + ", ".join(sets)


def upsert_statement(
    insert: Any,
    table: sa.Table,
    conflict_on: Sequence[str],
    update_columns: Sequence[str],
    guard: Sequence[str] = (),
) -> Any:
    """``on_conflict_sql`` as a SQLAlchemy statement (``insert``: MySQL's INSERT of bind parameters)."""
    if not update_columns:
        first = conflict_on[0]
        return insert.on_duplicate_key_update({first: table.c[first]})
    sets = {}
    for c in update_columns:
        new = table.c[c] + 1 if table.c[c].info.get("counter") else insert.inserted[c]
        if guard:
            matches = sa.and_(*(table.c[g].is_not_distinct_from(insert.inserted[g]) for g in guard))
            new = sa.case((matches, new), else_=table.c[c])
        sets[c] = new
    return insert.on_duplicate_key_update(sets)


async def id_steps(conn: Any) -> int | None:
    """The step between the ids of one multi-row INSERT (``auto_increment_increment``), or None when
    InnoDB may interleave other statements' ids with them (``innodb_autoinc_lock_mode`` 2, MySQL 8's
    default): only lock modes 0 and 1 promise a simple INSERT consecutive ids."""
    mode, step = (await conn.fetch("SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment"))[0]
    return int(step) if int(mode) <= 1 else None


async def inserted_ids(
    conn: Any,
    insert_sql: Callable[[int], str],
    parts: Iterator[Sequence[Sequence[Any]]],
    *,
    returning: bool,
    step: int | None,
) -> list[Any]:
    """Insert each part in one statement, and learn the new ids, in input order.

    With ``returning`` (MariaDB): ``INSERT ... RETURNING id``. Without (MySQL 8): LAST_INSERT_ID()
    is the first id of a statement, the others follow it by ``step``; where they may not (``step``
    None), one row per statement, each with its own LAST_INSERT_ID().
    """
    ids: list[Any] = []
    for part in parts:
        if returning:
            returned = await conn.fetch(insert_sql(len(part)) + " RETURNING id", flat(part))
            ids.extend(sorted(r[0] for r in returned))  # ids grow in insertion order within a statement
        elif step is None:
            for row in part:
                ids.append((await conn.insert(insert_sql(1), list(row)))[0])
        else:
            first, count = await conn.insert(insert_sql(len(part)), flat(part))
            ids.extend(range(first, first + count * step, step))
    return ids
