"""Every enabled layer of every named profile, rendered and validated with no cluster: the book's survey.

``inferbook validate --all`` prints it and the preflight chapter shows it, so what each shipped profile would
deploy (objects per layer) and whether it passes the schemas and the book's policy rules are one computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

from . import layers
from .crds import CrdStore
from .errors import InferbookError
from .paths import Layout
from .profile import list_profiles, load_profile
from .validate import Finding, validate


@dataclass
class Survey:
    """One row per (profile, layer): objects, kinds, checks, failures, warnings; and the findings behind them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    #: (profile, layer, finding) for every finding, ok ones included.
    findings: list[tuple[str, str, Finding]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(r["failed"] for r in self.rows)

    @property
    def objects(self) -> int:
        return sum(r["objects"] for r in self.rows)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["profile", "layer", "objects", "kinds", "checks", "failed",
                                                "warnings"])

    def objects_per_layer(self) -> pd.DataFrame:
        """Objects per layer (rows, in stack order) and profile (columns); ``-`` where a profile leaves a layer off."""
        table = self.table()
        order = [layer.name for layer in layers.LAYERS if layer.name in set(table["layer"])]
        pivot = table.pivot(index="layer", columns="profile", values="objects").reindex(order)
        pivot.loc["total"] = pivot.sum(numeric_only=True)
        return pivot.astype("Int64").astype(object).where(pivot.notna(), "-")

    def unknown_kinds(self) -> list[tuple[str, str, Finding]]:
        """Findings that an object's kind has no schema, built-in or pinned CRD (each is also a failure)."""
        return [(p, layer, f) for p, layer, f in self.findings
                if f.rule == "schema" and f.status == "fail" and "no schema" in f.message.lower()]

    def verification(self) -> pd.DataFrame:
        """Rows for a chapter's verification table: no failed check and no unknown kind in any profile."""
        failed = [f"{p}/{layer}: {f.kind}/{f.name} [{f.rule}]" for p, layer, f in self.findings
                  if f.status == "fail"]
        unknown = sorted({f"{f.kind}" for _, _, f in self.unknown_kinds()})
        profiles = sorted({r["profile"] for r in self.rows})
        rows = [
            {"check": "every shipped profile validates offline", "expected": "0 failed checks",
             "observed": f"{len(failed)} failed in {len(self.rows)} (profile, layer) pairs of {len(profiles)} "
                         f"profiles" + (f": {'; '.join(failed[:5])}" if failed else ""),
             "pass": not failed, "fix": "" if not failed else "run `inferbook validate --all` for each finding"},
            {"check": "no unknown kind", "expected": "every kind built in or a pinned CRD",
             "observed": ", ".join(unknown) or "none", "pass": not unknown,
             "fix": "" if not unknown else "pin its CRD in manifests/crds.lock.yaml (inferbook crds update)"},
        ]
        return pd.DataFrame(rows).set_index("check")

    def summary(self) -> str:
        profiles = len({r["profile"] for r in self.rows})
        return (f"validated {self.objects} object(s) in {len(self.rows)} (profile, layer) pair(s) of {profiles} "
                f"profile(s): " + (f"{self.failed} check(s) failed" if self.failed else "every check passed"))


def survey(names: Iterable[str] | None, layout: Layout, *, layer: str | None = None,
           overrides: list[str] | dict[str, Any] | None = None) -> Survey:
    """Render and validate every layer each profile enables (every shipped profile when ``names`` is None)."""
    names = list(list_profiles(layout) if names is None else names)
    store = CrdStore(layout)
    result = Survey()
    for name in names:
        profile = load_profile(name, overrides=overrides, layout=layout)
        if layer and layer not in profile.features:
            result.skipped.append(f"{profile.name}: does not enable layer {layer}; skipped")
            continue
        chosen = [layers.with_manifests(layer)] if layer else layers.enabled(profile)
        for each in chosen:
            objects = layers.render(each.name, profile, layout)
            report = validate(objects, layout, crds=store)
            result.rows.append({"profile": profile.name, "layer": each.name, "objects": len(objects),
                                "kinds": len({str(obj.get("kind")) for obj in objects}),
                                "checks": len(report.findings), "failed": len(report.failures),
                                "warnings": len(report.warnings)})
            result.findings.extend((profile.name, each.name, f) for f in report.findings)
    if not result.rows:
        raise InferbookError("".join(f"{line}\n" for line in result.skipped)
                             + "nothing to validate: no profile given enables a layer with manifests"
                             + (f" called {layer}" if layer else ""))
    return result
