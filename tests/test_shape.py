"""The code's shape (docs/design.md, "Shape"): no import cycle among the engine's modules. A module
is a file of `src/`, or a folder of `src/` as one subsystem; an edge is any `crate::name` path in its
code (comments and unit tests aside)."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def edges(src: Path = SRC) -> dict[str, set[str]]:
    """Each module and the modules its code names."""
    found: dict[str, set[str]] = {}
    for entry in sorted(src.iterdir()):
        if entry.suffix == ".rs":
            name, files = entry.stem, [entry]
        elif entry.is_dir():
            name, files = entry.name, sorted(entry.glob("*.rs"))
        else:
            continue
        if name.endswith("_tests"):
            continue
        for f in files:
            code = f.read_text().split("#[cfg(test)]\nmod tests")[0]
            code = "\n".join(line for line in code.splitlines() if not line.strip().startswith("//"))
            named = set(re.findall(r"crate::([a-z_]+)", code))
            for group in re.findall(r"use crate::\{([^}]*)\}", code):
                named |= set(re.findall(r"\b([a-z_]+)\b", group))
            found.setdefault(name, set()).update(named - {name})
    return {m: {d for d in deps if d in found} for m, deps in found.items()}


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


def test_no_module_of_the_engine_imports_one_that_imports_it_back() -> None:
    graph = edges()
    assert {"sys", "vocab", "coordinator", "gentle"} <= graph.keys()
    assert cycles(graph) == []


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
