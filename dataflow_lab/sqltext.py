"""The text of a user's SQL statement: its named parameters, whether it writes, how many it holds.

``db.sql`` and the ``%%dataflow sql`` cell take SQL as the user writes it, with ``:name``
parameters (and ``{name}`` in a cell, taken from the notebook's variables). Values are always
bound, never pasted into the text: ``bind`` turns the names into the driver's positional
placeholders and gives the values in their order.

A small scanner, not a parser: it knows quoted strings and identifiers, comments, PostgreSQL's
``::`` casts and dollar quoting, which is what finding parameters and keywords needs. Whether a
statement writes is a guess from its keywords (``writes``). The database enforces read-only on
its own as well (see ``Connection.query_read_only``), so the guess only decides which error the
user sees first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from .errors import ValidationError, did_you_mean

__all__ = ["Bound", "bind", "braces_to_names", "parameter_names", "statements", "writes"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")

# Statements that only read. EXPLAIN ANALYZE runs its statement, so it counts as what it runs.
_READS = {"select", "with", "values", "table", "explain", "show", "describe", "summarize", "pragma"}
# Inside a statement that starts as a read, these write: WITH ... INSERT, EXPLAIN ANALYZE DELETE,
# SELECT ... INTO new_table (PostgreSQL). A statement that starts with any other word writes.
_WRITE_WORDS = {"insert", "update", "delete", "merge", "into", "create", "drop", "alter", "truncate", "copy"}
_PRAGMA_WRITES = re.compile(r"^\s*pragma\s+\w+(\.\w+)?\s*=", re.I)  # PRAGMA x = 1 sets a value


class Token(NamedTuple):
    kind: str  # 'word', 'param', 'brace', 'semicolon', 'other' (strings, comments, punctuation)
    text: str
    start: int
    end: int


def tokens(sql: str) -> Iterator[Token]:
    """Words, :params, {names} and semicolons of ``sql``, outside strings and comments."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":  # a string, a quoted identifier: '' doubles the quote inside
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            yield Token("other", sql[i : j + 1], i, j + 1)
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            yield Token("other", sql[i:j], i, j)
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            yield Token("other", sql[i:j], i, j)
            i = j
        elif c == "$" and (m := _DOLLAR.match(sql, i)):  # PostgreSQL $tag$ ... $tag$
            j = sql.find(m.group(0), m.end())
            j = n if j < 0 else j + len(m.group(0))
            yield Token("other", sql[i:j], i, j)
            i = j
        elif c == ":":
            if sql.startswith("::", i):  # a cast: value::int
                yield Token("other", "::", i, i + 2)
                i += 2
            elif (m := _WORD.match(sql, i + 1)) and not (i and sql[i - 1].isalnum()):
                yield Token("param", m.group(0), i, m.end())
                i = m.end()
            else:
                yield Token("other", c, i, i + 1)
                i += 1
        elif c == "{" and (m := _WORD.match(sql, i + 1)) and sql.startswith("}", m.end()):
            yield Token("brace", m.group(0), i, m.end() + 1)
            i = m.end() + 1
        elif c == ";":
            yield Token("semicolon", c, i, i + 1)
            i += 1
        elif (m := _WORD.match(sql, i)) and not (i and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            yield Token("word", m.group(0), i, m.end())
            i = m.end()
        else:
            yield Token("other", c, i, i + 1)
            i += 1


def statements(sql: str) -> list[str]:
    """The statements of ``sql``, split at semicolons outside strings and comments; empty ones dropped."""
    parts, start = [], 0
    for token in tokens(sql):
        if token.kind == "semicolon":
            parts.append(sql[start : token.start])
            start = token.end
    parts.append(sql[start:])
    return [p.strip() for p in parts if any(t.kind == "word" for t in tokens(p))]


def writes(sql: str) -> bool:
    """Whether one statement may change the database (a guess from its keywords; see the module)."""
    words = [t.text.lower() for t in tokens(sql) if t.kind == "word"]
    if not words:
        return False
    if words[0] not in _READS or (words[0] == "pragma" and _PRAGMA_WRITES.match(sql)):
        return True
    for before, word in zip(["", *words], words, strict=False):
        if word in _WRITE_WORDS and not (
            word == "update" and before in ("for", "key")
        ):  # FOR [NO KEY] UPDATE
            return True
    return False


def parameter_names(sql: str) -> list[str]:
    """The ``:name`` parameters of ``sql``, each once, in order of first use."""
    return list(dict.fromkeys(t.text for t in tokens(sql) if t.kind == "param"))


def braces_to_names(sql: str, lookup: Callable[[str], Any]) -> tuple[str, dict[str, Any]]:
    """``{name}`` -> ``:name``, with the value ``lookup(name)`` gives (a notebook variable): bound, never pasted."""
    out, values, last = [], {}, 0
    for token in tokens(sql):
        if token.kind == "brace":
            out.append(sql[last : token.start] + ":" + token.text)
            values[token.text] = lookup(token.text)
            last = token.end
    out.append(sql[last:])
    return "".join(out), values


class Bound(NamedTuple):
    sql: str  # with the driver's positional placeholders
    values: list[Any]


def bind(sql: str, params: Mapping[str, Any], placeholder: Callable[[int], str]) -> Bound:
    """Replace each ``:name`` by ``placeholder(i)`` and list the values in order.

    A list or tuple value becomes one placeholder per item, for ``IN (:ids)``. A name without a
    value, or a value no name uses, is an error: a misspelling would otherwise run a different query.
    """
    used = parameter_names(sql)
    missing = [n for n in used if n not in params]
    if missing:
        name = missing[0]
        raise ValidationError(
            f"SQL parameter :{name} has no value.{did_you_mean(name, params)}",
            hint=f"pass it: db.sql(query, {name}=...), or in a cell set a variable and write {{{name}}}.",
        )
    unused = [n for n in params if n not in used]
    if unused:
        raise ValidationError(
            f"SQL parameter {unused[0]!r} is given but the query has no :{unused[0]}."
            f"{did_you_mean(unused[0], used)}",
            hint=f"the query's parameters: {', '.join(':' + n for n in used) or 'none'}.",
        )
    out, values, last = [], [], 0
    for token in tokens(sql):
        if token.kind != "param":
            continue
        value = params[token.text]
        items: Sequence[Any] = value if isinstance(value, list | tuple) else (value,)
        if not items:
            raise ValidationError(
                f"SQL parameter :{token.text} is an empty list.",
                hint="IN () matches nothing and is not valid SQL: leave the condition out instead.",
            )
        marks = []
        for item in items:
            values.append(item)
            marks.append(placeholder(len(values) - 1))
        out.append(sql[last : token.start] + ", ".join(marks))
        last = token.end
    out.append(sql[last:])
    return Bound("".join(out), values)
