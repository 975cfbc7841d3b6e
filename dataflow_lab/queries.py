"""``db.sql(query, **params)``: one SQL statement of the user's, run through the runtime.

The statement runs as a one-node workflow of ``nodes.sql``, so it takes part in what a run takes
part in: ``with db.transaction():`` (it sees the block's own writes), the hooks, monitoring, and
access control. The result is a pandas DataFrame. Its ``attrs`` say what ran: ``sql``,
``rows_affected`` (for a write) and ``elapsed_s``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _loop
from .access import check_sql
from .dialects.scanners import load_scanner
from .errors import ValidationError
from .nodes.base import NodeOwner
from .nodes.sql import one_statement as _one_statement
from .nodes.sql import sql_node
from .runtime import AsyncLocalRuntime, LocalRuntime
from .sqltext import bind, writes
from .transactions import ACTIVE_SCOPE
from .workflow import WorkflowBuilder

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .dialects.connection import DuckAttachment
    from .workflow import Workflow

__all__ = ["run_sql", "run_sql_async", "run_sql_duckdb"]


def _workflow(db: NodeOwner, query: str, params: Mapping[str, Any], write: bool) -> Workflow:
    node, values = sql_node(db, write), {"query": query, "params": dict(params)}
    node.check(values, node_id="sql")  # its own error, not one of build()'s list of problems
    builder = WorkflowBuilder(dataflow=db, name="sql")
    builder.add_node(node, "sql", values)
    return builder.build()


def run_sql(db: NodeOwner, query: str, params: Mapping[str, Any], *, write: bool, user: Any) -> pd.DataFrame:
    workflow = _workflow(db, query, params, write)
    check_sql(db, user, write=write)
    started = time.perf_counter()
    results, _ = LocalRuntime(user=user).execute(workflow)
    return frame(results["sql"], query, time.perf_counter() - started, write=write)


async def run_sql_async(
    db: NodeOwner, query: str, params: Mapping[str, Any], *, write: bool, user: Any
) -> pd.DataFrame:
    workflow = _workflow(db, query, params, write)
    check_sql(db, user, write=write)
    started = time.perf_counter()
    results, _ = await AsyncLocalRuntime(user=user).execute_async(workflow)
    return frame(results["sql"], query, time.perf_counter() - started, write=write)


# -- engine="duckdb": DuckDB over the database's own tables ---------------------------------------


class _DuckView:
    """One DuckDB connection per DataFlow, with its database attached read-only as ``source``."""

    def __init__(self) -> None:
        import duckdb

        self.directory = tempfile.mkdtemp(prefix="dataflow-duckdb-")
        self.con = duckdb.connect()
        self.attached: DuckAttachment | None = None
        self.lock = threading.Lock()

    def attach(self, attachment: DuckAttachment) -> None:
        if attachment == self.attached and attachment.extension == "postgres":
            return  # live: PostgreSQL is read at each query
        if self.attached is not None:
            self.con.execute("USE memory")
            self.con.execute("DETACH source")
        load_scanner(self.con, attachment.extension)
        target = attachment.target.replace("'", "''")
        self.con.execute(f"ATTACH '{target}' AS source (TYPE {attachment.extension}, READ_ONLY)")
        self.con.execute(f"USE source{'.' + _ident(attachment.schema) if attachment.schema else ''}")
        self.attached = attachment

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self.directory, ignore_errors=True)


_VIEWS: weakref.WeakKeyDictionary[Any, _DuckView] = weakref.WeakKeyDictionary()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _tables_ready(db: NodeOwner) -> None:
    """The model tables, created or migrated as a run would make them."""
    database = db.database
    await database.open()
    for table in list(database.tables.values()):
        await database.ensure_table(table)


def run_sql_duckdb(db: NodeOwner, query: str, params: Mapping[str, Any], *, user: Any) -> pd.DataFrame:
    """``query`` in DuckDB over ``db``'s tables (read-only, committed data): columnar GROUP BYs."""
    dialect = db.database.dialect
    if dialect.runs_duckdb_sql:
        return run_sql(db, query, params, write=False, user=user)
    statement = _one_statement(query)
    if writes(statement):
        raise ValidationError(
            "engine='duckdb' reads only: it attaches the database read-only.",
            hint="run a write on the database itself: db.sql(query, write=True).",
        )
    scope = ACTIVE_SCOPE.get()
    if scope is not None and scope.holds(db):
        raise ValidationError(
            "engine='duckdb' reads committed data through a connection of its own, so inside this "
            "transaction block it would not see the block's writes.",
            hint="run it after the block, or without engine='duckdb' inside it.",
        )
    check_sql(db, user, write=False)
    _loop.run(_tables_ready(db))
    started = time.perf_counter()
    view = _VIEWS.get(db)
    if view is None:
        view = _VIEWS[db] = _DuckView()
        weakref.finalize(db, view.close)
    with view.lock:
        view.attach(_loop.run(dialect.attach_to_duckdb(view.directory)))
        sql, values = bind(statement, params, lambda i: "?")
        cursor = view.con.execute(sql, values)
        columns = [d[0] for d in cursor.description or ()]
        rows = cursor.fetchall()
    output = {"columns": columns, "rows": rows, "rowcount": -1}
    return frame(output, query, time.perf_counter() - started, write=False)


def frame(output: Mapping[str, Any], query: str, elapsed: float, *, write: bool) -> pd.DataFrame:
    """The node's output as a DataFrame; a write without RETURNING is one row: rows_affected."""
    import pandas as pd

    rowcount = output["rowcount"]
    if output["columns"]:
        result = pd.DataFrame.from_records(output["rows"], columns=output["columns"])
    else:
        result = pd.DataFrame({"rows_affected": [max(rowcount, 0)]})
    affected = rowcount if write and rowcount >= 0 else None
    result.attrs.update(sql=query, rows_affected=affected, elapsed_s=elapsed)
    return result
