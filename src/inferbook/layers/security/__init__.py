"""Security, cluster half (chapter ``80-security``, ADR-0029 SR1 and SR2): default-deny NetworkPolicies with
the request path's allow-rules, and Kyverno's GPU gate and digest rule.

Cluster-only: on the local target the chapter renders and validates the objects, evaluates them offline
(:mod:`.reachability` over the pods of :mod:`.inventory`; :mod:`.admission` for the Kyverno rules) and plans
them; on a kube target the layer's cluster part (:mod:`.cluster`) proves them with a real connection and a
real admission.
"""

from __future__ import annotations

from ...layer import Layer
from .cluster import SecurityCluster
from .manifests import LAYER, MANIFESTS

__all__ = ["DECLARATION", "SecurityCluster"]

DECLARATION = Layer(
    name=LAYER,
    summary="default-deny NetworkPolicy with the request path's allow-rules; Kyverno GPU gate and digest rule",
    manifests=MANIFESTS,
    cluster=SecurityCluster,
)
