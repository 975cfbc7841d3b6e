"""Environment presets (config.py) and the deterministic clock of the testing preset (clock.py)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
from dataflow_lab.clock import SteppingClock, SystemClock
from dataflow_lab.config import ENVIRONMENTS, PRESETS
from dataflow_lab.errors import ValidationError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_presets() -> dict[str, list[str]]:
    """The preset table of README.md: first cell -> one cell per environment."""
    text = README.read_text(encoding="utf-8").split("### Environment presets", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    for line in lines[start:]:
        if not line.startswith("|"):
            break  # the first table only
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_the_readme_table_shows_every_preset_value():
    table = readme_presets()
    header = README.read_text(encoding="utf-8").split("### Environment presets", 1)[1]
    assert re.search(r"\| Setting \| development \| testing \| staging \| production \|", header)
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
    elif backend == "mysql":
        first = run_once(url)
        from conftest import SCHEMA, reset_mysql

        reset_mysql(url, SCHEMA)
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


# -- staging, aliases and the spec's keyword names (config.py) ---------------------------------


def test_staging_is_production_with_a_smaller_pool(monkeypatch):
    monkeypatch.setenv("DATAFLOW_ENV", "staging")
    db = DataFlow()
    staging, production = PRESETS["staging"], PRESETS["production"]
    assert (db.config.environment, db.config.monitoring, db.config.auto_migrate) == ("staging", True, False)
    assert (
        db.config.pool_size < production["pool_size"] and db.config.max_overflow < production["max_overflow"]
    )
    pool = ("pool_size", "max_overflow", "min_connections")  # min_connections: capped by the smaller pool
    assert staging["min_connections"] == min(production["min_connections"], staging["pool_size"])
    assert {k: v for k, v in staging.items() if k not in pool} == {
        k: v for k, v in production.items() if k not in pool
    }
    db.close()


@pytest.mark.parametrize(
    ("alias", "environment"), [("dev", "development"), ("test", "testing"), ("PROD", "production")]
)
def test_dev_test_and_prod_name_their_environments(monkeypatch, alias, environment):
    monkeypatch.setenv("DATAFLOW_ENV", alias)
    with DataFlow() as db:
        assert db.config.environment == environment
    with DataFlow(environment=alias) as db:
        assert db.config.environment == environment


@pytest.mark.parametrize(
    ("spec", "value", "ours"),
    [
        ("database", "sqlite:///:memory:", "database_url"),
        ("connection_pool_size", 3, "pool_size"),
        ("deterministic_ids", True, "deterministic"),
        ("audit_logging", True, "audit_log"),
    ],
)
def test_the_specs_keyword_names_are_aliases_of_ours(spec, value, ours):
    with DataFlow(**{spec: value}) as db:
        assert getattr(db.config, ours) == value
    with pytest.raises(ValidationError, match=f"both {spec}= and {ours}="):
        DataFlow(**{spec: value, ours: value})


def test_the_database_alias_and_a_url_argument_together_are_refused():
    with pytest.raises(ValidationError, match="both database= and database_url="):
        DataFlow("sqlite:///:memory:", database="duckdb:///:memory:")


def test_a_misspelled_spec_keyword_gets_a_suggestion():
    with pytest.raises(ValidationError, match="'connection_pool_sise'. Did you mean 'connection_pool_size'"):
        DataFlow(connection_pool_sise=3)
    with pytest.raises(ValidationError, match="Did you mean 'audit_logging'"):
        DataFlow(audit_loging=True)


def test_audit_logging_and_multi_tenant_apply_to_every_model_unless_it_says_otherwise(url):
    db = DataFlow(url, audit_logging=True, multi_tenant=True)

    @db.model
    class Account:
        owner: str

    @db.model
    class Country:
        name: str
        __dataflow__ = {"audit_log": False, "multi_tenant": False}

    assert db.models["Account"].audit_log and db.models["Account"].multi_tenant
    assert not db.models["Country"].audit_log and not db.models["Country"].multi_tenant
    with db.tenant("acme"):
        wf = WorkflowBuilder(db)
        wf.add_node("AccountCreateNode", "a", {"owner": "ann"})
        wf.add_node("CountryCreateNode", "c", {"name": "France"})
        results = LocalRuntime().execute(wf.build())[0]
        assert results["a"]["tenant_id"] == "acme" and "tenant_id" not in results["c"]
        assert [e.operation for e in db.audit("Account")] == ["create"]
    with pytest.raises(ValidationError, match="'Country' is not audited"):
        db.audit("Country")
    db.close()


def test_log_level_sets_the_dataflow_lab_logger_and_is_checked():
    import logging

    logger = logging.getLogger("dataflow_lab")
    before = logger.level
    try:
        with DataFlow(log_level="debug") as db:
            assert db.config.log_level == "DEBUG" and logger.level == logging.DEBUG
    finally:
        logger.setLevel(before)
    with pytest.raises(ValidationError, match="log_level='VERBOSE'"):
        DataFlow(log_level="verbose")


def test_dataflow_logs_its_environment_and_each_model_at_info(caplog, monkeypatch):
    import logging

    caplog.set_level(logging.INFO, logger="dataflow_lab")
    monkeypatch.setenv("DATAFLOW_ENV", "staging")
    db = DataFlow()

    @db.model
    class Order:
        total: int

    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "Initialized DataFlow in staging mode: sqlite:///:memory:" in messages
    assert any(m.startswith("Registered model Order (table orders)") for m in messages)
    db.close()


SCRIPT = """
import logging, sys
{setup}
from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder
db = DataFlow({options})

