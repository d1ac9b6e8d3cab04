"""The runner: chapters run in toc order; a failing or hanging chapter, or one that wrote a secret, stops the run
and is named."""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
from pathlib import Path

import nbformat
import pandas as pd

from inferbook import leaks, runner
from inferbook.layers.serving import models

from .conftest import ROOT, make_book, run_cli


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
    result = run_cli("run", "--profile", "local", "-p", "features.routing=false", "--no-site", cwd=root)
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


def test_a_secret_a_chapter_writes_stops_the_run_after_that_chapter_naming_file_line_and_kind(tmp_path):
    root = make_book(tmp_path / "book", {
        "00-first": ["x = 1"],
        "01-leaky": ["import pathlib, secrets\nkey = 'sk-' + secrets.token_urlsafe(16)\n"
                     "pathlib.Path(run_dir, 'artifacts', 'calls.json').write_text('{\"key\": \"' + key + '\"}')",
                     "print('the ide key is', key)"],
        "02-after": ["import pathlib\npathlib.Path(run_dir, 'artifacts', 'after-ran').touch()"],
    })
    result = run_cli("run", "--profile", "local", "--no-site", cwd=root)
    assert result.returncode == 1
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert error.startswith("error: what chapter 'leaky' wrote in the run of profile local (under ")
    assert "holds 2 secret(s)" in error
    assert "runs/local/artifacts/calls.json line 1: sk- key [sk-…, 25 chars]" in error
    assert "runs/local/notebooks/01-leaky.ipynb cell 5 output 1 line 1: sk- key [sk-…, 25 chars]" in error
    assert ("(the run stopped here: after not run; after the fix, `inferbook run --profile local --chapters "
            "leaky,after` resumes from it). Fix: show a key by its alias") in error
    run_dir = root / "_build" / "runs" / "local"
    key = json.loads((run_dir / "artifacts" / "calls.json").read_text())["key"]
    assert key not in result.stderr + result.stdout
    assert not (run_dir / "artifacts" / "after-ran").exists()
    assert not (run_dir / "notebooks" / "02-after.ipynb").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["secret_scan"] == "failed after chapter leaky: 2 secret(s) found in what chapter leaky wrote"
    assert [(c["name"], c["status"]) for c in summary["chapters"]] == [("first", "ok"), ("leaky", "ok"),
                                                                       ("after", "not run")]
    assert summary["chapters"][2]["reason"] == "stopped after leaky: 2 secret(s) found in what chapter leaky wrote"


def test_a_chapter_scan_reads_what_the_chapter_wrote_and_the_final_scan_the_rest(tmp_path):
    """A key left in the run folder before the run is no chapter's: every chapter runs, the final scan finds it."""
    root = make_book(tmp_path / "book", {"00-a": ["pass"], "01-b": ["pass"]})
    old = root / "_build" / "runs" / "local" / "logs" / "old.log"
    old.parent.mkdir(parents=True)
    old.write_text(f"key sk-{secrets.token_urlsafe(16)}\n")
    result = run_cli("run", "--profile", "local", "--no-site", cwd=root)
    assert result.returncode == 1
    assert "error: the run of profile local (under " in result.stderr
    assert "holds 1 secret(s), values withheld: runs/local/logs/old.log line 1: sk- key" in result.stderr
    summary = json.loads(old.parent.with_name("summary.json").read_text())
    assert [(c["name"], c["status"]) for c in summary["chapters"]] == [("a", "ok"), ("b", "ok")]
    assert summary["secret_scan"] == "failed: 1 secret(s) found"


def test_what_a_chapter_wrote_is_the_files_it_created_or_changed(tmp_path):
    run_dir = tmp_path / "runs" / "local"
    for name in ("notebooks/00-a.ipynb", "logs/serving.log", "artifacts/kept.json", "artifacts/rewritten.json"):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("{}\n")
    before = runner._snapshot(run_dir)
    (run_dir / "notebooks" / "01-b.ipynb").write_text("{}\n")
    with (run_dir / "logs" / "serving.log").open("a") as log:
        log.write("one more line\n")
    rewritten = run_dir / "artifacts" / "rewritten.json"
    os.utime(rewritten, ns=(rewritten.stat().st_atime_ns, rewritten.stat().st_mtime_ns + 1_000_000))  # same size
    assert runner._written_since(run_dir, before) == [run_dir / "artifacts" / "rewritten.json",
                                                      run_dir / "logs" / "serving.log",
                                                      run_dir / "notebooks" / "01-b.ipynb"]


