"""The package's import graph, read from the source with `ast` (nothing is imported): no module may reach itself.

Layers import downward (the vocabulary at the bottom, the CLI at the top; see `cadbench.vocabulary`), so an import
cycle is a layer reaching up, whether it is written at the top of a module, inside a function (a deferred import)
or under `if TYPE_CHECKING:`. Each counts here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package it installs as (setup.py maps methods/ and datasets/ under cadbench).
PACKAGES = {"cadbench": "cadbench", "methods": "cadbench.methods", "datasets": "cadbench.datasets"}


def module_files() -> dict[str, Path]:
    """Every module of the installed package, by its dotted name."""
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that `name` imports, anywhere in its source. `from a import b` counts `a.b` when
    that is a module, else `a`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    found.update(f"{package}.{module}" for module in lazy_exported_modules(path))
    return {module for module in found if module in known and module != name}


def lazy_exported_modules(path: Path) -> set[str]:
    """The submodules a package's `__init__` re-exports lazily (`_EXPORTS = {"name": "module", ...}`): imports too."""
    if path.name != "__init__.py":
        return set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "_EXPORTS" for target in node.targets)
                and isinstance(node.value, ast.Dict)):
            return {value.value for value in node.value.values if isinstance(value, ast.Constant)}
    return set()


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as the path that closes it (a -> b -> a), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_of_cadbench_imports_itself_through_others():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def floor_of(module: str) -> str:
    """The top-level part of cadbench a module belongs to: 'cadbench.estimator.replay' -> 'cadbench.estimator'."""
    return ".".join(module.split(".")[:2])


def test_no_two_parts_of_cadbench_import_each_other_even_through_others():
    floors: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        floors.setdefault(floor_of(module), set()).update(
            floor_of(target) for target in targets if floor_of(target) != floor_of(module))
    cycle = find_cycle(floors)
    assert cycle is None, "packages importing each other: " + " -> ".join(cycle)


# The floors, bottom up (docs: shared design, "Layers, bottom up"); a module may import its own floor or lower ones.
LAYERS = (
    ("cadbench.errors", "cadbench.version", "cadbench._lazy", "cadbench.cards", "cadbench.files", "cadbench.vocabulary"),
    ("cadbench.backbones", "cadbench.families", "cadbench.methods", "cadbench.registry", "cadbench.params",
     "cadbench.datasets"),
    ("cadbench.training",),
    ("cadbench.estimator", "cadbench.measure"),
    ("cadbench.harness",),
    ("cadbench.report",),
    ("cadbench.api", "cadbench.validation"),
    ("cadbench.commands",),
    ("cadbench.cli", "cadbench.__main__", "cadbench"),
)


def test_every_import_goes_down_the_layers_and_every_part_has_a_layer():
    level = {part: index for index, parts in enumerate(LAYERS) for part in parts}
    graph = import_graph()
    unplaced = sorted({floor_of(module) for module in graph} - set(level))
    assert not unplaced, f"parts of cadbench with no layer in LAYERS: {', '.join(unplaced)}"
    upward = [f"{module} -> {target}" for module, targets in sorted(graph.items()) for target in sorted(targets)
              if level[floor_of(target)] > level[floor_of(module)]]
    assert not upward, "imports going up the layers: " + "; ".join(upward)


def test_the_vocabulary_imports_nothing_above_it():
    above = {target for module, targets in import_graph().items() if floor_of(module) == "cadbench.vocabulary"
             for target in targets if floor_of(target) not in ("cadbench.vocabulary", "cadbench.errors")}
    assert not above, f"the vocabulary imports {', '.join(sorted(above))}"


def test_the_cycle_finder_names_a_cycle_and_passes_a_layered_graph():
    layered = {"cli": {"api"}, "api": {"harness", "vocabulary"}, "harness": {"vocabulary"}, "vocabulary": set()}
    assert find_cycle(layered) is None
    assert find_cycle({**layered, "vocabulary": {"api"}}) == ["api", "harness", "vocabulary", "api"]


def test_the_graph_sees_deferred_and_type_checking_imports(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cadbench.a import A\n"
                      "def f():\n    from cadbench import b\n    from . import c\n")
    known = {"cadbench.a", "cadbench.b", "cadbench.pkg.c", "cadbench.pkg.module"}
    assert imported_modules("cadbench.pkg.module", source, known) == {"cadbench.a", "cadbench.b", "cadbench.pkg.c"}


def test_every_lazy_export_of_a_subpackage_is_where_it_says():
    import importlib

    for name, path in module_files().items():
        if lazy_exported_modules(path):
            package = importlib.import_module(name)
            for export in package.__all__:
                assert getattr(package, export) is not None, f"{name}.{export}"
