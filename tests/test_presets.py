"""Environment presets (config.py) and the deterministic clock of the testing preset (clock.py)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
from dataflow_lab.clock import SteppingClock, SystemClock
from dataflow_lab.config import ENVIRONMENTS, PRESETS

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_presets() -> dict[str, list[str]]:
    """The preset table of README.md: first cell -> one cell per environment."""
    text = README.read_text(encoding="utf-8").split("### Environment presets", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_the_readme_table_shows_every_preset_value():
    table = readme_presets()
    header = README.read_text(encoding="utf-8").split("### Environment presets", 1)[1]
    assert re.search(r"\| Setting \| development \| testing \| production \|", header)
    shown: set[str] = set()
    for label, cells in table.items():
        keys = re.findall(r"`(\w+)`", label)
        for env, cell in zip(ENVIRONMENTS, cells, strict=True):
            values = [v.strip() for v in cell.split("/")]
            for key, value in zip(keys, values, strict=True):
                assert str(PRESETS[env][key]).removesuffix(".0") == value, (env, key)
                shown.add(key)
    assert shown == set(PRESETS["development"])  # every preset key is documented


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_gets_its_preset(monkeypatch, env):
    monkeypatch.setenv("DATAFLOW_ENV", env)
    db = DataFlow()
    for key, value in PRESETS[env].items():
        assert getattr(db.config, key) == value, key
    assert isinstance(db.clock, SteppingClock if env == "testing" else SystemClock)
    db.close()


def test_production_controls_migrations_and_testing_is_reproducible():
    assert PRESETS["production"]["auto_migrate"] is False
    assert PRESETS["production"]["pool_size"] == 100
    assert PRESETS["testing"]["deterministic"] is True
    assert PRESETS["development"]["echo"] is True


def run_once(url: str | None) -> list[dict]:
    db = DataFlow(url, environment="testing")

    @db.model
    class Note:
        text: str

    for node, params in [
        ("NoteCreateNode", {"text": "first"}),
        ("NoteCreateNode", {"text": "second"}),
        ("NoteUpdateNode", {"id": 1, "fields": {"text": "edited"}}),
    ]:
        wf = WorkflowBuilder(dataflow=db)
        wf.add_node(node, "n", params)
        LocalRuntime().execute(wf.build())
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("NoteListNode", "l", {"order_by": ["id"]})
    records = LocalRuntime().execute(wf.build())[0]["l"]["records"]
    db.close()
    return records


def test_the_testing_preset_writes_the_same_ids_and_timestamps_on_every_run(url, backend):
    if backend == "postgres":
        first = run_once(url)
        from conftest import reset_postgres

        reset_postgres(url.split("?")[0])
        second = run_once(url)
    else:
        first, second = run_once(url), run_once(url)
    assert first == second
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert [r["id"] for r in first] == [1, 2]
    assert first[0]["created_at"] == start
    assert first[1]["created_at"] == start + dt.timedelta(seconds=1)
    assert first[0]["updated_at"] == start + dt.timedelta(seconds=2)


def test_a_stepping_clock_can_be_set_and_takes_naive_times_as_utc():
    clock = SteppingClock(step=dt.timedelta(minutes=1))
    clock.set(dt.datetime(2030, 5, 1, 12, 0))
    assert clock.now() == dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)
    assert clock.now() == dt.datetime(2030, 5, 1, 12, 1, tzinfo=dt.UTC)


def test_the_development_clock_is_the_real_time(db):
    before = dt.datetime.now(dt.UTC)
    assert before <= db.clock.now() <= dt.datetime.now(dt.UTC)


def test_audit_entries_take_their_time_from_the_same_clock():
    db = DataFlow(environment="testing")

    @db.model
    class Account:
        owner: str
        __dataflow__ = {"audit_log": True}

    db.clock.set(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "c", {"owner": "ann"})
    created = LocalRuntime().execute(wf.build())[0]["c"]
    (entry,) = db.audit("Account")
    assert created["created_at"] == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert entry.at == dt.datetime(2030, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    db.close()


def test_migration_history_times_come_from_the_clock_without_moving_it():
    db = DataFlow(environment="testing")
    db.clock.set(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))

    @db.model
    class Account:
        owner: str

    wf = WorkflowBuilder(dataflow=db)
    wf.add_node("AccountCreateNode", "c", {"owner": "ann"})
    created = LocalRuntime().execute(wf.build())[0]["c"]

    @db.model
    class Account:  # noqa: F811 - the model, one field later
        owner: str
        plan: str = "free"

    db.clock.set(dt.datetime(2031, 6, 1, tzinfo=dt.UTC))
    db.migrations.apply()
    db.clock.set(dt.datetime(2032, 1, 1, tzinfo=dt.UTC))
    db.migrations.rollback(confirm_destructive=True)
    created_at, added = db.migrations.history()
    assert created_at.applied_at == "2030-01-01T00:00:00+00:00"  # the table's creation at first use
    assert created["created_at"] == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # the row's tick is its own
    assert added.applied_at == "2031-06-01T00:00:00+00:00"
    assert added.rolled_back_at == "2032-01-01T00:00:00+00:00"
    db.close()
