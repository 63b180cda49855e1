"""No import cycles between the package's modules: none at module level (an import at the top of a module), and
none through the imports inside functions either (``KNOWN`` lists any that a change must leave for later, so
that the list can only shrink: a new cycle fails, and a fixed one must leave the list). Imports under
``if TYPE_CHECKING:`` never run and do not count."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "erase"

# Cycles through function-level imports, not yet broken.
KNOWN: set[frozenset[str]] = set()  # none left: the family registry imports the built-in families, never the reverse


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _every_import(node: ast.AST) -> list[ast.AST]:
    """Every statement under ``node``, functions included, but not ``if TYPE_CHECKING:`` blocks (never run)."""
    out = []
    for child in ast.iter_child_nodes(node):
        if _type_checking(child):
            continue
        out.append(child)
        out += _every_import(child)
    return out


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """The module's own statements, with ``try``/``if`` bodies, but not ``if TYPE_CHECKING:`` blocks."""
    out = []
    for node in tree.body:
        if _type_checking(node):
            continue
        if isinstance(node, (ast.If, ast.Try)):
            out += _top_level(ast.Module(body=node.body + node.orelse, type_ignores=[]))
        else:
            out.append(node)
    return out


def import_graph(root: Path = PACKAGE, module_level: bool = False) -> dict[str, set[str]]:
    """{module: the package's modules it imports}; ``module_level``: only imports run when it is imported."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        nodes = _top_level(tree) if module_level else _every_import(tree)
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for cand in [target] + [f"{target}.{a.name}" for a in node.names]:
                    if cand in mods and cand != name:
                        graph[name].add(cand)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods and a.name != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(frozenset(comp))
    return found


def test_no_cycle_among_module_level_imports():
    assert cycles(import_graph(module_level=True)) == []


def test_no_cycle_through_function_level_imports_beyond_the_known_ones():
    found = set(cycles(import_graph()))
    assert found - KNOWN == set(), "a new import cycle"
    assert KNOWN - found == set(), "a known cycle is gone: take it off KNOWN"


def test_the_check_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nfrom . import e\nif TYPE_CHECKING:\n    from .e import y\n")
    (pkg / "e.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import z\n")
    assert cycles(import_graph(pkg)) == [frozenset({"pkg.a", "pkg.sub.b"})]
    assert cycles(import_graph(pkg, module_level=True)) == []


# Loops between the package's folders (erase.<folder> -> erase.<other> -> ... -> erase.<folder>), through any
# import: none. The layers, bottom up: core (imports nothing of the project), toy (the world: shapes, judge,
# models, builder), diffusion (pipelines, the job, and what they draw on the toy world: toy_quality,
# toy_metrics), classify, attacks, audit; cli and api on top. A loop that must exist is listed here, so that
# the list can only shrink.
KNOWN_FOLDER_LOOPS: set[frozenset[str]] = set()


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """{erase.<folder>: the other folders (or top-level modules) its modules import}."""
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    out: dict[str, set[str]] = {}
    for m, targets in graph.items():
        out.setdefault(top(m), set())
        for t in targets:
            out.setdefault(top(t), set())
            if top(t) != top(m):
                out[top(m)].add(top(t))
    return out


def test_no_folder_loop_beyond_the_known_ones():
    found = set(cycles(folder_graph(import_graph())))
    assert found - KNOWN_FOLDER_LOOPS == set(), "a new loop between folders"
    assert KNOWN_FOLDER_LOOPS - found == set(), "a known folder loop changed or is gone: update KNOWN_FOLDER_LOOPS"


def test_no_module_imports_another_modules_private_names():
    """``from .x import _name`` across modules: a private name is its module's own."""
    found = []
    for name, path in _modules(PACKAGE).items():
        for node in _every_import(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                found += [f"{name}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []
