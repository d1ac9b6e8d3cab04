"""The observability layer's declaration (:class:`~inferbook.layer.Layer`): its parts per target, ports, owner.

In a module of its own so that the chapter's steps can ask a target for the layer's part
(``targets.of(...).part(DECLARATION)``) without importing the package, which imports the steps.
"""

from __future__ import annotations

from ...layer import Layer, lazy
from ...profile import Profile
from .local import PORT_KEY, LocalPrometheus, home, ours
from .manifests import LAYER, MANIFESTS


def _owner(profile: Profile, port_key: str) -> str | None:
    """This profile's own Prometheus on its port (preflight: reused, not in the way)."""
    port = profile.data["local"]["ports"][port_key]
    if ours(f"http://127.0.0.1:{port}", home(profile) / "prometheus.yml"):
        return "this profile's Prometheus"
    return None


DECLARATION = Layer(
    name=LAYER,
    summary="Prometheus: the SLO rules of ADR-0003, scrapes of vLLM and LiteLLM, dashboards as code",
    manifests=MANIFESTS,
    local=LocalPrometheus,
    cluster=lazy(f"{__package__}.cluster", "ClusterObservability"),
    ports=(PORT_KEY,),
    owner=_owner,
)
