"""The import rules of docs/ARCHITECTURE.md, read from the source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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


def test_nothing_points_outside_the_project():
    outside = (".." + "/shared", "/work" + "/shared")  # the authors' folder, not the users'
    texts = [p for p in ROOT.rglob("*") if p.suffix in {".py", ".md", ".toml", ".yaml"}
             and not {".venv", ".git"} & set(p.parts)]
    assert [str(p) for p in texts if any(o in p.read_text() for o in outside)] == []
