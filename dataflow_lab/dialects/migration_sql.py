"""The DDL facts a dialect gives migrations (``migrations/ops.py``, ``migrations/sealing.py``).

``MigrationSQL`` is a part of ``dialects.base.Dialect``: which column changes ALTER TABLE makes
in place, and the ALTER / DROP / UPDATE statements of those changes. The defaults are mostly
PostgreSQL's spelling (a bytes literal is X'..'); a dialect overrides what its database spells otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa


class MigrationSQL:
    """The statements of in-place schema changes; names passed in are already quoted."""

    # Column changes made with ALTER TABLE; the others rebuild the table. "drop_constraint":
    # ALTER TABLE ... DROP CONSTRAINT (a table-level UNIQUE).
    alters_in_place: frozenset[str] = frozenset()
    added_column_keeps_default = False  # ADD COLUMN ... DEFAULT stays the column's default for good
    # The server DEFAULT of created_at / updated_at: the current moment in UTC, stored as ours are.
    now_default = "CURRENT_TIMESTAMP"
    rebuild_preamble: tuple[str, ...] = ()  # statements a table rebuild runs first

    def bytes_literal(self, value: bytes) -> str:
        """``value`` as an SQL literal (DEFAULT clauses and back-fills)."""
        return f"X'{value.hex()}'"

    def cast_literal(self, text: str, type_sql: str) -> str:
        """A quoted text literal as a value of a type that has no literal of its own (JSONB...)."""
        return f"CAST({text} AS {type_sql})"

    # The ALTER TABLE statements of in-place migrations (migrations/ops.py); names are quoted.
    # ``nullable`` and ``default`` (SQL text) are what the column keeps: MySQL restates them all.
    def retype_sql(self, table: str, column: str, type_sql: str, using: str, nullable: bool,
                   default: str | None) -> str:  # fmt: skip
        return f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {type_sql} USING {using}"

    retype_converts = True  # retype_sql converts each value by ``using`` (MySQL's MODIFY has none)
    # bytes as hex text and back, in SQL (templates of the value, ``{0}``; NULL stays NULL): a
    # bytes field turned encrypted or plain is retyped through them (migrations/sealing.py)
    hex_sql = "hex({})"
    unhex_sql = "unhex({})"

    def nullability_sql(self, table: str, column: str, type_sql: str, nullable: bool,
                        default: str | None) -> str:  # fmt: skip
        return f"ALTER TABLE {table} ALTER COLUMN {column} {'DROP' if nullable else 'SET'} NOT NULL"

    def drop_constraint_sql(self, table: str, name: str) -> str:
        return f"ALTER TABLE {table} DROP CONSTRAINT {name}"

    def drop_index_sql(self, table: str, name: str) -> str:
        return f"DROP INDEX {name}"

    def index_column_sql(self, column: str, type_sql: str, *, unique: bool) -> str:
        """A column of CREATE INDEX, of SQL type ``type_sql``."""
        return column

    def update_from_sql(self, table: str, columns: Sequence[str], source: str, match: str) -> str:
        """UPDATE ``table``'s ``columns`` from those of the ``source`` row (aliased b) that ``match``."""
        sets = ", ".join(f"{c} = b.{c}" for c in columns)
        return f"UPDATE {table} SET {sets} FROM {source} b WHERE {match}"

    def ddl_lock_sql(self, table_name: str) -> str | None:
        """SQL that serializes schema changes to one table across processes (None: not needed)."""
        return None

    def sync_id_sequence_sql(self, table: sa.Table) -> str | None:
        """SQL that moves the id sequence past ids a caller inserted explicitly (None: not needed)."""
        return None