@db.model
class Note:
    text: str

wf = WorkflowBuilder(db)
wf.add_node("NoteCreateNode", "c", {{"text": "hi"}})
LocalRuntime().execute(wf.build())
db.close()
print("done")
"""


def run_script(options: str = "", setup: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATAFLOW_ENV")}
    env["PYTHONPATH"] = str(README.parent) + os.pathsep + env.get("PYTHONPATH", "")
    code = SCRIPT.format(options=options, setup=setup)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    return done


def test_a_development_script_shows_its_sql_on_stderr_and_no_info_lines():
    err = run_script().stderr
    assert any(line.startswith("SQL: INSERT INTO notes") for line in err.splitlines()), err
    assert "Initialized DataFlow" not in err  # INFO is not shown unless log_level asks for it


def test_a_script_with_echo_off_or_its_own_logging_shows_no_sql():
    assert "SQL:" not in run_script(options="echo=False").stderr
    configured = run_script(setup="logging.basicConfig(level=logging.WARNING, format='%(message)s')").stderr
    assert "INSERT" not in configured  # the application's logging decides, and it says WARNING


def test_log_level_info_shows_the_start_up_lines_on_stderr():
    err = run_script(options="log_level='INFO', echo=False").stderr
    assert "dataflow_lab.dataflow INFO: Initialized DataFlow in development mode: sqlite:///:memory:" in err
    assert "dataflow_lab.dataflow INFO: Registered model Note (table notes)" in err
    assert "SQL:" not in err


# -- safety levels -----------------------------------------------------------------------------


def every_row_delete(db) -> WorkflowBuilder:
    wf = WorkflowBuilder(db)
    wf.add_node("ThingBulkDeleteNode", "d", {"filter": {}, "confirmed": True})
    return wf


def define_thing(db):
    @db.model
    class Thing:
        name: str
        size: float = 1.0


@pytest.mark.parametrize("level", ["development", "testing"])
def test_every_row_writes_need_confirmed_below_maximum(url, level):
    with DataFlow(url, safety_level=level) as db:
        define_thing(db)
        wf = WorkflowBuilder(db)
        wf.add_node("ThingBulkCreateNode", "c", {"data": [{"name": "a"}, {"name": "b"}]})
        LocalRuntime().execute(wf.build())
        assert LocalRuntime().execute(every_row_delete(db).build())[0]["d"]["deleted"] == 2
        unconfirmed = WorkflowBuilder(db)
        unconfirmed.add_node("ThingBulkDeleteNode", "d", {"filter": {}})
        with pytest.raises(ValidationError, match="confirmed=True"):
            unconfirmed.build()


def test_maximum_refuses_every_row_writes_even_confirmed(url):
    with DataFlow(url, safety_level="maximum") as db:
        define_thing(db)
        with pytest.raises(ValidationError, match="safety_level='maximum' refuses, confirmed or not"):
            every_row_delete(db).build()
        wf = WorkflowBuilder(db)
        wf.add_node("ThingBulkUpdateNode", "u", {"filter": {"name": "a"}, "fields": {"size": 2.0}})
        assert LocalRuntime().execute(wf.build())[0]["u"]["updated"] == 0  # a filter that names rows runs


def test_maximum_applies_destructive_migrations_only_from_reviewed_files(url, tmp_path):
    from dataflow_lab import DestructiveMigrationError

    db = DataFlow(url, safety_level="maximum")
    define_thing(db)
    db.create_tables()

    @db.model
    class Thing:  # noqa: F811 - size dropped
        name: str

    with pytest.raises(DestructiveMigrationError, match="only from reviewed migration files") as info:
        db.migrations.apply(confirm_destructive=True)
    assert "db.migrations.generate" in str(info.value)
    path = db.migrations.generate(tmp_path)
    assert "DROP" in path.read_text().upper()
    db.migrations.apply(directory=tmp_path)
    assert not db.migrations.plan()  # the reviewed file did it
    db.close()


def test_testing_and_maximum_make_a_skipped_table_an_error_where_development_warns(tmp_path):
    import sqlite3

    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE tags (label TEXT PRIMARY KEY)")  # no id: it cannot have nodes
    with pytest.warns(UserWarning, match="table 'tags' skipped"):
        with DataFlow(f"sqlite:///{path}", safety_level="development") as db:
            assert db.reflect() == []
    for level in ("testing", "maximum"):
        with DataFlow(f"sqlite:///{path}", safety_level=level) as db:
            with pytest.raises(ValidationError, match="Table 'tags' cannot be reflected"):
                db.reflect()


def test_an_unknown_safety_level_is_refused_naming_the_levels():
    with pytest.raises(ValidationError, match="safety_level='strict'.*development, testing, maximum"):
        DataFlow(safety_level="strict")
