"""What the gitops chapter proves offline: the Applications match the profile, the book and the exported folders.

Every check reads the rendered objects and the folders :func:`inferbook.export.export` wrote; none needs Argo CD.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ...export import OBJECTS_FILE
from ...manifests import namespace_of
from ...profile import Profile
from ...validate import ValidationReport
from .applications import AUTOMATED_TIERS, LAYER, PROJECT, delivered, name_of, of, policy_name, wave_of


def _project(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next((o for o in objects if o.get("kind") == "AppProject" and o["metadata"]["name"] == PROJECT), {})


def _exported(root: Path, path: str) -> list[dict[str, Any]] | None:
    """The objects an exported folder holds (None when it has no kustomization and objects file)."""
    folder = Path(root) / path
    if not (folder / "kustomization.yaml").is_file() or not (folder / OBJECTS_FILE).is_file():
        return None
    return [doc for doc in yaml.safe_load_all((folder / OBJECTS_FILE).read_text(encoding="utf-8")) if doc]


def verify(profile: Profile, objects: list[dict[str, Any]], book: Sequence[Any], root: Path,
           rendered: Mapping[str, list[dict[str, Any]]], report: ValidationReport) -> list[dict[str, Any]]:
    """The chapter's checks (check, expected, observed, pass).

    ``objects`` is the layer's render, ``book`` the registry's layers, ``root`` the folder export wrote under,
    ``rendered`` every enabled layer's objects as exported, ``report`` the validation of ``objects``.
    """
    apps = of(objects)
    expected = [name_of(layer.name) for _, layer in delivered(profile, book)]
    observed = [a["metadata"]["name"] for a in apps]
    order = [layer.name for layer in book]
    layers = [name.removeprefix(name_of("")) for name in observed]
    waves = [wave_of(a) for a in apps]
    book_waves = [order.index(layer) if layer in order else -1 for layer in layers]
    policy = "automated (prune, selfHeal)" if profile.tier in AUTOMATED_TIERS else "manual"
    policies = sorted({policy_name(a) for a in apps})
    gitops = profile.data["gitops"]
    sources = sorted({(a["spec"]["source"]["repoURL"], a["spec"]["source"]["targetRevision"]) for a in apps})
    exported = {a["metadata"]["name"]: _exported(root, a["spec"]["source"]["path"]) for a in apps}
    missing = sorted(name for name, found in exported.items() if found is None)
    counts_differ = sorted(name for name, found in exported.items() if found is not None
                           and len(found) != len(rendered.get(name.removeprefix(name_of("")), [])))
    allowed = {d.get("namespace") for d in (_project(objects).get("spec") or {}).get("destinations") or []}
    default = profile.data["target"]["namespace"]
    outside = sorted({f"{o['kind']}/{o['metadata']['name']} in {o['metadata'].get('namespace') or default}"
                      for layer, objs in rendered.items() if layer != LAYER for o in objs
                      if namespace_of(o, None) is not None
                      and (o["metadata"].get("namespace") or default) not in allowed})
    whitelist = {(w.get("group", ""), w.get("kind")) for w in
                 (_project(objects).get("spec") or {}).get("clusterResourceWhitelist") or []}
    unlisted = sorted({f"{o['kind']}/{o['metadata']['name']}" for layer, objs in rendered.items() if layer != LAYER
                       for o in objs if namespace_of(o, None) is None
                       and (o["apiVersion"].rpartition("/")[0], o["kind"]) not in whitelist})
    crd_checked = [f for f in report.findings if f.rule == "schema" and f.kind in ("Application", "AppProject")]
    return [
        {"check": "one Application per enabled layer with manifests (gitops, the bootstrap, excepted)",
         "expected": ", ".join(expected), "observed": ", ".join(observed),
         "pass": observed == expected and len(set(observed)) == len(observed)},
        {"check": "sync waves follow the book's layer order", "expected": str(book_waves),
         "observed": str(waves), "pass": waves == book_waves and waves == sorted(set(waves))},
        {"check": f"sync policy follows the tier ({profile.tier})", "expected": policy,
         "observed": ", ".join(policies) or "-", "pass": policies == [policy]},
        {"check": "every Application pulls the profile's repository at its revision",
         "expected": f"{gitops['repo_url']} @ {gitops['revision']}",
         "observed": "; ".join(f"{u} @ {r}" for u, r in sources) or "-",
         "pass": sources == [(gitops["repo_url"], gitops["revision"])]},
        {"check": "every Application's path holds the exported layer (kustomization.yaml, objects.yaml)",
         "expected": "none missing", "observed": ", ".join(missing) or "none missing",
         "pass": not missing and bool(apps)},
        {"check": "each exported folder holds as many objects as the layer renders",
         "expected": "all equal", "observed": ", ".join(counts_differ) or "all equal", "pass": not counts_differ},
        {"check": "every exported object's namespace is a destination of the AppProject",
         "expected": ", ".join(sorted(n for n in allowed if n)), "observed": "; ".join(outside) or "all inside",
         "pass": not outside and bool(allowed)},
        {"check": "every exported cluster-scoped object is on the AppProject's whitelist",
         "expected": "none outside", "observed": ", ".join(unlisted) or "none outside", "pass": not unlisted},
        {"check": "Applications and AppProject valid against the pinned Argo CD CRDs",
         "expected": f"{len(apps) + 1} ok", "observed": f"{sum(f.status == 'ok' for f in crd_checked)} ok",
         "pass": len(crd_checked) == len(apps) + 1 and all(f.status == "ok" for f in crd_checked)},
    ]


def figures(profile: Profile, objects: list[dict[str, Any]], rendered: Mapping[str, list[dict[str, Any]]],
            converged: Any = None) -> dict[str, Any]:
    """The chapter's results: the Applications, their waves and policy, what was exported, what converged."""
    apps = of(objects)
    return {
        "profile": profile.name,
        "tier": profile.tier,
        "applications": [a["metadata"]["name"] for a in apps],
        "sync_waves": [wave_of(a) for a in apps],
        "sync_policy": sorted({policy_name(a) for a in apps}),
        "repository": profile.data["gitops"]["repo_url"],
        "revision": profile.data["gitops"]["revision"],
        "gitops_objects": len(objects),
        "exported_objects": {layer: len(objs) for layer, objs in rendered.items()},
        "converged": (converged.to_dict("records") if hasattr(converged, "to_dict")
                      else "not on this target: nothing was applied"),
    }
