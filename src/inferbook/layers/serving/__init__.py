"""The serving layer: vLLM's OpenAI-compatible server with the profile's model (chapter ``20-serving``).

On a cluster the rendered Deployment (or KServe InferenceService) is applied and its rollout awaited
(:mod:`.cluster`); on the local target the same server runs as a process configured from the same
Deployment (:mod:`.local`). Both give the chapter an :class:`~.endpoint.Endpoint`.
"""

from __future__ import annotations

from ...layer import Layer
from ...profile import Profile
from ...secrets import SecretStore
from .endpoint import Endpoint, probe
from .local import LaunchSpec, LocalServing, launch_spec
from .local_llamacpp import PORT_KEY as CODER_PORT
from .local_llamacpp import probe as probe_coder
from .manifests import LAYER, MANIFESTS
from .steps import coder, connect, exercise_coder, machine, provenance, provision, verify, verify_coder

__all__ = ["DECLARATION", "Endpoint", "LaunchSpec", "LocalServing", "coder", "connect", "exercise_coder",
           "launch_spec", "machine", "probe", "provision", "provenance", "verify", "verify_coder"]


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
    ports=(LAYER, CODER_PORT),
    owner=_owner,
)
