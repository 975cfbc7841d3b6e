"""viz: workflow -> DOT, SVG recoloured per state from one rendering, and the fallbacks."""

from __future__ import annotations

import base64
import re
import sys

import pytest

from dataflow_lab import DataFlow, ValidationError, WorkflowBuilder, viz

needs_dot = pytest.mark.skipif(not viz.dot_available(), reason="Graphviz's dot is not installed")


@pytest.fixture
def workflow():
    db = DataFlow()

    @db.model
    class User:
        name: str
        email: str

    builder = WorkflowBuilder(db)
    builder.add_node("UserCreateNode", "create", {"name": "Alice", "email": "alice@example.com"})
    builder.add_node("UserReadNode", "read")
    builder.add_connection("create", "id", "read", "id")
    builder.add_node("UserListNode", "everyone")
    builder.add_node("UserUpdateNode", "rename", {"fields": {"name": "Al"}})
    builder.add_connection("everyone", "records.0.id", "rename", "id")
    yield builder.build(name="onboarding")
    db.close()


def test_dot_labels_each_edge_source_output_to_target_input(workflow):
    dot = viz.to_dot(workflow)
    assert "create -> read" in dot
    assert "create.id → read.id" in dot
    assert "everyone.records.0.id → rename.id" in dot
    assert 'id="df-node-create"' in dot


def test_dot_colours_nodes_by_state(workflow):
    dot = viz.to_dot(workflow, {"create": "done", "read": "failed"})
    assert f'fillcolor="{viz.STATE_COLOURS["done"]}"' in dot
    assert f'fillcolor="{viz.STATE_COLOURS["failed"]}"' in dot
    assert f'fillcolor="{viz.STATE_COLOURS["pending"]}"' in dot


def test_an_unknown_state_is_refused_with_a_suggestion(workflow):
    with pytest.raises(ValidationError, match="Did you mean 'rolled back'"):
        viz.to_dot(workflow, {"create": "roled back"})


@needs_dot
def test_svg_shows_every_state_colour_and_status_line(workflow):
    drawing = viz.DagDrawing(workflow)
    states = dict(zip(workflow.order, ("done", "rolled back", "compensated", "running")))
    svg = drawing.svg(states, {"create": "1 row · 0.4 ms"})
    assert svg.startswith("<svg")
    for state in states.values():
        assert f'fill="{viz.STATE_COLOURS[state]}"' in svg
    assert "1 row · 0.4 ms" in svg
    assert "QQS" not in svg and "#fe000" not in svg  # no placeholder left behind
    assert "create.id → read.id" in svg


@needs_dot
def test_svg_is_rendered_once_per_graph_shape_then_only_recoloured(workflow, monkeypatch):
    viz._CACHE.clear()
    calls = []
    render = viz._render
    monkeypatch.setattr(viz, "_render", lambda source: calls.append(source) or render(source))
    drawing = viz.DagDrawing(workflow)
    drawing.svg()
    for state in viz.STATES:
        drawing.svg(dict.fromkeys(workflow.order, state), dict.fromkeys(workflow.order, "12.3 ms"))
    viz.DagDrawing(workflow).svg({"read": "done"})  # a new drawing of the same shape shares the cache
    assert len(calls) == 1


def test_without_dot_the_dag_is_a_table_with_its_dot_text_and_an_install_hint(workflow, monkeypatch):
    monkeypatch.setattr(viz, "dot_available", lambda: False)
    viz._CACHE.clear()
    page = viz.to_html(workflow, {"create": "done"})
    assert "<svg" not in page
    assert "<table>" in page and "UserCreateNode" in page
    assert "DOT source" in page and "digraph onboarding" in page
    assert "apt-get install graphviz" in page
    with pytest.raises(viz.DataFlowError, match="dot"):
        viz.to_svg(workflow)


def test_without_the_graphviz_package_the_table_still_shows_and_names_the_install(workflow, monkeypatch):
    monkeypatch.setattr(viz, "dot_available", lambda: False)
    monkeypatch.setitem(sys.modules, "graphviz", None)
    page = viz.to_html(workflow)
    assert "UserReadNode" in page
    assert "pip install" in page


