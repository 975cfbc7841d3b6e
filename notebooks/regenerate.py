"""Execute the teaching notebooks in place, storing the outputs nbval compares against.

    python notebooks/regenerate.py                 # all of them
    python notebooks/regenerate.py 01_quick_start  # some

nbval compares the *first* frame of an updated display (it ignores
update_display_data), so this keeps first frames too: a live panel's slot stays
as it was first shown. Kernels import dataflow_lab from this checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


class FirstFrames(NotebookClient):
    """A NotebookClient that records displays as first shown, as nbval sees them.

    Cells marked NBVAL_IGNORE_OUTPUT are not compared, so they keep their final frame, as a
    notebook saved from JupyterLab does: a background run's live view replaced by its summary.
    """

    def _update_display_id(self, display_id, msg):  # noqa: ANN001 - nbclient's signature
        cells = self._display_id_map.get(display_id, {})
        ignored = cells and all(_ignored(self.nb.cells[i].source) for i in cells)
        if msg["header"]["msg_type"] != "update_display_data" or ignored:
            super()._update_display_id(display_id, msg)


def _ignored(source: str) -> bool:
    """nbval's marker: a comment line that is exactly NBVAL_IGNORE_OUTPUT."""
    return any(
        line.lstrip("#").strip() == "NBVAL_IGNORE_OUTPUT"
        for line in source.splitlines()
        if line.startswith("#")
    )


def regenerate(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = FirstFrames(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=False,
        record_timing=False,  # no timestamps in cell metadata: regenerating changes only outputs
    )
    client.execute()
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)
    print(f"{path.name}: {sum(c.cell_type == 'code' for c in notebook.cells)} code cells executed")


def main(names: list[str]) -> None:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    paths = [HERE / f"{n.removesuffix('.ipynb')}.ipynb" for n in names] or sorted(
        HERE.glob("[0-9][0-9]_*.ipynb")
    )
    for path in paths:
        regenerate(path)


if __name__ == "__main__":
    main(sys.argv[1:])
