"""Dialects: the facts and fast paths of each database, chosen by URL scheme."""

from __future__ import annotations

from ..config import DataFlowConfig, redact_url
from ..errors import ValidationError
from .base import Connection, Dialect

__all__ = ["Connection", "Dialect", "dialect_for", "require_driver"]


def require_driver(module: str, database: str, extra: str) -> None:
    """Fail at ``DataFlow(...)``, not at the first run, when a database's driver is not installed."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None (import blocked)
        found = False
    if not found:
        from ..errors import DataFlowError

        raise DataFlowError(
            f"{database} support needs the '{module}' driver, which is not installed.",
            hint=f"pip install 'dataflow-lab[{extra}]'",
        ) from None


def dialect_for(config: DataFlowConfig) -> Dialect:
    url = config.database_url
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from .sqlite import SQLiteDialect

        return SQLiteDialect(config, url)
    if scheme in ("postgresql", "postgres"):
        require_driver("asyncpg", "PostgreSQL", "postgres")
        from .postgres import PostgresDialect

        return PostgresDialect(config, url.replace("postgres://", "postgresql://", 1))
    if scheme == "duckdb":
        require_driver("duckdb", "DuckDB", "duckdb")
        from .duckdb import DuckDBDialect

        return DuckDBDialect(config, url)
    raise ValidationError(
        f"Unsupported database URL '{redact_url(url)}'.",
        hint="use sqlite:///file.db, sqlite:///:memory:, postgresql://user@host/db or duckdb:///file.duckdb.",
    )
