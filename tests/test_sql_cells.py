"""%%dataflow sql and %dataflow plot, through the test shell of test_magics.py, on every backend."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from test_magics import cell, ip, shell  # noqa: F401 - the fixtures

from dataflow_lab.notebook.plot import Plot

READINGS = """\
class Reading:
    station: str
    km: float
"""
LOAD = """\
load = ReadingBulkCreateNode(data=[{"station": s, "km": k} for s, k in
    [("north", 1.5), ("north", 2.5), ("south", 4.0), ("east", 0.5)]])
"""


def shown(captured) -> str:
    return "".join(o.data.get("text/plain", "") for o in captured.outputs) + captured.stdout


@pytest.fixture
def nb(ip, url):  # noqa: F811 - ip is the fixture
    ip.run_cell(f"%dataflow connect {url}" if url else "%dataflow status")
    ip.run_cell(f"%%dataflow model\n{READINGS}")
    ip.run_cell(f"%%dataflow workflow loading --run\n{LOAD}")
    return ip


def test_a_sql_cell_returns_a_frame_and_says_how_many_rows(nb):
    frame, captured = cell(
        nb,
        "%%dataflow sql -o counts\nSELECT station, count(*) AS n FROM readings\nGROUP BY station ORDER BY n DESC, station",
    )
    assert frame.to_dict("records") == [
        {"station": "north", "n": 2},
        {"station": "east", "n": 1},
        {"station": "south", "n": 1},
    ]
    assert nb.user_ns["counts"] is frame
    assert "3 row(s) ·" in shown(captured) and "saved as counts" in shown(captured)


def test_braces_and_colon_names_are_notebook_variables_bound_as_values(nb):
    nb.user_ns.update(place="north", minimum=2.0, hostile="north' OR '1'='1")
    frame, _ = cell(nb, "%dataflow sql SELECT km FROM readings WHERE station = {place} AND km >= :minimum")
    assert list(frame["km"]) == [2.5]
    frame, _ = cell(nb, "%dataflow sql SELECT km FROM readings WHERE station = {hostile}")
    assert len(frame) == 0


def test_a_missing_variable_is_named_with_a_suggestion(nb):
    nb.user_ns["place"] = "north"
    with pytest.raises(UsageError, match=r"\{plaec\} names no variable.*place"):
        nb.run_cell("%dataflow sql SELECT * FROM readings WHERE station = {plaec}")


def test_a_write_cell_is_refused_unless_marked_write(nb):
    with pytest.raises(UsageError, match="read-only by default.*--write"):
        nb.run_cell("%%dataflow sql\nDELETE FROM readings WHERE station = 'east'")
    frame, captured = cell(nb, "%%dataflow sql --write\nDELETE FROM readings WHERE station = 'east'")
    assert frame.attrs["rows_affected"] == 1
    assert "1 row(s) affected" in shown(captured)
    remaining, _ = cell(nb, "%dataflow sql SELECT count(*) AS n FROM readings")
    assert int(remaining["n"][0]) == 3


def test_db_names_another_dataflow_of_the_notebook(nb, tmp_path):
    nb.run_cell(f"from dataflow_lab import DataFlow\nother = DataFlow('sqlite:///{tmp_path}/other.db')")
    nb.run_cell("other.sql('CREATE TABLE t (a INTEGER)', write=True)")
    frame, _ = cell(nb, "%dataflow sql --db other SELECT count(*) AS n FROM t")
    assert int(frame["n"][0]) == 0
    with pytest.raises(UsageError, match="no DataFlow named 'othr'.*other"):
        nb.run_cell("%dataflow sql --db othr SELECT 1")
    nb.run_cell("other.close()")


def test_unknown_options_and_an_empty_query_are_usage_errors(nb):
    with pytest.raises(UsageError, match="no option '--wrte'.*--write"):
        nb.run_cell("%dataflow sql --wrte DELETE FROM readings")
    with pytest.raises(UsageError, match="which query"):
        nb.run_cell("%%dataflow sql -o x\n\n")


def test_plot_draws_the_last_result_with_axes_named_by_columns(nb):
    nb.run_cell(
        "%%dataflow sql\nSELECT station, sum(km) AS km FROM readings GROUP BY station ORDER BY station"
    )
    drawn, _ = cell(nb, "%dataflow plot bar --x station --y km --title 'km per station'")
    assert isinstance(drawn, Plot)
    axes = drawn.figure.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel(), axes.get_title()) == ("station", "km", "km per station")
    assert [t.get_text() for t in axes.get_xticklabels()] == ["east", "north", "south"]
    assert [round(p.get_height(), 1) for p in axes.patches] == [0.5, 4.0, 4.0]
    assert drawn._repr_png_().startswith(b"\x89PNG")


def test_plot_from_a_named_frame_and_its_mistakes(nb):
    nb.run_cell("%%dataflow sql -o all_km\nSELECT km FROM readings")
    drawn, _ = cell(nb, "%dataflow plot hist --from all_km")
    assert drawn.figure.axes[0].get_xlabel() == "km"
    with pytest.raises(UsageError, match="no column 'kms'.*km"):
        nb.run_cell("%dataflow plot line --from all_km --x kms --y km")
    with pytest.raises(UsageError, match="no plot kind 'bars'.*bar"):
        nb.run_cell("%dataflow plot bars --from all_km")
    with pytest.raises(UsageError, match="no such variable"):
        nb.run_cell("%dataflow plot bar --from nothing_here")


def test_run_plot_charts_a_list_node(nb):
    nb.run_cell("%%dataflow workflow listing --run\nrows = ReadingListNode(order_by=['km'])")
    drawn, _ = cell(nb, "_.plot('rows', 'scatter', x='km', y='id')")
    assert drawn.figure.axes[0].get_xlabel() == "km"
