"""The registry of layers: every layer of the book, in the order the design stacks them.

The one place a layer is listed. The local stack (``inferbook up/down/status``), preflight's port checks,
the command line and rendering by name iterate over :data:`LAYERS`; a new layer is a package beside these
(``inferbook/layers/<name>/`` with a ``DECLARATION``), its manifests, its chapter, and one line here.
"""

from __future__ import annotations

from typing import Any

from ..layer import Layer
from ..manifests import ManifestError, Selection
from ..paths import Layout
from ..profile import Profile
from . import (
    autoscaling,
    benchmarks,
    capacity,
    economics,
    experience,
    gitops,
    guardrails,
    identity,
    llm_gateway,
    mcp,
    mcp_gateway,
    observability,
    opencost,
    platform,
    resilience,
    routing,
    security,
    serving,
)

#: Every layer, in stack order (chapters, ``up``, ``status``); ``down`` goes in reverse.
LAYERS: tuple[Layer, ...] = (
    platform.DECLARATION,
    serving.DECLARATION,
    routing.DECLARATION,
    llm_gateway.DECLARATION,
    mcp.DECLARATION,
    experience.DECLARATION,
    observability.DECLARATION,
    autoscaling.DECLARATION,
    security.DECLARATION,
    guardrails.DECLARATION,
    identity.DECLARATION,
    opencost.DECLARATION,
    mcp_gateway.DECLARATION,
    resilience.DECLARATION,
    benchmarks.DECLARATION,
    economics.DECLARATION,
    capacity.DECLARATION,
    gitops.DECLARATION,
)


class UnknownLayer(ManifestError):
    """No layer of that name (yet), or one without manifests."""


def get(name: str) -> Layer:
    """The layer called ``name``; an error listing the layers there are."""
    for layer in LAYERS:
        if layer.name == name:
            return layer
    raise UnknownLayer(f"no layer '{name}' yet; the layers are: {', '.join(layer.name for layer in LAYERS)}")


def with_manifests(name: str) -> Layer:
    """The layer called ``name`` if it has manifests; an error naming the ones that do otherwise."""
    try:
        layer = get(name)
    except UnknownLayer:
        layer = None
    if layer is None or layer.manifests is None:
        have = ", ".join(layer.name for layer in LAYERS if layer.manifests is not None)
        raise UnknownLayer(f"no manifests for layer '{name}' yet; layers with manifests: {have}. "
                           f"Fix: render one of those, or add manifests/{name}/ and its layer package")
    return layer


def enabled(profile: Profile) -> list[Layer]:
    """The layers with manifests that ``profile`` enables, in stack order: what a full render covers."""
    return [layer for layer in LAYERS if layer.manifests is not None and layer.name in profile.features]


def select(name: str, profile: Profile) -> Selection:
    """The base and components ``profile`` selects for layer ``name``."""
    manifests = with_manifests(name).manifests
    assert manifests is not None
    return manifests.selection(profile)


def render(name: str, profile: Profile, layout: Layout) -> list[dict[str, Any]]:
    """The objects of layer ``name`` for ``profile`` (the overlay is written under the run folder)."""
    return with_manifests(name).render(profile, layout, LAYERS)


def rendered(profile: Profile, layout: Layout) -> dict[str, list[dict[str, Any]]]:
    """Every enabled layer with manifests rendered for ``profile``, by name in stack order (what export writes)."""
    return {layer.name: render(layer.name, profile, layout) for layer in enabled(profile)}
