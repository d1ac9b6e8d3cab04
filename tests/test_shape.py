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
#: Target-neutral code every layer builds on; it must not know any layer (one name per layer elsewhere).
CORE = {"errors", "paths", "profile", "features", "toc", "crds", "validate", "manifests", "kube", "process",
        "envs", "secrets", "jsonapi", "runner", "site"}
#: The modules of the layers so far (serving, llm-gateway, experience) and their local and cluster targets.
LAYER_MODULES = {"serving", "kube_serving", "models", "smoke", "gateway", "kube_gateway", "gateway_admin",
                 "postgres", "prisma_offline", "enforcement", "overhead", "experience", "agent_loop", "fim",
                 "ide_config", "aider", "endpoints", "local", "layer"}


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
                candidates = [target] + [f"{target}.{a.name}".lstrip(".") for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name.removeprefix("inferbook").lstrip(".") for a in node.names
                              if a.name.startswith("inferbook")]
            else:
                continue
            graph[name] |= {c or "inferbook" for c in candidates if (c or "inferbook") in modules and c != name}
    return graph


def test_the_import_graph_reads_lazy_imports() -> None:
    """A control: the reader sees a function-level import (preflight asks the layers lazily)."""
    graph = import_graph()
    assert "endpoints" in graph["preflight"] and "process" in graph["preflight"]
    assert "kube_serving" in graph["serving"]  # imported inside provision(), only for a cluster


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


def test_the_core_imports_no_layer() -> None:
    graph = import_graph()
    assert CORE <= set(graph) and LAYER_MODULES <= set(graph), "update CORE/LAYER_MODULES after a rename"
    offending = {module: sorted(graph[module] & LAYER_MODULES) for module in CORE if graph[module] & LAYER_MODULES}
    assert offending == {}


def test_the_tree_is_clean_under_ruff() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "--no-cache", "src", "tests"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
