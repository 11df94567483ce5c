"""The package's imports go downward only, in the order docs/architecture.md draws, and never in a cycle.

Every `import` of a cambatch module counts, at module level or inside a function (a lazy import is
still a dependency), except those under `if TYPE_CHECKING:`, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "cambatch"
# Lowest first. A module may import from its own layer and the layers below it.
LAYERS = [
    {"cambatch", "errors", "layout", "names"},  # the package root holds only `__version__` and the lazy API names
    {"sources"},
    {"data"},
    {"model"},
    {"methods"},
    {"render"},
    {"report"},
    {"annotations"},
    {"evaluation"},
    {"config"},
    {"runner"},
    {"inspection", "bias"},  # bias reads the report as inspection does (and `reliance` runs the model)
    {"checks"},
    {"api", "cli", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(ast.walk(node))
    return skipped


def imports_of(path: Path) -> set[str]:
    """The cambatch modules `path` imports (a name imported from a package counts as its module if it is one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = _type_checking_only(tree)
    found = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("cambatch"))
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            if not target.startswith("cambatch"):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _is_module(candidate) else target)
    return found - {name}


def _is_module(name: str) -> bool:
    path = REPO / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1].removesuffix(".py") if len(parts) > 1 else "cambatch"
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module}: its package {top!r} is in no layer of LAYERS (add it where it belongs)")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{module} -> {target}"
        for module, targets in graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_checks_see_what_they_check():
    """The graph holds known edges, and the cycle finder finds a planted cycle: neither test can pass empty."""
    edges = graph()
    assert "cambatch.runner.job" in edges["cambatch.runner.pipeline"]
    assert "cambatch.methods.hooks" in edges["cambatch.methods.layers"]
    assert "cambatch.runner.pipeline" in edges["cambatch.cli"]  # a function-level import counts too
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("cambatch.data.decode") < layer_of("cambatch.render.overlay")


def test_every_package_is_drawn_in_the_architecture_page_in_layer_order():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawn = [names for names in LAYERS[1:-1]]  # the foundation and the entry points are not stages
    positions = [min(_drawn_at(text, name) for name in names) for names in drawn]
    assert positions == sorted(positions)


def _drawn_at(text: str, name: str) -> int:
    """Where the page first names package `name` (`data/`) or module (`config.py`)."""
    spots = [text.find(spelling) for spelling in (f"{name}/", f"{name}.py")]
    assert max(spots) >= 0, f"docs/architecture.md never names {name}"
    return min(spot for spot in spots if spot >= 0)
