"""The guardrails layer (issue #23, ADR-0034), in the security chapter: PII masking and a prompt-injection block in
the gateway, before any model is called. Presidio's analyzer and anonymizer are the layer's workloads (a local
process on the local target); LiteLLM's presidio guardrail and content filter, configured by the llm-gateway
layer's ``guardrails`` component from the profile's ``guardrails`` section, call them.
"""

from __future__ import annotations

from ...layer import Layer
from ...paths import Layout
from ...profile import Profile
from .local import LocalPresidio
from .manifests import LAYER, MANIFESTS


def _owner(profile: Profile, port_key: str) -> str | None:
    """This profile's own Presidio server on its port, supervised and healthy (preflight: reused, not in the way)."""
    server = LocalPresidio(profile, Layout.discover(), say=lambda _: None)
    if server.process.supervised() and server.healthy():
        return "this profile's Presidio server"
    return None

__all__ = ["DECLARATION", "LocalPresidio"]

DECLARATION = Layer(
    name=LAYER,
    summary="PII masking (Presidio) and a prompt-injection block (LiteLLM's content filter) before any model call",
    manifests=MANIFESTS,
    local=LocalPresidio,
    ports=(LAYER,),
    owner=_owner,
    chapter="security",
)
