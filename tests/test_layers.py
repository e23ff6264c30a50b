"""The package layout is the architecture: data flows one way, and no module imports in a circle.

Every `import` in align/ (module level, inside functions and under TYPE_CHECKING alike) is read
with `ast`. A package may import its own modules and the packages of lower layers only; the
failure names both files, the line and the import. The checker is also run on small planted trees,
so a cycle or an upward import it could not see would fail here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "align"

# Lowest first. A module may import the packages of lower layers and its own package, nothing else.
LAYERS: list[tuple[str, ...]] = [
    ("align", "align.util"),  # align/__init__ (the version) and util: errors, secrets, files, ...
    ("align.recipe",),
    ("align.objectives", "align.rewards"),
    ("align.data",),
    ("align.models",),
    ("align.engine",),
    ("align.methods", "align.hub"),
    ("align.train",),
    ("align.evals",),
    ("align.cli",),
    ("align.__main__", "align.embedded"),  # entry points: python -m align, python -m align.embedded
]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """The layer entry a module belongs to: the longest listed prefix."""
    best = ""
    for layer in LAYERS:
        for pkg in layer:
            if (module == pkg or module.startswith(pkg + ".")) and len(pkg) > len(best):
                best = pkg
    if not best:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")
    return best


def rank(pkg: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if pkg in layer)


def imports(root: Path) -> dict[str, list[tuple[str, int, str]]]:
    """module -> [(imported align module, line, the import as written)]."""
    modules = {module_name(root, p): p for p in root.rglob("*.py")}
    out: dict[str, list[tuple[str, int, str]]] = {m: [] for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "align":
                        out[mod].append((a.name, node.lineno, f"import {a.name}"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                if base.split(".")[0] != "align":
                    continue
                for a in node.names:
                    target = f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    out[mod].append(
                        (target, node.lineno, f"from {'.' * node.level}{node.module or ''} import {a.name}")
                    )
    return out


def file_of(root: Path, module: str) -> str:
    rel = Path(*module.split("."))
    path = root.parent / rel / "__init__.py"
    return str((path if path.exists() else (root.parent / rel).with_suffix(".py")).relative_to(root.parent))


def upward_imports(root: Path) -> list[str]:
    problems = []
    for mod, targets in imports(root).items():
        here = package_of(mod)
        for target, line, text in targets:
            there = package_of(target)
            if there == here or rank(there) < rank(here):
                continue
            allowed = ", ".join(p for layer in LAYERS[: rank(here)] for p in layer) or "nothing"
            problems.append(
                f"{file_of(root, mod)}:{line}: `{text}` reaches {file_of(root, target)}: "
                f"{here} may import only its own modules and {allowed}"
            )
    return problems


def cycles(root: Path) -> list[str]:
    """Every strongly connected component of more than one module (or a self-import), as the chain
    of imports that closes it."""
    found_imports = imports(root)
    graph = {m: {t for t, _, _ in ts} for m, ts in found_imports.items()}
    where = {(m, t): (line, text) for m, ts in found_imports.items() for t, line, text in ts}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for comp in found:
        members = set(comp)
        lines = [
            f"{file_of(root, m)}:{where[(m, t)][0]}: `{where[(m, t)][1]}` -> {file_of(root, t)}"
            for m in comp
            for t in sorted(graph[m] & members)
        ]
        out.append("import circle among " + ", ".join(comp) + ":\n  " + "\n  ".join(lines))
    return out


def test_no_import_climbs_the_layers():
    problems = upward_imports(ROOT)
    assert not problems, "\n".join(problems)


def test_no_import_circle():
    found = cycles(ROOT)
    assert not found, "\n".join(found)


def test_every_module_is_in_a_layer():
    for path in ROOT.rglob("*.py"):
        package_of(module_name(ROOT, path))  # raises naming the module


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "align"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_checker_sees_an_upward_import_and_names_both_files(tmp_path):
    root = _tree(
        tmp_path,
        {
            "models/__init__.py": "",
            "models/load.py": "def f():\n    from align.engine.loop import train\n",
            "engine/__init__.py": "",
            "engine/loop.py": "from align.models.load import f\n",
        },
    )
    (problem,) = upward_imports(root)
    assert problem.startswith("align/models/load.py:2: `from align.engine.loop import train`")
    assert "align/engine/loop.py" in problem and "align.models may import only" in problem


def test_the_checker_sees_a_circle_inside_a_package_and_through_type_checking(tmp_path):
    root = _tree(
        tmp_path,
        {
            "methods/__init__.py": "from align.methods.ppo import PPO\n",
            "methods/ppo.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from align.methods import METHODS\n",
            "methods/kto.py": "from . import ppo\n",
        },
    )
    assert upward_imports(root) == []
    (circle,) = cycles(root)
    assert "align.methods, align.methods.ppo" in circle
    assert (
        "align/methods/ppo.py:3: `from align.methods import METHODS` -> align/methods/__init__.py" in circle
    )
    assert "kto" not in circle  # kto imports ppo, nothing imports kto: no circle through it


@pytest.mark.parametrize("text", ["import align.recipe\n", "from align import recipe\n"])
def test_a_lower_layer_importing_a_higher_one_fails_in_both_spellings(tmp_path, text):
    root = _tree(tmp_path, {"util/__init__.py": "", "util/errors.py": text, "recipe.py": ""})
    (problem,) = upward_imports(root)
    assert "align/util/errors.py:1" in problem and "align/recipe.py" in problem
