"""SQL of the user's own as a node: what ``db.sql`` and the ``%%dataflow sql`` cell run.

One node class per DataFlow and mode (``sql_node``). It runs through the runtime like any node:
in the run's transaction, or in the ``with db.transaction():`` block it is called in, with
hooks and monitoring seeing it. A read-only query runs with the database refusing writes
(``Connection.query_read_only``). A write query runs in the run's transaction and reports the
rows it changed.

It is not the generated nodes' SQL: it sees every row of every table, whatever tenant, soft delete
or grant the models declare. So on a DataFlow with access control, it needs its own grant:
``db.grant(role, "*", "sql")`` (or ``"sql_write"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from ..errors import ValidationError
from ..sqltext import bind, statements, writes
from .base import Node, NodeRef, Param, RunContext

if TYPE_CHECKING:  # pragma: no cover
    from ..interfaces import DataFlow

__all__ = ["SqlOutput", "sql_node"]


class SqlOutput(TypedDict):
    columns: list[str]
    rows: list[tuple[Any, ...]]
    rowcount: int


def one_statement(query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("SQL query must be a non-empty string.")
    parts = statements(query)
    if len(parts) != 1:
        raise ValidationError(
            f"SQL query holds {len(parts)} statements; it must hold one.",
            hint="run each statement on its own: one db.sql(...) call or one cell each.",
        )
    return parts[0]


class SqlNode(Node):
    operation = "sql"
    description = "One SQL statement of your own, parameters bound (:name); read-only unless a write node."
    parameters = (
        Param("query", str, required=True, description="one statement, with :name parameters",
              check=one_statement),
        Param("params", dict, default={}, description="values for the :name parameters"),
    )  # fmt: skip

    @classmethod
    def output_type(cls) -> Any:
        return SqlOutput

    @classmethod
    def pickle_ref(cls) -> NodeRef:
        assert cls.dataflow is not None, "a SqlNode class belongs to a DataFlow"
        return sql_node, (cls.dataflow, cls.writes)

    @classmethod
    def check_together(cls, params: dict[str, Any], *, node_id: str, partial: bool) -> None:
        query = params.get("query")
        if query is not None and not cls.writes and writes(query):
            raise ValidationError(
                f"{cls.type_name} '{node_id}': this statement writes, and SQL runs read-only by default.",
                hint="pass write=True (db.sql) or --write (%%dataflow sql): it then runs in a "
                "transaction and reports the rows it changed.",
            )

    @classmethod
    def tables(cls) -> tuple[Any, ...]:
        """Every model table of its DataFlow: the statement may name any of them."""
        assert cls.dataflow is not None, "a SqlNode class belongs to a DataFlow"
        return tuple(cls.dataflow.database.tables.values())

    async def run(self, ctx: RunContext) -> SqlOutput:
        assert self.dataflow is not None, "a SqlNode class belongs to a DataFlow"
        dialect = self.dataflow.database.dialect
        statement, values = bind(self.params["query"], self.params["params"], dialect.placeholder)
        conn = await ctx.connection(self.dataflow)
        if self.writes:
            result = await conn.query(statement, values)
        else:
            result = await conn.query_read_only(statement, values)
        return {"columns": result.columns, "rows": result.rows, "rowcount": result.rowcount}


def sql_node(dataflow: DataFlow, write: bool = False) -> type[SqlNode]:
    """The SQL node class of ``dataflow``: read-only, or (``write``) writing in the run's transaction."""
    # Kept on the DataFlow itself: each class refers to its DataFlow, so a process-wide table keyed
    # by the DataFlow (even a weak one) would keep every DataFlow that ever ran SQL alive.
    by_mode: dict[bool, type[SqlNode]] = vars(dataflow).setdefault("_sql_node_classes", {})
    cls = by_mode.get(write)
    if cls is None:
        name = "SqlWriteNode" if write else "SqlNode"
        attributes = {"type_name": name, "dataflow": dataflow, "writes": write,
                      "operation": "sql_write" if write else "sql"}  # fmt: skip
        cls = by_mode[write] = type(name, (SqlNode,), attributes)
    return cls
