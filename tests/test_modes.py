"""Transaction modes: a StrEnum whose members map to one strategy object each."""

from __future__ import annotations

import pytest

from dataflow_lab import AsyncLocalRuntime, DataFlow, LocalRuntime, TransactionMode, ValidationError
from dataflow_lab.modes import Auto, PerNode, Saga, TwoPhase, WorkflowScoped, strategy


def test_the_modes_are_their_strings():
    assert [str(m) for m in TransactionMode] == ["workflow", "node", "saga", "2pc", "auto"]
    assert TransactionMode("2pc") is TransactionMode.TWO_PHASE
    assert TransactionMode.SAGA == "saga"


@pytest.mark.parametrize("given", ["saga", TransactionMode.SAGA])
def test_a_runtime_takes_a_mode_or_its_string_and_keeps_the_mode(given):
    runtime = LocalRuntime(transaction=given)
    assert runtime.transaction is TransactionMode.SAGA and runtime.transaction == "saga"
    assert isinstance(runtime.strategy, Saga)
    assert repr(runtime) == "LocalRuntime(transaction='saga')"
    assert repr(AsyncLocalRuntime(transaction=given, max_concurrency=2)) == (
        "AsyncLocalRuntime(transaction='saga', max_concurrency=2)"
    )


def test_each_mode_has_one_strategy_that_names_it():
    kinds = {
        "workflow": WorkflowScoped,
        "node": PerNode,
        "saga": Saga,
        "2pc": TwoPhase,
        "auto": Auto,
    }
    for name, kind in kinds.items():
        chosen = strategy(name)
        assert type(chosen) is kind and chosen.mode == name
        assert chosen is TransactionMode(name).strategy  # one instance per mode
    assert [m for m in TransactionMode if m.strategy.per_node] == ["node", "saga"]
    assert [m for m in TransactionMode if m.strategy.retries_whole_run] == ["workflow", "2pc"]
    assert [m for m in TransactionMode if m.strategy.compensates] == ["saga"]


def test_an_unknown_mode_is_refused_with_a_suggestion():
    with pytest.raises(ValidationError, match="Did you mean 'saga'") as info:
        strategy("sage")
    assert "'2pc'" in info.value.hint


def test_auto_resolves_to_workflow_for_one_database_and_across_kinds(tmp_path):
    from dataflow_lab import WorkflowBuilder, _loop

    first, second = DataFlow(), DataFlow(f"duckdb:///{tmp_path / 'second.duckdb'}")
    for db in (first, second):

        @db.model
        class Item:
            name: str

    one = WorkflowBuilder(dataflow=first)
    one.add_node("ItemCreateNode", "a", {"name": "a"})
    two = WorkflowBuilder()
    two.add_node(first.nodes["ItemCreateNode"], "a", {"name": "a"})
    two.add_node(second.nodes["ItemCreateNode"], "b", {"name": "b"})
    auto = strategy("auto")
    assert isinstance(_loop.run(auto.resolve(one.build())), WorkflowScoped)
    assert isinstance(_loop.run(auto.resolve(two.build())), WorkflowScoped)  # no 2PC: one transaction each
    first.close()
    second.close()


def test_auto_resolves_to_two_phase_across_postgresql_databases_that_allow_it(pg_url, pg_url2):
    from dataflow_lab import WorkflowBuilder, _loop

    first, second = DataFlow(pg_url), DataFlow(pg_url2)
    for db in (first, second):

        @db.model
        class Item:
            name: str

    two = WorkflowBuilder()
    two.add_node(first.nodes["ItemCreateNode"], "a", {"name": "a"})
    two.add_node(second.nodes["ItemCreateNode"], "b", {"name": "b"})
    allowed = _loop.run(first.database.allows_two_phase()) and _loop.run(second.database.allows_two_phase())
    resolved = _loop.run(strategy("auto").resolve(two.build()))
    assert type(resolved) is (TwoPhase if allowed else WorkflowScoped)
    first.close()
    second.close()


# --------------------------------------------------------------------------- one statement, committed alone


def _sqlite_statements(db: DataFlow) -> list[str]:
    """The statements the SQLite file database receives (sqlite3's trace callback on every connection)."""
    import sqlalchemy as sa

    seen: list[str] = []
    engine = db.database.dialect.engine
    engine.dispose()  # connections made from now on are traced

    @sa.event.listens_for(engine, "connect")
    def trace(dbapi_connection, record) -> None:
        dbapi_connection.set_trace_callback(lambda sql: seen.append(sql.split()[0].upper()))

    return seen


