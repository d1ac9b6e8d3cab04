"""The MCP gateway's manifests (ADR-0033): Dex's issuer and the MCP audience in the JWT rule, the profile's rate.

``manifests/mcp-gateway/gateway`` holds a Gateway of its own (class agentgateway), the HTTPRoute ``/mcp`` to the
Service ``inferbook-mcp`` (the guardrails/MCP layer's server) and an AgentgatewayPolicy: JWT authentication
(Strict) against Dex's keys and a local rate limit. With ``features.security`` the ``networkpolicy`` component
opens the path through the default-deny.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...manifests import LayerManifests, Selection, find, guarded_replace, json6902
from ...profile import Profile
from ..identity.manifests import MCP_CLIENT_ID

LAYER = "mcp-gateway"
GATEWAY, ROUTE, POLICY = "mcp-gateway", "mcp", "mcp-auth"
#: The MCP server the route sends to: the guardrails/MCP layer's Service and port (the contract between them).
MCP_SERVICE, MCP_PORT = "inferbook-mcp", 8000


def selection(profile: Profile) -> Selection:
    mcp = profile.data["mcp"]
    components: list[tuple[str, str]] = []
    if "security" in profile.features:
        components.append(("networkpolicy", "features.security: clients -> MCP gateway -> MCP server and Dex's keys "
                                            "opened through the default-deny"))
    return Selection(layer=LAYER, base="mcp-gateway/gateway", base_reason=(
        f"agentgateway Gateway {GATEWAY}: /mcp to Service {MCP_SERVICE}:{MCP_PORT}, JWTs of "
        f"{profile.data['identity']['issuer']} for {MCP_CLIENT_ID}, {mcp['requests_per_minute']} requests/min "
        f"(burst {mcp['burst']})"), components=tuple(components))


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    policy = find(base_objects, "AgentgatewayPolicy", POLICY)
    traffic = policy["spec"]["traffic"]
    provider = traffic["jwtAuthentication"]["providers"][0]
    limit = traffic["rateLimit"]["local"][0]
    mcp = profile.data["mcp"]
    base = "/spec/traffic"
    ops = (guarded_replace(f"{base}/jwtAuthentication/providers/0/issuer", provider["issuer"],
                           profile.data["identity"]["issuer"])
           + guarded_replace(f"{base}/jwtAuthentication/providers/0/audiences", provider["audiences"], [MCP_CLIENT_ID])
           + guarded_replace(f"{base}/rateLimit/local/0/requests", limit["requests"], mcp["requests_per_minute"])
           + guarded_replace(f"{base}/rateLimit/local/0/burst", limit["burst"], mcp["burst"]))
    return [json6902("AgentgatewayPolicy", "agentgateway.dev", POLICY, ops)]


MANIFESTS = LayerManifests(LAYER, selection, patches)
