"""A real browser runs the notebooks in JupyterLab and looks at what a person would see.

Every teaching notebook is run (Run All), saved, and reopened without a kernel, as a student
opens the file a teacher shared: no "Error displaying widget", every DAG a picture. While the
kernel lives, notebook 01's catalogue is a widget; saved, it is its static HTML twin. The
shipped notebooks are opened untrusted, as they come; a 7-node chain must fit its output area.

One JupyterLab server (127.0.0.1, empty token, dataflow_lab's save hook enabled) serves copies
of the notebooks with outputs cleared; one Playwright-driven Debian chromium (never `playwright
install`) opens them. Screenshots go to artifacts/. `.ci/run` installs chromium, jupyterlab and
playwright and sets DATAFLOW_REQUIRE_BROWSER=1, so CI fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dataflow_lab import viz

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("DATAFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAB_CONFIG = """\
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.open_browser = False
c.ServerApp.allow_root = True
c.ServerApp.disable_check_xsrf = True
c.IdentityProvider.token = ""
c.ServerApp.password = ""
c.LabApp.expose_app_in_browser = True
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LabApp.extension_manager = "readonly"
"""
# What `pip install dataflow-lab` enables (etc/jupyter/jupyter_server_config.d/dataflow_lab.json). An
# editable install does not copy that file, so the test names the extension itself, in the server's
# own config (the server reads its extensions before JupyterLab's config file).
SERVER_CONFIG = (ROOT / "jupyter-config" / "jupyter_server_config.d" / "dataflow_lab.json").read_text()
SETTINGS = {  # no news prompt; every cell stays in the DOM (no windowing), so screenshots show them
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": '{"fetchNews": "false"}',
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
}
DONE = viz.STATE_COLOURS["done"]
WIDGET = "application/vnd.jupyter.widget-view+json"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHAIN_CELLS = [
    "%load_ext dataflow_lab",
    "%%dataflow model\nclass Item:\n    name: str\n    qty: int = 0",
    "%%dataflow workflow chain --run\n"
    "made = ItemCreateNode(name='a')\n"
    "read = ItemReadNode(id=made.id)\n"
    "bumped = ItemUpdateNode(id=read.id, fields={'qty': 1})\n"
    "again = ItemReadNode(id=bumped.id)\n"
    "renamed = ItemUpdateNode(id=again.id, fields={'name': 'b'})\n"
    "last = ItemReadNode(id=renamed.id)\n"
    "gone = ItemDeleteNode(id=last.id)",
]


def _missing() -> list[str]:
    missing = [m for m in ("jupyterlab", "playwright") if importlib.util.find_spec(m) is None]
    if not Path(CHROMIUM).exists():
        missing.append(CHROMIUM)
    if not viz.dot_available():
        missing.append("graphviz's dot")
    return missing


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a fresh copy of notebook 01; yields its URL."""
    missing = _missing()
    if missing:
        if os.environ.get("DATAFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"DATAFLOW_REQUIRE_BROWSER=1 but missing: {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)} (bash .ci/run installs them)")
    nbformat = pytest.importorskip("nbformat")
    home = tmp_path_factory.mktemp("lab")
    served, config = home / "notebooks", home / "config"
    served.mkdir()
    config.mkdir()
    (config / "jupyter_lab_config.py").write_text(LAB_CONFIG)
    (config / "jupyter_server_config.json").write_text(SERVER_CONFIG)
    for name, text in SETTINGS.items():
        (home / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (home / "settings" / name).write_text(text)
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.write(notebook, served / f"committed_{path.name}")  # as shipped: outputs, untrusted
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(notebook, served / path.name)
    shutil.copytree(ROOT / "notebooks" / "data", served / "data")  # notebook 03 reads its CSV
    chain = nbformat.v4.new_notebook()
    chain.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    chain.cells = [nbformat.v4.new_code_cell(source) for source in CHAIN_CELLS]
    nbformat.write(chain, served / "chain.ipynb")
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),  # an empty trust database: shipped notebooks are untrusted
    }
    command = [sys.executable, "-m", "jupyterlab", f"--port={port}", f"--ServerApp.root_dir={served}",
               f"--LabApp.workspaces_dir={home / 'workspaces'}", f"--LabApp.user_settings_dir={home / 'settings'}"]  # fmt: skip
    log = (home / "lab.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=served)
    url = Lab(f"http://127.0.0.1:{port}")
    url.root = served
    try:
        _wait_for(f"{url}/api/status", server, home / "lab.log")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


class Lab(str):
    """The server's URL; ``root`` is the folder it serves."""

    root: Path


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.25)
    pytest.fail(f"JupyterLab did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def _screenshot(page, element, name: str) -> None:
    element.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)  # let the browser paint what scrolled into view
    page.screenshot(path=str(ARTIFACTS / name))


