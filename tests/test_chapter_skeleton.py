"""Every chapter notebook has one skeleton, and the chapter helper keeps its promises.

The skeleton (close to Project Pythia's cookbooks): a title, Overview (what the chapter provisions and a
link to the decision it proves), Prerequisites (earlier chapters, features, time on a profile),
Parameters (the tagged cell), Imports (the one cell that imports), the steps, Verification (a
``run.verify(...)`` table), Results, Summary and What's next. Chapters are numbered in steps of ten in the
design's layer order, and prose links only chapters that exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from inferbook import chapter
from inferbook.errors import InferbookError

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
HEADINGS = ["## Overview", "## Prerequisites", "## Parameters", "## Imports", "## Verification", "## Results",
            "## Summary", "### What's next"]
#: The design's layer order (architecture.md), numbered in steps of ten so new layers slot in.
NUMBERS = {"preflight": 0, "platform": 10, "serving": 20, "routing": 30, "llm-gateway": 40, "experience": 50,
           "observability": 60, "autoscaling": 70, "security": 80, "resilience": 85,
           "benchmarks": 90, "economics": 92, "capacity": 94, "gitops": 96, "teardown": 99}
#: A code cell stays a few lines calling inferbook; the exercise cell that lists its calls is the longest.
MAX_CODE_LINES = 12


def _cells(path: Path) -> list[nbformat.NotebookNode]:
    return nbformat.read(path, as_version=4).cells


def _heading_positions(cells: list[nbformat.NotebookNode]) -> list[int]:
    found = []
    for heading in HEADINGS:
        where = [i for i, c in enumerate(cells) if c.cell_type == "markdown"
                 and re.search(rf"^{re.escape(heading)}\s*$", c.source, re.M)]
        found.append(where[0] if where else -1)
    return found


def _imports(source: str) -> list[str]:
    return [ast.unparse(node) for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_chapter_follows_the_skeleton_in_order(path: Path) -> None:
    cells = _cells(path)
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), f"{path.name}: no title"
    positions = _heading_positions(cells)
    missing = [h for h, p in zip(HEADINGS, positions, strict=True) if p < 0]
    assert not missing, f"{path.name} lacks {missing}"
    order = dict(zip(HEADINGS, positions, strict=True))
    assert positions == sorted(positions), f"{path.name}: sections out of order: {order}"
    parameters, imports, verification = positions[2], positions[3], positions[4]
    assert "parameters" in cells[parameters + 1].metadata.get("tags", []), "the Parameters heading precedes them"
    assert cells[imports + 1].cell_type == "code" and _imports(cells[imports + 1].source), "an Imports cell"
    assert "run.verify(" in cells[verification + 1].source, f"{path.name}: Verification is a run.verify(...) table"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_overview_links_a_decision_and_the_prerequisites_give_chapters_features_and_time(path: Path) -> None:
    text = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    overview = text.split("## Overview", 1)[1].split("## Prerequisites", 1)[0]
    decisions = re.findall(r"\{doc\}`/book/decisions/([^`]+)`", overview)
    assert decisions, f"{path.name}: the overview names no decision"
    for name in decisions:
        assert (ROOT / "book" / "decisions" / f"{name}.md").is_file(), f"{path.name} links decision {name}"
    prerequisites = text.split("## Prerequisites", 1)[1].split("## Parameters", 1)[0]
    assert "|" in prerequisites and re.search(r"time on `\w", prerequisites), f"{path.name}: no time on a profile"
    assert "chapter" in prerequisites or "{doc}`" in prerequisites, f"{path.name}: no earlier chapter named"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_only_the_imports_cell_imports_and_code_cells_stay_short(path: Path) -> None:
    cells = _cells(path)
    imports = _heading_positions(cells)[3] + 1
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        if i != imports:
            assert not _imports(cell.source), f"{path.name} cell {i} imports: {_imports(cell.source)}"
        lines = [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert len(lines) <= MAX_CODE_LINES, f"{path.name} cell {i} has {len(lines)} lines; move logic to inferbook"


def test_chapters_are_numbered_in_steps_of_ten_in_the_design_order() -> None:
    for path in NOTEBOOKS:
        number, name = path.stem.split("-", 1)
        assert name in NUMBERS, f"{path.name}: not a chapter of the design ({', '.join(NUMBERS)})"
        assert int(number) == NUMBERS[name], f"{path.name} should be {NUMBERS[name]:02d}-{name}"


def test_prose_links_only_chapters_that_exist() -> None:
    existing = {p.stem for p in NOTEBOOKS}
    names = {p.stem.split("-", 1)[1] for p in NOTEBOOKS}
    pages = [*NOTEBOOKS, *sorted((ROOT / "book").rglob("*.md")), ROOT / "README.md"]
    for page in pages:
        text = (page.read_text(encoding="utf-8") if page.suffix != ".ipynb"
                else "\n".join(c.source for c in _cells(page) if c.cell_type == "markdown"))
        for link in re.findall(r"\{doc\}`/?(?:notebooks/)?(\d\d-[a-z-]+)`", text):
            assert link in existing, f"{page.name} links chapter {link}, which does not exist"
        for name in re.findall(r"\bthe ([a-z-]+) chapter\b", text):
            if name in NUMBERS:
                assert name in names, f"{page.name} names the {name} chapter, which does not exist yet"


# --------------------------------------------------------------------------- the helper itself


def test_verify_keeps_the_table_and_names_each_failed_check(tmp_path: Path) -> None:
    run = chapter.open("serving", "local", {}, tmp_path / "run")
    rows = [{"check": "model is served", "expected": "m", "observed": "m", "pass": True},
            {"check": "chat answers", "expected": "text", "observed": "0 tokens", "pass": False}]
    with pytest.raises(chapter.VerificationFailed, match=r"1 of 2 checks of chapter serving failed: chat answers: "
                                                         r"expected text, observed 0 tokens"):
        run.verify(rows)
    saved = (tmp_path / "run" / "artifacts" / "serving-checks.json").read_text()
    assert '"check": "chat answers"' in saved and '"pass": false' in saved


def test_verify_refuses_a_table_without_the_contract_columns(tmp_path: Path) -> None:
    run = chapter.open("serving", "local", {}, tmp_path / "run")
    with pytest.raises(InferbookError, match="lacks observed"):
        run.verify(pd.DataFrame([{"check": "x", "expected": "y", "pass": True}]).set_index("check"))


def test_open_applies_the_overrides_and_knows_the_chapters_layer(tmp_path: Path) -> None:
    run = chapter.open("llm-gateway", "local", {"serving.max_model_len": 1024}, tmp_path / "run")
    assert run.profile.data["serving"]["max_model_len"] == 1024
    assert run.layer is not None and run.layer.name == "llm-gateway"
    assert chapter.open("preflight", "local", {}, tmp_path / "run").layer is None
    with pytest.raises(InferbookError, match="use a .json or .yaml name"):
        run.save("table.csv", [])
