"""The package's modules use each other through public names only: a name with a leading underscore is its
module's own business, free to change without breaking another module (``from .x import _y`` elsewhere in
``erase/`` fails this test, function-level imports included)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "erase"


def private_imports(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            inside = node.level > 0 or (node.module or "").split(".")[0] == "erase"
            for alias in node.names:
                if inside and alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} imports {alias.name}")
    return found


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_the_check_finds_one(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from .b import _hidden, shown\n")
    (tmp_path / "b.py").write_text("from __future__ import annotations\nfrom .c import __version__\n")
    assert private_imports(tmp_path) == [f"{tmp_path.name}/a.py:2 imports _hidden"]
