"""The import graph of `xfer/` has no cycle, read from the sources with `ast` (nothing is imported).

Every import counts, at module level and inside a function alike: a function-level import that
closes a circle is the circle deferred (it still means the two modules need each other), which is
the pattern this test exists to stop. An edge goes to the module an import names: `from xfer.models
import e5` to `xfer.models.e5` (a submodule), `from xfer.tasks import get_task` to `xfer.tasks`.
The package `__init__` that Python runs first when one of its submodules is imported is not an
edge: a package that collects its submodules (`xfer/tasks/__init__.py`, a registry) would
otherwise form a circle with each of them, which is the registry's shape, not a knot."""

from __future__ import annotations

import ast
from pathlib import Path

import xfer

PACKAGE = Path(xfer.__file__).parent


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> source file, for every module of the package."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of the package that `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # `import xfer.a.b` names xfer.a.b; the longest known prefix is the module it binds
                parts = alias.name.split(".")
                out.add(next((".".join(parts[:i]) for i in range(len(parts), 0, -1)
                              if ".".join(parts[:i]) in known), ""))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this module is in
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in known else source)  # a submodule, else a name from `source`
    return {m for m in out if m in known and m != name}


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(package)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan), as a path
    `a -> b -> ... -> a` through the component, shortest first from its first module."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    out = []
    for comp in comps:
        start = min(comp)
        # breadth-first inside the component: the shortest way from `start` back to itself
        paths, seen, found = [[start]], {start}, None
        while paths and found is None:
            nxt = []
            for p in paths:
                for w in sorted(edges[p[-1]] & comp):
                    if w == start:
                        found = p + [start]
                        break
                    if w not in seen:
                        seen.add(w)
                        nxt.append(p + [w])
                if found:
                    break
            paths = nxt
        out.append(found + [f"(a component of {len(comp)}: {', '.join(sorted(comp))})"])
    return out


def test_graph_reads_both_kinds_of_import(tmp_path):
    """The reader sees module-level, function-level, `from pkg import submodule` and relative
    imports, and a circle closed inside a function is a circle."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.leaf import x\n")
    (pkg / "sub" / "leaf.py").write_text("x = 1\n")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import g\n")
    (pkg / "c.py").write_text("from .sub import leaf\nimport pkg.sub\n")
    edges = graph(pkg)
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.a"}
    assert edges["pkg.c"] == {"pkg.sub.leaf", "pkg.sub"}
    assert edges["pkg.sub.leaf"] == set()  # its package's __init__ is not an edge
    assert [c[:3] for c in cycles(edges)] == [["pkg.a", "pkg.b", "pkg.a"]]


def test_xfer_has_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles in xfer/ (module-level and function-level imports):\n" + "\n".join(
        "  " + " -> ".join(c[:-1]) + "  " + c[-1] for c in found)
