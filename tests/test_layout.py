"""The package shape: the README tree names every package folder, no module is over 400 lines,
no two modules import each other (directly or through others)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tree_matches_the_package_folders() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^continual/(\w+)/", readme, flags=re.MULTILINE))
    folders = {p.name for p in (ROOT / "continual").iterdir() if (p / "__init__.py").is_file()}
    assert listed == folders


def test_no_module_is_over_400_lines() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in (ROOT / "continual").rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def _imports(path: Path) -> set[str]:
    """continual modules a module imports, at module level or inside functions (imports under
    ``if TYPE_CHECKING:`` never run, so they are left out)."""
    import ast

    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for n in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("continual"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("continual"))
    return found


def test_no_import_cycle_between_modules() -> None:
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / "continual").rglob("*.py")
    }
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
        if path.name != "__init__.py"  # a package's re-exports are not a dependency cycle
    }
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph.get(name, ())):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*trail, name, dep])
            if dep not in state:
                visit(dep, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
