"""The %dataflow magics, through a test shell whose run_cell re-raises, and in a real kernel.

A plain InteractiveShell has no running event loop, so the kernel tests at the
end are the ones that prove the magics work where notebooks run them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from dataflow_lab import DataFlowError, LocalRuntime, notebook, viz
from dataflow_lab.notebook import display as nbdisplay
from dataflow_lab.notebook import saving
from dataflow_lab.notebook.magics import DataFlowMagics
from dataflow_lab.notebook.observer import RunObserver

ROOT = Path(__file__).resolve().parents[1]
USER_MODEL = """\
class User:
    name: str
    email: str
    active: bool = True
"""
ONBOARDING = """\
create = UserCreateNode(name="Alice", email="alice@example.com")
read = UserReadNode(id=create.id)
active = UserListNode(filter={"active": True})
"""


class TestingShell(InteractiveShell):
    """An InteractiveShell whose run_cell raises the cell's error instead of printing it."""

    __test__ = False  # not a test class, despite its name

    def run_cell(self, raw_cell, *args, **kwargs):
        result = super().run_cell(raw_cell, *args, **kwargs)
        result.raise_error()
        return result


@pytest.fixture(scope="module")
def shell():
    main = sys.modules["__main__"]  # the shell puts its own in; later tests (Dask's spawn) need this one
    yield TestingShell.instance(history_length=0, colors="nocolor")  # display() needs the singleton
    sys.modules["__main__"] = main


@pytest.fixture
def ip(shell):
    """The test shell with the extension freshly loaded: a new notebook session per test."""
    notebook._SESSIONS.clear()
    shell.config.pop("DataFlowMagics", None)
    shell.reset(new_session=False)
    magics = notebook.load_ipython_extension(shell)
    yield shell
    magics.session.close()
    notebook.unload_ipython_extension(shell)


def cell(ip, source):
    """Run a cell; return (its result, what it displayed and printed)."""
    with capture_output() as captured:
        result = ip.run_cell(source)
    return result.result, captured


def magics(ip) -> DataFlowMagics:
    return next(c for c in ip.configurables if isinstance(c, DataFlowMagics))


@pytest.fixture
def users(ip):
    cell(ip, f"%%dataflow model\n{USER_MODEL}")
    return ip


# -- loading and settings ---------------------------------------------------------------


def test_load_ext_registers_the_magics_and_lists_every_setting_with_help(ip):
    assert "dataflow" in ip.magics_manager.magics["line"]
    assert "dataflow" in ip.magics_manager.magics["cell"]
    traits = DataFlowMagics.class_traits(config=True)
    assert {"database_url", "echo", "display_limit", "live", "short_errors"} <= set(traits)
    assert all(trait.help for trait in traits.values())
    _, out = cell(ip, "%config DataFlowMagics")
    assert "DataFlowMagics.display_limit" in out.stdout


def test_config_changes_a_setting(users):
    cell(users, "%config DataFlowMagics.display_limit = 2")
    assert magics(users).display_limit == 2


def test_config_never_shows_the_database_password(ip, tmp_path):
    cell(ip, "%config DataFlowMagics.database_url = 'postgresql://ann:s3cret@db.example/app'")
    _, out = cell(ip, "%config DataFlowMagics")
    assert "ann:***@db.example" in out.stdout
    assert "s3cret" not in out.stdout


def test_importing_the_package_loads_no_notebook_dependencies():
    code = "import sys, dataflow_lab; print(sorted(m for m in ('IPython', 'pandas', 'ipywidgets', 'graphviz') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_load_ext_imports_no_pandas_widgets_or_graphviz():
    code = (
        "import sys; from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance(); ip.run_line_magic('load_ext', 'dataflow_lab')\n"
        "print(sorted(m for m in ('pandas', 'ipywidgets', 'graphviz') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_reloading_the_extension_keeps_the_notebooks_database(users):
    before = magics(users).session.db
    users.run_line_magic("reload_ext", "dataflow_lab")
    assert magics(users).session.db is before


# -- commands and their mistakes ----------------------------------------------------------


def test_dataflow_alone_prints_the_commands(ip):
    _, out = cell(ip, "%dataflow")
    assert "%dataflow connect URL" in out.stdout and "%%dataflow workflow NAME" in out.stdout


def test_an_unknown_command_is_one_line_with_a_suggestion(ip):
    with pytest.raises(UsageError, match="no command 'rn'. Did you mean 'run'?") as error:
        cell(ip, "%dataflow rn onboarding")
    assert "\n" not in str(error.value)


def test_a_cell_command_on_a_line_says_how_to_write_it(ip):
    with pytest.raises(UsageError, match="start the cell with %%dataflow model"):
        cell(ip, "%dataflow model")
    with pytest.raises(UsageError, match="line command"):
        cell(ip, "%%dataflow run onboarding\nx = 1")


def test_a_bad_flag_is_a_usage_error(users):
    with pytest.raises(UsageError, match="unrecognized arguments: --fast"):
        cell(users, "%dataflow run onboarding --fast")
    with pytest.raises(UsageError, match="close every quote"):
        cell(users, "%dataflow run onboarding --params '{")


# -- model cells ----------------------------------------------------------------------------


def test_a_model_cell_defines_the_class_registers_it_and_shows_its_catalogue(ip):
    catalogue, _ = cell(ip, f"%%dataflow model\n{USER_MODEL}")
    db = magics(ip).session.db
    assert ip.user_ns["User"].__dataflow_model__ is db.models["User"]
    assert len(catalogue.entries["User"]) == 12
    assert catalogue.text().startswith("User · table users · 12 nodes")


def test_the_catalogue_shows_each_nodes_parameters_and_the_sql_it_generates(users):
    catalogue, _ = cell(users, "%dataflow nodes User")
    entries = {e.name: e for e in catalogue.entries["User"]}
    create = entries["UserCreateNode"]
    params = {p["name"]: p for p in create.parameters}
    assert params["name"] == {**params["name"], "type": "str", "required": True}
    assert params["active"]["required"] is False and params["active"]["default"] is True
    assert create.sql.startswith("INSERT INTO users")
    assert entries["UserReadNode"].sql.startswith("SELECT")
    assert "WHERE users.id IN" in entries["UserBulkDeleteNode"].sql
    assert all(not e.sql.startswith("-- depends") for e in entries.values())
    page = catalogue.html()
    assert page.count("<details>") == 12 and "INSERT INTO users" in page
    assert "records one left open as a workflow input" in page  # how a run supplies a required one
    assert catalogue.text().endswith('passed as execute(wf, parameters={"node_id": {...}}).')


def test_the_catalogue_displays_as_static_html_that_survives_saving(users):
    catalogue, _ = cell(users, "%dataflow nodes")
    data = catalogue._repr_mimebundle_()
    assert set(data) == {"text/plain", "text/html"}  # no widget view: it would be dead once saved
    assert data["text/html"].count("<details>") == 12 and "<svg" not in data["text/html"]
    widget = catalogue.widget()
    assert "df-catalogue" in widget._dom_classes
    assert len(widget.children[0].children[1].children) == 12
    assert "workflow input" in widget.children[1].value


def test_without_ipywidgets_the_catalogue_is_static_html(users, monkeypatch):
    monkeypatch.setattr(nbdisplay, "_WIDGETS", False)
    catalogue, _ = cell(users, "%dataflow nodes")
    assert set(catalogue._repr_mimebundle_()) == {"text/plain", "text/html"}


@pytest.fixture
def saving_server(users, monkeypatch):
    """A kernel started by a notebook server that runs dataflow_lab's save hook."""
    monkeypatch.setenv(saving.SAVES_STATIC, "1")
    monkeypatch.setattr(users, "kernel", object(), raising=False)
    return users


def test_under_a_server_that_saves_static_twins_the_catalogue_is_a_widget_beside_its_html(saving_server):
    catalogue, _ = cell(saving_server, "%dataflow nodes")
    data, metadata = catalogue._repr_mimebundle_()
    assert set(data) == {"text/plain", "text/html", saving.WIDGET_VIEW}
    assert data["text/html"].count("<details>") == 12  # the twin the notebook keeps
    assert metadata == {"dataflow_lab": {"saved": "static"}}
    assert data[saving.WIDGET_VIEW]["model_id"]


def test_the_server_saves_the_catalogue_as_its_static_html(saving_server, tmp_path):
    from jupyter_server.services.contents.filemanager import FileContentsManager

    catalogue, _ = cell(saving_server, "%dataflow nodes")
    data, metadata = catalogue._repr_mimebundle_()
    other = {"output_type": "display_data", "data": {saving.WIDGET_VIEW: {"model_id": "x"}}, "metadata": {}}
    ours = {"output_type": "execute_result", "execution_count": 1, "data": data, "metadata": metadata}
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "id": "a", "source": "%dataflow nodes", "metadata": {}, "execution_count": 1,
         "outputs": [ours, other]},
    ]}  # fmt: skip
    contents = FileContentsManager(root_dir=str(tmp_path))
    saving._load_jupyter_server_extension(type("App", (), {"contents_manager": contents, "log": logging})())
    contents.save({"type": "notebook", "format": "json", "content": notebook}, "shared.ipynb")
    saved = json.loads((tmp_path / "shared.ipynb").read_text())["cells"][0]["outputs"]
    assert set(saved[0]["data"]) == {"text/plain", "text/html"}  # reopened, it renders without a kernel
    assert "".join(saved[0]["data"]["text/html"]) == data["text/html"]
    assert saving.WIDGET_VIEW in saved[1]["data"]  # other libraries' widgets are left alone


