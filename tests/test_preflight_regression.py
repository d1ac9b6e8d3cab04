"""pytest-notebook regression of the preflight chapter against a recorded executed copy.

The reference (tests/reference/00-preflight.ipynb, re-recorded with
`make regen-reference`) is executed again and its outputs compared, with the
volatile parts (numbers such as versions, sizes and ports; HTML twins of the
text tables; timings) normalised away. What remains must match: every table's
rows and columns, every status word, the verdict sentence.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from pytest_notebook.nb_regression import NBRegressionError, NBRegressionFixture

from .conftest import ROOT

REFERENCE = Path(__file__).parent / "reference" / "00-preflight.ipynb"
SOURCE = ROOT / "notebooks" / "00-preflight.ipynb"

REGRESSION = NBRegressionFixture(
    exec_timeout=300,
    exec_cwd=str(ROOT),
    diff_ignore=(
        "/metadata",
        "/cells/*/metadata",
        "/cells/*/execution_count",
        "/cells/*/outputs/*/execution_count",
        "/cells/*/outputs/*/data/text/html",
        "/cells/*/outputs/*/traceback",
    ),
    diff_replace=(
        # a port held by this profile's own running layer is as good as a free one (the book reuses it)
        ("/cells/*/outputs", r"ours \(reused\)", "free"),
        ("/cells/*/outputs", r"\d+(?:\.\d+)*", "N"),
        ("/cells/*/outputs", r"[ \t]+", " "),
    ),
    diff_use_color=False,
)


def _code(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


def _prepared_reference(tmp_path: Path, tamper: bool = False) -> Path:
    nb = nbformat.read(REFERENCE, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = "\n".join(
                f'run_dir = "{tmp_path}"' if line.startswith("run_dir =") else line for line in cell.source.splitlines()
            )
    if tamper:
        feature_cell = next(c for c in nb.cells
                            if c.cell_type == "code" and c.source.strip() == "run.profile.features.table()")
        text = feature_cell.outputs[0]["data"]["text/plain"]
        feature_cell.outputs[0]["data"]["text/plain"] = text.replace("required by experience", "required by nothing")
    path = tmp_path / "reference.ipynb"
    nbformat.write(nb, path)
    return path


def test_the_reference_is_a_run_of_the_current_preflight_notebook():
    assert _code(nbformat.read(REFERENCE, as_version=4)) == _code(nbformat.read(SOURCE, as_version=4)), (
        "notebooks/00-preflight.ipynb changed since the reference was recorded: run `make regen-reference`"
    )


def test_preflight_outputs_match_the_reference_with_volatile_fields_ignored(tmp_path):
    result = REGRESSION.check(str(_prepared_reference(tmp_path)))
    assert result.diff_filtered == []


def test_a_tampered_reference_output_fails_the_regression(tmp_path):
    with pytest.raises(NBRegressionError, match="required by"):
        REGRESSION.check(str(_prepared_reference(tmp_path, tamper=True)))