def test_a_workflow_displays_its_dag_and_text_in_a_notebook(workflow):
    data = workflow._repr_mimebundle_()
    assert data["text/plain"] == viz.DagDrawing(workflow).text()
    assert "read: UserReadNode [pending]" in data["text/plain"]
    assert "<code>" not in data["text/plain"]
    assert 'class="df-dag' in data["text/html"]


def test_node_ids_that_are_not_identifiers_are_quoted(workflow):
    db = DataFlow()

    @db.model
    class Item:
        label: str

    builder = WorkflowBuilder(db)
    builder.add_node("ItemCreateNode", 'new "item"', {"label": "x"})
    builder.add_node("ItemReadNode", "read it")
    builder.add_connection('new "item"', "id", "read it", "id")
    built = builder.build()
    dot = viz.to_dot(built)
    assert '"new \\"item\\"" -> "read it"' in dot
    if viz.dot_available():
        assert "read it" in viz.to_svg(built)


@pytest.mark.skipif(not viz.dot_available(), reason="needs graphviz's dot")
def test_a_dag_is_a_picture_that_renders_untrusted_and_without_a_kernel(workflow):
    data = workflow._repr_mimebundle_()
    assert data["image/svg+xml"].startswith("<svg")
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG")
    assert "<svg" not in data["text/html"] and "<script" not in data["text/html"]  # the sanitizer keeps it
    assert '<img class="df-dag-img" src="data:image/svg+xml;base64,' in data["text/html"]
    assert "overflow-x:auto" in data["text/html"]


@pytest.mark.skipif(not viz.dot_available(), reason="needs graphviz's dot")
def test_a_long_chain_scales_to_the_output_down_to_a_readable_minimum(workflow):
    svg = viz.to_svg(workflow)
    width, _ = viz.svg_size(svg)
    fitted = viz.fit_svg(svg)
    assert 'width="' not in fitted.split(">", 1)[0]  # no fixed size: it follows its container
    assert f"max-width:{width:.0f}px" in fitted and f"min-width:{width * 0.6:.0f}px" in fitted


def test_without_dot_the_picture_bundle_is_the_table_and_text(workflow, monkeypatch):
    monkeypatch.setattr(viz, "dot_available", lambda: False)
    data = viz.picture_bundle(viz.DagDrawing(workflow))
    assert set(data) == {"text/plain", "text/html"} and "apt-get install graphviz" in data["text/html"]


@needs_dot
def test_unconnected_nodes_are_drawn_in_cell_order_joined_by_dashed_then_edges():
    import re

    db = DataFlow()

    @db.model
    class Trip:
        km: int

    builder = WorkflowBuilder(db)
    builder.add_node("TripBulkCreateNode", "load", {"data": [{"km": 1}]})
    builder.add_node("TripCountNode", "count")  # no data edge: it runs after load, and sees its rows
    builder.add_node("TripListNode", "listing")
    builder.add_node("TripReadNode", "first")
    builder.add_connection("listing", "records.0.id", "first", "id")
    workflow = builder.build()
    assert viz.ordering_edges(workflow) == [("load", "count"), ("count", "listing")]
    svg = viz.DagDrawing(workflow).svg()
    x = {n: float(re.search(rf'id="df&#45;node&#45;{n}".*?x="([\d.]+)"', svg, re.S)[1]) for n in
         ("load", "count", "listing", "first")}  # fmt: skip
    assert x["load"] < x["count"] < x["listing"] < x["first"]  # left to right, as in the cell
    assert svg.count("stroke-dasharray") == 2 and svg.count("> then <") == 2
    db.close()


def test_a_cancelled_node_has_its_own_colour_not_failed(workflow):
    dot = viz.DagDrawing(workflow).dot({"create": "cancelled"})
    assert (
        viz.STATE_COLOURS["cancelled"] in dot
        and viz.STATE_COLOURS["cancelled"] != viz.STATE_COLOURS["failed"]
    )


