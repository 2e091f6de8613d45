"""The shape of the code: the import graph of `toolkit/` has no cycle (module-level and function-level imports
alike, `TYPE_CHECKING` ones included), no module imports the facade of a package it lives in, the queue never
imports the study layer, the compatibility package `toolkit.jobs` is imported by nobody, and every package's
docstring names each of its modules. Pure `ast`: nothing is imported, so this runs in well under a second."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = ROOT / "toolkit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(TOOLKIT.rglob("*.py"))}
PACKAGES = {m for m, p in MODULES.items() if p.name == "__init__.py"}


def _target(name: str) -> str | None:
    """The toolkit module an imported dotted name lives in (its longest known prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every toolkit module `module` imports, wherever the import statement stands."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(t for a in node.names if (t := _target(a.name)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # `from toolkit.study import halving` imports the module halving
                full = f"{base}.{alias.name}"
                out.update(t for t in (_target(full) if full in MODULES else _target(base),) if t)
    out.discard(module)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """module -> the toolkit modules it imports; parsed when a test asks (not while collecting), once per process"""
    return {m: imports_of(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_of_the_toolkit_has_no_cycle(graph):
    cycles = _cycles(graph)
    report = "\n".join(" <-> ".join(c) + "\n" + "\n".join(f"    {m} -> {sorted(graph[m] & set(c))}" for m in c)
                       for c in cycles)
    assert not cycles, f"import cycles in toolkit/ (function-level imports count):\n{report}"


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_the_facade_of_a_package_it_lives_in(graph):
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if d in PACKAGES and m.startswith(d + "."))
    assert not upward, "modules importing their own package's __init__ (an upward arrow): " + ", ".join(upward)


def test_the_queue_never_imports_the_study_layer_and_nobody_imports_the_compatibility_package(graph):
    up = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith("toolkit.queue")
                for d in deps if d.startswith("toolkit.study"))
    assert not up, "the queue imports the study layer (name it in a hook instead): " + ", ".join(up)
    shim = sorted(f"{m} -> {d}" for m, deps in graph.items() if not m.startswith("toolkit.jobs")
                  for d in deps if d.startswith("toolkit.jobs"))
    assert not shim, "toolkit.jobs is for old job steps and sbatch scripts only: " + ", ".join(shim)


@pytest.mark.parametrize("package", sorted(PACKAGES), ids=str)
def test_every_package_docstring_names_each_of_its_modules(package):
    folder = MODULES[package].parent
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text())) or ""
    members = [p.name for p in sorted(folder.glob("*.py")) if p.name != "__init__.py"]
    members += [f"{p.name}/" for p in sorted(folder.iterdir()) if (p / "__init__.py").exists()]
    missing = [m for m in members if m not in doc]
    assert not missing, f"the docstring of {package} does not name {', '.join(missing)} (one line each: what it does)"


def test_no_test_module_imports_another_or_a_conftest():
    """Shared code lives in tests/helpers/ (imported as tests.helpers.*) and fixtures in conftest.py files."""
    bad = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            last = [n.rsplit(".", 1)[-1] for n in names]
            if any(n.startswith("test_") or n == "conftest" for n in last):
                bad.append(f"{path.relative_to(ROOT)}: imports {', '.join(names)}")
    assert not bad, "\n".join(bad)
