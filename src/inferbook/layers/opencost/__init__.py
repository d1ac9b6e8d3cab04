"""OpenCost (security chapter): cost per namespace and label, read from the observability layer's Prometheus.
Cluster-only: rendered, validated and its attribution shown everywhere; applied on a kube target.
"""

from __future__ import annotations

from ...layer import Layer
from .manifests import LAYER, MANIFESTS

__all__ = ["DECLARATION"]

DECLARATION = Layer(
    name=LAYER,
    summary="OpenCost: cost per namespace (tenant) and workload (model), from the observability layer's Prometheus",
    manifests=MANIFESTS,
    chapter="security",
)
