"""The package is built as docs/architecture.md draws it: every module named, imports acyclic, layers kept."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "dataflow_lab"
DOC = ROOT / "docs" / "architecture.md"


def package_modules() -> dict[str, Path]:
    """Dotted module name (``dataflow_lab.nodes.crud``) -> file, for every module of the package."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def short(module: str) -> str:
    """The name docs/architecture.md uses: relative to the package (the package itself: its name)."""
    return module.removeprefix(PACKAGE + ".")


def _imported(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: set[str]
) -> list[str]:
    """The package modules an import statement imports (``from pkg import mod`` is the module pkg.mod)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
    elif (node.module or "").split(".")[0] == PACKAGE:
        target = node.module or ""
    else:
        return []
    found = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
    return [m for m in found if m in modules]


class _Imports(ast.NodeVisitor):
    """Every import statement of a module: at module level, inside a function, under TYPE_CHECKING."""

    def __init__(self, module: str, is_package: bool, modules: set[str]):
        self.module, self.is_package, self.modules = module, is_package, modules
        self.found: list[tuple[str, bool]] = []  # (imported module, inside a function)
        self.depth = 0

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        self._add(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._add(node)

    def _add(self, node: ast.Import | ast.ImportFrom) -> None:
        for target in _imported(self.module, self.is_package, node, self.modules):
            if target != self.module:
                self.found.append((target, self.depth > 0))


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        visitor = _Imports(module, path.name == "__init__.py", set(modules))
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        graph[module] = {target for target, _ in visitor.found}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other (strongly connected, Tarjan), smallest name first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = [stack.pop()]
            while group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_of_the_package_is_named_in_docs_architecture_md():
    named = set(re.findall(r"`([\w.]+)`", DOC.read_text(encoding="utf-8")))
    missing = [short(m) for m in package_modules() if short(m) not in named]
    assert not missing, f"docs/architecture.md does not name (in backticks, e.g. `nodes.crud`): {missing}"


def test_the_package_has_no_import_cycle_counting_imports_inside_functions_and_for_types_only():
    cycles = import_cycles(import_graph())
    assert not cycles, "modules that import each other: " + "; ".join(
        " <-> ".join(map(short, c)) for c in cycles
    )


def test_the_cycle_finder_finds_a_cycle_through_a_function_local_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_the_import_graph_counts_imports_made_inside_functions_and_under_type_checking():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import errors\n"
        "if TYPE_CHECKING:\n"
        "    from .dataflow import DataFlow\n"
        "def f():\n"
        "    from .nodes import base\n"
    )
    modules = {"dataflow_lab.errors", "dataflow_lab.dataflow", "dataflow_lab.nodes.base", "dataflow_lab.x"}
    visitor = _Imports("dataflow_lab.x", False, modules)
    visitor.visit(ast.parse(source))
    assert visitor.found == [
        ("dataflow_lab.errors", False),
        ("dataflow_lab.dataflow", False),
        ("dataflow_lab.nodes.base", True),
    ]


def test_the_layer_contract_of_pyproject_toml_is_kept():
    if importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_the_run_that_docs_architecture_md_walks_through_runs():
    text = DOC.read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(block, "docs/architecture.md", "exec"), {})  # the block asserts what it shows
