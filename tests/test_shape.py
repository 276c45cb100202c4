"""The code's shape (docs/design.md, "Shape"): no import cycle among the engine's subsystems (a file
or folder directly in `src/`) nor among its modules (files), and subsystems import only downward.
An edge is any `crate::` path in the code (comments and unit tests aside)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _code(f: Path) -> str:
    """A file's code: unit tests and comments aside."""
    code = f.read_text().split("#[cfg(test)]\nmod tests")[0]
    return "\n".join(line for line in code.splitlines() if not line.strip().startswith("//"))


def _named(code: str) -> set[str]:
    """Every `crate::a::b::c` path the code names, as "a::b::c" (use groups expanded one level)."""
    named = set(re.findall(r"crate::((?:[a-z_]+::)*[a-z_]+)", code))
    for prefix, group in re.findall(r"use crate::((?:[a-z_]+::)*)\{([^}]*)\}", code):
        named |= {prefix + n for n in re.findall(r"\b([a-z_]+)\b", group) if n != "self"}
    return named


def _sources(src: Path) -> list[Path]:
    return [f for f in sorted(src.rglob("*.rs")) if f.stem != "tests" and not f.stem.endswith("_tests")]


def edges(src: Path = SRC) -> dict[str, set[str]]:
    """Each subsystem (a file or folder directly in `src/`) and the subsystems its code names."""
    found: dict[str, set[str]] = {}
    for f in _sources(src):
        name = f.relative_to(src).parts[0].removesuffix(".rs")
        found.setdefault(name, set()).update(n.split("::")[0] for n in _named(_code(f)))
    return {m: {d for d in deps if d in found and d != m} for m, deps in found.items()}


def module_edges(src: Path = SRC) -> dict[str, set[str]]:
    """Each module (a file; a folder's `mod.rs` is the folder) and the modules its code names."""

    def module(f: Path) -> str:
        parts = list(f.relative_to(src).with_suffix("").parts)
        return "::".join(parts[:-1] if parts[-1] == "mod" else parts)

    files = {module(f): f for f in _sources(src)}
    found: dict[str, set[str]] = {}
    for m, f in files.items():
        deps = set()
        for n in _named(_code(f)):
            parts = n.split("::")
            # The longest prefix that is a module: `crate::end::verify::Report` names `end::verify`.
            hit = next(("::".join(parts[:k]) for k in range(len(parts), 0, -1) if "::".join(parts[:k]) in files), None)
            if hit is not None and hit != m and not m.startswith(hit + "::"):
                deps.add(hit)
        found[m] = deps
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return out


# The subsystems from the top down (docs/design.md, "Shape"): each imports only from below it.
LAYERS = [
    {"lib"},
    {"run"},
    {"copy"},
    {"end"},
    {"dest", "track", "source"},
    {"gentle", "content", "failpoint", "sftp"},
    {"sys"},
    {"vocab", "error"},
]


def test_no_module_of_the_engine_imports_one_that_imports_it_back() -> None:
    graph = edges()
    assert {"sys", "vocab", "run", "gentle"} <= graph.keys()
    assert cycles(graph) == []
    modules = module_edges()
    assert {"run::coordinator", "end::verify", "track", "sys"} <= modules.keys()
    assert cycles(modules) == []


def test_subsystems_import_only_downward() -> None:
    graph = edges()
    assert set().union(*LAYERS) == graph.keys(), "every subsystem has its layer"
    layer = {m: i for i, group in enumerate(LAYERS) for m in group}
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if layer[d] <= layer[m])
    assert upward == []


def test_sys_is_imported_for_os_calls_alone() -> None:
    """`sys` names nothing of the engine's but its vocabulary."""
    assert edges()["sys"] <= {"vocab"}


PYTHON = SRC.parent / "python" / "softcopy"


def python_edges(package: Path = PYTHON) -> dict[str, set[str]]:
    """Each module of the Python package and the package's modules it imports (at the top or
    inside a function: a lazy import is an edge too)."""
    modules = {p.stem: p for p in package.glob("*.py")}
    found: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "softcopy":
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("softcopy."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("softcopy.")}
        found[name] = {d for d in deps if d in modules and d != name}
    return found


def test_no_python_module_imports_one_that_imports_it_back() -> None:
    graph = python_edges()
    assert {"cli", "demo", "session", "service"} <= graph.keys()
    assert cycles(graph) == []


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
