"""Type names as the databases spell them, made comparable; the shape of a value converter.

Schema diffs (``migrations.live``) compare the type a database reports with the one a dialect
declares: ``normalize_type`` gives both one spelling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Converter = Callable[[Any], Any] | None  # a dialect's to_db / from_db function of a logical type, or None


_TYPE_SYNONYMS = {
    "TEXT": "VARCHAR", "CHARACTERVARYING": "VARCHAR", "DOUBLEPRECISION": "DOUBLE", "FLOAT8": "DOUBLE",
    "BYTEA": "BLOB", "NUMERIC": "DECIMAL", "INT8": "BIGINT", "TIMESTAMPTZ": "TIMESTAMPWITHTIMEZONE",
    "BOOL": "BOOLEAN",
}  # fmt: skip


def normalize_type(name: str) -> str:
    """'double precision' and 'DOUBLE', 'TEXT' and 'VARCHAR'... -> one spelling, for schema diffs."""
    compact = "".join(str(name).upper().split())
    base, _, args = compact.partition("(")
    base = _TYPE_SYNONYMS.get(base, base)
    return f"{base}({args}" if args else base
