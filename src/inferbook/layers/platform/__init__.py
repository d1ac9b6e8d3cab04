"""The platform layer: namespaces, the GPU quota (Kueue), the GPU stack and the secret store (chapter ``10-platform``).

Cluster-only: its objects are what Kueue, the External Secrets Operator and the GPU stack read. On every target
the chapter renders and validates them and evaluates the quota offline (:mod:`.admission`); on a kube target the
layer's cluster part (:mod:`.cluster`) proves that Kueue admits a GPU Job within the quota, holds one beyond it,
and that the secret store is Ready. :func:`prove` is the chapter's one call for that proof on any target.
"""

from __future__ import annotations

from ...layer import Layer
from .manifests import LAYER, LOCAL_QUEUE, MANIFESTS, QUEUE_LABEL, kueue_on

__all__ = ["DECLARATION", "LOCAL_QUEUE", "QUEUE_LABEL", "kueue_on"]

DECLARATION = Layer(
    name=LAYER,
    summary="namespaces, Kueue's GPU quota, the GPU stack and the secret store",
    manifests=MANIFESTS,
)
