"""dynamo's import graph, read from the source with ast (every import, the lazy ones in functions and
those under TYPE_CHECKING included): each folder or module stands on a floor and imports only from
floors below it, and no module imports itself through others."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "dynamo"
# Bottom first. A unit is a folder of dynamo/ or a module directly in it.
FLOORS: tuple[frozenset[str], ...] = tuple(frozenset(floor) for floor in (
    {"dynamo", "frozen", "tools", "cuda_builds", "pipcheck", "wheel_records", "cache_files"},
    {"nvidia_require", "containers"},  # the container engines stand on nothing else of ours
    {"matrix"},
    {"images", "wheel"},
    {"lock", "pin", "render"},
    {"doctor", "attest"},
    {"imagebuild", "runtime"},
    {"frontend", "vllm", "sglang", "trtllm", "llama_cpp", "mocker"},
    {"cli", "run_image"},
))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path) -> set[str]:
    """The modules of dynamo that a module imports (`from package import module` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def unit(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def floor(module: str) -> int:
    return next(index for index, units in enumerate(FLOORS) if unit(module) in units)


def test_every_unit_has_a_floor():
    placed = set().union(*FLOORS)
    assert {unit(module) for module in MODULES} == placed, "place each new folder or module of dynamo/ in FLOORS"


def test_no_import_points_up_or_sideways():
    wrong = [f"{module} (floor {floor(module)}) imports {target} (floor {floor(target)})"
             for module, targets in GRAPH.items() for target in sorted(targets)
             if unit(module) != unit(target) and floor(target) >= floor(module)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    """Depth-first search for a back edge; reports the cycle it closes."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(GRAPH):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, " -> ".join(cycle)


def test_the_graph_is_read_from_the_source():
    """The reader sees lazy imports inside functions: cli imports the image builder only when it builds."""
    assert "dynamo.imagebuild.image" in GRAPH["dynamo.cli"]
    assert "dynamo.matrix.model" in GRAPH["dynamo.matrix.query"]
