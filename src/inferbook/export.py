"""Write a profile's rendered layers as folders a Git repository can hold: ``<prefix>/<profile>/<layer>/``.

A GitOps controller (Argo CD, ADR-0028) reads built YAML from a repository, not inferbook's generated overlays
(they live in the run folder and point at ``manifests/`` by relative paths). Each layer's objects are written
once, as ``objects.yaml`` beside a ``kustomization.yaml`` that lists it, so Argo CD (which runs kustomize on a
folder holding a kustomization) and ``kubectl apply -k`` read the same objects the chapters apply. Layer-neutral:
the caller renders (through the registry) and hands the objects in.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import pandas as pd

from .manifests import dump, dump_all
from .profile import Profile

#: The file holding a layer's objects, and the first line of every file export writes (how it finds its own).
OBJECTS_FILE = "objects.yaml"
HEADER = "# Written by `inferbook export`"


def prefix(profile: Profile) -> str:
    """The folder, relative to the repository root, every profile's layers are exported under."""
    return str(profile.data["gitops"]["path_prefix"]).strip("/")


def layer_path(profile: Profile, layer: str) -> str:
    """Where ``layer``'s built objects live in the repository (POSIX, relative): an Application's source path."""
    return str(PurePosixPath(prefix(profile)) / profile.name / layer)


def export(rendered: Mapping[str, list[dict[str, Any]]], profile: Profile, root: Path) -> list[Path]:
    """Write each layer's objects to ``root/<prefix>/<profile>/<layer>/``; returns the folders, in the given order.

    A folder this command wrote earlier for a layer no longer rendered (the profile switched it off) is
    removed, so the repository holds no layer a controller could still sync; a folder without export's
    header is someone else's and stays.
    """
    base = Path(root) / prefix(profile) / profile.name
    folders = []
    for layer, objects in rendered.items():
        folder = base / layer
        folder.mkdir(parents=True, exist_ok=True)
        note = (f"{HEADER} for profile '{profile.name}', layer '{layer}' ({len(objects)} object(s)).\n"
                f"# Re-written by every export; edit the profile or manifests/ and export again.\n")
        (folder / OBJECTS_FILE).write_text(note + dump_all(objects), encoding="utf-8")
        kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                         "resources": [OBJECTS_FILE]}
        (folder / "kustomization.yaml").write_text(note + dump(kustomization), encoding="utf-8")
        folders.append(folder)
    if base.is_dir():
        for stale in sorted(p for p in base.iterdir() if p.is_dir() and p.name not in rendered):
            kustomization = stale / "kustomization.yaml"
            if kustomization.is_file() and kustomization.read_text(encoding="utf-8").startswith(HEADER):
                shutil.rmtree(stale)
    return folders


def table(rendered: Mapping[str, list[dict[str, Any]]], profile: Profile, root: Path) -> pd.DataFrame:
    """One row per exported layer: its folder in the repository, its object count, whether the folder is there."""
    rows = [{"layer": layer, "path": layer_path(profile, layer), "objects": len(objects),
             "kustomization": (Path(root) / layer_path(profile, layer) / "kustomization.yaml").is_file()}
            for layer, objects in rendered.items()]
    return pd.DataFrame(rows, columns=["layer", "path", "objects", "kustomization"])
