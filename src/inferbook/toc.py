"""The book's table of contents: which pages exist and which notebooks are chapters to execute.

``_toc.yml`` is the single list of chapters. The runner executes its notebooks
in the order they appear there; the site builder renders every page in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from .errors import InferbookError
from .features import BY_NAME
from .paths import Layout

_NOTEBOOK_NAME = re.compile(r"^(?:\d+-)?(?P<name>.+)$")


@dataclass(frozen=True)
class Chapter:
    """A notebook chapter: ``notebooks/10-serving.ipynb`` is chapter ``serving``."""

    name: str
    notebook: Path  # relative to the project root

    @property
    def feature(self) -> str | None:
        """The feature that must be enabled for this chapter to run (None: always runs)."""
        return self.name if self.name in BY_NAME else None


def _files(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                yield node[key]
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                yield from _files(child)
    elif isinstance(node, list):
        for child in node:
            yield from _files(child)


def toc_files(layout: Layout) -> list[str]:
    """Every page of the book, extension-less, in reading order."""
    try:
        data = yaml.safe_load(layout.toc_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InferbookError(f"no table of contents at {layout.toc_file}") from None
    return list(_files(data))


def chapters(layout: Layout) -> list[Chapter]:
    """The notebook chapters in ``_toc.yml`` order."""
    result = []
    for entry in toc_files(layout):
        if not entry.startswith("notebooks/"):
            continue
        path = Path(entry if entry.endswith(".ipynb") else entry + ".ipynb")
        if not (layout.root / path).is_file():
            raise InferbookError(f"_toc.yml lists {entry} but {path} does not exist; "
                                 "add the notebook or remove the entry")
        match = _NOTEBOOK_NAME.match(path.stem)
        assert match is not None  # the pattern matches any non-empty stem
        result.append(Chapter(name=match["name"], notebook=path))
    return result


def select(all_chapters: list[Chapter], wanted: list[str] | None) -> list[Chapter]:
    """The chapters named in ``wanted`` (all when None), in book order; unknown names are an error."""
    if not wanted:
        return list(all_chapters)
    known = {c.name for c in all_chapters}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise InferbookError(
            f"unknown chapter(s): {', '.join(unknown)}; the book has: {', '.join(c.name for c in all_chapters)}"
        )
    return [c for c in all_chapters if c.name in wanted]
