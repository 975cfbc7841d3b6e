"""The architecture figures of issue 15, counted from the source of a tree.

    python scripts/architecture_figures.py [ROOT] [--mypy] [--verbose]

ROOT is a checkout (default: this one). It prints:

- ``private_per_kloc``: attribute accesses ``x._name`` whose object is not
  ``self``/``cls``/``super()``, per thousand non-blank lines of the package,
  where ``_name`` is a private (not dunder) name that the module does not
  define itself: another module's private names.
- ``option_branches_in_nodes``: mentions of a model option (``audit_log``,
  ``multi_tenant``, ``soft_delete``, ``versioned``) in ``dataflow_lab/nodes/``.
- ``dialect_name_comparisons``: comparisons of a ``....name`` attribute of
  something called ``dialect`` (``dialect.name == ...``, ``mt.dialect.name in``),
  or of anything with a backend's name (``url.startswith`` aside:
  ``kind == "duckdb"``, ``x in ("sqlite", "postgresql")``), outside
  ``dataflow_lab/dialects/``.
- ``function_local_internal_imports``: internal imports made inside a
  function, and their share of all internal imports.
- ``import_cycles``: strongly connected groups of package modules, counting
  function-local imports too (a group of two or more modules, or a module
  importing itself).
- ``mypy_errors`` with ``--mypy``.

``--verbose`` lists what was counted, file by file.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

OPTIONS = ("audit_log", "multi_tenant", "soft_delete", "versioned")
PACKAGE = "dataflow_lab"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom, modules: set[str]) -> list[str]:
    """The package modules a ``from ... import`` statement imports.

    ``from pkg import name`` imports the module ``pkg.name`` when there is one,
    and otherwise takes ``name`` from ``pkg`` itself (as grimp, behind
    import-linter, counts it).
    """
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
    return sorted(found)


class Counter(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: set[str]):
        self.module, self.is_package, self.modules = module, is_package, modules
        self.defined: set[str] = set()  # private names this module defines itself
        self.depth = 0
        self.private: list[tuple[int, str]] = []
        self.dialect_names: list[int] = []
        self.imports: list[tuple[str, bool, int]] = []  # (candidate target, in function, line)

    def visit_FunctionDef(self, node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.defined.add(node.name)
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.defined.add(node.name)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.defined.add(node.id)

    def visit_Constant(self, node: ast.Constant) -> None:  # __slots__ = ("_a", "_b")
        if isinstance(node.value, str) and node.value.startswith("_"):
            self.defined.add(node.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store) and _is_self(node.value):
            self.defined.add(node.attr)
        name = node.attr
        if name.startswith("_") and not name.startswith("__") and not _is_self(node.value):
            self.private.append((node.lineno, f"{ast.unparse(node.value)}.{name}"))
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        left = node.left
        if (
            isinstance(left, ast.Attribute)
            and left.attr == "name"
            and "dialect" in ast.unparse(left.value).lower()
        ):
            self.dialect_names.append(node.lineno)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                self.imports.append((alias.name, self.depth > 0, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or (node.module or "").split(".")[0] == PACKAGE:
            for target in resolve(self.module, self.is_package, node, self.modules):
                self.imports.append((target, self.depth > 0, node.lineno))


BACKENDS = {"sqlite", "postgresql", "postgres", "duckdb", "mysql", "mariadb"}


def _names_backend(side: ast.expr) -> bool:
    """A backend's name as a literal, or a tuple/set/list of them: ``x == "duckdb"``, ``x in ("sqlite",)``."""
    if isinstance(side, ast.Constant):
        return isinstance(side.value, str) and side.value in BACKENDS
    if isinstance(side, ast.Tuple | ast.List | ast.Set):
        return any(_names_backend(e) for e in side.elts)
    return False


def _is_self(value: ast.expr) -> bool:
    if isinstance(value, ast.Name) and value.id in ("self", "cls", "mcs", "klass"):
        return True
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--mypy", action="store_true", help="also run mypy and count its errors")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(root, p): p for p in files}

    lines = 0
    private: dict[str, list] = {}
    dialect: dict[str, list] = {}
    options: dict[str, list] = defaultdict(list)
    graph: dict[str, set[str]] = defaultdict(set)
    top_level: set[tuple[str, str]] = set()  # edges made by a module-level import
    local = total = 0
    for module, path in modules.items():
        text = path.read_text()
        lines += sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))
        counter = Counter(module, path.name == "__init__.py", set(modules))
        counter.visit(ast.parse(text))
        crossing = [
            (line, text) for line, text in counter.private if text.rsplit(".", 1)[1] not in counter.defined
        ]
        if crossing:
            private[module] = crossing
        rel = path.relative_to(root).as_posix()
        if counter.dialect_names and not rel.startswith(f"{PACKAGE}/dialects/"):
            dialect[module] = counter.dialect_names
        if rel.startswith(f"{PACKAGE}/nodes/"):
            for n, line in enumerate(text.splitlines(), 1):
                if re.search(r"\b(" + "|".join(OPTIONS) + r")\b", line):
                    options[module].append(n)
        seen: set[tuple[int, bool]] = set()
        for target, in_function, line in counter.imports:
            if target in modules and target != module:
                graph[module].add(target)
                if not in_function:
                    top_level.add((module, target))
                if (line, in_function) not in seen:  # one count per import statement
                    seen.add((line, in_function))
                    total += 1
                    local += in_function
        graph.setdefault(module, set())

    n_private = sum(len(v) for v in private.values())
    found = cycles(graph)
    print(f"package lines (non-blank, non-comment): {lines}")
    print(f"private_per_kloc: {n_private / lines * 1000:.2f} ({n_private} accesses)")
    print(f"option_branches_in_nodes: {sum(len(v) for v in options.values())}")
    print(f"dialect_name_comparisons: {sum(len(v) for v in dialect.values())}")
    share = local / total * 100 if total else 0.0
    print(f"function_local_internal_imports: {local} of {total} ({share:.0f}%)")
    print(
        f"import_cycles: {len(found)} (groups of modules that import each other: {[len(g) for g in found]})"
    )
    if args.verbose:
        for module, hits in sorted(private.items()):
            print(f"  private {module}: " + ", ".join(f"{line}:{text}" for line, text in hits))
        for module, hits in sorted(options.items()):
            print(f"  option {module}: lines {hits}")
        for module, hits in sorted(dialect.items()):
            print(f"  dialect.name {module}: lines {hits}")
        for group in found:
            members = set(group)
            edges = [(a, b) for a in group for b in sorted(graph[a]) if b in members]
            local_edges = [f"{a} -> {b}" for a, b in edges if (a, b) not in top_level]
            print(
                f"  cycle of {len(group)} modules ({len(edges)} edges, {len(local_edges)} only function-local):"
            )
            print("    " + ", ".join(group))
            for a, b in edges:
                print(f"    {a} -> {b}{'' if (a, b) in top_level else '  (in a function)'}")
    if args.mypy:
        out = subprocess.run(
            [sys.executable, "-m", "mypy", PACKAGE], cwd=root, capture_output=True, text=True, check=False
        ).stdout
        errors = re.search(r"Found (\d+) errors?", out)
        print(f"mypy_errors: {errors.group(1) if errors else ('0' if 'Success' in out else 'crashed')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
