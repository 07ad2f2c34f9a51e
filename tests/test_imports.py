"""The package's import graph: no cycles, and no import inside a function that exists to dodge one.

Read from the source with `ast` (nothing is imported): an edge a -> b for every `import mole.x` or
`from mole.x import y` in module a, resolved to the longest module path that exists (so
`from mole.tokenizer import TOKENIZERS` is an edge to the package, whose __init__ runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mole"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def resolve(target: str, known: dict[str, Path]) -> str | None:
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in known:
            return ".".join(parts[:i])
    return None


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """(module-level edges, function-level imports as (module, target, line))."""
    known = modules()
    top: dict[str, set[str]] = {name: set() for name in known}
    local: list[tuple[str, str, int]] = []
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        in_function = {
            id(node)
            for fn in ast.walk(tree)
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(fn)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mole"):
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("mole")]
            else:
                continue
            for target in {resolve(t, known) for t in targets} - {None, name}:
                if id(node) in in_function:
                    local.append((name, target, node.lineno))
                else:
                    top[name].add(target)
    return top, local


def reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return False


def test_the_graph_is_read():
    top, _ = graph()
    assert (
        "mole.diffusion.system" in top["mole.masks.system"]
        or "mole.diffusion.training" in top["mole.masks.system"]
    )
    assert "mole.zoo.store" in top["mole.zoo.build"]


def test_no_module_level_import_cycle():
    top, _ = graph()
    cycles = [(a, b) for a in top for b in top[a] if reaches(top, b, a)]
    assert not cycles, f"module-level import cycles through: {sorted(cycles)[:5]}"


def test_no_function_level_import_dodges_a_cycle():
    top, local = graph()
    dodging = [f"{a} -> {b} (line {line})" for a, b, line in local if reaches(top, b, a)]
    assert not dodging, f"imports inside functions that would close a cycle if lifted: {dodging}"


def test_the_check_sees_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert reaches(edges, "b", "a") and not reaches(edges, "a", "d")
