"""The routing layer's declaration (:class:`~inferbook.layer.Layer`): its parts per target, ports, owner.

In a module of its own so that the chapter's steps can ask a target for the layer's part
(``targets.of(...).part(DECLARATION)``) without importing the package, which imports the steps.
"""

from __future__ import annotations

from ...layer import Layer, lazy
from ...profile import Profile
from ...secrets import SecretStore
from ..serving.endpoint import probe
from .local import CANARY_PORT, LAYER, METRICS_PORT, POOL_PORT, REPLICA_PORT, LocalRouting, router_metrics
from .manifests import MANIFESTS

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
    cluster=lazy(f"{__package__}.cluster", "ClusterRouting"),
    ports=(LAYER, METRICS_PORT, POOL_PORT, REPLICA_PORT, CANARY_PORT),
    owner=_owner,
)
