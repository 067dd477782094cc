"""The package layering (issue 13, section 6), checked on the source with ``ast``.

    fedrec/      the library and the contracts both halves share (fedrec.protocol, .payload,
                 .reduce, .ldp): imports nothing of clients/, strategies/, experiments/
    clients/     device halves: may import fedrec/, never strategies/ or experiments/
    strategies/  cloud halves: may import fedrec/ and clients/ (a protocol's device class)
    experiments/ entry points: may import everything

Every import counts: module level, inside functions, under ``if TYPE_CHECKING``. And no two
project modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedrec", "clients", "strategies", "experiments")
#: package -> the project packages it must not import
FORBIDDEN = {
    "fedrec": ("clients", "strategies", "experiments"),
    "clients": ("strategies", "experiments"),
    "strategies": ("experiments",),
}


def module_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages (``pkg/__init__.py`` is
    module ``pkg``)."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported dotted name lives in (its longest known prefix)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``module`` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..pkg import y
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            # "from pkg import name": the submodule pkg.name if there is one, else pkg
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in (_target(n, modules) for n in names) if t is not None)
    found.discard(module)
    return found


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {m: imported_modules(m, p, modules) for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}            # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                  if t.split(".")[0] in FORBIDDEN.get(m.split(".")[0], ()))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_covers_every_package(graph) -> None:
    assert {m.split(".")[0] for m in graph} == set(PACKAGES)
    assert "fedrec.protocol" in graph["clients.device"]          # a module-level import
    assert "fedrec.federated" in graph["strategies.base"]        # one inside a function


def test_lower_layers_import_no_higher_ones(graph) -> None:
    bad = forbidden_imports(graph)
    assert not bad, ("layering: fedrec/ imports no clients/, strategies/, experiments/; "
                     "clients/ no strategies/, experiments/; strategies/ no experiments/ "
                     "(move the shared piece into fedrec/):\n  " + "\n  ".join(bad))


def test_no_import_cycles(graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_the_checker_finds_cycles_and_forbidden_imports(tmp_path) -> None:
    files = {
        "fedrec/__init__.py": "",
        "fedrec/a.py": "def f():\n    from fedrec import b\n",
        "fedrec/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                       "    from .c import X\n",
        "fedrec/c.py": "import fedrec.a\nimport numpy\n",
        "clients/__init__.py": "",
        "clients/d.py": "from strategies.e import E\nfrom fedrec.a import f\n",
        "strategies/__init__.py": "",
        "strategies/e.py": "from clients import d\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    g = import_graph(tmp_path, ("fedrec", "clients", "strategies"))
    assert g["fedrec.c"] == {"fedrec.a"} and g["clients.d"] == {"strategies.e", "fedrec.a"}
    assert find_cycle(g) == ["fedrec.a", "fedrec.b", "fedrec.c", "fedrec.a"]
    g["fedrec.c"] = set()
    assert find_cycle(g) == ["clients.d", "strategies.e", "clients.d"]
    g["strategies.e"] = set()
    assert find_cycle(g) is None
    assert forbidden_imports(g) == ["clients.d imports strategies.e"]
