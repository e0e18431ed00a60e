"""The package's layers (DESIGN.md, "Layers"): every import of a ``selfsup`` module points to its
own layer or one below, function-level imports included, and the module-level imports form no
circle. Read from the source with ``ast``; nothing is imported."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "platform"
LAYERS = {
    "errors": 1, "sections": 1, "storage": 1, "console": 1, "gather": 1,
    "metrics": 2, "models": 2, "data": 2,
    "modalities": 3,
    "methods": 4,
    "config": 5,
    "tracking": 6,
    "train": 7,
    "tune": 8, "report": 8,
    "cli": 9,
}
"""Each top-level module or package of ``selfsup`` and its layer, from the bottom (``modalities``:
the layer the modality registry takes when it lands)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (ROOT / "selfsup").rglob("*.py")}


def layer(module: str) -> int:
    """The layer of ``selfsup.X...`` (0 for the package itself, which imports nothing)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def imported(node: ast.AST) -> list[str]:
    """The ``selfsup`` modules an import statement names (``from selfsup.a import b`` names
    ``selfsup.a.b`` when that is a module, else ``selfsup.a``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names]
    else:
        return []
    return [n for n in names if n == "selfsup" or n.startswith("selfsup.")]


def test_every_top_level_module_has_a_layer():
    tops = {name.split(".")[1] for name in MODULES if "." in name}
    assert tops <= set(LAYERS), f"give each a layer here and in DESIGN.md: {sorted(tops - set(LAYERS))}"


def test_every_import_points_down():
    upward = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            for target in imported(node):
                if layer(target) > layer(name):
                    upward.append(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)}), line {node.lineno}")
    assert not upward, "\n".join(upward)


def test_module_level_imports_form_no_circle():
    graph = {name: {t for node in ast.parse(path.read_text()).body for t in imported(node) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, stack + [node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
