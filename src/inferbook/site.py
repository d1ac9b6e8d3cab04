"""Build the static site of one profile from its executed notebooks, without re-executing anything.

The site is staged in ``_build/site-src/PROFILE``: the prose chapters, the
executed copies of the notebook chapters (the source notebook, marked as not
executed, where a chapter never ran), a generated run-record page, and MathJax
copied from ``node_modules`` so that maths renders with no network. Jupyter
Book 1 then renders the stage into ``_build/html/PROFILE``, and everything the
build wrote is scanned for secrets (:mod:`inferbook.leaks`) before it is called
done.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nbformat
import yaml

from . import leaks
from .errors import BuildError
from .paths import Layout
from .runner import BANNER_TAG, RunSummary
from .toc import toc_files

#: MathJax 3's browser bundle, installed by `npm ci` from package.json.
MATHJAX_DIR = Path("node_modules") / "mathjax" / "es5"
#: What tex-chtml.js loads: itself, its fonts, and the accessibility parts its menu pulls in lazily.
MATHJAX_PARTS = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "a11y", "sre", "ui")
RUN_PAGE = "run-record"


def build_site(profile_name: str, layout: Layout, quiet: bool = True, secrets_dir: Path | None = None) -> Path:
    """Render the book of ``profile_name``; returns the site's ``index.html``.

    Raises :class:`inferbook.leaks.SecretLeaked` when a page, a staged notebook or a
    doctree holds a secret (stored in ``secrets_dir``, default the user's, or shaped like one).
    """
    summary = RunSummary.read(layout.run_dir(profile_name))
    stage = layout.site_source_dir(profile_name)
    stage_book(summary, layout, stage)
    html = layout.html_dir(profile_name)
    if html.exists():
        shutil.rmtree(html)
    from jupyter_book.sphinx import build_sphinx  # heavy import, only when building

    result = build_sphinx(
        str(stage), str(html), noconfig=True, path_config=str(stage / "_config.yml"),
        confoverrides={"external_toc_path": str(stage / "_toc.yml"), "latex_individualpages": False},
        doctreedir=str(layout.build_dir / ".doctrees" / profile_name),
        builder="html", freshenv=True, quiet=quiet,
    )
    if isinstance(result, Exception) or result not in (0, None):
        raise BuildError(f"jupyter-book failed to build the site of profile {profile_name}: {result}")
    index = html / "index.html"
    if not index.is_file():
        raise BuildError(f"the build finished but {index} is missing")
    leaks.check(layout, leaks.site_targets(layout, profile_name), f"the site of profile {profile_name}", secrets_dir,
                records=leaks.record_sources(layout, profile_name))
    return index


def stage_book(summary: RunSummary, layout: Layout, stage: Path) -> None:
    """Assemble the source folder the site is rendered from."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    shutil.copytree(layout.root / "book", stage / "book")
    run_dir = layout.run_dir(summary.profile)
    for entry in toc_files(layout):
        if not entry.startswith("notebooks/"):
            continue
        name = Path(entry).with_suffix(".ipynb").name
        target = stage / "notebooks" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        executed = run_dir / "notebooks" / name
        if executed.is_file():
            shutil.copy2(executed, target)
        else:
            _copy_unexecuted(layout.root / "notebooks" / name, target, summary)
    toc = yaml.safe_load(layout.toc_file.read_text(encoding="utf-8"))
    toc.setdefault("parts", []).append({"caption": "This run", "chapters": [{"file": RUN_PAGE}]})
    (stage / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False), encoding="utf-8")
    (stage / f"{RUN_PAGE}.md").write_text(run_page(summary), encoding="utf-8")
    config = yaml.safe_load(layout.config_file.read_text(encoding="utf-8"))
    _vendor_mathjax(layout, stage, config)
    config["title"] = f"{config.get('title', 'inferbook')} ({summary.profile})"
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def _copy_unexecuted(source: Path, target: Path, summary: RunSummary) -> None:
    nb = nbformat.read(source, as_version=4)
    note = nbformat.v4.new_markdown_cell(
        f":::{{admonition}} Not executed\n:class: warning\nThis chapter has not run with profile "
        f"`{summary.profile}` (its feature is off, or the run stopped before it). "
        "The code is shown without output.\n:::",
        metadata={"tags": [BANNER_TAG]},
    )
    position = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    nb.cells.insert(position, note)
    nbformat.write(nb, target)


def _vendor_mathjax(layout: Layout, stage: Path, config: dict[str, Any]) -> None:
    """Copy MathJax next to the pages (outside ``_static``, whose .js files Jupyter Book loads on every page)."""
    source = layout.root / MATHJAX_DIR
    if not (source / "tex-chtml.js").is_file():
        raise BuildError(
            f"MathJax is not installed at {source}; run `npm ci` in {layout.root} (make does this) "
            "so that the site renders maths offline"
        )
    for part in MATHJAX_PARTS:
        src = source / part
        dst = stage / "_vendor" / "mathjax" / part
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    sphinx = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx["html_extra_path"] = ["_vendor"]
    # Sphinx resolves a relative mathjax_path against _static/; the copy sits beside _static/.
    sphinx["mathjax_path"] = "../mathjax/tex-chtml.js"


def run_page(summary: RunSummary) -> str:
    """Markdown of the run-record page: which profile, when, which commit, each chapter's outcome."""
    rows = "\n".join(
        f"| {c.name} | {c.status} | {c.seconds:.1f} | {c.finished_at or '-'} | {c.reason or ''} |"
        for c in summary.chapters
    )
    overrides = ", ".join(f"`{k}={v}`" for k, v in summary.overrides.items()) or "none"
    return (
        f"# Run record\n\n"
        f"This site shows the book as executed with profile **`{summary.profile}`** "
        f"(`{summary.profile_source}`), overrides {overrides}, at commit `{summary.commit}`. "
        f"The run started {summary.started_at}, finished {summary.finished_at or '-'}, status **{summary.status}**."
        + (f" Secret scan of the run's files: {summary.secret_scan}." if summary.secret_scan else "") + "\n\n"
        f"| chapter | status | seconds | finished | note |\n|---|---|---|---|---|\n{rows}\n"
    )