def _theme(page, name: str) -> None:
    """Switch JupyterLab's theme ('JupyterLab Light' or 'JupyterLab Dark') and wait for it."""
    light = "true" if name.endswith("Light") else "false"
    page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: {name!r}}})")
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === {light!r}", timeout=30_000)


def _open(page, lab: str, name: str, *, kernel: bool = True) -> None:
    """Open ``name`` alone (``?reset``: no tabs restored from an earlier test) and wait for it."""
    page.goto(f"{lab}/lab/tree/{name}?reset")
    page.wait_for_function(
        f"() => window.jupyterapp?.shell.currentWidget?.context?.path === {name!r}"
        " && window.jupyterapp.shell.currentWidget.context.isReady",
        timeout=60_000,
    )
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=60_000)
    if kernel:
        page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.sessionContext?.session?.kernel?.status === 'idle'",
            timeout=60_000,
        )


_NOT_RUN = """() => [...window.jupyterapp.shell.currentWidget.content.model.cells]
    .filter(c => c.type === 'code' && c.executionCount === null)
    .map(c => c.sharedModel.getSource().split('\\n')[0])"""


def _run_all(page) -> None:
    """Run All, as a teacher does; wait until every code cell has run and the kernel is idle.

    The command's promise settles at the first failing cell (those tagged raises-exception
    included), while the kernel goes on with the rest, so the cells themselves are watched.
    """
    from playwright.sync_api import TimeoutError

    page.evaluate("async () => await window.jupyterapp.commands.execute('notebook:run-all-cells')")
    try:
        page.wait_for_function(
            f"() => ({_NOT_RUN})().length === 0"
            " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
            timeout=120_000,
        )
    except TimeoutError:
        pytest.fail(f"Run All did not run: {page.evaluate(_NOT_RUN)}")


def _save_and_shut_down(page) -> None:
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
    page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    page.wait_for_function(
        "() => !window.jupyterapp.shell.currentWidget.sessionContext.session", timeout=30_000
    )


def _pictures(page) -> int:
    """DAG pictures in the open notebook: our <img> inside HTML, or JupyterLab's image renderer."""
    return page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.node.querySelectorAll("
        "'img.df-dag-img, .jp-RenderedImage img, .jp-RenderedSVG svg').length"
    )


def _dags(outputs: list[dict]) -> int:
    return sum("image/svg+xml" in o.get("data", {}) for o in outputs)


def _stored(path: Path) -> list[dict]:
    import json

    return [o for c in json.loads(path.read_text())["cells"] for o in c.get("outputs", [])]


@pytest.fixture(scope="module")
def browser(lab):
    """One chromium for the module (a launch costs about a second)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


def _live_01(page) -> None:
    """Notebook 01 while its kernel lives: the catalogue is a widget, the slow run is shown once."""
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    catalogue = page.locator(".df-catalogue.jupyter-widgets").first  # the accordion, not its HTML twin
    expect(catalogue).to_be_visible()
    expect(catalogue).to_contain_text("UserCreateNode")
    expect(catalogue).to_contain_text("UserBulkUpsertNode")
    expect(page.locator(".df-run img.df-dag-img").first).to_be_visible()  # a picture: survives saving
    run = page.locator(".df-run").filter(has_text="Run 'welcome' done")  # the slow run: one view
    expect(run).to_have_count(1)
    _screenshot(page, run.first, "notebook_01_live_dag.png")
    catalogue.get_by_text("UserCreateNode").first.click()
    expect(catalogue.get_by_text("INSERT INTO users").first).to_be_visible()
    _screenshot(page, catalogue, "notebook_01_catalogue.png")
    _theme(page, "JupyterLab Dark")
    try:
        _screenshot(page, page.locator(".df-run").first, "notebook_01_summary_dark.png")
    finally:
        _theme(page, "JupyterLab Light")


def _live_05(page) -> None:
    from playwright.sync_api import expect

    # the background run's live view has become its summary, in place
    expect(page.locator(".df-run").filter(has_text="Run 'ingest' done")).to_have_count(2, timeout=30_000)


def _reopened_01(page) -> None:
    from playwright.sync_api import expect

    catalogue = page.locator(".df-catalogue").first  # the static twin: disclosures, no kernel needed
    catalogue.get_by_text("UserCreateNode").first.click()
    expect(catalogue.get_by_text("INSERT INTO users").first).to_be_visible()


def _reopened_05(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".df-run").filter(has_text="Run 'ingest' cancelled")).to_have_count(1)


def _live_03(page) -> None:
    """The analysis notebook's SQL cell caption and its bar chart, drawn as an image."""
    from playwright.sync_api import expect

    expect(page.get_by_text(re.compile(r"6 row\(s\) · [\d.]+ ms · saved as by_station"))).to_be_visible()
    chart = page.locator(".jp-OutputArea-output img[src^='data:image/png']").first
    expect(chart).to_be_visible(timeout=30_000)
    assert chart.evaluate("img => img.naturalWidth") > 300, "the chart is drawn at a readable size"
    _screenshot(page, chart, "notebook_03_plot.png")


