"""Autoscaling: KEDA scales the vLLM Deployment on its own queue (ADR-0014), and a new replica starts from what the
node and the cluster hold (ADR-0025; chapter ``70-autoscaling``).

:mod:`.manifests` renders the ScaledObject and the image pre-pull from the profile; :mod:`.scaling` is KEDA's and
the HPA's formula as pure functions; :mod:`.live` samples a live vLLM's signals under a short load; :mod:`.steps`
turns the samples into the counts the rendered ScaledObject would ask for; :mod:`.cluster` reads KEDA's status on a
kube target. The serving layer's ``cold-start`` component, selected when this layer is on, carries the weights and
startup levers.
"""

from __future__ import annotations

from ...layer import Layer
from .cluster import AutoscalingCluster
from .live import Load, Sampled, sample_under_load
from .manifests import LAYER, MANIFESTS, Settings
from .scaling import Decision, Trigger, desired_replicas, stabilised, trigger_replicas
from .steps import (
                    cluster_status,
                    cold_start_table,
                    decide,
                    examples,
                    figures,
                    plot,
                    policy_of,
                    scaled_object,
                    settings_table,
                    verify,
)

__all__ = ["DECLARATION", "AutoscalingCluster", "Decision", "Load", "Sampled", "Settings", "Trigger", "cluster_status",
           "cold_start_table", "decide",
           "desired_replicas", "examples", "figures", "plot", "policy_of", "sample_under_load", "scaled_object",
           "settings_table", "stabilised", "trigger_replicas", "verify"]

DECLARATION = Layer(
    name=LAYER,
    summary="KEDA ScaledObject on vLLM's queue and KV cache, image pre-pull, cold-start levers",
    manifests=MANIFESTS,
    cluster=AutoscalingCluster,
)
