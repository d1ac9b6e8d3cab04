"""What every chapter notebook does around its own steps: load the profile, keep artefacts, check and verify.

A chapter opens with ``run = chapter.open("serving", profile_name, overrides, run_dir)`` (the
parameters papermill injected) and then reads ``run.profile`` and ``run.layout``; it saves
what a reader may want to keep with :meth:`Chapter.save` (artefacts under ``<run>/artifacts/``, never a
secret: only tables, manifests and records of calls), renders and validates its layer with
:meth:`Chapter.render` and :meth:`Chapter.validate`, and ends with :meth:`Chapter.verify`, which saves the
verification table and fails the chapter, naming each failed check, when one did not pass.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd

from . import manifests
from .errors import InferbookError
from .layer import Layer
from .layers import LAYERS
from .layers import get as get_layer
from .paths import Layout
from .profile import Profile, load_profile
from .validate import ValidationReport, validate

if TYPE_CHECKING:
    from .targets import Target

#: The columns of every chapter's verification table, in this order.
VERIFICATION_COLUMNS = ["expected", "observed", "pass"]


class VerificationFailed(InferbookError):
    """A chapter's verification table has a check that did not pass."""


@dataclass
class Chapter:
    """One chapter's run: its profile (with overrides), its folders, and its layer when it has one."""

    name: str
    profile: Profile
    layout: Layout
    run_dir: Path
    layer: Layer | None

    @property
    def target(self) -> "Target":
        """Where this profile's layers go (:func:`inferbook.targets.of`): apply, wait, expose, teardown, parts."""
        from . import targets

        return targets.of(self.profile, self.layout)

    @property
    def artifacts(self) -> Path:
        return self.run_dir / "artifacts"

    def save(self, name: str, data: Any) -> Path:
        """Keep ``data`` as ``artifacts/<name>``: a table or records as JSON, Kubernetes objects as YAML.

        The suffix decides the form: ``.yaml`` writes a list of objects as multi-document YAML; ``.json``
        writes a DataFrame as records (its index kept as a column), dataclasses as dicts, anything else
        JSON can hold as it is.
        """
        path = self.artifacts / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".yaml":
            return manifests.write(data, path)
        if path.suffix != ".json":
            raise InferbookError(f"artefact {name}: use a .json or .yaml name")
        path.write_text(json.dumps(_plain(data), indent=2, default=str) + "\n", encoding="utf-8")
        return path

    def selection(self) -> pd.DataFrame:
        """Which base and components of the chapter's layer this profile selects, and why."""
        if self.layer is None or self.layer.manifests is None:
            raise InferbookError(f"chapter {self.name} has no manifests to select from")
        return self.layer.manifests.selection(self.profile).table()

    def render(self) -> list[dict[str, Any]]:
        """The chapter's layer rendered for this profile, kept as ``artifacts/<layer>.yaml``."""
        if self.layer is None:
            raise InferbookError(f"chapter {self.name} has no layer to render")
        objects = self.layer.render(self.profile, self.layout, LAYERS)
        self.save(f"{self.layer.name}.yaml", objects)
        return objects

    def validate(self, objects: list[dict[str, Any]]) -> ValidationReport:
        """Validate rendered objects offline, keep the report, and stop the chapter on a failure."""
        report = validate(objects, self.layout)
        report.save(self.artifacts / f"{self.name}-validation.json")
        print(report.summary())
        report.raise_for_failures()
        return report

    def verify(self, checks: pd.DataFrame | list[Mapping[str, Any]]) -> pd.DataFrame:
        """The verification table (check, expected, observed, pass): saved, shown, and every row must pass."""
        table = checks if isinstance(checks, pd.DataFrame) else pd.DataFrame(list(checks))
        if table.index.name != "check":
            table = table.set_index("check")
        missing = [c for c in VERIFICATION_COLUMNS if c not in table.columns]
        if missing:
            raise InferbookError(f"chapter {self.name}'s verification table lacks {', '.join(missing)}; every "
                                 f"verification table has the columns check, {', '.join(VERIFICATION_COLUMNS)}")
        table = table[VERIFICATION_COLUMNS + [c for c in table.columns if c not in VERIFICATION_COLUMNS]]
        table["pass"] = table["pass"].astype(bool)
        self.save(f"{self.name}-checks.json", table)
        failed = table[~table["pass"]]
        if not failed.empty:
            rows = "; ".join(f"{check}: expected {row['expected']}, observed {row['observed']}"
                             for check, row in failed.iterrows())
            raise VerificationFailed(f"{len(failed)} of {len(table)} checks of chapter {self.name} failed: {rows}")
        return table


def _plain(data: Any) -> Any:
    if isinstance(data, pd.DataFrame):
        frame = data.reset_index() if data.index.name else data
        return json.loads(frame.to_json(orient="records"))
    if is_dataclass(data) and not isinstance(data, type):
        return asdict(data)
    if isinstance(data, (list, tuple)):
        return [_plain(item) for item in data]
    return data


def open(name: str, profile_name: str, overrides: Mapping[str, Any] | None = None,  # noqa: A001 - chapter.open
         run_dir: str | Path = "_build/runs/local") -> Chapter:
    """Start chapter ``name``: the profile loaded and validated with the runner's overrides, the run's folders."""
    profile = load_profile(profile_name, overrides=dict(overrides or {}))
    run = Path(run_dir)
    try:
        layer: Layer | None = get_layer(name)
    except InferbookError:
        layer = None  # preflight, benchmarks ...: a chapter without a layer of its own
    return Chapter(name, profile, Layout.from_run_dir(run), run, layer)
