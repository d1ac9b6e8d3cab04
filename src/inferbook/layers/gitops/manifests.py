"""The gitops layer's manifests: the AppProject base, the profile's values in it, and the generated Applications.

``manifests/gitops/project`` holds the AppProject; the overlay moves it to Argo CD's namespace, lets it pull the
profile's repository and deploy to the layers' namespace. The Applications are generated
(:mod:`.applications`), one per enabled layer, and written into the same overlay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ...manifests import LayerManifests, ManifestError, Selection, find, guarded_replace, json6902
from ...profile import Profile
from .applications import LAYER, PROJECT, applications


def selection(profile: Profile) -> Selection:
    """The one base: the AppProject (the Applications are generated beside it)."""
    return Selection(layer=LAYER, base="gitops/project",
                     base_reason="the Argo CD AppProject `inferbook` fencing the layers' Applications (ADR-0028)",
                     components=())


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    """Argo CD's namespace, the profile's repository, the layers' namespace as the project's first destination."""
    project = find(base_objects, "AppProject", PROJECT)
    spec = project["spec"]
    if not spec.get("sourceRepos") or not spec.get("destinations"):
        raise ManifestError(f"AppProject {PROJECT} lacks sourceRepos or destinations. "
                            "Fix: restore them in manifests/gitops/project/appproject.yaml")
    gitops = profile.data["gitops"]
    ops = [{"op": "replace", "path": "/metadata/namespace", "value": gitops["argocd_namespace"]}]
    ops += guarded_replace("/spec/sourceRepos/0", spec["sourceRepos"][0], gitops["repo_url"])
    ops += guarded_replace("/spec/destinations/0/namespace", spec["destinations"][0]["namespace"],
                           profile.data["target"]["namespace"])
    ops += guarded_replace("/spec/destinations/1/namespace", spec["destinations"][1]["namespace"],
                           profile.data["tenants"]["team"])
    return [json6902("AppProject", "argoproj.io", PROJECT, ops)]


def generate(selection: Selection, profile: Profile, book: Sequence[Any]) -> list[dict[str, Any]]:
    return applications(profile, book)


MANIFESTS = LayerManifests(name=LAYER, select=selection, patch=patches, generate=generate)
