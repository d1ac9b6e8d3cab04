"""The guardrails layer's manifests: Presidio's analyzer and anonymizer as Deployments + Services.

``manifests/guardrails/presidio`` holds both (the 2.2.361 images, pinned by digest); with features.security its
``networkpolicy`` component opens LiteLLM -> Presidio through the default-deny. What LiteLLM does with them (the
``guardrails:`` entries of its config) is the llm-gateway layer's ``guardrails`` component.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...manifests import LayerManifests, Selection
from ...profile import Profile

LAYER = "guardrails"
#: The Services LiteLLM's presidio guardrail calls, and their port: the contract with the gateway's component.
ANALYZER_SERVICE, ANONYMIZER_SERVICE, PORT = "presidio-analyzer", "presidio-anonymizer", 3000
#: The local server: one process answering both services' routes, with the same library at the same version.
SERVER_SCRIPT = Path(__file__).with_name("scripts") / "presidio_server.py"


def selection(profile: Profile) -> Selection:
    components: list[tuple[str, str]] = []
    if "security" in profile.features:
        components.append(("networkpolicy", "features.security: LiteLLM -> Presidio opened through the default-deny"))
    return Selection(layer=LAYER, base="guardrails/presidio", base_reason=(
        f"Presidio 2.2.361 analyzer + anonymizer, Services {ANALYZER_SERVICE} and {ANONYMIZER_SERVICE} on :{PORT} "
        "(LiteLLM masks PII with them before any model call)"), components=tuple(components))


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    """Nothing from the profile: the images, ports and probes are the layer's own."""
    return []


MANIFESTS = LayerManifests(LAYER, selection, patches)
