"""The serving layer's declaration (:class:`~inferbook.layer.Layer`): its parts per target, ports, owner.

In a module of its own so that the chapter's steps can ask a target for the layer's part
(``targets.of(...).part(DECLARATION)``) without importing the package, which imports the steps.
"""

from __future__ import annotations

from ...layer import Layer, lazy
from ...profile import Profile
from ...secrets import SecretStore
from .endpoint import probe
from .local import LocalServing
from .local_llamacpp import PORT_KEY as CODER_PORT
from .local_llamacpp import probe as probe_coder
from .manifests import LAYER, MANIFESTS


def _owner(profile: Profile, port_key: str) -> str | None:
    """This profile's own vLLM on its port, serving its model with its key (preflight: reused, not in the way)."""
    key = SecretStore(profile.name).peek("vllm-api-key/api-key")  # peeked: preflight never generates a secret
    base = f"http://127.0.0.1:{profile.data['local']['ports'][port_key]}"
    if port_key == CODER_PORT:
        found = probe_coder(base, key) if key else None
        served = profile.data["models"].get("coder", {}).get("served_name")
        return f"this profile's llama-server serving {served}" if found and served in found["models"] else None
    found = probe(base, key) if key else None
    served = profile.data["models"].get("chat", {}).get("served_name")
    if found and served in found["models"]:
        return f"this profile's vLLM {found['version']} serving {served}"
    return None


DECLARATION = Layer(
    name=LAYER,
    summary="vLLM's OpenAI-compatible server with the profile's model",
    manifests=MANIFESTS,
    local=LocalServing,
    cluster=lazy(f"{__package__}.cluster", "ClusterServing"),
    ports=(LAYER, CODER_PORT),
    owner=_owner,
)
