"""Dialects: the facts and fast paths of each database, chosen by URL scheme.

Choosing one (``check_url``) imports nothing heavy; building one (``dialect_for``)
imports SQLAlchemy and the dialect's module, which ``_warmup.py`` may do in the
background.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config import DataFlowConfig, redact_url
from ..errors import DataFlowError, ValidationError
from .kinds import register_kind, transient_reason

if TYPE_CHECKING:  # pragma: no cover
    from .base import Dialect
    from .connection import Connection

__all__ = [
    "Connection",
    "Dialect",
    "check_url",
    "dialect_for",
    "refuse_pool_options",
    "register_kind",
    "require_driver",
    "transient_reason",
]

# scheme -> (dialect module, class, driver module, pip extra, database name)
_DIALECTS = {
    "sqlite": ("sqlite", "SQLiteDialect", "sqlite3", None, "SQLite"),
    "postgresql": ("postgres", "PostgresDialect", "asyncpg", "postgres", "PostgreSQL"),
    "postgres": ("postgres", "PostgresDialect", "asyncpg", "postgres", "PostgreSQL"),
    "mysql": ("mysql", "MySQLDialect", "asyncmy", "mysql", "MySQL"),
    "mariadb": ("mysql", "MySQLDialect", "asyncmy", "mysql", "MariaDB"),
    "duckdb": ("duckdb", "DuckDBDialect", "duckdb", "duckdb", "DuckDB"),
}


def __getattr__(name: str) -> Any:  # Connection and Dialect load SQLAlchemy: only when asked for
    if name in ("Connection", "Dialect"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Databases with no pool of connections, and why: a pool option given for one is refused.
_NO_POOL = {
    "duckdb": "DuckDB runs inside this process on one connection and one worker thread, one "
    "transaction at a time, so there is no pool of connections to size, overflow, recycle or ping "
    "(pool_timeout is honoured: it bounds how long a run waits for that connection)",
}
_POOL_OPTIONS = {"pool_size": 1, "max_overflow": 0, "pool_pre_ping": False, "pool_recycle": None}


def refuse_pool_options(url: str, options: Mapping[str, object]) -> None:
    """Refuse pool options given explicitly for a database that has no pool (presets are not refused)."""
    reason = _NO_POOL.get(_scheme(url))
    if reason is None:
        return
    given = [f"{k}={v!r}" for k, v in options.items() if k in _POOL_OPTIONS and v != _POOL_OPTIONS[k]]
    if given:
        raise ValidationError(
            f"{', '.join(given)} cannot be honoured for {redact_url(url)}: {reason}.",
            hint="leave the pool options out for DuckDB (pool_size=1 and max_overflow=0 are accepted); "
            "use PostgreSQL for a pool of connections.",
        )


def require_driver(module: str, database: str, extra: str) -> None:
    """Fail at ``DataFlow(...)``, not at the first run, when a database's driver is not installed."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None (import blocked)
        found = False
    if not found:
        raise DataFlowError(
            f"{database} support needs the '{module}' driver, which is not installed.",
            hint=f"pip install 'dataflow-lab[{extra}]'",
        ) from None


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""


def check_url(config: DataFlowConfig) -> str:
    """The dialect module ``config``'s URL needs ('dataflow_lab.dialects.sqlite'), its driver checked."""
    url = config.database_url
    scheme = _scheme(url)
    if scheme not in _DIALECTS:
        raise ValidationError(
            f"Unsupported database URL '{redact_url(url)}'.",
            hint="use sqlite:///file.db, sqlite:///:memory:, postgresql://user@host/db, "
            "mysql://user@host/db (or mariadb://) or duckdb:///file.duckdb.",
        )
    module, _, driver, extra, database = _DIALECTS[scheme]
    if extra is not None:
        require_driver(driver, database, extra)
    if module == "postgres":  # its URL's query, checked at DataFlow() (pg_url imports nothing heavy)
        from .pg_url import check_query

        check_query(url)
    return f"{__name__}.{module}"


def driver_module(config: DataFlowConfig) -> str:
    """The driver module of ``config``'s database ('sqlite3', 'asyncpg', 'duckdb')."""
    return _DIALECTS[_scheme(config.database_url)][2]


def dialect_for(config: DataFlowConfig) -> Dialect:
    module = importlib.import_module(check_url(config))
    url = config.database_url.replace("postgres://", "postgresql://", 1)
    if url.startswith("mariadb"):  # one dialect: SQLAlchemy's and asyncmy's MySQL
        url = "mysql" + url[len("mariadb") :]
    return getattr(module, _DIALECTS[_scheme(url)][1])(config, url)