def test_a_one_node_write_on_sqlite_sends_its_statement_alone_and_a_refused_one_leaves_nothing(tmp_path):
    from dataflow_lab import WorkflowBuilder
    from dataflow_lab.modes import one_statement

    db = DataFlow(f"sqlite:///{tmp_path / 'alone.db'}")

    @db.model
    class Crate:
        __dataflow__ = {"unique": [["name"]]}
        name: str
        weight: int = 0

    def one(node: str, params: dict) -> dict:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node(node, "n", params)
        built = wf.build()
        assert one_statement(built)
        return LocalRuntime().execute(built)[0]["n"]

    first = one("CrateCreateNode", {"name": "a"})
    seen = _sqlite_statements(db)
    one("CrateCreateNode", {"name": "b"})
    one("CrateUpdateNode", {"id": first["id"], "fields": {"weight": 3}})
    assert [s for s in seen if s in ("BEGIN", "COMMIT", "INSERT", "UPDATE")] == ["INSERT", "UPDATE"]
    with pytest.raises(Exception, match="(?i)unique"):
        one("CrateCreateNode", {"name": "a"})  # the database refuses a second "a"
    assert Crate.count() == 2 and db.pool_status()["checked_out"] == 0
    db.close()


class _DuckCalls:
    """A real DuckDB connection whose transaction calls and statements are recorded by their first word."""

    def __init__(self, con, seen: list[str]):
        self._con, self._seen = con, seen

    def __getattr__(self, name: str):
        attr = getattr(self._con, name)
        if name not in ("begin", "commit", "execute"):
            return attr

        def called(*args):
            self._seen.append(args[0].split()[0].upper() if name == "execute" else name.upper())
            return attr(*args)

        return called


def test_a_one_node_write_on_duckdb_on_its_callers_thread_sends_its_statement_alone(tmp_path):
    import asyncio

    from dataflow_lab import WorkflowBuilder

    db = DataFlow(f"duckdb:///{tmp_path / 'alone.duckdb'}")

    @db.model
    class Crate:
        __dataflow__ = {"unique": [["name"]]}
        name: str
        weight: int = 0

    def built(node: str, params: dict) -> object:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node(node, "n", params)
        return wf.build()

    def one(node: str, params: dict) -> dict:
        return LocalRuntime().execute(built(node, params))[0]["n"]

    first = one("CrateCreateNode", {"name": "a"})
    dialect, seen = db.database.dialect, []
    dialect._con = _DuckCalls(dialect._con, seen)
    one("CrateCreateNode", {"name": "b"})
    one("CrateUpdateNode", {"id": first["id"], "fields": {"weight": 3}})
    assert seen == ["INSERT", "UPDATE"]
    with pytest.raises(Exception, match="(?i)duplicate key|unique"):
        one("CrateCreateNode", {"name": "a"})  # the database refuses a second "a"
    assert Crate.count() == 2 and db.pool_status()["checked_out"] == 0
    seen.clear()  # on the background loop the statement runs on the worker thread: in a transaction
    asyncio.run(AsyncLocalRuntime().execute_async(built("CrateCreateNode", {"name": "c"})))
    assert seen == ["BEGIN", "INSERT", "COMMIT"] and Crate.count() == 3
    dialect._con = dialect._con._con
    db.close()


def test_a_connection_committing_its_statement_alone_refuses_a_second_write_unsent():
    from dataflow_lab.dialects.connection import alone_takes
    from dataflow_lab.errors import TransactionError

    alone_takes("armed", "INSERT INTO t VALUES (1)", "DuckDB")  # the first goes
    alone_takes("committed", "SELECT * FROM t", "DuckDB")  # then reads
    with pytest.raises(TransactionError, match="second write on a DuckDB connection"):
        alone_takes("committed", "UPDATE t SET x = 1", "DuckDB")


def test_only_a_one_node_run_whose_node_sends_one_statement_commits_it_alone(db):
    from dataflow_lab import WorkflowBuilder
    from dataflow_lab.modes import one_statement

    @db.model
    class Crate:
        name: str

    def built(*nodes: tuple[str, dict]) -> object:
        wf = WorkflowBuilder(dataflow=db)
        for i, (node, params) in enumerate(nodes):
            wf.add_node(node, f"n{i}", params)
        return wf.build()

    assert one_statement(built(("CrateCreateNode", {"name": "a"})))
    assert one_statement(built(("CrateDeleteNode", {"id": 1})))
    assert not one_statement(built(("CrateCreateNode", {"name": "a"}), ("CrateCreateNode", {"name": "b"})))
    assert not one_statement(built(("CrateBulkCreateNode", {"data": [{"name": "a"}]})))
    assert not one_statement(built(("CrateReadNode", {"id": 1})))  # writes nothing: no transaction at all