def realistic_chapter(run_dir: Path, model: Path) -> list[Path]:
    """Write what the serving chapter writes on the local profile, at its size; returns the files.

    An executed notebook of 27 cells (tables as pandas shows them in text and HTML, progress lines, three
    figures, the provenance table), the rendered manifests, the validation and check records, the kernel's log
    and a vLLM log of 2,000 lines.
    """
    rng = random.Random(20)
    table = pd.DataFrame({"check": [f"check {i}" for i in range(20)], "expected": ["ADR-0003 metric names"] * 20,
                          "observed": [f"{rng.random():.3f} s over 120 requests" for _ in range(20)],
                          "pass": [True] * 20}).set_index("check")
    cells: list[tuple[str, list[dict]]] = []
    for i in range(24):
        outputs = [{"output_type": "stream", "name": "stdout",
                    "text": "".join(f"  step {i}.{j}: waiting for http://127.0.0.1:8100/health ({j} s)\n"
                                    for j in range(30))},
                   {"output_type": "execute_result", "execution_count": i, "metadata": {},
                    "data": {"text/plain": repr(table), "text/html": table._repr_html_()}}]
        if i % 8 == 0:
            outputs.append({"output_type": "display_data", "metadata": {}, "data": {
                "image/png": base64.b64encode(rng.randbytes(60_000)).decode(), "text/plain": "<Figure>"}})
        cells.append((f"endpoint.table()  # step {i}", outputs))
    provenance = models.provenance(model)
    cells.append(("serving.provenance(run.profile, endpoint)", [{
        "output_type": "execute_result", "execution_count": 25, "metadata": {},
        "data": {"text/plain": repr(provenance), "text/html": provenance._repr_html_()}}]))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Serving")]
    for source, outputs in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        nb.cells.append(cell)
    files = {
        "notebooks/20-serving.ipynb": nbformat.writes(nb),
        "artifacts/serving.yaml": "\n---\n".join(p.read_text() for p in sorted((ROOT / "manifests" / "serving")
                                                                              .rglob("*.yaml"))),
        "artifacts/serving-validation.json": json.dumps([{"object": f"Deployment/vllm-{i}", "rule": "pinned image",
                                                          "level": "ok"} for i in range(200)], indent=2),
        "artifacts/serving-checks.json": json.dumps(json.loads(table.reset_index().to_json(orient="records")),
                                                    indent=2),
        "logs/serving.kernel.log": "".join(f"[IPKernelApp] WARNING | transport {i}\n" for i in range(40)),
        "logs/serving.log": "".join(
            f"INFO 12-05 07:32:{i % 60:02d} [loggers.py:118] Avg prompt throughput: {rng.random() * 50:.1f} tokens/s, "
            f"Running: 1 reqs, GPU KV cache usage: 0.1%\nINFO:     127.0.0.1:{40000 + i} - \"POST /v1/chat/completions "
            "HTTP/1.1\" 200 OK\n" for i in range(1000)),
    }
    for name, text in files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(text)
    return sorted(run_dir / name for name in files)


def test_the_scan_after_a_realistic_chapter_reads_only_its_files_and_passes(tmp_path):
    build = tmp_path / "_build"
    run_dir = build / "runs" / "local"
    earlier = run_dir / "notebooks" / "00-preflight.ipynb"
    earlier.parent.mkdir(parents=True)
    earlier.write_text(f'{{"cells": [], "note": "key sk-{secrets.token_urlsafe(16)}"}}')  # no business of this scan
    model = tmp_path / "model"
    model.mkdir()
    (model / "PROVENANCE.json").write_text(json.dumps({
        "model_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "Apache-2.0",
        "license_url": "https://example.test/LICENSE",
        "packages": [{"package": "smollm2-part1", "version": "1.0", "wheel_sha256": secrets.token_hex(32)}],
        "gguf_name": "smollm2-135m-instruct-q8_0.gguf", "gguf_size": 144_810_720, "gguf_sha256": secrets.token_hex(32),
        "files": {name: secrets.token_hex(32) for name in ("config.json", "tokenizer.json", "model.safetensors")}}))
    before = runner._snapshot(run_dir)
    written = realistic_chapter(run_dir, model)
    assert runner._written_since(run_dir, before) == written
    report = leaks.scan(build, written, "chapter serving", [], checkout=ROOT, records=[run_dir],
                        published=leaks.Published(ROOT, build))
    assert report.findings == [] and report.files == len(written) == 6
