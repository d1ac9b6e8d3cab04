"""Decision chapters: one per ADR, each with the same skeleton, each saying which notebook proves it."""

from __future__ import annotations

import re

import pytest

from inferbook.toc import toc_files

from .conftest import ROOT

DECISIONS = sorted((ROOT / "book" / "decisions").glob("*.md"))
ADRS = ["0000", "0001", "0002", "0003", "0005", "0006", "0011", "0013", "0014", "0015", "0016",
        "0025", "0026", "0027", "0028", "0029", "0031", "0032", "0033", "0034",
        "0035",  # the project's own: the gateway's cost, measured (issue #12)
        "0036"]  # engines and precision on CPUs, from the machine (issue #20)
SECTIONS = ["## Context", "## Decision", "## Alternatives considered", "## Consequences", "## Validate", "## Proven by"]


def test_there_is_one_chapter_per_decision_of_the_reference_stack():
    assert [p.name[:4] for p in DECISIONS] == ADRS


def test_every_decision_chapter_is_in_the_toc(layout):
    entries = set(toc_files(layout))
    for path in DECISIONS:
        assert f"book/decisions/{path.stem}" in entries, f"{path.name} is not in _toc.yml"


@pytest.mark.parametrize("path", DECISIONS, ids=[p.stem for p in DECISIONS])
def test_decision_chapter_follows_the_skeleton(path):
    text = path.read_text()
    assert text.startswith(f"# ADR-{path.name[:4]}: ")
    positions = [text.find(f"\n{s}\n") for s in SECTIONS]
    assert all(p > 0 for p in positions), f"{path.name} lacks one of {SECTIONS}"
    assert positions == sorted(positions), f"{path.name}: sections out of order"
    assert re.search(r"^Validate: ", text, re.M), f"{path.name} has no 'Validate:' line"


@pytest.mark.parametrize("path", DECISIONS, ids=[p.stem for p in DECISIONS])
def test_proven_by_links_only_notebooks_that_exist(path):
    proven = path.read_text().split("\n## Proven by\n", 1)[1]
    links = re.findall(r"\{doc\}`/?(notebooks/[^`]+)`", proven)
    for link in links:
        assert (ROOT / f"{link}.ipynb").is_file(), f"{path.name} links {link}, which does not exist"
    if not links:
        assert "No notebook proves this yet" in proven, f"{path.name} must say no notebook proves it yet"
