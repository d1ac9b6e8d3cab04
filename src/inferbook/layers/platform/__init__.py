"""The platform layer: namespaces, the GPU quota (Kueue), the GPU stack and the secret store (chapter ``10-platform``).

Cluster-only: its objects are what Kueue, the External Secrets Operator and the GPU stack read. On every target
the chapter renders and validates them and evaluates the quota offline (:mod:`.admission`); on a kube target the
layer's cluster part (:mod:`.cluster`) proves that Kueue admits a GPU Job within the quota, holds one beyond it,
and that the secret store is Ready. :func:`prove` is the chapter's one call for that proof on any target.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...layer import ClusterLayer, Layer
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from ...targets import Target
from . import admission, steps
from .manifests import LAYER, LOCAL_QUEUE, MANIFESTS, QUEUE_LABEL, kueue_on

__all__ = ["DECLARATION", "LOCAL_QUEUE", "QUEUE_LABEL", "admission", "admission_table", "kueue_on", "prove",
           "verify"]


def _cluster(profile: Profile, layout: Layout, target: Any, say: Say = print) -> ClusterLayer:
    """The cluster part, imported only when a kube target asks for it (a local run never loads the kube client)."""
    from .cluster import PlatformCluster

    return PlatformCluster(profile, layout, target=target, say=say)


DECLARATION = Layer(
    name=LAYER,
    summary="namespaces, Kueue's GPU quota, the GPU stack and the secret store",
    manifests=MANIFESTS,
    cluster=_cluster,
)


def prove(target: Target, objects: list[dict[str, Any]]) -> pd.DataFrame:
    """The live proof on ``target`` (see :func:`.steps.prove`): run where it has a cluster, explained elsewhere."""
    return steps.prove(DECLARATION, target, objects)


def admission_table(objects: list[dict[str, Any]], workloads: list[dict[str, Any]]) -> pd.DataFrame:
    """Which of the rendered pods Kueue would admit under the rendered quota (:func:`.admission.table`)."""
    return admission.table(objects + workloads)


def verify(profile: Profile, objects: list[dict[str, Any]], workloads: list[dict[str, Any]],
           proof: pd.DataFrame) -> list[dict[str, Any]]:
    """The chapter's verification rows (:func:`.steps.verify`)."""
    return steps.verify(profile, objects, workloads, proof)
