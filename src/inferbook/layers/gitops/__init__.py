"""GitOps delivery: an Argo CD Application per enabled layer over the same built manifests (``96-gitops``, ADR-0028).

:mod:`.manifests` is the AppProject base and the profile's values in it; :mod:`.applications` generates one
Application per layer the profile enables, pointing at the layer's exported folder (:mod:`inferbook.export`),
its sync wave the layer's place in the book and its sync policy the tier's; :mod:`.steps` is what the chapter
checks offline; :mod:`.cluster` waits, on a cluster, for each Application to be Synced and Healthy.
"""

from __future__ import annotations

from ...layer import Layer
from .applications import LAYER, PROJECT, applications, delivered, name_of, sync_policy, table
from .cluster import ClusterGitOps
from .manifests import MANIFESTS
from .steps import figures, verify

__all__ = ["DECLARATION", "PROJECT", "ClusterGitOps", "applications", "delivered", "figures", "name_of", "sync_policy",
           "table", "verify"]

DECLARATION = Layer(
    name=LAYER,
    summary="Argo CD: an AppProject and one Application per enabled layer, synced in the book's layer order",
    manifests=MANIFESTS,
    cluster=ClusterGitOps,
)
