"""``db.sql(query, **params)``: one SQL statement of the user's, run through the runtime.

The statement runs as a one-node workflow of ``nodes.sql``, so it takes part in what a run takes
part in: ``with db.transaction():`` (it sees the block's own writes), the hooks, monitoring, and
access control. The result is a pandas DataFrame. Its ``attrs`` say what ran: ``sql``,
``rows_affected`` (for a write) and ``elapsed_s``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .access import check_sql
from .nodes.base import NodeOwner
from .nodes.sql import sql_node
from .runtime import AsyncLocalRuntime, LocalRuntime
from .workflow import WorkflowBuilder

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .workflow import Workflow

__all__ = ["run_sql", "run_sql_async"]


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
