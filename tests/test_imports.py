"""The import rules of docs/ARCHITECTURE.md, read from the source with `ast`."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("zoo", "loaders", "analysis", "generators", "benchmarks")  # the graph's modules
FORBIDDEN = {  # package -> top-level packages it must never import
    "zoo": {"generators", "loaders", "analysis"},
    "loaders": {"generators", "analysis"},
    "analysis": {"generators"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_the_layers_allow(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}: no source files found"
    broken = {str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package])
              for f in files}
    assert {f: names for f, names in broken.items() if names} == {}


def test_the_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from generators.cli import main\n")
    assert imported_packages(source) == {"os", "generators"}


def module_name(path: Path, root: Path) -> str:
    """`zoo/train/base.py` -> `zoo.train.base`; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (function-level and relative imports included;
    `from a import b` is module `a.b` where that exists). A module's own parent packages,
    which Python runs first, are not counted: a package exporting its modules is no circle."""
    files = {module_name(f, root): f for p in packages for f in sorted((root / p).rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                wanted = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                          for a in node.names]
            else:
                continue
            for target in wanted:
                while target and target not in files:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import one another round a circle (Tarjan's strongly
    connected components of more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = stack[stack.index(node):]
            del stack[stack.index(node):]
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def parts(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between parts: `zoo.folder.writer` is part `zoo.folder`, `zoo.rows` its own."""
    def part(name: str) -> str:
        return ".".join(name.split(".")[:2])

    merged: dict[str, set[str]] = {}
    for name, targets in graph.items():
        merged.setdefault(part(name), set()).update(part(t) for t in targets)
    return {name: targets - {name} for name, targets in merged.items()}


def test_no_module_imports_round_a_circle():
    assert circles(import_graph(ROOT, PROJECT)) == []


def test_no_part_imports_round_a_circle():
    """E.g. zoo.folder (the format) never imports zoo.rows, which builds rows against it."""
    assert circles(parts(import_graph(ROOT, PROJECT))) == []


def test_a_planted_circle_is_refused(tmp_path):
    """A function-level and a relative import close a circle of three synthetic modules."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg.a import f\n")
    (package / "a.py").write_text("import os\n\ndef f():\n    from pkg import b\n")
    (package / "b.py").write_text("from pkg.c import g\n")
    (package / "c.py").write_text("from . import a\n\ng = 1\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"},
                     "pkg.c": {"pkg.a"}}
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (package / "c.py").write_text("g = 1\n")
    assert circles(import_graph(tmp_path, ("pkg",))) == []


def test_a_circle_planted_in_a_copy_of_zoo_train_is_refused(tmp_path):
    shutil.copytree(ROOT / "zoo" / "train", tmp_path / "zoo" / "train")
    assert circles(import_graph(tmp_path, ("zoo",))) == []
    base = tmp_path / "zoo" / "train" / "base.py"
    planted = "\n\ndef later():\n    from zoo.train.state import StateStore\n"
    base.write_text(base.read_text() + planted)
    assert circles(import_graph(tmp_path, ("zoo",))) == [
        ["zoo.train.base", "zoo.train.state"]]


def test_a_circle_between_parts_is_refused(tmp_path):
    """The writer importing the rows that import the format: no two modules loop, two parts do."""
    (tmp_path / "zoo" / "folder").mkdir(parents=True)
    for name, source in {"__init__.py": "", "folder/__init__.py": "",
                         "folder/manifest.py": "", "folder/writer.py": "from zoo.rows import R\n",
                         "rows.py": "from zoo.folder.manifest import Shard\n"}.items():
        (tmp_path / "zoo" / name).write_text(source)
    graph = import_graph(tmp_path, ("zoo",))
    assert circles(graph) == []
    assert circles(parts(graph)) == [["zoo.folder", "zoo.rows"]]


def test_nothing_points_outside_the_project():
    outside = (".." + "/shared", "/work" + "/shared")  # the authors' folder, not the users'
    texts = [p for p in ROOT.rglob("*") if p.suffix in {".py", ".md", ".toml", ".yaml"}
             and not {".venv", ".git"} & set(p.parts)]
    assert [str(p) for p in texts if any(o in p.read_text() for o in outside)] == []
