"""Source notebooks: committed without outputs, a parameters cell first, all listed in the toc."""

from __future__ import annotations

import subprocess

import nbformat
import pytest

from inferbook.toc import chapters, toc_files

from .conftest import ROOT

TRACKED = [ROOT / p for p in subprocess.run(["git", "ls-files", "notebooks/*.ipynb"], cwd=ROOT,
                                            capture_output=True, text=True).stdout.split()]
ON_DISK = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_every_notebook_on_disk_is_committed_and_in_the_toc(layout):
    assert ON_DISK, "the book has no notebook"
    in_toc = {str(c.notebook) for c in chapters(layout)}
    assert {str(p.relative_to(ROOT)) for p in ON_DISK} == in_toc
    if TRACKED:  # in a git checkout
        assert {str(p.relative_to(ROOT)) for p in TRACKED} == in_toc


@pytest.mark.parametrize("path", ON_DISK, ids=[p.stem for p in ON_DISK])
def test_source_notebook_carries_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"
    assert "papermill" not in nb.metadata, f"{path.name} is an executed copy; commit the source instead"


@pytest.mark.parametrize("path", ON_DISK, ids=[p.stem for p in ON_DISK])
def test_first_code_cell_is_the_parameters_cell_with_the_runner_names(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), (
        f"{path.name}: first code cell must be tagged parameters"
    )
    for name in ("profile_name", "overrides", "run_dir"):
        assert f"{name} =" in code[0].source, f"{path.name}: parameters cell lacks {name}"


def test_every_page_in_the_toc_exists(layout):
    for entry in toc_files(layout):
        candidates = [ROOT / f"{entry}{ext}" for ext in ("", ".md", ".ipynb")]
        assert any(p.is_file() for p in candidates), f"_toc.yml lists {entry}, which does not exist"
