"""The MCP layer's steps in the experience chapter: bring the server up, prove the per-key tool permissions,
show the gateway's tool-call log with the key, measure the gateway's cost per call, and the server-down fault.

Every check goes through the tenant's door, the gateway's ``/mcp`` with a virtual key, as the agent does; the
direct URL of the server is used only to measure what the gateway adds, and on the local target only.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ... import targets, waiting
from ...errors import InferbookError
from ...jsonapi import call_json
from ...layer import Layer
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from ..llm_gateway.admin import Admin
from ..llm_gateway.enforcement import Tenants
from .client import McpError, McpRefused, McpTools
from .local import LocalMcp
from .manifests import GATEWAY_NAME, MANIFESTS

#: The tool the checks call: harmless (it only lists), and every granted key may call it.
PROBE_TOOL = "list_files"


def provision(declaration: Layer, profile: Profile, layout: Layout, say: Say = print) -> pd.DataFrame:
    """The MCP server up: the local process (started or reused) or, on a cluster, its objects applied and rolled
    out. A table of what happened."""
    target = targets.of(profile, layout, say)
    if target.has_part(declaration):
        server: LocalMcp = target.part(declaration)
        status = server.bring_up(timeout=120)
        return pd.DataFrame([("target", "local process"), ("url (direct)", server.url),
                             ("workspace", status["workspace"]), ("healthy", status["healthy"]),
                             ("started by this run", "no, reused a healthy server" if status["reused"] else "yes")],
                            columns=["item", "value"]).set_index("item")
    objects = MANIFESTS.render(profile, layout)
    changes = target.apply(objects, declaration.name) + target.wait(objects, timeout=300)
    return targets.changes_table(changes)


def gateway_mcp_url(gateway_base: str) -> str:
    """The gateway's MCP endpoint (LiteLLM serves every granted server's tools at ``/mcp``)."""
    return f"{gateway_base.rstrip('/')}/mcp"


@dataclass(frozen=True)
class Attempt:
    caller: str
    expected: str
    lists: str
    calls: str
    allowed: bool


def _attempt(url: str, key: str | None) -> tuple[str, str, bool]:
    """(what listing said, what a call said, whether the caller got the server's tools and a call through)."""
    tools = McpTools(url, key, timeout=30)
    try:
        listed = [t["function"]["name"] for t in tools.list_tools()]
        lists = f"{len(listed)} tool(s): {', '.join(listed)}" if listed else "0 tools"
    except McpRefused as exc:
        listed, lists = [], f"refused, HTTP {exc.status}"
    try:
        result = tools.call_tool(f"{GATEWAY_NAME}-{PROBE_TOOL}", {})
        calls = f"error result: {result.text[:80]}" if result.is_error else "answered"
        called = not result.is_error
    except McpRefused as exc:
        calls, called = f"refused, HTTP {exc.status}: {str(exc)[:90]}", False
    return lists, calls, bool(listed) and called


def permissions(url: str, admin: Admin, tenants: Tenants, say: Say = print) -> pd.DataFrame:
    """Who may list and call the server's tools at the gateway: the agent key (granted), the IDE key (no grant),
    no key, and a key that was granted and then revoked. One row each, with what was expected."""
    revoked_alias = f"{tenants.alias('mcp-revoked')}"
    if revoked_alias in {row["alias"] for row in admin.keys()}:
        admin.revoke(revoked_alias)
    revoked = admin.create_key(revoked_alias, ["coder-chat"], team_id=tenants.team_id, mcp_servers=[GATEWAY_NAME])
    admin.revoke(revoked_alias)
    callers = [(f"{tenants.alias('agent')} (granted {GATEWAY_NAME})", tenants.keys.get("agent"), True),
               (f"{tenants.alias('ide')} (no grant)", tenants.keys.get("ide"), False),
               ("no key", None, False),
               (f"{revoked_alias} (granted, then revoked)", revoked, False)]
    rows = []
    for caller, key, allowed in callers:
        lists, calls, got = _attempt(url, key)
        say(f"mcp: {caller}: lists {lists}; call {calls}")
        rows.append({"caller": caller, "expected": "lists and calls" if allowed else "refused", "lists": lists,
                     "calls": calls, "pass": got == allowed})
    return pd.DataFrame(rows).set_index("caller")


def key_hash(key: str) -> str:
    """The key as LiteLLM's ledger records it (sha256 of the key): a log row names it without holding it."""
    return hashlib.sha256(key.encode()).hexdigest()


def tool_log(gateway_base: str, master_key: str, keys: dict[str, str], at_least: int = 1, timeout: float = 60,
             say: Say = print) -> pd.DataFrame:
    """The gateway's log of MCP calls made with ``keys`` (alias -> key): LiteLLM's spend logs, where each tool call
    is a row (``call_mcp_tool``) with the key's hash, alias and team. Waits for ``at_least`` tool-call rows:
    LiteLLM writes its spend logs in batches."""
    wanted = {key_hash(k): alias for alias, k in keys.items()}
    rows: list[dict[str, Any]] = []

    def logged() -> str | None:
        nonlocal rows
        status, logs = call_json("GET", f"{gateway_base.rstrip('/')}/spend/logs?summarize=false", master_key)
        if status != 200 or not isinstance(logs, list):
            return f"HTTP {status} from /spend/logs"
        rows = [_log_row(entry, wanted) for entry in logs if entry.get("api_key") in wanted
                and entry.get("call_type") in ("call_mcp_tool", "list_mcp_tools")]
        calls = sum(1 for r in rows if r["operation"] == "call_mcp_tool")
        return None if calls >= at_least else f"{calls} of {at_least} tool calls logged"

    try:
        waiting.wait_for(logged, timeout=timeout, what="the gateway's MCP call log", interval=2,
                         say=lambda line: say(f"mcp: {line}"))
    except waiting.WaitTimedOut as exc:
        raise InferbookError(f"{exc}. The gateway writes its spend logs in batches; see its log") from None
    columns = ["time", "key alias", "key (sha256, first 12)", "operation", "tool", "status", "ms"]
    return pd.DataFrame(sorted(rows, key=lambda r: r["time"]), columns=columns).set_index("time")


def _log_row(entry: dict[str, Any], wanted: dict[str, str]) -> dict[str, Any]:
    metadata = entry.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = {}
    model = str(entry.get("model") or "")
    return {"time": entry.get("startTime"), "key alias": metadata.get("user_api_key_alias") or wanted[entry["api_key"]],
            "key (sha256, first 12)": entry["api_key"][:12], "operation": entry.get("call_type"),
            "tool": model.removeprefix("MCP: "), "status": entry.get("status"),
            "ms": entry.get("request_duration_ms")}


def latency(direct_url: str, gateway_url: str, key: str, calls: int = 10) -> pd.DataFrame:
    """Median seconds of one tool call (``list_files``, a session each) straight to the server and through the
    gateway with ``key``: what the gateway's authentication, permission check and logging add per call."""
    rows = []
    for path, url, name, auth in (("direct", direct_url, PROBE_TOOL, None),
                                  ("through the gateway", gateway_url, f"{GATEWAY_NAME}-{PROBE_TOOL}", key)):
        client = McpTools(url, auth, timeout=30)
        seconds = []
        for _ in range(calls):
            result = client.call_tool(name, {})
            if result.is_error:
                raise McpError(f"{name} at {url} returned an error: {result.text[:200]}")
            seconds.append(result.seconds)
        rows.append({"path": path, "calls": calls, "median_s": round(statistics.median(seconds), 3),
                     "max_s": round(max(seconds), 3)})
    return pd.DataFrame(rows).set_index("path")


@dataclass(frozen=True)
class Outage:
    """What a caller saw while the MCP server was down, and how long each answer took."""

    listed: str
    list_s: float
    call: str
    call_is_error: bool
    call_s: float
    names_server: bool
    back: bool


def outage(server: LocalMcp, gateway_url: str, key: str, timeout: float = 30) -> Outage:
    """The MCP server stopped: a listing and a tool call through the gateway (each bounded by ``timeout``), then
    the server started again and a call that works. Local target only (it stops the local process)."""
    client = McpTools(gateway_url, key, timeout=timeout)
    server.stop()
    try:
        started = time.perf_counter()
        try:
            listed = f"{len(client.list_tools())} tool(s)"
        except McpError as exc:
            listed = f"error: {exc}"
        list_s = time.perf_counter() - started
        started = time.perf_counter()
        try:
            result = client.call_tool(f"{GATEWAY_NAME}-{PROBE_TOOL}", {})
            call, is_error = result.text, result.is_error
        except McpError as exc:
            call, is_error = f"{type(exc).__name__}: {exc}", True
        call_s = time.perf_counter() - started
    finally:
        server.start()
    back = not client.call_tool(f"{GATEWAY_NAME}-{PROBE_TOOL}", {}).is_error
    return Outage(listed, round(list_s, 2), call, is_error, round(call_s, 2), GATEWAY_NAME in call, back)


def outage_table(found: Outage, timeout: float = 30) -> pd.DataFrame:
    rows = [("listing while down", found.listed, f"{found.list_s} s"),
            ("tool call while down", found.call[:200], f"{found.call_s} s"),
            ("tool call after restart", "answered" if found.back else "still failing", "-")]
    return pd.DataFrame(rows, columns=["step", "answer", "took"]).set_index("step")


def third_party(url: str, key: str) -> pd.DataFrame:
    """The ``mcp`` SDK's own client, as a third-party agent uses it (protocol negotiated the SDK's default way),
    with a virtual key: it lists the tools and reads the repository's README through the gateway."""
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def session() -> tuple[list[str], str, bool]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                listed = await client.list_tools()
                result = await client.call_tool(f"{GATEWAY_NAME}-read_file", {"path": "README.md"})
                text = "\n".join(getattr(p, "text", "") for p in result.content or [])
                return [t.name for t in listed.tools], text, bool(result.is_error)

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # a notebook's kernel already runs a loop
        names, text, is_error = pool.submit(anyio.run, session).result(timeout=120)
    rows = [("client", "mcp SDK (mcp.Client over streamable HTTP)"), ("tools listed", ", ".join(names)),
            (f"{GATEWAY_NAME}-read_file README.md", ("error: " if is_error else "") + text.splitlines()[0][:80]
             if text else "(empty)")]
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def verify(allowed: pd.DataFrame, log: pd.DataFrame, agent_calls: int, third: pd.DataFrame,
           down: Outage | None, timeout: float = 30) -> pd.DataFrame:
    """The MCP rows of the chapter's verification table (check, expected, observed, pass)."""
    rows = [{"check": f"MCP permission: {caller}", "expected": row["expected"],
             "observed": f"{row['lists']}; {row['calls']}"[:160], "pass": bool(row["pass"])}
            for caller, row in allowed.iterrows()]
    logged = int((log["operation"] == "call_mcp_tool").sum()) if len(log) else 0
    rows.append({"check": "MCP tool calls logged with the key", "expected": "rows with the key's alias and hash",
                 "observed": f"{logged} tool-call row(s) for {', '.join(sorted(set(log['key alias'])))}"
                 if len(log) else "none", "pass": logged >= 1})
    rows.append({"check": "the agent's tools came from MCP", "expected": "tool calls through the gateway's /mcp",
                 "observed": f"{agent_calls} call(s)", "pass": agent_calls >= 1})
    listed = str(third.loc["tools listed", "value"])
    rows.append({"check": "a third-party MCP client with a virtual key", "expected": "lists and calls the tools",
                 "observed": listed[:120], "pass": GATEWAY_NAME in listed and not str(
                     third.iloc[-1]["value"]).startswith("error")})
    if down is not None:
        rows.append({"check": "MCP server down: the tool call", "expected":
                     f"a tool error naming {GATEWAY_NAME}, within {timeout:.0f} s",
                     "observed": f"{down.call[:100]} ({down.call_s} s)",
                     "pass": down.call_is_error and down.names_server and down.call_s < timeout})
        rows.append({"check": "MCP server back", "expected": "the next call answers",
                     "observed": "answered" if down.back else "still failing", "pass": down.back})
    return pd.DataFrame(rows).set_index("check")


class McpSection:
    """The MCP part of the experience chapter, one call a cell; each step says so when ``features.mcp`` is off
    (the agent then keeps its Python tools), and the fault drill when the target cannot stop the server."""

    def __init__(self, declaration: Layer, profile: Profile, layout: Layout, gateway_base: str, master_key: str,
                 admin: Admin, tenants: Tenants, say: Say = print) -> None:
        self.declaration = declaration
        self.profile = profile
        self.layout = layout
        self.gateway_base = gateway_base
        self.url = gateway_mcp_url(gateway_base)
        self.master_key = master_key
        self.admin = admin
        self.tenants = tenants
        self.say = say
        self.on = "mcp" in profile.features
        self.target = targets.of(profile, layout, say)
        self.allowed: pd.DataFrame | None = None
        self.log: pd.DataFrame | None = None
        self.third: pd.DataFrame | None = None
        self.down: Outage | None = None

    def _off(self) -> pd.DataFrame:
        return pd.DataFrame([("features.mcp", f"off on profile {self.profile.name}: the agent keeps its Python "
                                              "tools; nothing to show")], columns=["item", "value"]).set_index("item")

    @property
    def local(self) -> LocalMcp | None:
        return self.target.part(self.declaration) if self.target.has_part(self.declaration) else None

    def provision(self) -> pd.DataFrame:
        return provision(self.declaration, self.profile, self.layout, self.say) if self.on else self._off()

    def permissions(self) -> pd.DataFrame:
        if not self.on:
            return self._off()
        self.allowed = permissions(self.url, self.admin, self.tenants, self.say)
        return self.allowed

    def tools_log(self, workspace: Any = None) -> pd.DataFrame:
        """The gateway's log of the agent key's MCP calls, once it holds the permission check's call and every call
        ``workspace`` (the agent's McpWorkspace) made."""
        if not self.on:
            return self._off()
        at_least = 1 + len(getattr(workspace, "call_seconds", []))
        agent = {self.tenants.alias("agent"): self.tenants.keys["agent"]}
        self.log = tool_log(self.gateway_base, self.master_key, agent, at_least=at_least, say=self.say)
        return self.log

    def third_party(self) -> pd.DataFrame:
        if not self.on:
            return self._off()
        self.third = third_party(self.url, self.tenants.keys["agent"])
        return self.third

    def latency(self, calls: int = 10) -> pd.DataFrame:
        server = self.local
        if not self.on or server is None:
            return self._off() if not self.on else pd.DataFrame(
                [("direct", "the server's Service is not reachable from here; only the gateway path is measured")],
                columns=["path", "note"]).set_index("path")
        return latency(server.url, self.url, self.tenants.keys["agent"], calls)

    def outage(self) -> pd.DataFrame:
        server = self.local
        if not self.on or server is None:
            return self._off() if not self.on else pd.DataFrame(
                [("fault", f"not run on {self.target.describe()}: it stops the local process")],
                columns=["step", "answer"]).set_index("step")
        self.down = outage(server, self.url, self.tenants.keys["agent"])
        return outage_table(self.down)

    def verify(self, transcript: Any, workspace: Any) -> pd.DataFrame:
        """The MCP rows of the verification; the agent's calls count only when its tools were MCP's."""
        if not self.on or self.allowed is None or self.log is None or self.third is None:
            return pd.DataFrame(columns=["check", "expected", "observed", "pass"]).set_index("check")
        names = getattr(workspace, "names", {})
        agent_calls = sum(1 for s in transcript.steps if s.tool in names)
        return verify(self.allowed, self.log, agent_calls, self.third, self.down)
