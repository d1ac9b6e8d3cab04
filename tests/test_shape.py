"""The code's shape: no import cycles, the core below the layers, a tree clean under ruff.

The import graph is read from the source (every ``import`` and ``from ... import``, also those inside
functions and under ``TYPE_CHECKING``), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "src" / "inferbook"
#: Above the layers: they reach the layers through the registry (``inferbook.layers``) only, never by name.
APP = {"cli", "stack", "preflight", "chapter", "survey"}
REGISTRY = "layers"


def layer_of(module: str) -> str | None:
    """The layer package a module belongs to (``layers.serving.local`` -> ``serving``), else None."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == REGISTRY else None


def core_modules(graph: dict[str, set[str]]) -> set[str]:
    """Target-neutral code every layer builds on: everything that is not a layer, the registry or above them."""
    return {m for m in graph if layer_of(m) is None and m not in APP | {REGISTRY}}


def registry_order() -> list[str]:
    """The layer packages in the registry's order, read from ``layers/__init__.py``'s ``LAYERS`` tuple."""
    tree = ast.parse((PACKAGE / "layers" / "__init__.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "LAYERS":
            return [element.value.id for element in node.value.elts]  # type: ignore[union-attr]
    raise AssertionError("layers/__init__.py has no LAYERS tuple")


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "inferbook"


def import_graph(package_dir: Path = PACKAGE) -> dict[str, set[str]]:
    """inferbook module -> the inferbook modules it imports (names relative to the package)."""
    modules = {_module_name(p, package_dir): p for p in package_dir.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package and package != "inferbook" else []
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    target = ".".join(base + ([node.module] if node.module else []))
                elif (node.module or "").startswith("inferbook"):
                    target = (node.module or "").removeprefix("inferbook").lstrip(".")
                else:
                    continue
                submodules = [f"{target}.{a.name}".lstrip(".") for a in node.names]
                # `from . import manifests` imports a submodule; `from .steps import connect` names in a module
                names_only = [n for n in submodules if n not in modules]
                candidates = submodules + ([target] if names_only else [])
            elif isinstance(node, ast.Import):
                candidates = [a.name.removeprefix("inferbook").lstrip(".") for a in node.names
                              if a.name.startswith("inferbook")]
            else:
                continue
            graph[name] |= {c or "inferbook" for c in candidates if (c or "inferbook") in modules and c != name}
    return graph


def test_the_import_graph_reads_lazy_imports() -> None:
    """A control: the reader sees a function-level import (a layer reaches its cluster code lazily)."""
    graph = import_graph()
    assert "layers.serving.cluster" in graph["layers.serving.steps"]  # inside provision(), only for a cluster
    assert "layers" in graph["preflight"] and "process" in graph["preflight"]


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (its modules in order), or [] when there is none."""
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        return list(error.args[1])
    return []


def test_a_cycle_through_a_lazy_import_is_found(tmp_path: Path) -> None:
    """A control: two modules that import each other, one of them inside a function."""
    package = tmp_path / "inferbook"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("def thing():\n    from inferbook.a import thing as again\n    return again\n")
    assert set(cycle(import_graph(package))) == {"a", "b"}


def test_there_is_no_import_cycle() -> None:
    found = cycle(import_graph())
    assert found == [], f"import cycle: {' -> '.join(found)}"


def test_the_core_imports_no_layer_and_nothing_above_it() -> None:
    graph = import_graph()
    core = core_modules(graph)
    assert {"manifests", "kube", "process", "endpoints", "layer", "profile", "validate"} <= core
    offending = {m: sorted(t for t in graph[m] if layer_of(t) or t in APP | {REGISTRY}) for m in core}
    assert {m: t for m, t in offending.items() if t} == {}


def test_code_above_the_layers_reaches_them_only_through_the_registry() -> None:
    graph = import_graph()
    offending = {m: sorted(t for t in graph[m] if layer_of(t)) for m in APP if m in graph}
    assert {m: t for m, t in offending.items() if t} == {}
    assert APP - {"chapter"} <= set(graph), "update APP after a rename"


def test_a_layer_builds_only_on_the_core_and_the_layers_before_it() -> None:
    """No module outside a layer's package imports it, but the registry and the layers stacked on it."""
    graph = import_graph()
    order = registry_order()
    assert order == sorted({layer_of(m) for m in graph if layer_of(m)}, key=order.index), "a package not registered"
    offending = {}
    for module, targets in graph.items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if theirs is None or theirs == mine or module == REGISTRY:
                if mine is not None and (target in APP or target == REGISTRY):
                    offending[module] = target  # a layer never reaches up to the registry or the app
                continue
            if mine is None or order.index(theirs) > order.index(mine):
                offending[module] = target
    assert offending == {}


def test_each_layer_has_one_name_in_every_place() -> None:
    """The registry's layer ``x-y``: package ``layers/x_y``, chapter ``notebooks/NN-x-y.ipynb`` (or the chapter its
    declaration names, which shows it), manifests if any."""
    from inferbook.layers import LAYERS

    chapters = {p.stem.split("-", 1)[1]: p for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")}
    for layer in LAYERS:
        assert (PACKAGE / "layers" / layer.name.replace("-", "_") / "__init__.py").is_file(), layer.name
        assert (layer.chapter or layer.name) in chapters, f"no notebooks/NN-{layer.chapter or layer.name}.ipynb"
        assert (ROOT / "manifests" / layer.name).is_dir() == (layer.manifests is not None), layer.name
    numbers = [int(chapters[layer.chapter or layer.name].name[:2]) for layer in LAYERS]
    assert numbers == sorted(numbers), "chapters are numbered in the registry's order"


def test_the_tree_is_clean_under_ruff() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "--no-cache", "src", "tests"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_no_layer_asks_which_kind_of_target_it_runs_on() -> None:
    """A layer asks its target (``targets.of(...)``, ``part``, ``local_processes``), never ``profile.target_kind``:
    a new kind of target is then one class in ``inferbook.targets``, with no layer to edit."""
    offending = []
    for path in sorted((PACKAGE / "layers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named = (isinstance(node, ast.Attribute) and node.attr == "target_kind") or \
                    (isinstance(node, ast.Constant) and node.value == "target_kind")
            if named:
                offending.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offending == [], f"branches on target_kind: {offending}"
