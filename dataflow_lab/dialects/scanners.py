"""DuckDB over another database's tables: the sqlite and postgres scanner extensions.

``db.sql(query, engine="duckdb")`` (``%%dataflow sql --duckdb``) runs a read-only query in DuckDB
with the DataFlow's SQLite file or PostgreSQL database attached, so a GROUP BY over a
row-store table runs on DuckDB's columnar, parallel engine without first pulling the rows
into pandas.

Each extension is loaded the first way that works: already installed (DuckDB's own
``INSTALL``); a wheel of the extension for this exact DuckDB version (``duckdb-extension-sqlite-scanner``,
``duckdb-extension-postgres-scanner``: DuckDB's signed binaries, which DuckDB checks when it
loads them, so they install from a package index with no other network); or ``INSTALL`` from
DuckDB's extension repository.
"""

from __future__ import annotations

import glob
import importlib
import os
import threading
from typing import Any

from ..errors import DataFlowError

__all__ = ["load_scanner"]

_WHEELS = {"sqlite": "duckdb_extension_sqlite_scanner", "postgres": "duckdb_extension_postgres_scanner"}
_lock = threading.Lock()


def load_scanner(con: Any, name: str) -> None:
    """Load DuckDB's ``name`` extension ("sqlite" or "postgres") into ``con``, or say how to get it."""
    import duckdb

    with _lock:
        try:
            con.execute(f"LOAD {name}")
            return
        except duckdb.Error:
            pass
        path = _wheel_binary(name, duckdb.__version__)
        if path is not None:
            con.execute(f"LOAD '{_quoted(path)}'")
            return
        try:
            con.execute(f"INSTALL {name}")
            con.execute(f"LOAD {name}")
        except duckdb.Error as exc:
            raise DataFlowError(
                f"DuckDB {duckdb.__version__} has no {name} scanner here, and could not download it "
                f"({str(exc).splitlines()[0]}).",
                hint=f"run once where DuckDB reaches its extension repository, so that it can INSTALL {name} "
                f"(it keeps the file), or pip install {_WHEELS[name].replace('_', '-')}=={duckdb.__version__} "
                "where a wheel exists for this DuckDB version.",
            ) from None


def _wheel_binary(name: str, version: str) -> str | None:
    """The extension binary a ``duckdb-extension-*`` wheel holds for DuckDB ``version``, if any."""
    try:
        module = importlib.import_module(_WHEELS[name])
    except ImportError:
        return None
    root = os.path.dirname(module.__file__ or "")
    found = glob.glob(os.path.join(root, "extensions", f"v{version}", "*.duckdb_extension"))
    return found[0] if found else None


def _quoted(path: str) -> str:
    return path.replace("'", "''")
