"""`import dataflow_lab` stays light: heavy libraries load when first needed."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_package_loads_no_heavy_library():
    code = (
        "import sys, dataflow_lab\n"
        "heavy = [m for m in ('sqlalchemy', 'pandas', 'duckdb', 'asyncpg', 'ipywidgets', 'graphviz', 'pyarrow',"
        " 'dask', 'distributed', 'cloudpickle')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
