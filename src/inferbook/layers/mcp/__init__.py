"""The MCP layer (issue #23), in the experience chapter: the book's MCP server, the sample repository's tools
(list_files, read_file, write_patch, run_tests) over streamable HTTP, behind LiteLLM's MCP gateway with per-key
tool permissions. On a cluster, a Deployment and the Service ``inferbook-mcp`` (which the mcp-gateway layer
routes to); locally, a supervised process.
"""

from __future__ import annotations

from ...layer import Layer
from ...paths import Layout
from ...profile import Profile
from .local import LocalMcp
from .manifests import LAYER, MANIFESTS


def _owner(profile: Profile, port_key: str) -> str | None:
    """This profile's own MCP server on its port, over its workspace (preflight: reused, not in the way)."""
    if LocalMcp(profile, Layout.discover(), say=lambda _: None).healthy():
        return "this profile's MCP server"
    return None

__all__ = ["DECLARATION", "LocalMcp"]

DECLARATION = Layer(
    name=LAYER,
    summary="the book's MCP server: repository tools behind LiteLLM's MCP gateway, per-key tool permissions",
    manifests=MANIFESTS,
    local=LocalMcp,
    ports=(LAYER,),
    owner=_owner,
    chapter="experience",
)
