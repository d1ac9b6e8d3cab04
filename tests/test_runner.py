"""The runner: chapters run in toc order; a failing or hanging chapter stops the run and is named."""

from __future__ import annotations

import json

import nbformat

from .conftest import make_book, run_cli


def test_a_raising_notebook_fails_the_run_and_names_chapter_cell_and_error(tmp_path):
    root = make_book(tmp_path / "book", {
        "00-first": ["x = 1"],
        "01-broken": ["y = 2", "raise ValueError('the widget is misaligned')"],
        "02-after": ["z = 3"],
    })
    result = run_cli("run", "--profile", "local", "--no-site", cwd=root)
    assert result.returncode == 1
    assert "chapter 'broken' failed at cell 5" in result.stderr
    assert "ValueError: the widget is misaligned" in result.stderr
    assert "raise ValueError" in result.stderr  # the failing cell's first line
    kept = root / "_build" / "runs" / "local" / "notebooks" / "01-broken.ipynb"
    assert f"kept at {kept}" in result.stderr
    nb = nbformat.read(kept, as_version=4)
    assert any(o.get("ename") == "ValueError" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    summary = json.loads((root / "_build" / "runs" / "local" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert [(c["name"], c["status"]) for c in summary["chapters"]] == [("first", "ok"), ("broken", "failed"),
                                                                       ("after", "not run")]
    assert summary["chapters"][1]["cell"] == 5
    assert "Traceback" not in result.stderr


def test_a_cell_timeout_fails_the_run_even_without_an_error_banner(tmp_path):
    root = make_book(tmp_path / "book", {"00-slow": ["import time", "time.sleep(60)"]})
    result = run_cli("run", "--profile", "local", "--no-site", "--cell-timeout", "3", cwd=root, timeout=120)
    assert result.returncode == 1
    assert "chapter 'slow' failed at cell 5 ('time.sleep(60)')" in result.stderr
    assert "timed out after 3 s" in result.stderr
    summary = json.loads((root / "_build" / "runs" / "local" / "summary.json").read_text())
    assert summary["chapters"][0]["status"] == "failed"
    assert (root / "_build" / "runs" / "local" / "notebooks" / "00-slow.ipynb").is_file()


def test_progress_names_each_chapter_and_code_cell_and_parameters_are_injected(tmp_path):
    root = make_book(tmp_path / "book", {
        "00-one": ["print('profile', profile_name, overrides)"],
        "01-two": ["print('two')"],
    })
    result = run_cli("run", "--profile", "local", "--no-site", "-p", "local.ports.serving=8123", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "[1/2] one (notebooks/00-one.ipynb)" in result.stderr
    assert "[2/2] two (notebooks/01-two.ipynb)" in result.stderr
    assert "cell 4/4: print('profile', profile_name, overrides)" in result.stderr
    assert "      | profile local {'local.ports.serving': 8123}" in result.stderr  # cell prints stream live
    nb = nbformat.read(root / "_build" / "runs" / "local" / "notebooks" / "00-one.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "profile local {'local.ports.serving': 8123}" in printed
    assert nb.cells[1].source.startswith(":::{admonition} Run record")
    assert "with profile `local`" in nb.cells[1].source


def test_a_chapter_whose_feature_is_off_is_skipped(tmp_path):
    root = make_book(tmp_path / "book", {"00-preflight-ish": ["pass"], "03-routing": ["raise SystemExit(3)"]})
    result = run_cli("run", "--profile", "local", "--no-site", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stderr and "feature 'routing' is off" in result.stderr
    summary = json.loads((root / "_build" / "runs" / "local" / "summary.json").read_text())
    assert [c["status"] for c in summary["chapters"]] == ["ok", "skipped"]


def test_chapters_option_runs_only_those_and_keeps_earlier_results(tmp_path):
    root = make_book(tmp_path / "book", {"00-a": ["pass"], "01-b": ["pass"]})
    assert run_cli("run", "--profile", "local", "--no-site", cwd=root).returncode == 0
    result = run_cli("run", "--profile", "local", "--no-site", "--chapters", "b", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "[1/1] b" in result.stderr and "] a (" not in result.stderr
    summary = json.loads((root / "_build" / "runs" / "local" / "summary.json").read_text())
    assert {c["name"]: c["status"] for c in summary["chapters"]} == {"a": "ok", "b": "ok"}


def test_an_unknown_chapter_is_refused_before_anything_runs(tmp_path):
    root = make_book(tmp_path / "book", {"00-a": ["pass"]})
    result = run_cli("run", "--profile", "local", "--no-site", "--chapters", "serving", cwd=root)
    assert result.returncode == 1
    assert "unknown chapter(s): serving; the book has: a" in result.stderr
    assert not (root / "_build" / "runs" / "local" / "summary.json").exists()


def test_a_bad_override_is_refused_before_anything_runs(tmp_path):
    root = make_book(tmp_path / "book", {"00-a": ["pass"]})
    result = run_cli("run", "--profile", "local", "-p", "features.routng=true", cwd=root)
    assert result.returncode == 1
    assert "command line (-p features.routng=True): features.routng: unknown key" in result.stderr
    assert not (root / "_build").exists()


def test_book_without_a_run_says_to_run_first(tmp_path):
    root = make_book(tmp_path / "book", {"00-a": ["pass"]})
    result = run_cli("book", "--profile", "local", cwd=root)
    assert result.returncode == 1
    assert "run `inferbook run --profile local` first" in result.stderr
