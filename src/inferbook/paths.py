"""Where things live: the project checkout, the build folder, the per-profile run folders.

Nothing here is global: a :class:`Layout` is made once (by the CLI, a notebook
or a test) and passed to whatever needs a path, so a test can point a whole run
at a temporary folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InferbookError


def _looks_like_root(path: Path) -> bool:
    return (path / "_toc.yml").is_file() and (path / "profiles").is_dir()


def find_root(start: Path | None = None) -> Path:
    """The inferbook checkout containing ``start`` (default: the working directory).

    Falls back to the checkout this package was installed from (an editable
    install), so ``inferbook`` works from any folder of a clone.
    """
    start = (start or Path.cwd()).resolve()
    for candidate in (start, *start.parents):
        if _looks_like_root(candidate):
            return candidate
    installed_from = Path(__file__).resolve().parents[2]
    if _looks_like_root(installed_from):
        return installed_from
    raise InferbookError(
        f"no inferbook checkout found at or above {start} (looked for _toc.yml and profiles/); "
        "run inferbook from inside a clone of the project"
    )


def default_cache_dir() -> Path:
    """Per-user cache for models and prepared artefacts, outside the repository."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inferbook"


@dataclass(frozen=True)
class Layout:
    """The folders of one checkout and one build tree."""

    root: Path
    build_dir: Path

    @classmethod
    def discover(cls, build_dir: str | os.PathLike[str] | None = None, start: Path | None = None) -> "Layout":
        root = find_root(start)
        build = Path(build_dir).resolve() if build_dir else root / "_build"
        return cls(root=root, build_dir=build)

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike[str]) -> "Layout":
        """The layout a notebook ran in, from the ``run_dir`` parameter (``BUILD/runs/PROFILE``)."""
        return cls.discover(Path(run_dir).resolve().parents[1])

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def toc_file(self) -> Path:
        return self.root / "_toc.yml"

    @property
    def config_file(self) -> Path:
        return self.root / "_config.yml"

    def run_dir(self, profile: str) -> Path:
        """Executed notebooks, artefacts, logs and summary.json of one profile's runs."""
        return self.build_dir / "runs" / profile

    def html_dir(self, profile: str) -> Path:
        """The published site of one profile."""
        return self.build_dir / "html" / profile

    def site_source_dir(self, profile: str) -> Path:
        """Staging folder the site is built from (prose + executed notebooks)."""
        return self.build_dir / "site-src" / profile
