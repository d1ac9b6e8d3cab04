"""The MCP layer on the local target: the book's MCP server as a supervised process on ``local.ports.mcp``.

The same file as the pod's (:data:`.manifests.SERVER_SCRIPT`), run by inferbook's own Python (FastMCP is pinned
in the book's environment), over a workspace folder in the machine's state (:attr:`LocalMcp.workspace`): the
chapter lays the sample repository there, the agent changes it through the tools, the verdict reads it.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ... import targets
from ...errors import InferbookError
from ...layer import LocalLayer
from ...paths import Layout
from ...process import ServerProcess, claim_port, fingerprint, part_row, port_holder
from ...profile import Profile
from ...say import Say
from ...secrets import SecretStore
from .manifests import LAYER, SERVER_SCRIPT


class LocalMcp(LocalLayer):
    """Start, reuse, check and stop the local MCP server of one profile."""

    layer = LAYER

    def __init__(self, profile: Profile, layout: Layout, cache_dir: Path | None = None,
                 secrets: SecretStore | None = None, say: Say = print) -> None:
        super().__init__(profile, layout, cache_dir, secrets, say)
        folder = self.state_dir / f"{LAYER}-{self.port}"
        #: The folder the tools work in (a path that leaves it is refused by the server).
        self.workspace = folder / "workspace"
        self.process = ServerProcess(LAYER, self.port, SERVER_SCRIPT.name, folder / "state.json",
                                     self.run_dir / "logs" / f"{LAYER}.log", self.supervisor)

    @property
    def url(self) -> str:
        """The MCP endpoint (streamable HTTP), straight to the server: the gateway's /mcp is the tenants' way in."""
        return f"{self.base}/mcp"

    def argv(self) -> list[str]:
        """The book's own interpreter (FastMCP is pinned there), named the same whoever starts it (``inferbook up``,
        a chapter's kernel), so a healthy server started by one is reused by the other."""
        python = Path(sys.prefix) / "bin" / "python"
        return [str(python if python.exists() else sys.executable), str(SERVER_SCRIPT), f"--root={self.workspace}",
                "--host=127.0.0.1", f"--port={self.port}"]

    def health(self) -> dict[str, Any] | None:
        """The server's /healthz answer, or None when nothing (or not it) answers."""
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=5) as response:
                found = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def healthy(self) -> bool:
        """Our server answers, over our workspace (another profile's server on the port is not ours)."""
        found = self.health()
        return found is not None and found.get("root") == str(self.workspace.resolve())

    def running(self) -> bool:
        return self.process.pid() is not None

    def start(self, timeout: float = 120) -> dict[str, Any]:
        """Start the server, or reuse a healthy one of ours started with the same command; returns :meth:`status`."""
        if not targets.kind_of(self.profile).local_processes:
            raise InferbookError(f"profile {self.profile.name} targets a cluster; the local MCP server runs only for "
                                 f"target.kind: local. For a cluster: inferbook run --profile {self.profile.name}")
        argv = self.argv()
        launched_with = fingerprint(argv)
        if self.process.reusable(launched_with, self.say) and self.healthy():
            self.say(f"mcp: reusing the healthy MCP server at {self.url}")
            return self.status()
        if self.process.pid() is not None:
            self.process.stop(self.say)
        claim_port(self.port, LAYER, "this profile's MCP server", self.profile.name)
        self.workspace.mkdir(parents=True, exist_ok=True)
        pid = self.process.launch(argv, {}, self.run_dir)
        self.process.record(url=self.url, fingerprint=launched_with)
        self.say(f"mcp: started the MCP server (pid {pid}, supervised) on {self.url}; log {self.process.log_path}")
        self.process.wait(self.healthy, timeout, self.say, "the MCP server")
        return self.status()

    def stop(self) -> bool:
        return self.process.stop(self.say)

    def diagnosis(self) -> str:
        """What is wrong, and the fix ("" when healthy)."""
        if self.healthy():
            return ""
        held = port_holder(self.port)
        if held and not self.process.supervised():
            return (f"port {self.port} is held by {held}, not this profile's MCP server. Fix: stop that process, "
                    f"or choose another port with -p local.ports.{LAYER}=N")
        return (f"the MCP server of profile {self.profile.name} is not running at {self.url}. "
                f"Fix: inferbook up --profile {self.profile.name}")

    def status(self) -> dict[str, Any]:
        healthy = self.healthy()
        facts = self.process.facts()
        return self.report("-", [part_row("server", facts, healthy)], self.process.supervised(), self.diagnosis,
                           workspace=str(self.workspace), **facts)