def test_every_label_on_every_state_colour_passes_wcag_aa_in_both_themes():
    # the DAG is a picture on its own white card, so the dark theme changes nothing inside it
    assert viz.contrast("#000000", "#ffffff") == pytest.approx(21)
    for state, colour in viz.STATE_COLOURS.items():
        assert viz.contrast(viz._INK, colour) >= 4.5, state
    assert viz.contrast(viz._INK, viz._CARD) >= 4.5  # edge labels
    assert viz.contrast(viz._LINE, viz._CARD) >= 3  # edges and borders (non-text)
    assert f"color:{viz._INK}" in viz.legend_html()  # chips carry their own ink, not the theme's


def _theme_colours(name: str) -> dict[str, str]:
    """JupyterLab's CSS variables in one of its themes, as installed (skips without JupyterLab)."""
    jupyterlab = pytest.importorskip("jupyterlab")
    from pathlib import Path

    css = Path(
        sys.prefix, "share", "jupyter", "lab", "themes", "@jupyterlab", f"theme-{name}-extension", "index.css"
    )
    if not css.exists():
        pytest.skip(f"JupyterLab {jupyterlab.__version__}'s {name} theme is not at {css}")
    return dict(re.findall(r"(--jp-[\w-]+):\s*([^;}]+)", css.read_text()))


def _resolve(value: str, variables: dict[str, str], background: str) -> str:
    """A theme value as #rrggbb: var() followed to its fallback, names, rgba() over ``background``."""
    value = value.strip()
    if match := re.fullmatch(r"var\((--[\w-]+)(?:,\s*(.+))?\)", value):
        found = variables.get(match[1], match[2])
        return _resolve(found, variables, background)
    if value == "white" or value == "#fff":
        return "#ffffff"
    if value == "#000":
        return "#000000"
    if match := re.fullmatch(r"#(\w)(\w)(\w)", value):
        return "#" + "".join(c * 2 for c in match.groups())
    if match := re.fullmatch(r"rgba\(\s*(\d+),\s*(\d+),\s*(\d+),\s*([\d.]+)\)", value):
        *rgb, alpha = (float(x) for x in match.groups())
        under = [int(background[i : i + 2], 16) for i in (1, 3, 5)]
        return "#" + "".join(f"{round(alpha * c + (1 - alpha) * u):02x}" for c, u in zip(rgb, under))
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", value), value
    return value.lower()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_html_colours_follow_jupyterlabs_theme_and_pass_wcag_aa_in_it(theme):
    variables = _theme_colours(theme)
    background = _resolve(variables["--jp-layout-color0"], variables, "#ffffff")  # the notebook's page
    for role, (variable, fallback) in viz.THEME.items():
        assert viz.themed(role) == f"var({variable}, {fallback})"
        colour = _resolve(variables[variable], variables, background)
        assert viz.contrast(colour, background) >= 4.5, (theme, role, colour, background)
        assert viz.contrast(fallback, "#ffffff") >= 4.5, (role, fallback)  # a frontend without the variables
    # state chips and cells carry their own background and ink: the theme's text colour never lands on them
    for state in viz.STATE_COLOURS:
        assert viz.state_style(state) == f"background:{viz.STATE_COLOURS[state]};color:{viz._INK}"


def test_html_state_cells_and_notes_carry_their_colours(workflow):
    from dataflow_lab.notebook import MonitorPanel, RunObserver

    table = viz.DagDrawing(workflow).fallback_html({"create": "done"})  # drawn when dot is missing
    assert f'<td style="{viz.state_style("done")}">done</td>' in table
    assert f'style="color:{viz.themed("muted")}"' in table
    observer = RunObserver(workflow, name="themed")
    panel = MonitorPanel(observer.snapshot()).html()
    assert f'style="{viz.state_style("pending")}"' in panel
    assert f'style="color:{viz.themed("text")}"' in panel


@needs_dot
def test_the_picture_carries_its_own_background(workflow):
    assert f'fill="{viz._CARD}"' in viz.DagDrawing(workflow).svg()
