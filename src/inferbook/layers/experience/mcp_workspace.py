"""The agent's tools from MCP, through the gateway: what replaces the Python :class:`.agent_loop.Workspace`.

The agent lists the tools its key may use at the gateway's ``/mcp`` (LiteLLM names each ``<server>-<tool>``),
offers them to the model under their own names (``read_file``: what a small model is prompted with), and calls
each one back through the gateway with the same key. A refused or failed call becomes the tool's result, an
``error: ...`` line the model reads, as agents report tool errors; nothing hangs (the client has a deadline).

The verdict still runs the repository's original tests, on the files read back through the tools: the agent's
repository lives where the MCP server runs (a local folder, or the pod's volume on a cluster).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ..mcp.client import McpError, McpTools
from ..mcp.manifests import GATEWAY_NAME
from .agent_loop import SAMPLE_REPO, Workspace, tool_system_prompt

#: LiteLLM's separator between a server's name and its tool's (MCP_TOOL_PREFIX_SEPARATOR).
SEPARATOR = "-"


class McpUnusable(McpError):
    """The gateway offers this key none of the server's tools: no grant, or the server is down."""


class McpWorkspace:
    """The sample repository's tools as one MCP server behind the gateway offers them to one key."""

    def __init__(self, client: McpTools, server: str = GATEWAY_NAME) -> None:
        self.client = client
        self.server = server
        listed = client.list_tools()
        prefix = f"{server}{SEPARATOR}"
        mine = [t for t in listed if t["function"]["name"].startswith(prefix)]
        if not mine:
            raise McpUnusable(
                f"the gateway at {client.url} lists none of MCP server '{server}''s tools for this key "
                f"({len(listed)} tool(s) of other servers). Either the key has no grant of it (the profile's "
                f"tenants.keys.<key>.mcp_servers), or the server is down: LiteLLM leaves an unreachable server out "
                f"of the list. Fix: grant it, or start the server (inferbook up)")
        #: The model's name of each tool -> the gateway's.
        self.names = {t["function"]["name"][len(prefix):]: t["function"]["name"] for t in mine}
        self.tools: list[dict[str, Any]] = [
            {"type": "function", "function": {**t["function"], "name": t["function"]["name"][len(prefix):]}}
            for t in mine]
        self.system = tool_system_prompt(self.tools)
        #: Each call's seconds through the gateway, in order (the chapter's latency figure).
        self.call_seconds: list[float] = []

    def __repr__(self) -> str:
        return f"McpWorkspace({self.client.url!r}, server={self.server!r}, tools={sorted(self.names)})"

    def call(self, name: str, arguments: str) -> str:
        """One tool call through the gateway; a refusal, an outage or the tool's own error is the result."""
        try:
            args = json.loads(arguments or "{}")
        except ValueError as exc:
            return f"error: arguments are not JSON ({exc})"
        if not isinstance(args, dict):
            return f"error: arguments must be a JSON object, got {arguments[:60]!r}"
        full = self.names.get(name)
        if full is None:
            return f"error: unknown tool '{name}'; the tools are {', '.join(sorted(self.names))}"
        try:
            result = self.client.call_tool(full, args)
        except McpError as exc:
            return f"error: the tool call {full} failed: {exc}"
        self.call_seconds.append(result.seconds)
        return f"error: {result.text}" if result.is_error else result.text

    def reset(self, files: dict[str, str] = SAMPLE_REPO) -> None:
        """Lay the sample repository down again through the tools (its files rewritten), for a fresh run."""
        for path, text in files.items():
            answer = self.call(_write_tool(self.names), json.dumps({"path": path, "content": text}))
            if answer.startswith("error:"):
                raise McpError(f"could not reset the repository through MCP: {answer}")

    def tests_pass(self, original: dict[str, str] = SAMPLE_REPO) -> bool:
        """The repository's original tests against the agent's code, read back through the tools."""
        listing = self.call("list_files", "{}")
        if listing.startswith("error:"):
            raise McpError(f"cannot read the repository back for the verdict: {listing}")
        with tempfile.TemporaryDirectory() as tmp:
            for path in filter(None, listing.splitlines()):
                if path.endswith(".py") and not path.startswith("test_"):
                    text = self.call("read_file", json.dumps({"path": path}))
                    target = Path(tmp) / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(text)
            return Workspace(Path(tmp)).tests_pass(original)


def _write_tool(names: dict[str, str]) -> str:
    return "write_patch" if "write_patch" in names else "write_file"
