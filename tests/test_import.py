"""`import dataflow_lab` stays light: heavy libraries load when first needed."""

from __future__ import annotations

import os
import subprocess
import sys


def test_importing_the_package_loads_no_heavy_library():
    code = (
        "import sys, dataflow_lab\n"
        "heavy = [m for m in ('sqlalchemy', 'pandas', 'duckdb', 'asyncpg', 'ipywidgets', 'graphviz', 'pyarrow',"
        " 'dask', 'distributed', 'cloudpickle', 'cryptography')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# A finder that holds (or breaks) the import of SQLAlchemy, to see what waits for it.
HOLD_SQLALCHEMY = """
import importlib.abc, sys, threading
gate = threading.Event()
class Hold(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "sqlalchemy":
            if BREAK:
                raise ImportError("sqlalchemy is broken in this test")
            gate.wait()
        return None
sys.meta_path.insert(0, Hold())
"""

FIRST_RUN = """
from dataflow_lab import LocalRuntime, WorkflowBuilder
@db.model
class User:
    name: str
wf = WorkflowBuilder(dataflow=db)
wf.add_node("UserCreateNode", "create", {"name": "Ann"})
wf.add_node("UserReadNode", "read", {})
wf.add_connection("create", "id", "read", "id")
print("read", LocalRuntime().execute(wf.build())[0]["read"]["name"])
"""


def run_python(code: str, **env: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_dataflow_returns_while_sqlalchemy_is_still_importing_and_the_first_run_waits_for_it(url):
    code = (
        "BREAK = False\n" + HOLD_SQLALCHEMY + "import os\nfrom dataflow_lab import DataFlow\n"
        "db = DataFlow(os.environ.get('TEST_URL') or None)\n"
        "print('returned', 'sqlalchemy' in sys.modules)\n"  # the warm-up thread is held in its import
        "gate.set()\n" + FIRST_RUN
    )
    assert run_python(code, TEST_URL=url or "") == ["returned False", "read Ann"]


def test_an_error_met_by_the_warm_up_is_raised_at_the_first_use_unchanged():
    code = (
        "BREAK = True\n" + HOLD_SQLALCHEMY + "from dataflow_lab import DataFlow\n"
        "db = DataFlow()\n"
        "print('returned')\n"
        "for attempt in range(2):\n"
        "    try:\n"
        "        db.model(type('User', (), {'__annotations__': {'name': str}}))\n"
        "    except ImportError as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    assert run_python(code) == ["returned"] + ["ImportError sqlalchemy is broken in this test"] * 2


def test_load_ext_starts_importing_what_the_first_run_needs_without_waiting_for_it():
    code = (
        "BREAK = False\n" + HOLD_SQLALCHEMY + "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance(); ip.run_line_magic('load_ext', 'dataflow_lab')\n"
        "print('loaded', 'sqlalchemy' in sys.modules)\n"
        "gate.set()\n"
        "[t.join() for t in threading.enumerate() if t.name == 'dataflow-lab-warmup']\n"
        "print(sorted(m for m in ('sqlalchemy', 'sqlalchemy.dialects.sqlite.pysqlite', 'dataflow_lab.schema')"
        " if m in sys.modules))\n"
    )
    assert run_python(code) == [
        "loaded False",
        "['dataflow_lab.schema', 'sqlalchemy', 'sqlalchemy.dialects.sqlite.pysqlite']",
    ]


def test_a_first_run_loads_none_of_the_modules_only_other_features_need():
    # what a plain Create -> Read on SQLite never uses loads where it is used (a cold start's cost)
    later = ("nodes.bulk", "nodes.bulk_upsert", "nodes.aggregate", "rows", "audit", "cipher", "records",
             "migrations.facade", "migrations.sealing", "behaviours.soft_delete", "nodes.python", "csv_import")  # fmt: skip
    code = (
        "import sys\nfrom dataflow_lab import DataFlow\ndb = DataFlow()\n" + FIRST_RUN + "print('loaded', "
        f"*[m for m in {later!r} if 'dataflow_lab.' + m in sys.modules])\n"
        "print('then', db.nodes.UserBulkCreateNode.__name__, type(db.migrations).__name__)\n"
    )
    assert run_python(code) == ["read Ann", "loaded", "then UserBulkCreateNode Migrations"]
