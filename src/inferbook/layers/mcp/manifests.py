"""The MCP layer's manifests: the book's MCP server as a Deployment and the Service ``inferbook-mcp``.

``manifests/mcp/server`` holds the Deployment (a python image, the pinned FastMCP installed by an init container),
the Service the mcp-gateway layer's route and LiteLLM's ``mcp_servers`` entry send to, and a ConfigMap whose
``server.py`` inferbook fills with :data:`SERVER_SCRIPT`, so the pod and the local process run one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...manifests import LayerManifests, Selection, dump, find, pointer
from ...profile import Profile

LAYER = "mcp"
#: The Service and port: the contract with the mcp-gateway layer's HTTPRoute and the gateway's mcp_servers entry.
SERVICE, PORT = "inferbook-mcp", 8000
#: LiteLLM's name for the server (manifests/llm-gateway/components/mcp): its tools are listed as ``<name>-<tool>``
#: and a key's ``mcp_servers`` grants it by this name.
GATEWAY_NAME = "inferbook_mcp"
SCRIPT_CONFIGMAP, SCRIPT_KEY = "inferbook-mcp-server", "server.py"
#: The server, standalone (FastMCP and the standard library only): run by path locally, mounted in the pod.
SERVER_SCRIPT = Path(__file__).with_name("scripts") / "server.py"


def selection(profile: Profile) -> Selection:
    components: list[tuple[str, str]] = []
    if "security" in profile.features:
        components.append(("networkpolicy", "features.security: LiteLLM -> MCP server opened through the "
                                            "default-deny, and the install's HTTPS egress"))
    return Selection(layer=LAYER, base="mcp/server", base_reason=(
        f"FastMCP server: list_files, read_file, write_patch, run_tests over streamable HTTP, Service "
        f"{SERVICE}:{PORT}/mcp (behind LiteLLM's /mcp as {GATEWAY_NAME})"), components=tuple(components))


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    """The server's source into its ConfigMap (one file: what the local process runs, the pod runs)."""
    find(base_objects, "ConfigMap", SCRIPT_CONFIGMAP)  # fail here, naming what exists, if the base lost it
    ops = [{"op": "replace", "path": f"/data/{pointer(SCRIPT_KEY)}", "value": SERVER_SCRIPT.read_text()}]
    return [{"target": {"version": "v1", "kind": "ConfigMap", "name": SCRIPT_CONFIGMAP}, "patch": dump(ops)}]


MANIFESTS = LayerManifests(LAYER, selection, patches, needed_by=", e.g. mcp-gateway")