def test_a_model_cell_mistake_is_one_line_naming_the_line(ip):
    with pytest.raises(UsageError, match="model cell line 3: NameError: name 'Optionl' is not defined"):
        cell(ip, "%%dataflow model\nclass User:\n    name: str\n    nick: Optionl[str] = None\n")
    with pytest.raises(UsageError, match="model cell line 1: expected ':'"):
        cell(ip, "%%dataflow model\nclass User\n    name: str\n")
    with pytest.raises(UsageError, match="defines classes"):
        cell(ip, "%%dataflow model\nx = 1\n")
    with pytest.raises(UsageError, match="field 'tags'"):
        cell(ip, "%%dataflow model\nclass User:\n    tags: set\n")


def test_rerunning_a_model_cell_replaces_the_model(users):
    cell(
        users,
        "%%dataflow model\nclass User:\n    name: str\n    email: str\n    active: bool = True\n    age: int = 0\n",
    )
    assert "age" in magics(users).session.db.models["User"].by_name


def test_nodes_for_an_unknown_model_suggests_one(users):
    with pytest.raises(UsageError, match="Model 'Usr' is not defined.*Did you mean 'User'"):
        cell(users, "%dataflow nodes Usr")


# -- workflow cells -------------------------------------------------------------------------


def test_a_workflow_cell_makes_nodes_and_connections_and_binds_its_name(users):
    workflow, _ = cell(users, f"%%dataflow workflow onboarding\n{ONBOARDING}")
    assert users.user_ns["onboarding"] is workflow
    assert workflow.name == "onboarding"
    assert list(workflow.order) == ["create", "read", "active"]
    assert [str(c) for c in workflow.connections] == ["create.id -> read.id"]
    assert dict(workflow.nodes["active"].params) == {"filter": {"active": True}}


def test_references_into_lists_and_dicts_become_connections(users):
    source = (
        "everyone = UserListNode()\n"
        "first = UserReadNode(id=everyone.records[0].id)\n"
        "rename = UserUpdateNode(id=first.id, fields={'email': everyone.records[-1].email, 'name': 'Al'})\n"
        "gone = UserBulkDeleteNode(filter={'id': first['id']})\n"
    )
    workflow, _ = cell(users, f"%%dataflow workflow wiring\n{source}")
    assert {str(c) for c in workflow.connections} == {
        "everyone.records.0.id -> first.id",
        "first.id -> rename.id",
        "everyone.records.-1.email -> rename.fields.email",
        "first.id -> gone.filter.id",
    }
    assert dict(workflow.nodes["rename"].params) == {"fields": {"name": "Al"}}
    assert "filter" not in workflow.nodes["gone"].params


def test_plain_names_and_expressions_are_evaluated_in_the_notebook(users):
    users.user_ns.update(person="Bea", domain="example.org")
    workflow, _ = cell(
        users, "%%dataflow workflow w\nc = UserCreateNode(name=person, email=f'{person.lower()}@{domain}')\n"
    )
    assert dict(workflow.nodes["c"].params) == {"name": "Bea", "email": "bea@example.org"}


def test_a_workflow_cell_is_parsed_not_executed(users):
    calls = []
    users.user_ns["notify"] = lambda count: calls.append(count) or {"sent": count}
    cell(users, "%%dataflow workflow w\nn = UserCountNode()\nmail = notify(count=n.count)\n")
    assert calls == []  # the step runs only when the workflow runs
    run, _ = cell(users, "%dataflow run w")
    assert calls == [0] and run.results["mail"] == {"sent": 0}


