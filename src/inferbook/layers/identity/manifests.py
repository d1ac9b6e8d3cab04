"""The identity layer's manifests (ADR-0026): Dex's config and oauth2-proxy's URLs from the profile.

``manifests/identity/sso`` holds Dex (ConfigMap, Deployment, Service), oauth2-proxy (Deployment, Service) and
the portal's ExternalSecret. The profile's ``identity:`` section picks the connector (component ``static-user``:
the lab user whose bcrypt hash the secret store holds; ``google``: Dex's google connector) and the two URLs a
browser uses (Dex's issuer, the portal); with ``features.security`` the ``networkpolicy`` component opens the
sign-in path through the default-deny. Dex's config is written here whole, from those values, so the issuer,
the portal's redirect and the connector cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...manifests import LayerManifests, Selection, arg_index, container, dump, find, guarded_replace, json6902
from ...profile import Profile

LAYER = "identity"
DEX, PORTAL = "dex", "oauth2-proxy"
DEX_CONFIGMAP, DEX_PORT, PORTAL_PORT = "dex-config", 5556, 4180
#: The portal's OIDC client at Dex, and the env var Dex reads its secret from.
CLIENT_ID, CLIENT_SECRET_ENV = "inferbook-portal", "OAUTH2_PROXY_CLIENT_SECRET"
STATIC_HASH_ENV = "DEX_STATIC_USER_HASH"
#: The MCP gateway's audience (features.mcp-gateway): Dex's client for agentic tools.
MCP_CLIENT_ID = "inferbook-mcp"
#: LiteLLM's Service (the llm-gateway layer's), the portal's upstream.
UPSTREAM = "http://litellm:4000/"


def settings(profile: Profile) -> dict[str, Any]:
    return dict(profile.data["identity"])


def selection(profile: Profile) -> Selection:
    s = settings(profile)
    components: list[tuple[str, str]] = []
    if s["connector"] == "static":
        components.append(("static-user", f"identity.connector: static, one lab user ({s['static_email']}) whose "
                                          "bcrypt hash comes from the secret store"))
    else:
        components.append(("google", "identity.connector: google, Google accounts through Dex's google connector"
                                     + (f" (domain {s['google_domain']})" if s["google_domain"] else "")))
    if "security" in profile.features:
        components.append(("networkpolicy", "features.security: the sign-in path opened through the default-deny"))
    return Selection(layer=LAYER, base="identity/sso", base_reason=f"Dex (issuer {s['issuer']}) and oauth2-proxy "
                     f"({s['portal_url']}) in front of LiteLLM's admin UI and key portal (ADR-0026)",
                     components=tuple(components))


def dex_config(profile: Profile) -> dict[str, Any]:
    """Dex's config.yaml for the profile: issuer, memory storage, the portal's client, the connector."""
    s = settings(profile)
    config: dict[str, Any] = {
        "issuer": s["issuer"],
        "storage": {"type": "memory"},
        "web": {"http": f"0.0.0.0:{DEX_PORT}"},
        "telemetry": {"http": "0.0.0.0:5558"},
        "oauth2": {"skipApprovalScreen": True, "responseTypes": ["code"]},
        "staticClients": [{"id": CLIENT_ID, "name": "inferbook key portal", "secretEnv": CLIENT_SECRET_ENV,
                           "redirectURIs": [f"{s['portal_url'].rstrip('/')}/oauth2/callback"]}],
    }
    if "mcp-gateway" in profile.features:
        # The MCP gateway's audience: a public client, so an agentic tool signs in with the device flow.
        config["staticClients"].append({"id": MCP_CLIENT_ID, "name": "MCP clients", "public": True})
    if s["connector"] == "static":
        config["enablePasswordDB"] = True
        config["staticPasswords"] = [{"email": s["static_email"], "hashFromEnv": STATIC_HASH_ENV,
                                      "username": s["static_email"].split("@")[0],
                                      "userID": "00000000-0000-4000-8000-000000000001"}]
    else:
        google: dict[str, Any] = {"clientID": "$GOOGLE_CLIENT_ID", "clientSecret": "$GOOGLE_CLIENT_SECRET",
                                  "redirectURI": f"{s['issuer'].rstrip('/')}/callback"}
        if s["google_domain"]:
            google["hostedDomains"] = [s["google_domain"]]
        config["enablePasswordDB"] = False
        config["connectors"] = [{"type": "google", "id": "google", "name": "Google", "config": google}]
    return config


def portal_args(profile: Profile, namespace: str) -> dict[str, str]:
    """oauth2-proxy's flags that follow the profile: the browser's URLs and Dex's in-cluster endpoints."""
    s = settings(profile)
    issuer = s["issuer"].rstrip("/")
    inside = f"http://{DEX}.{namespace}.svc.cluster.local:{DEX_PORT}/dex"
    return {"--oidc-issuer-url=": issuer, "--login-url=": f"{issuer}/auth", "--redeem-url=": f"{inside}/token",
            "--oidc-jwks-url=": f"{inside}/keys",
            "--redirect-url=": f"{s['portal_url'].rstrip('/')}/oauth2/callback", "--upstream=": UPSTREAM,
            "--cookie-secure=": "true" if s["portal_url"].startswith("https://") else "false"}


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    configmap = find(base_objects, "ConfigMap", DEX_CONFIGMAP)
    out = [{"target": {"version": "v1", "kind": "ConfigMap", "name": DEX_CONFIGMAP},
            "patch": dump(guarded_replace("/data/config.yaml", configmap["data"]["config.yaml"],
                                          dump(dex_config(profile))))}]
    portal = find(base_objects, "Deployment", PORTAL)
    args = container(portal, PORTAL)["args"]
    ops: list[dict[str, Any]] = []
    for prefix, value in portal_args(profile, str(profile.data["target"].get("namespace") or "inferbook")).items():
        i = arg_index(args, prefix, "manifests/identity/sso/oauth2-proxy.yaml")
        ops += guarded_replace(f"/spec/template/spec/containers/0/args/{i}", args[i], prefix + value)
    out.append(json6902("Deployment", "apps", PORTAL, ops))
    return out


MANIFESTS = LayerManifests(LAYER, selection, patches, needed_by=", e.g. mcp-gateway or public-edge")
