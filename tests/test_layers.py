"""The layer order of docs/ARCHITECTURE.md, checked on the source of every fastfn module.

Each module's imports are read with ``ast`` (top-level, function-local and
``importlib.import_module("...")`` calls alike, so an upward import hidden inside a
function is found too). From bottom to top:

    fileio, seeding, ops, reference  <  data  <  metrics, losses  <  models
    <  attack  <  train  <  evaluation  <  cli

A module may import its own layer or lower ones, never a higher one.
``fastfn/__init__.py`` (it loads the extension) and ``fastfn/__main__.py`` are exempt,
and ``fastfn.reference`` (the tests' oracle) is imported by no library module.
The module import graph must also have no cycle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "fastfn"

# Bottom first: a module may import from its own entry and the ones before it.
# fastfn._C is the compiled extension, loaded by fastfn._extension; fastfn.configs
# (config dataclasses to and from plain dicts) is a utility beside fastfn.fileio.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fastfn._C", "fastfn._extension", "fastfn.fileio", "fastfn.configs", "fastfn.seeding",
     "fastfn.ops", "fastfn.reference"),
    ("fastfn.data",),
    ("fastfn.metrics", "fastfn.losses"),
    ("fastfn.models",),
    ("fastfn.attack",),
    ("fastfn.train",),
    ("fastfn.evaluation",),
    ("fastfn.cli",),
)
EXEMPT = {"fastfn", "fastfn.__main__"}


@dataclass(frozen=True)
class Import:
    source: str      # importing module, dotted
    target: str      # imported module, dotted (a module file of the package)
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``: never executed


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# Built by setup.py; a checkout that has not been built lacks the file.
COMPILED = {"fastfn._C"}


def _modules() -> dict[str, Path]:
    """Every Python module of the package by dotted name."""
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _module_names() -> set[str]:
    """Every importable module of the package: the Python ones and the compiled extension."""
    return set(_modules()) | COMPILED


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportCollector(ast.NodeVisitor):
    """Every fastfn import of one module, resolved to module names of the package."""

    def __init__(self, module: str, is_package: bool, modules: set[str]) -> None:
        self.module, self.modules = module, modules
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[Import] = []
        self._type_only = 0

    def _add(self, target: str, node: ast.AST) -> None:
        if target == "fastfn" or target.startswith("fastfn."):
            self.found.append(Import(self.module, target, node.lineno, self._type_only > 0))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._type_only += 1
            for child in node.body:
                self.visit(child)
            self._type_only -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            # ``from pkg import submodule`` imports the submodule; any other name
            # comes from the package's __init__.
            self._add(sub if sub in self.modules else base, node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr == "import_module"
                and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            self._add(node.args[0].value, node)
        self.generic_visit(node)


def _imports() -> list[Import]:
    modules = _modules()
    names = _module_names()
    found: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        collector = _ImportCollector(name, path.name == "__init__.py", names)
        collector.visit(tree)
        found.extend(collector.found)
    return found


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _where(imp: Import) -> str:
    return f"{imp.source} (line {imp.line}) imports {imp.target}"


def test_every_import_names_a_module_of_the_package():
    names = _module_names()
    missing = [_where(i) for i in _imports() if i.target not in names]
    assert not missing, "imports of fastfn modules that do not exist:\n" + "\n".join(missing)


def test_every_module_has_a_layer():
    unplaced = [m for m in _modules() if m not in EXEMPT and _layer(m) is None]
    assert not unplaced, (f"modules outside the layers of docs/ARCHITECTURE.md: {unplaced}; "
                          f"add them to LAYERS here and to the architecture doc")


def test_imports_point_down_only():
    violations = []
    for imp in _imports():
        if imp.source in EXEMPT or imp.target in EXEMPT:
            continue
        src, dst = _layer(imp.source), _layer(imp.target)
        if src is not None and dst is not None and dst > src:
            violations.append(f"{_where(imp)}: layer {LAYERS[src][0]} may not import "
                              f"layer {LAYERS[dst][0]}")
    assert not violations, "upward imports:\n" + "\n".join(violations)


def test_reference_is_imported_by_no_library_module():
    def in_reference(module: str) -> bool:
        return module == "fastfn.reference" or module.startswith("fastfn.reference.")

    users = [_where(i) for i in _imports() if in_reference(i.target) and not in_reference(i.source)]
    assert not users, "fastfn.reference is for the tests only:\n" + "\n".join(users)


def _import_graph() -> dict[str, set[str]]:
    """module -> the modules its executed imports run.

    Importing ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` first, so those are
    edges too, except packages that contain the importing module (they are already
    being initialised when it runs). Imports under ``if TYPE_CHECKING:`` never run.
    """
    graph: dict[str, set[str]] = {m: set() for m in _modules()}
    for imp in _imports():
        if imp.type_only:
            continue
        parts = imp.target.split(".")
        for n in range(1, len(parts) + 1):
            target = ".".join(parts[:n])
            if n < len(parts) and (imp.source == target or imp.source.startswith(target + ".")):
                continue
            if target != imp.source:
                graph[imp.source].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles between modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_import_collector_sees_function_local_and_type_checking_imports(tmp_path):
    source = ("from typing import TYPE_CHECKING\n"
              "import fastfn.ops\n"
              "from fastfn.train import checkpoint, Trainer\n"
              "if TYPE_CHECKING:\n"
              "    from fastfn.train.config import TrainConfig\n"
              "def f():\n"
              "    from fastfn.evaluation.checkpoint import evaluate_checkpoint\n"
              "    importlib.import_module('fastfn.cli')\n")
    modules = {"fastfn.ops", "fastfn.train", "fastfn.train.checkpoint", "fastfn.train.config",
               "fastfn.evaluation.checkpoint", "fastfn.cli"}
    collector = _ImportCollector("fastfn.attack.x", False, modules)
    collector.visit(ast.parse(source))
    assert [(i.target, i.line, i.type_only) for i in collector.found] == [
        ("fastfn.ops", 2, False), ("fastfn.train.checkpoint", 3, False), ("fastfn.train", 3, False),
        ("fastfn.train.config", 5, True), ("fastfn.evaluation.checkpoint", 7, False),
        ("fastfn.cli", 8, False)]


@pytest.mark.parametrize("package, forbidden", [
    ("fastfn.train", ("fastfn.evaluation", "fastfn.cli")),
    ("fastfn.attack", ("fastfn.train", "fastfn.evaluation", "fastfn.cli")),
])
def test_importing_a_layer_loads_no_higher_layer(package, forbidden):
    """At run time too (one fresh interpreter): importing every module of ``package``
    leaves the higher layers unloaded."""
    code = ("import pkgutil, importlib, sys\n"
            f"pkg = importlib.import_module({package!r})\n"
            "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "    importlib.import_module(m.name)\n"
            f"print(sorted(m for m in sys.modules if m.startswith({forbidden!r})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing {package} loaded {out.stdout.strip()}"