WHILE_LIVE = {"01_quick_start": _live_01, "03_bulk_and_analysis": _live_03, "05_monitoring": _live_05}
REOPENED = {"01_quick_start": _reopened_01, "05_monitoring": _reopened_05}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_run_saved_and_reopened_without_a_kernel_keeps_its_pictures_and_no_dead_widget(
    lab, page, path
):
    from playwright.sync_api import expect

    _open(page, lab, path.name)
    _run_all(page)
    WHILE_LIVE.get(path.stem, lambda page: None)(page)
    expect(page.get_by_text("Error displaying widget")).to_have_count(0)
    _save_and_shut_down(page)
    saved = _stored(lab.root / path.name)
    assert not [o for o in saved if WIDGET in o.get("data", {})], "a widget view was saved"
    assert _dags(saved) >= 1

    _open(page, lab, path.name, kernel=False)  # as a student opens the shared file: no kernel
    expect(page.locator(".jp-OutputArea-output").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Error displaying widget")).to_have_count(0)
    expect(page.get_by_text(re.compile(r"running · [\d.]+ (ms|s)"))).to_have_count(0)
    assert _pictures(page) >= _dags(saved), f"{_pictures(page)} pictures for {_dags(saved)} DAGs"
    REOPENED.get(path.stem, lambda page: None)(page)


def test_shipped_notebooks_opened_untrusted_show_every_dag_as_a_picture(lab, page):
    from playwright.sync_api import expect

    for path in NOTEBOOKS:
        dags = _dags(_stored(path))
        _open(page, lab, f"committed_{path.name}", kernel=False)
        trusted = page.evaluate("window.jupyterapp.shell.currentWidget.content.model.cells.get(1).trusted")
        assert trusted is False, "the shipped copy should open untrusted"
        expect(page.locator(".jp-OutputArea-output").first).to_be_visible(timeout=30_000)
        assert _pictures(page) >= dags, f"{path.name}: {_pictures(page)} pictures for {dags} DAGs"
        expect(page.get_by_text("Error displaying widget")).to_have_count(0)
        expect(page.get_by_text(re.compile(r"running · [\d.]+ (ms|s)"))).to_have_count(0)
        if path.stem == "04_transactions":  # untrusted, dark: the sanitizer keeps only literal colours
            _theme(page, "JupyterLab Dark")
            try:
                failed = page.locator(".df-run").filter(has_text="Run 'transfer' failed").first
                _screenshot(page, failed, "notebook_04_untrusted_dark.png")
            finally:
                _theme(page, "JupyterLab Light")


def test_a_seven_node_chain_fits_its_output_area_or_scrolls_at_a_readable_size(lab, page):
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1200, "height": 900})
    _open(page, lab, "chain.ipynb")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    expect(page.locator(".df-run").filter(has_text="Run 'chain' done")).to_have_count(1, timeout=90_000)
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('img.df-dag-img')].map(img => {
            const box = img.closest('.df-dag'), area = img.closest('.jp-OutputArea-output');
            return {img: img.getBoundingClientRect().width, natural: img.naturalWidth,
                    box: box.clientWidth, scroll: box.scrollWidth,
                    right: box.getBoundingClientRect().right, area: area.getBoundingClientRect().right};
        })"""
    )
    assert boxes, "no DAG picture"
    for b in boxes:
        assert b["right"] <= b["area"] + 1, b  # the box never sticks out of the output area
        fits = b["img"] <= b["box"] + 1
        scrolls = b["scroll"] > b["box"]
        assert fits or scrolls, b
        assert b["img"] >= 0.59 * b["natural"], b  # never shrunk past a readable minimum
    ARTIFACTS.mkdir(exist_ok=True)
    _screenshot(page, page.locator(".df-run").first, "chain_light.png")
    _theme(page, "JupyterLab Dark")
    try:
        _screenshot(page, page.locator(".df-run").first, "chain_dark.png")
    finally:
        _theme(page, "JupyterLab Light")
    assert (ARTIFACTS / "chain_dark.png").stat().st_size > 10_000
