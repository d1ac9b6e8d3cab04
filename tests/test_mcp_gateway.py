"""The MCP gateway layer (ADR-0033): JWT authentication against the identity layer's Dex, a rate limit from the
profile, a route to the MCP server's Service; pinned kinds only."""

from __future__ import annotations

import yaml

from inferbook import layers, load_profile
from inferbook.layers.identity.manifests import MCP_CLIENT_ID
from inferbook.layers.mcp_gateway import steps
from inferbook.layers.mcp_gateway.manifests import MCP_PORT, MCP_SERVICE
from inferbook.paths import Layout

from .conftest import ROOT


def render(tmp_path, **overrides):
    return layers.render("mcp-gateway", load_profile("gke-l4", overrides), Layout(ROOT, tmp_path))


def policy(objects):
    return next(o for o in objects if o["kind"] == "AgentgatewayPolicy")


def test_the_shipped_profiles_enable_the_mcp_gateway_where_they_belong():
    assert all("mcp-gateway" in load_profile(n).features for n in ("gke-l4", "prod"))
    assert not any("mcp-gateway" in load_profile(n).features for n in ("local", "kind", "multi-gpu"))


def test_tokens_are_dexs_for_the_mcp_client_and_strict(tmp_path):
    objects = render(tmp_path, **{"identity.issuer": "https://sso.example.com/dex"})
    jwt = policy(objects)["spec"]["traffic"]["jwtAuthentication"]
    assert jwt["mode"] == "Strict"
    provider = jwt["providers"][0]
    assert provider["issuer"] == "https://sso.example.com/dex" and provider["audiences"] == [MCP_CLIENT_ID]
    remote = provider["jwks"]["remote"]
    assert remote["backendRef"]["name"] == "dex" and remote["jwksPath"] == "/dex/keys"


def test_dex_knows_the_mcp_client_only_when_the_gateway_is_on(tmp_path):
    def clients(**overrides):
        objects = layers.render("identity", load_profile("gke-l4", overrides), Layout(ROOT, tmp_path / str(overrides)))
        config = yaml.safe_load(next(o for o in objects if o["kind"] == "ConfigMap")["data"]["config.yaml"])
        return {c["id"] for c in config["staticClients"]}

    assert MCP_CLIENT_ID in clients()
    assert MCP_CLIENT_ID not in clients(**{"features.mcp-gateway": False})


def test_the_rate_limit_follows_the_profile(tmp_path):
    limit = policy(render(tmp_path, **{"mcp.requests_per_minute": 5, "mcp.burst": 0}))["spec"]["traffic"]["rateLimit"]
    assert limit["local"] == [{"requests": 5, "unit": "Minutes", "burst": 0}]


def test_the_route_sends_mcp_to_the_servers_service_and_only_pinned_kinds_are_used(tmp_path):
    objects = render(tmp_path)
    route = next(o for o in objects if o["kind"] == "HTTPRoute")
    assert route["spec"]["rules"][0]["backendRefs"][0] == {"group": "", "kind": "Service", "name": MCP_SERVICE,
                                                          "port": MCP_PORT}
    assert {o["kind"] for o in objects} == {"Gateway", "HTTPRoute", "AgentgatewayPolicy", "NetworkPolicy"}
    table = steps.summary(objects).set_index("setting")["value"]
    assert table["route"] == "/mcp" and "Strict" in table["authentication"]
    assert list(steps.summary([])["value"])[0].startswith("features.mcp-gateway is off")
