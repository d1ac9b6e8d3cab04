"""One Argo CD Application per layer the profile enables, in the book's order (ADR-0028).

Generated in code, not kept as files: which Applications exist depends on which layers the profile enables,
and each one's wave is the layer's place in the registry. Every Application points at the same built objects
the chapters apply, exported to ``<path_prefix>/<profile>/<layer>/`` (:mod:`inferbook.export`).

Why Applications rather than one ApplicationSet with a list generator: the list would be generated from the
same code anyway, and an ApplicationSet's template gives every child the same sync policy and no per-child
annotations, while each Application here carries its own ``sync-wave``; an Application is also the kind the
pinned CRD validates field by field, where an ApplicationSet's template is checked only as a template.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from ...export import layer_path
from ...profile import Profile

LAYER = "gitops"
#: The AppProject every Application belongs to (manifests/gitops/project).
PROJECT = "inferbook"
API_VERSION = "argoproj.io/v1alpha1"
#: Argo CD's annotation ordering a sync: lower waves are applied (and healthy) before higher ones.
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
#: The cluster Argo CD runs in, as Argo CD names it.
IN_CLUSTER = "https://kubernetes.default.svc"
#: What every sync does: create the layers' namespace if missing; apply server-side, as inferbook does.
SYNC_OPTIONS = ["CreateNamespace=true", "ServerSideApply=true"]
#: Tiers whose Applications sync on their own (a change in Git reaches the cluster, drift is undone).
AUTOMATED_TIERS = ("cost", "dev")


def name_of(layer: str) -> str:
    """The Application of ``layer``."""
    return f"inferbook-{layer}"


def delivered(profile: Profile, book: Sequence[Any]) -> list[tuple[int, Any]]:
    """(wave, layer) of every layer the profile enables that has manifests, in book order; gitops excepted.

    The wave is the layer's position in the book (the registry), the same number on every profile. The gitops
    layer itself is the bootstrap (its project and Applications are applied once, by the chapter or by hand),
    so it has no Application of its own.
    """
    return [(wave, layer) for wave, layer in enumerate(book)
            if layer.manifests is not None and layer.name in profile.features and layer.name != LAYER]


def sync_policy(tier: str) -> dict[str, Any]:
    """Automated with prune and self-heal on the cost and dev tiers; manual on prod (a human presses Sync)."""
    policy: dict[str, Any] = {"syncOptions": list(SYNC_OPTIONS)}
    if tier in AUTOMATED_TIERS:
        policy = {"automated": {"prune": True, "selfHeal": True}, **policy,
                  "retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "3m"}}}
    return policy


def application(profile: Profile, layer: str, wave: int) -> dict[str, Any]:
    """The Application of one layer: the profile's repository and revision, the layer's exported folder."""
    gitops = profile.data["gitops"]
    return {
        "apiVersion": API_VERSION,
        "kind": "Application",
        "metadata": {
            "name": name_of(layer),
            "namespace": gitops["argocd_namespace"],
            "labels": {"app.kubernetes.io/name": name_of(layer), "app.kubernetes.io/component": LAYER,
                       "app.kubernetes.io/part-of": "inferbook", "app.kubernetes.io/managed-by": "inferbook"},
            "annotations": {SYNC_WAVE: str(wave)},
        },
        "spec": {
            "project": PROJECT,
            "source": {"repoURL": gitops["repo_url"], "targetRevision": gitops["revision"],
                       "path": layer_path(profile, layer)},
            "destination": {"server": IN_CLUSTER, "namespace": profile.data["target"]["namespace"]},
            "syncPolicy": sync_policy(profile.tier),
        },
    }


def applications(profile: Profile, book: Sequence[Any]) -> list[dict[str, Any]]:
    """Every Application of the profile, in wave order."""
    return [application(profile, layer.name, wave) for wave, layer in delivered(profile, book)]


def of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Applications among rendered objects, in wave order."""
    apps = [o for o in objects if o.get("kind") == "Application" and o.get("apiVersion") == API_VERSION]
    return sorted(apps, key=wave_of)


def wave_of(app: dict[str, Any]) -> int:
    return int(((app.get("metadata") or {}).get("annotations") or {}).get(SYNC_WAVE, "0"))


def policy_name(app: dict[str, Any]) -> str:
    """automated (prune, self-heal) or manual, as the table shows it."""
    automated = (app["spec"].get("syncPolicy") or {}).get("automated")
    if automated is None:
        return "manual"
    on = [k for k in ("prune", "selfHeal") if automated.get(k)]
    return f"automated ({', '.join(on)})" if on else "automated"


def table(objects: list[dict[str, Any]]) -> pd.DataFrame:
    """The Applications as a chapter shows them: layer, sync wave, path, sync policy, revision."""
    rows = [{"layer": app["metadata"]["name"].removeprefix("inferbook-"), "application": app["metadata"]["name"],
             "sync wave": wave_of(app), "path": app["spec"]["source"]["path"], "sync policy": policy_name(app),
             "revision": app["spec"]["source"]["targetRevision"]} for app in of(objects)]
    return pd.DataFrame(rows, columns=["layer", "application", "sync wave", "path", "sync policy", "revision"])