def test_a_workflow_cell_takes_the_aggregate_node_and_feeds_its_records_on(users):
    source = (
        "load = UserBulkCreateNode(data=[{'name': 'a', 'email': 'a@x'}, {'name': 'b', 'email': 'b@x', "
        "'active': False}, {'name': 'c', 'email': 'c@x'}])\n"
        "per = UserAggregateNode(group_by=['active', ('day', 'created_at')], metrics={'n': 'count'}, "
        "having={'n': {'$gte': 1}}, order_by='-n')\n"
        "top = UserReadNode(id=per.records[0].n)\n"
    )
    workflow, _ = cell(users, f"%%dataflow workflow per_active\n{source}")
    assert [str(c) for c in workflow.connections] == ["per.records.0.n -> top.id"]
    run, _ = cell(users, "%dataflow run per_active")
    counts = [(r["active"], r["n"]) for r in run.results["per"]["records"]]
    assert counts == [(True, 2), (False, 1)]
    assert run.results["top"]["id"] == 2


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "c = UserCreatNode(name='A', email='a')",
            "line 1: unknown node type 'UserCreatNode'. Did you mean 'UserCreateNode'?",
        ),
        (
            "c = UserCreateNode(nme='A', email='a')",
            "line 1: UserCreateNode 'c': unknown parameter 'nme'. Did you mean 'name'?",
        ),
        ("c = UserCreateNode('A', email='a')", "line 1: pass the parameters of 'c' by name"),
        ("c = UserCountNode()\nprint(c)", "line 2: `print\\(c\\)` is not a node"),
        (
            "c = UserCountNode()\nr = UserReadNode(id=c.count + 1)",
            "line 2: `c.count \\+ 1` computes with a node's output",
        ),
        ("c = UserCountNode()\nr = UserReadNode(id=c)", "line 2: `c` is a whole node"),
        (
            "c = UserCreateNode(name=persn, email='a')",
            "line 1: name 'persn' is not defined. Did you mean 'person'?",
        ),
        ("c = UserCountNode()\nc = UserCountNode()", "line 2: node id 'c' is used twice"),
        ("c = UserCountNode(", "line 1: '\\(' was never closed"),
        ("# nothing here", "the workflow cell has no nodes"),
        ("r = UserReadNode(id=ghost.id)", "line 1: name 'ghost' is not defined"),
    ],
)
def test_workflow_cell_mistakes_are_one_line_naming_the_line(users, source, message):
    users.user_ns["person"] = "Ann"
    with pytest.raises(UsageError, match=message) as error:
        cell(users, f"%%dataflow workflow w\n{source}\n")
    assert "\n" not in str(error.value)


def test_a_workflow_cell_reports_every_problem_at_once_each_on_its_line(users):
    source = "c = UserCreateNode(nme='A', email='a')\nr = UserReadNode(idd=1)\nn = UserCountNode()\n"
    with pytest.raises(UsageError) as error:
        cell(users, f"%%dataflow workflow w\n{source}")
    message = str(error.value)
    assert (
        "2 problem(s): line 1: UserCreateNode 'c': unknown parameter 'nme'. Did you mean 'name'?" in message
    )
    assert "; line 2: UserReadNode 'r': unknown parameter 'idd'. Did you mean 'id'?" in message
    assert "\n" not in message


def test_a_workflow_name_must_be_a_python_name(users):
    with pytest.raises(UsageError, match="'my-flow' is not a Python name"):
        cell(users, "%%dataflow workflow my-flow\nc = UserCountNode()\n")
    with pytest.raises(UsageError, match="needs a name"):
        cell(users, "%%dataflow workflow\nc = UserCountNode()\n")


def test_a_node_type_can_be_any_expression_naming_a_node_class_or_callable(users):
    users.user_ns["db"] = magics(users).session.db
    workflow, _ = cell(
        users, "%%dataflow workflow w\nc = db.nodes['UserCountNode'](filter={'active': True})\n"
    )
    assert workflow.nodes["c"].type_name == "UserCountNode"


# -- runs -----------------------------------------------------------------------------------------


def test_run_returns_results_and_run_id_like_execute(users):
    run, _ = cell(users, f"%%dataflow workflow onboarding --run\n{ONBOARDING}")
    assert run.status == "done"
    assert run.results["read"]["email"] == "alice@example.com"
    results, run_id = run
    assert results is run.results and run_id == run.run_id
    expected, _ = LocalRuntime().execute(users.user_ns["onboarding"])
    assert set(expected) == set(run.results)
    assert run["active"]["count"] == 1


def test_run_by_name_with_json_parameters(users):
    cell(users, f"%%dataflow workflow onboarding\n{ONBOARDING}")
    run, _ = cell(
        users, """%dataflow run onboarding --params '{"create": {"name": "Bob", "email": "bob@x.org"}}'"""
    )
    assert run.results["read"]["name"] == "Bob"
    users.user_ns["overrides"] = {"create": {"name": "Cy", "email": "cy@x.org"}}
    run, _ = cell(users, "%dataflow run onboarding --params overrides")
    assert run.results["read"]["name"] == "Cy"


def test_a_workflow_input_left_open_is_one_line_at_run_and_params_supply_it(users):
    cell(users, "%%dataflow workflow w\nc = UserCreateNode(name='Ann', email='a@x')\nr = UserReadNode()\n")
    assert [str(i) for i in users.user_ns["w"].workflow_inputs] == ["r.id"]
    with pytest.raises(UsageError, match=r"needs run parameters it was not given: r.id \(int\)") as error:
        cell(users, "%dataflow run w")
    assert "\n" not in str(error.value)
    assert "--params" in str(error.value)
    run, _ = cell(users, """%dataflow run w --params '{"r": {"id": 1}}'""")
    assert run.results["r"]["name"] == "Ann"
    assert LocalRuntime().execute(users.user_ns["w"], parameters={"r": {"id": 1}})[0]["c"]["id"] == 2


def test_run_parameter_mistakes_are_one_line(users):
    cell(users, f"%%dataflow workflow onboarding\n{ONBOARDING}")
    with pytest.raises(UsageError, match="not valid JSON"):
        cell(users, "%dataflow run onboarding --params {create: 1}")
    with pytest.raises(UsageError, match="node 'craete'.*Did you mean 'create'"):
        cell(users, """%dataflow run onboarding --params '{"craete": {"name": "B"}}'""")
    with pytest.raises(UsageError, match="no workflow named 'onbording'. Did you mean 'onboarding'"):
        cell(users, "%dataflow run onbording")
    users.user_ns["count"] = 3
    with pytest.raises(UsageError, match="no workflow named 'count' \\(count is a int\\)"):
        cell(users, "%dataflow run count")


