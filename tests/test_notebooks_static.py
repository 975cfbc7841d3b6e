"""The committed teaching notebooks, read as a student or a repository viewer reads them: no kernel.

Each stored output must render without a kernel and without trust: DAGs are pictures
(image/svg+xml + image/png, and an <img> inside the HTML, never inline <svg>, which an untrusted
notebook's sanitizer strips), catalogues are plain HTML tables, nothing needs a widget model, and
no live panel is stored mid-run. ``jupyter nbconvert --to html`` (no kernel) must show the same.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"


def outputs(path: Path) -> list[dict]:
    cells = json.loads(path.read_text())["cells"]
    return [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]


def text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_stored_output_needs_a_kernel_or_trust(path):
    stored = outputs(path)
    assert stored, f"{path.name} has no stored outputs: run notebooks/regenerate.py"
    for out in stored:
        data = out.get("data", {})
        assert WIDGET not in data, f"{path.name}: a widget view is stored (dead without the kernel)"
        page = text(data.get("text/html", ""))
        assert "<svg" not in page, f"{path.name}: inline SVG in HTML (stripped when untrusted)"
        assert "<script" not in page
        if "df-dag" in page and "df-dag-table" not in page:  # a DAG: a picture in every form
            assert {"image/svg+xml", "image/png"} <= set(data), f"{path.name}: a DAG without its picture"
            assert re.search(r'<img class="df-dag-img" src="data:image/svg\+xml;base64,', page)
        plain = text(data.get("text/plain", ""))
        assert not re.match(r"Live view: Run '\w+' (starting|running)", plain), f"{path.name}: stored mid-run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbconvert_without_a_kernel_shows_dags_as_images_and_catalogues_as_tables(path, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", "--output-dir", str(tmp_path), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    page = (tmp_path / f"{path.stem}.html").read_text()
    dags = sum("image/svg+xml" in o.get("data", {}) for o in outputs(path))
    assert dags >= 1
    assert len(re.findall(r'<img[^>]+src="data:image/(svg\+xml|png);base64,', page)) >= dags
    catalogues = sum("df-catalogue" in text(o.get("data", {}).get("text/html", "")) for o in outputs(path))
    if catalogues:
        assert page.count('class="df-catalogue"') >= catalogues
        assert re.search(r'class="df-catalogue".*?<table>', page, re.S)
    assert "Error displaying widget" not in page and WIDGET not in page
