"""Every ```python block of README.md runs, in order, in one namespace, as the README reads.

A block may be preceded by an HTML comment, which GitHub does not show but the source does:

- ``<!-- requires: postgres -->``: runs against the test PostgreSQL, with the block's
  ``"postgresql://..."`` replaced by the test database's URL (``dask`` may be listed too);
- ``<!-- not run: why -->``: a fragment that cannot run; keep these rare.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest
from conftest import PG_URL, REQUIRE_PG, postgres_url

README = pathlib.Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"(?:<!--\s*(?P<marker>[^>]*?)\s*-->\n)?```python\n(?P<code>.*?)```", re.DOTALL)


def blocks() -> list[tuple[int, str, str]]:
    """(line, marker, code) for each ```python block of the README."""
    text = README.read_text()
    return [
        (text.count("\n", 0, m.start("code")) + 1, m["marker"] or "", m["code"]) for m in BLOCK.finditer(text)
    ]


def needs(marker: str) -> set[str]:
    if not marker.startswith("requires:"):
        return set()
    return {word.strip() for word in marker.removeprefix("requires:").split(",")}


def test_every_marker_is_one_the_readme_test_knows_and_fragments_are_rare():
    markers = [marker for _, marker, _ in blocks() if marker]
    assert all(m.startswith(("requires:", "not run:")) for m in markers), markers
    assert all(needs(m) <= {"postgres", "dask"} for m in markers), markers
    assert sum(m.startswith("not run:") for m in markers) <= 1


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files a block writes (migrations/...) land here
    namespace: dict = {"__name__": "readme"}
    left_out, dask_ran = [], False
    for line, marker, code in blocks():
        if marker.startswith("not run:"):
            continue
        required = needs(marker)
        if ("postgres" in required and not PG_URL and not REQUIRE_PG) or (
            "dask" in required and importlib.util.find_spec("distributed") is None
        ):
            left_out.append(line)
            continue
        if "postgres" in required:
            assert '"postgresql://..."' in code, (
                f"README.md line {line}: no URL to point at the test database"
            )
            code = code.replace('"postgresql://..."', repr(postgres_url()))
        # dont_inherit: a block reads as a reader's script, without this file's `from __future__`
        exec(compile(code, f"README.md, block at line {line}", "exec", dont_inherit=True), namespace)
        if "dask" in required:
            assert namespace["results"]["visit"]["page"] == "/"  # the Dask block ran on its workers
            dask_ran = True
    if not left_out:
        assert dask_ran
    else:
        pytest.skip(f"the blocks at lines {left_out} need PostgreSQL (DATAFLOW_TEST_POSTGRES_URL) or dask")