def test_a_workflow_built_in_python_runs_by_name_too(users):
    users.user_ns["db"] = magics(users).session.db
    cell(
        users,
        "from dataflow_lab import WorkflowBuilder\nb = WorkflowBuilder(db)\nb.add_node('UserCountNode', 'n')",
    )
    run, _ = cell(users, "%dataflow run b")
    assert run.results == {"n": {"count": 0}}


def test_list_outputs_show_as_dataframes_up_to_the_display_limit(users):
    cell(users, "%config DataFlowMagics.display_limit = 2")
    rows = [{"name": f"u{i}", "email": f"u{i}@x.org"} for i in range(5)]
    users.user_ns["rows"] = rows
    run, _ = cell(
        users, "%%dataflow workflow load --run\nadd = UserBulkCreateNode(data=rows)\nall = UserListNode()\n"
    )
    frame = run.frame("all")
    assert list(frame["name"]) == [f"u{i}" for i in range(5)]
    assert set(run.frames()) == {"all"}
    page = run._repr_mimebundle_()["text/html"]
    assert page.count("<tr>") >= 3 and "u1" in page and "u4" not in page
    assert "… 3 more rows" in page
    with pytest.raises(DataFlowError, match="not a List output"):
        run.frame("add")


def test_a_run_summary_has_meaningful_text(users):
    run, _ = cell(users, f"%%dataflow workflow onboarding --run\n{ONBOARDING}")
    text = run._repr_mimebundle_()["text/plain"]
    assert text.startswith("Run 'onboarding' done in ")
    assert "read (UserReadNode): done, 1 row" in text
    assert "transactions: BEGIN on sqlite -> COMMIT on sqlite" in text
    assert "run.frame('active')" in text


def test_a_failed_run_shows_its_dag_then_one_line_and_keeps_nothing(users):
    source = "a = UserCreateNode(name='A', email='a@x.org')\nb = UserReadNode(id=404)\n"
    with capture_output() as out, pytest.raises(UsageError) as error:
        users.run_cell(f"%%dataflow workflow broken --run\n{source}")
    assert str(error.value).startswith(
        "Node 'b' (UserReadNode) failed: NotFoundError: User with id 404 was not found."
    )
    assert "Hint: check the id" in str(error.value)
    shown = out.outputs[-1].data
    assert "a (UserCreateNode): rolled back" in shown["text/plain"]
    assert "b (UserReadNode): failed" in shown["text/plain"]
    assert viz.STATE_COLOURS["rolled back"] in shown["text/html"]
    run, _ = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert run.results["n"]["count"] == 0


def test_with_short_errors_off_the_real_exception_shows(users):
    cell(users, "%config DataFlowMagics.short_errors = False")
    with pytest.raises(DataFlowError, match="User with id 404"):
        cell(users, "%%dataflow workflow broken --run\nb = UserReadNode(id=404)\n")


def test_node_mode_keeps_what_committed_before_the_failure(users):
    source = "a = UserCreateNode(name='A', email='a@x.org')\nb = UserReadNode(id=404)\n"
    cell(users, f"%%dataflow workflow broken\n{source}")
    with capture_output() as out, pytest.raises(UsageError):
        users.run_cell("%dataflow run broken --transaction node")
    assert "a (UserCreateNode): done" in out.outputs[-1].data["text/plain"]
    run, _ = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert run.results["n"]["count"] == 1


def test_a_run_past_its_node_timeout_is_cancelled_and_rolled_back(users):
    import asyncio

    async def stall(name: str) -> str:
        await asyncio.sleep(30)
        return name

    users.user_ns["stall"] = stall
    source = "a = UserCreateNode(name='A', email='a@x.org')\nb = stall(name=a.name)\n"
    cell(users, f"%%dataflow workflow stalled\n{source}")
    with capture_output() as out, pytest.raises(UsageError, match="node_timeout of 0.3 s"):
        users.run_cell("%dataflow run stalled --node-timeout 0.3")
    assert "a (UserCreateNode): rolled back" in out.outputs[-1].data["text/plain"]
    with pytest.raises(UsageError, match="timeout of 0.3 s while node 'b' ran"):
        users.run_cell("%config DataFlowMagics.timeout = 0.3")
        users.run_cell("%dataflow run stalled --node-timeout 0")  # 0: no node limit, the run's applies
    run, _ = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert run.results["n"]["count"] == 0


def test_a_saga_run_shows_the_compensated_node_and_keeps_nothing(users):
    users.user_ns["refuse"] = lambda name: (_ for _ in ()).throw(ValueError(f"no {name}"))
    source = "a = UserCreateNode(name='A', email='a@x.org')\nb = refuse(name=a.name)\n"
    cell(users, f"%%dataflow workflow broken\n{source}")
    with capture_output() as out, pytest.raises(UsageError, match="ValueError: no A"):
        users.run_cell("%dataflow run broken --transaction saga")
    shown = out.outputs[-1].data
    assert "a (UserCreateNode): compensated" in shown["text/plain"]
    assert "COMPENSATE a: compensated" in shown["text/plain"]
    if viz.dot_available():
        assert viz.STATE_COLOURS["compensated"] in shown["text/html"]
    run, _ = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert run.results["n"]["count"] == 0


def test_show_draws_the_dag_coloured_by_the_last_run(users):
    cell(users, f"%%dataflow workflow onboarding\n{ONBOARDING}")
    view, _ = cell(users, "%dataflow show onboarding")
    assert "create: UserCreateNode [pending]" in view.text()
    cell(users, "%dataflow run onboarding")
    view, _ = cell(users, "%dataflow show onboarding")
    assert "create: UserCreateNode [done]  1 row · " in view.text()
    if viz.dot_available():
        data = view._repr_mimebundle_()
        assert f'fill="{viz.STATE_COLOURS["done"]}"' in data["image/svg+xml"]
        assert data["image/png"] and "<svg" not in data["text/html"]  # safe for untrusted output


def test_status_describes_the_session(users):
    cell(users, f"%%dataflow workflow onboarding --run\n{ONBOARDING}")
    _, out = cell(users, "%dataflow status")
    assert "DataFlow: sqlite:///:memory: (sqlite)" in out.stdout
    assert "models: User" in out.stdout and "last runs: onboarding (done)" in out.stdout


def test_echo_lists_each_sql_statement_in_the_run_summary_under_its_node(users):
    cell(users, "%config DataFlowMagics.echo = True")
    run, out = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    summary = run.summary().splitlines()
    at = summary.index(next(line for line in summary if line.startswith("  n (UserCountNode)")))
    assert summary[at + 1].startswith("    SQL: SELECT count(*)")
    assert "SQL · 1 statement" in run.summary_html() and "SELECT count(*)" in run.summary_html()
    printed = [line for line in out.stdout.splitlines() if line.startswith("SQL:")]
    assert printed == []  # listed in the summary (the cell's Out), not printed a second time
    cell(users, "%config DataFlowMagics.echo = False")
    cell(users, "%config DataFlowMagics.summary_sql = False")
    run, out = cell(users, "%dataflow run n")
    assert "SQL" not in run.summary() and "SQL ·" not in run.summary_html() and "SQL:" not in out.stdout


