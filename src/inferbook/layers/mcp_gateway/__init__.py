"""MCP gateway (ADR-0033), in the security chapter: agentgateway in front of the book's read-only MCP server,
with JWT authentication against Dex and a local rate limit. Cluster-only: rendered, validated and summarised.
"""

from __future__ import annotations

from ...layer import Layer
from .manifests import LAYER, MANIFESTS

__all__ = ["DECLARATION"]

DECLARATION = Layer(
    name=LAYER,
    summary="MCP gateway: agentgateway with JWT authentication (Dex) and a rate limit in front of the MCP server",
    manifests=MANIFESTS,
    chapter="security",
)
