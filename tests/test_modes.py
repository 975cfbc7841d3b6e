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