def test_in_development_a_run_summary_lists_its_sql_by_default_behind_a_closed_disclosure(users):
    run, out = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert "    SQL: SELECT count(*)" in run.summary()
    assert "<details><summary>SQL · 1 statement</summary>" in run.summary_html()
    assert not [line for line in out.stdout.splitlines() if line.startswith("SQL:")]  # not printed too


def test_outside_development_a_run_summary_lists_no_sql_unless_asked(ip, monkeypatch):
    monkeypatch.setenv("DATAFLOW_ENV", "testing")
    ip.run_cell(f"%%dataflow model\n{USER_MODEL}")
    run, _ = cell(ip, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert "SQL" not in run.summary()
    cell(ip, "%config DataFlowMagics.summary_sql = True")
    run, _ = cell(ip, "%dataflow run n")
    assert "    SQL: SELECT count(*)" in run.summary()


# -- background runs --------------------------------------------------------------------------


@pytest.fixture
def gate(users):
    """A Python step that waits until the test opens the gate (or 5 s pass)."""
    opened = threading.Event()

    def wait_for_gate(count: int) -> dict:
        opened.wait(5)
        return {"seen": count}

    users.user_ns["wait_for_gate"] = wait_for_gate
    cell(
        users,
        "%%dataflow workflow gated\n"
        "a = UserCreateNode(name='A', email='a@x.org')\n"
        "n = UserCountNode()\n"
        "g = wait_for_gate(count=n.count)\n",
    )
    yield opened
    opened.set()


def test_a_background_run_returns_at_once_then_finishes(users, gate):
    started = time.perf_counter()
    handle, _ = cell(users, "%dataflow run gated --background")
    assert time.perf_counter() - started < 1
    assert handle.status == "running" and not handle.done()
    gate.set()
    assert handle.wait(5).status == "done"
    assert handle.results["g"] == {"seen": 1}
    assert handle._repr_mimebundle_()["text/plain"].startswith("Run 'gated' done")


def test_a_background_run_can_be_cancelled_and_rolls_back(users, gate):
    handle, _ = cell(users, "%dataflow run gated --background")
    deadline = time.time() + 5
    while handle.snapshot().nodes["g"].state != "running" and time.time() < deadline:
        time.sleep(0.01)
    assert handle.cancel() is True
    assert handle.status == "cancelled"
    assert handle.snapshot().nodes["a"].state == "rolled back"
    assert handle.snapshot().nodes["g"].state == "cancelled"  # not "failed": nothing went wrong
    assert "ROLLBACK on sqlite" in handle.events[-1]
    with pytest.raises(DataFlowError, match="was cancelled"):
        _ = handle.results
    run, _ = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert run.results["n"]["count"] == 0


def test_a_run_cancelled_before_it_starts_ends_at_once(users, gate):
    started = time.perf_counter()
    handle, _ = cell(users, "h = %dataflow run gated --background\nh.cancel(), h.status")
    assert handle == (True, "cancelled")
    assert time.perf_counter() - started < 2


# -- live views -----------------------------------------------------------------------------------


@pytest.fixture
def frontend(users, monkeypatch):
    """Pretend a widget-capable frontend is attached (the test shell has no kernel)."""
    monkeypatch.setattr(DataFlowMagics, "_frontend_has_widgets", lambda self: True)
    return users


def test_a_quick_run_makes_no_widgets_just_its_summary(frontend):
    run, out = cell(frontend, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert run.live is None
    assert [o.data for o in out.outputs] == [{"text/plain": ""}]  # the slot a slow run fills


def test_a_slow_run_gets_a_live_view_that_ends_done(frontend):
    cell(frontend, "%config DataFlowMagics.live_after = 0.05")
    frontend.user_ns["nap"] = lambda count: time.sleep(0.5) or {"count": count}
    run, _ = cell(frontend, "%%dataflow workflow slow --run\nn = UserCountNode()\nz = nap(count=n.count)\n")
    live = run.live
    assert live is not None
    assert live.snapshot.status == "done"
    assert set(live.snapshot.states().values()) == {"done"}
    assert 2 <= live.updates <= live.snapshot.elapsed / 0.1 + 3  # throttled to about 10 Hz
    assert "df-live" in live.widget._dom_classes
    if viz.dot_available():
        assert f'fill="{viz.STATE_COLOURS["done"]}"' in live.dag.widget().value
    assert "Run 'slow' done" in live.monitor.widget().children[0].value


def test_a_live_view_keeps_moving_during_a_long_python_step(frontend):
    cell(frontend, "%config DataFlowMagics.live_after = 0.05")
    frontend.user_ns["nap"] = lambda count: time.sleep(1.5) or {"count": count}
    run, _ = cell(frontend, "%%dataflow workflow slow --run\nn = UserCountNode()\nz = nap(count=n.count)\n")
    assert run.live is not None and run.live.snapshot.status == "done"
    # no hook fires while nap sleeps, yet the view was refreshed at least twice a second
    assert run.live.updates >= 4, run.live.updates


def test_a_running_node_shows_its_time_so_far(users):
    cell(users, "%%dataflow workflow n\nn = UserCountNode()\n")
    observer = RunObserver(users.user_ns["n"], interval=0.1)
    observer.before_workflow(run_id="r")
    observer.before_node(run_id="r", node_id="n")
    time.sleep(0.05)
    first = observer.snapshot().nodes["n"]
    time.sleep(0.05)
    second = observer.snapshot().nodes["n"]
    assert first.state == second.state == "running"
    assert 0.05 <= first.duration < second.duration
    assert re.fullmatch(r"running · [\d.]+ ms", second.label())
    observer.progress(run_id="r", node_id="n", done=500, total=1000)
    assert re.fullmatch(r"500/1,000 rows · [\d.]+ ms", observer.snapshot().nodes["n"].label())


def test_a_slow_run_is_shown_once_its_live_slot_emptied_for_the_summary(frontend):
    cell(frontend, "%config DataFlowMagics.live_after = 0.05")
    frontend.user_ns["nap"] = lambda count: time.sleep(0.3) or {"count": count}
    run, out = cell(frontend, "%%dataflow workflow slow --run\nn = UserCountNode()\nz = nap(count=n.count)\n")
    assert run.live is not None
    # first frame, then the live view, then emptied: the cell's result (the summary) is the one view
    assert out.outputs[-1].data == {"text/plain": ""}
    assert not any("widget-view" in k for k in out.outputs[-1].data)


def test_a_background_run_shows_a_live_view_with_a_cancel_button(frontend, gate):
    handle, out = cell(frontend, "h = %dataflow run gated --background\nh")
    (shown,) = out.outputs  # the magic shows the live view itself, even when its handle is assigned
    assert "application/vnd.jupyter.widget-view+json" in shown.data
    assert shown.data["text/plain"] == "Live view: run 'gated' in the background"  # a steady first frame
    # saved before the run ends (under a server with the save hook), the notebook keeps a note, not a dead widget
    page = {
        "cells": [{"cell_type": "code", "outputs": [{"data": dict(shown.data), "metadata": shown.metadata}]}]
    }
    assert saving.static_saved_form(page) == 1
    assert "had not ended when this notebook was saved" in page["cells"][0]["outputs"][0]["data"]["text/html"]
    assert handle._repr_mimebundle_()["text/plain"].startswith("Run 'gated' running in the background")
    handle.live.button.click()
    assert handle.status == "cancelled"
    assert handle.live.button.disabled
    # the ended run's button says what happened, in a neutral style (no red "danger" left behind)
    assert (handle.live.button.description, handle.live.button.button_style) == ("Cancelled", "")


def test_a_finished_background_run_leaves_a_neutral_button_saying_finished(frontend, gate):
    handle, _ = cell(frontend, "%dataflow run gated --background")
    gate.set()
    assert handle.wait(5).status == "done"
    deadline = time.time() + 2
    while handle.live.button.description != "Finished" and time.time() < deadline:
        time.sleep(0.01)
    assert (handle.live.button.description, handle.live.button.button_style) == ("Finished", "")


def test_a_bulk_node_in_a_notebook_run_draws_no_second_progress_bar(users, monkeypatch):
    import tqdm.auto

    made = []

    class Recording(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("desc"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    users.user_ns["people"] = [{"name": f"u{i}", "email": f"u{i}@x.org"} for i in range(50)]
    run, _ = cell(users, "%%dataflow workflow load --run\nadd = UserBulkCreateNode(data=people)\n")
    assert run.results["add"]["inserted"] == 50
    assert made == []  # the panel's bar is the one bar
    run, _ = cell(
        users, "%%dataflow workflow load2 --run\nadd = UserBulkCreateNode(data=people[:1], progress=True)\n"
    )
    assert made == ["add (UserBulkCreateNode)"]  # asked for explicitly: still there


def test_a_summary_folds_node_tables_past_the_second_and_shows_timestamps_to_the_second(users):
    run, _ = cell(
        users,
        "%%dataflow workflow many --run\n"
        "a = UserCreateNode(name='A', email='a@x.org')\n"
        "b = UserCreateNode(name='B', email='b@x.org')\n"
        "c = UserCreateNode(name='C', email='c@x.org')\n"
        "everyone = UserListNode()\n",
    )
    page = run.summary_html()
    assert page.count("<details open>") == 2
    assert page.count("<details><summary>") >= 2  # c and everyone: folded, one click away
    created = run.results["a"]["created_at"]
    assert created.isoformat(sep=" ", timespec="seconds") in page
    assert f"{created:%H:%M:%S}.{created:%f}" not in page  # no microseconds in a table


def test_a_quiet_pool_gets_no_line_in_the_monitor(users):
    from dataflow_lab.notebook.monitor import MonitorPanel

    run, _ = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    snapshot = run.snapshot()
    assert snapshot.pool  # the figures are there ...
    assert "pool " not in MonitorPanel(snapshot).text() and "<meter" not in MonitorPanel(snapshot).html()


def test_the_pool_line_appears_only_when_something_is_notable():
    from dataflow_lab.notebook.monitor import pool_notable

    quiet = {"pool": "AsyncAdaptedQueuePool", "size": 5, "checked_out": 1, "overflow": 0, "waiting": 0,
             "failures": 0, "invalidated": 0, "health_status": "ok"}  # fmt: skip
    assert not pool_notable(quiet)
    assert pool_notable({**quiet, "waiting": 2})
    assert pool_notable({**quiet, "overflow": 1})
    assert pool_notable({**quiet, "failures": 1})
    assert pool_notable({**quiet, "health_status": "degraded"})


def test_a_finished_background_run_replaces_its_live_view_in_place_with_pictures(frontend, gate, monkeypatch):
    updates = []
    monkeypatch.setattr(
        "IPython.display.DisplayHandle.update", lambda self, obj, **kw: updates.append((self.display_id, obj))
    )
    handle, out = cell(frontend, "%dataflow run gated --background")
    slot = handle._slot.display_id
    gate.set()
    handle.wait(5)
    deadline = time.time() + 5
    while not updates and time.time() < deadline:
        time.sleep(0.02)
    ((display_id, final),) = updates
    assert display_id == slot
    assert not any("widget" in k for k in final)  # nothing that needs the kernel is left
    assert final["text/plain"].startswith("Run 'gated' done")
    if viz.dot_available():
        assert {"image/png", "image/svg+xml"} <= set(final) and "<img" in final["text/html"]
    assert handle._repr_mimebundle_()["text/plain"].startswith("Run 'gated' done")


def test_without_ipywidgets_runs_show_static_html(users, monkeypatch):
    monkeypatch.setattr(nbdisplay, "_WIDGETS", False)
    monkeypatch.setattr(DataFlowMagics, "_frontend_has_widgets", lambda self: nbdisplay.widgets_available())
    run, out = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert out.outputs == [] and run.live is None
    assert {"text/plain", "text/html"} <= set(run._repr_mimebundle_()) and "<svg" not in run.summary_html()


def test_the_observer_throttles_updates_to_about_ten_a_second(users):
    cell(users, "%%dataflow workflow n\nn = UserCountNode()\n")
    observer = RunObserver(users.user_ns["n"], interval=0.1)
    seen = []
    observer.attach(seen.append)
    observer.before_workflow(run_id="r")
    started = time.perf_counter()
    while time.perf_counter() - started < 0.5:
        observer.progress(run_id="r", node_id="n", done=1, total=2)
        time.sleep(0.001)
    time.sleep(0.15)  # the trailing update is scheduled on the loop
    assert 2 <= len(seen) <= 0.5 / 0.1 + 3  # hundreds of events, about ten updates a second
    assert seen[-1].nodes["n"].done == 1


def test_the_monitor_shows_bulk_chunks_pool_and_transactions(users):
    users.user_ns["rows"] = [{"name": f"u{i}", "email": f"u{i}@x.org"} for i in range(50)]
    cell(users, "%%dataflow workflow load\nadd = UserBulkCreateNode(data=rows, batch_size=10)\n")
    observer = RunObserver(users.user_ns["load"], interval=0.0)
    seen = []
    observer.attach(seen.append)
    LocalRuntime(hooks=[observer]).execute(users.user_ns["load"])
    chunks = [s.nodes["add"].done for s in seen if s.nodes["add"].state == "running" and s.nodes["add"].done]
    assert chunks == [10, 20, 30, 40, 50]
    final = seen[-1]
    assert final.nodes["add"].rows == 50 and final.total_rows == 50
    assert final.events == ("BEGIN on sqlite", "COMMIT on sqlite")
    assert "checked_out" in next(iter(final.pool.values()))
    panel = notebook.MonitorPanel(final)
    assert "50 rows" in panel.text() and "COMMIT on sqlite" in panel.html()


def test_retries_and_compensations_reach_the_panel(users):
    cell(users, "%%dataflow workflow n\nn = UserCountNode()\n")
    observer = RunObserver(users.user_ns["n"])
    observer.before_workflow(run_id="r")
    observer.retry(run_id="r", node_id="n", attempt=2, error=TimeoutError("slow"), delay=0.5)
    observer.after_node(run_id="r", node_id="n", error=None, duration=0.01, rows=1, node_type="UserCountNode")
    observer.compensation(run_id="r", node_id="n", status="compensated", error=None)
    snapshot = observer.snapshot()
    assert snapshot.nodes["n"].retries == 1 and snapshot.nodes["n"].state == "compensated"
    assert snapshot.retries == ("n: attempt 2 after slow; next in 0.5 s",)
    assert snapshot.events == ("COMPENSATE n: compensated",)
    assert "retry n: attempt 2" in notebook.MonitorPanel(snapshot).text()


# -- connecting ------------------------------------------------------------------------------------


def test_connect_switches_the_database_and_moves_the_models(users, tmp_path):
    cell(users, f"%%dataflow workflow onboarding --run\n{ONBOARDING}")
    old = magics(users).session.db
    _, out = cell(users, f"%dataflow connect sqlite:///{tmp_path}/notes.db")
    assert out.stdout.startswith(f"Connected to sqlite:///{tmp_path}/notes.db (sqlite); models: User")
    assert "closed sqlite:///:memory:" in out.stdout
    new = magics(users).session.db
    assert new is not old and "User" in new.models
    run, _ = cell(users, "%dataflow run onboarding")  # rebuilt on the new database
    assert run.results["active"]["count"] == 1
    assert (tmp_path / "notes.db").exists()


def test_connect_expands_notebook_variables(users, tmp_path):
    users.user_ns["path"] = str(tmp_path / "v.db")
    _, out = cell(users, "%dataflow connect sqlite:///{path}")
    assert f"sqlite:///{tmp_path}/v.db" in out.stdout


def test_a_failed_connect_hides_the_password_and_keeps_the_old_database(users):
    before = magics(users).session.db
    with pytest.raises(UsageError) as error:
        cell(users, "%dataflow connect postgresql://ann:s3cret-pw@127.0.0.1:9/app")
    assert "s3cret-pw" not in str(error.value) and "127.0.0.1:9" in str(
        error.value
    )  # one line: host and port, never the password
    assert magics(users).session.db is before


@pytest.mark.postgres
def test_connect_to_postgres_never_prints_the_password(users, pg_url):
    url = re.sub(
        r"://([^:@/]+)@", r"://\1:t0p-secret@", pg_url
    )  # the test server trusts; the password is unused
    _, out = cell(users, f"%dataflow connect {url}")
    assert ":***@" in out.stdout and "t0p-secret" not in out.stdout
    cell(users, "%dataflow status")
    run, _ = cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    assert run.results["n"]["count"] >= 0
    assert "t0p-secret" not in repr(magics(users).session.db)


def test_connect_to_mysql_then_run_a_workflow_and_an_sql_cell(users, my_url):
    _, out = cell(users, f"%dataflow connect {my_url}")
    assert "mysql://" in out.stdout
    created, _ = cell(users, '%%dataflow workflow c --run\nc = UserCreateNode(name="Ann", email="a@x.io")\n')
    assert created.results["c"]["name"] == "Ann"
    frame, _ = cell(users, "%%dataflow sql\nSELECT name FROM users")
    assert list(frame["name"]) == ["Ann"]
    assert magics(users).session.db.dialect == "mysql"


# -- in a real kernel -----------------------------------------------------------------------------


def kernel_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_the_magics_work_in_a_real_kernel_with_its_running_event_loop():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "%load_ext dataflow_lab",
        f"%%dataflow model\n{USER_MODEL}",
        f"%%dataflow workflow onboarding --run\n{ONBOARDING}",
        "_.results['read']['name'], _.status",
        "import asyncio; asyncio.get_running_loop() is not None",  # the kernel's loop is running
        "%dataflow run onbording",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    replies = {}
    client = nbclient.NotebookClient(
        nb, timeout=60, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(ROOT)}}
    )
    client.on_cell_executed = lambda cell, cell_index, execute_reply: replies.__setitem__(
        cell_index, execute_reply
    )
    with _env(kernel_env()):
        client.execute()
    statuses = [replies[i]["content"]["status"] for i in range(len(cells))]
    assert statuses == ["ok"] * 5 + ["error"]
    assert replies[5]["content"]["ename"] == "UsageError"
    out = nb.cells[2].outputs
    slot = out[0]["data"]  # filled with the live view only if the run outlasted live_after
    assert slot == {"text/plain": ""} or slot["text/plain"].startswith("Live view: Run 'onboarding'")
    assert out[-1]["data"]["text/plain"].startswith("Run 'onboarding' done in")
    assert nb.cells[3].outputs[0]["data"]["text/plain"] == "('Alice', 'done')"
    assert nb.cells[4].outputs[0]["data"]["text/plain"] == "True"
    error_text = "".join(o.get("text", "") for o in nb.cells[5].outputs)
    assert error_text.strip() == (
        "UsageError: no workflow named 'onbording'. Did you mean 'onboarding'? Hint: workflows: onboarding."
    )


def test_in_a_real_kernel_echo_lists_the_sql_in_the_run_summary_and_writes_nothing_to_stderr():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "%load_ext dataflow_lab\n%config DataFlowMagics.echo = True",
        f"%%dataflow model\n{USER_MODEL}",
        f"%%dataflow workflow onboarding --run\n{ONBOARDING}",
        # a DataFlow of the user's own, development preset (echo on): nothing lands on stderr
        "from dataflow_lab import DataFlow, LocalRuntime, WorkflowBuilder\n"
        "own = DataFlow()\n"
        "@own.model\nclass Note:\n    text: str\n"
        "wf = WorkflowBuilder(own); wf.add_node('NoteCreateNode', 'c', {'text': 'hi'})\n"
        "LocalRuntime().execute(wf.build())[0]['c']['text']",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    with _env(kernel_env()):
        client.execute()
    summary = nb.cells[2].outputs[-1]["data"]
    lines = summary["text/plain"].splitlines()
    create = next(i for i, line in enumerate(lines) if line.startswith("  create (UserCreateNode)"))
    assert lines[create + 1].startswith("    SQL: INSERT INTO users")
    assert "SQL · " in summary["text/html"] and "INSERT INTO users" in summary["text/html"]
    run_streams = [o["text"] for o in nb.cells[2].outputs if o["output_type"] == "stream"]
    assert not any("SQL:" in text for text in run_streams), run_streams  # in the summary, not printed too
    stderr = [o["text"] for c in nb.cells for o in c.outputs if o.get("name") == "stderr"]
    assert not any("INSERT" in text for text in stderr), stderr  # the kernel's stderr gets none
    own = nb.cells[3].outputs  # a run of the user's own: no summary, so the notebook's echo prints it
    assert any("SQL: INSERT INTO notes" in o.get("text", "") for o in own)
    assert own[-1]["data"]["text/plain"] == "'hi'"


class _env:
    """Temporarily replace os.environ (the kernel inherits it)."""

    def __init__(self, env: dict[str, str]):
        self.env, self.saved = env, None

    def __enter__(self):
        self.saved = dict(os.environ)
        os.environ.update(self.env)

    def __exit__(self, *exc):
        os.environ.clear()
        os.environ.update(self.saved)


def test_run_as_a_user_of_the_notebook(users):
    from dataflow_lab import User as AccessUser

    cell(users, f"%%dataflow workflow onboarding\n{ONBOARDING}")
    magics(users).session.db.grant("staff", "User", "all")
    users.user_ns["teacher"] = AccessUser("ada", roles=["staff"])
    with pytest.raises(UsageError, match="may not run 3 node"):
        cell(users, "%dataflow run onboarding")
    with pytest.raises(UsageError, match="may not run"):
        cell(users, "%dataflow run onboarding --user ada")  # a plain name holds no roles
    run, _ = cell(users, "%dataflow run onboarding --user teacher")
    assert run.results["read"]["name"] == "Alice"


def test_a_tenant_around_the_cell_reaches_the_run_on_the_loop_thread(ip):
    cell(ip, "%%dataflow model\nclass Note:\n    text: str\n    __dataflow__ = {'multi_tenant': True}\n")
    cell(ip, "%%dataflow workflow jot\njot = NoteCreateNode(text='hi')\n")
    ip.user_ns["db"] = magics(ip).session.db
    with pytest.raises(UsageError, match="tenant"):
        cell(ip, "%dataflow run jot")
    run, _ = cell(ip, "with db.tenant('acme'):\n    handle = %dataflow run jot --background\nhandle.wait()")
    assert ip.user_ns["handle"].results["jot"]["tenant_id"] == "acme"


# -- model cells that meet the database ------------------------------------------------------------


def test_re_running_a_model_cell_with_a_drop_says_so_at_that_cell_in_one_line(users):
    cell(users, "%%dataflow workflow w --run\nc = UserCreateNode(name='a', email='a@x.org')\n")
    notice, _ = cell(users, "%%dataflow model\nclass User:\n    name: str\n    email: str\n")  # drops active
    text, page = repr(notice), notice._repr_mimebundle_()["text/html"]
    assert "\n" not in text and "drop column 'active'" in text and "Nothing was changed" in text
    assert "%dataflow migrate --confirm" in text and "db." not in text  # the notebook has no `db`
    assert "CREATE TABLE" not in text and "<details><summary>the SQL it would run</summary>" in page
    assert "CREATE TABLE" in page  # one click away


def test_a_refused_run_names_the_magic_not_the_python_api_and_shows_no_sql(users):
    cell(users, "%%dataflow workflow w --run\nc = UserCreateNode(name='a', email='a@x.org')\n")
    cell(users, "%%dataflow model\nclass User:\n    name: str\n    email: str\n")
    with pytest.raises(UsageError) as refused:
        cell(users, "%%dataflow workflow n --run\nn = UserCountNode()\n")
    message = str(refused.value)
    assert "%dataflow migrate --confirm" in message and "db.migrations" not in message
    assert "CREATE TABLE" not in message and len(message) < 450


def test_dataflow_migrate_shows_a_drop_then_applies_it_with_confirm(users):
    cell(users, "%%dataflow workflow w --run\nc = UserCreateNode(name='a', email='a@x.org')\n")
    cell(users, "%%dataflow model\nclass User:\n    name: str\n    email: str\n")
    _, out = cell(users, "%dataflow migrate")
    assert "Re-run with %dataflow migrate --confirm" in out.outputs[0].data["text/plain"]
    _, out = cell(users, "%dataflow migrate --confirm")
    assert out.stdout.startswith("Applied: ") and "drop" in out.stdout
    run, _ = cell(users, "%%dataflow workflow n --run\nn = UserListNode()\n")
    assert [set(r) >= {"name", "email"} and "active" not in r for r in run.results["n"]["records"]] == [True]
    _, out = cell(users, "%dataflow migrate")
    assert out.stdout.strip() == "Nothing to migrate: every table matches its model."


def test_a_new_required_field_is_reported_at_the_cell_and_backfilled_by_the_magic(users):
    cell(users, "%%dataflow workflow w --run\nc = UserCreateNode(name='a', email='a@x.org')\n")
    notice, _ = cell(users, f"%%dataflow model\n{USER_MODEL}    nick: str\n")
    assert "adds required field(s) 'nick'" in repr(notice)
    assert "%dataflow migrate --backfill '{\"nick\": ...}'" in repr(notice)
    _, out = cell(users, '%dataflow migrate --backfill \'{"nick": "none"}\'')
    assert out.stdout.startswith("Applied: ")
    run, _ = cell(users, "%%dataflow workflow n --run\nn = UserListNode()\n")
    assert [r["nick"] for r in run.results["n"]["records"]] == ["none"]


def test_an_additive_model_change_shows_the_catalogue_as_usual(users):
    cell(users, "%%dataflow workflow w --run\nc = UserCreateNode(name='a', email='a@x.org')\n")
    shown, _ = cell(users, f"%%dataflow model\n{USER_MODEL}    nick: str = ''\n")
    assert "UserCreateNode" in repr(shown)
