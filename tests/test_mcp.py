"""The book's MCP server and its wiring, without a live gateway: the tools' confinement (over the MCP protocol,
in process), the rendered manifests and LiteLLM config, the keys' grants, the hook that names a server that is
down, and the agent's MCP workspace."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from inferbook import features, load_profile
from inferbook.layers import LAYERS, mcp_gateway
from inferbook.layers.experience import agent_loop
from inferbook.layers.experience.mcp_workspace import McpUnusable, McpWorkspace
from inferbook.layers.llm_gateway import LocalGateway
from inferbook.layers.llm_gateway import manifests as gateway_manifests
from inferbook.layers.llm_gateway.admin import Admin
from inferbook.layers.llm_gateway.enforcement import provision_tenants
from inferbook.layers.mcp import manifests as mcp_manifests
from inferbook.layers.mcp.client import McpRefused, ToolResult
from inferbook.manifests import container, find
from inferbook.paths import Layout

from .conftest import ROOT

HOOK = ROOT / "src/inferbook/layers/llm_gateway/proxy_hooks/backend_errors.py"


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server() -> Any:
    return _module(mcp_manifests.SERVER_SCRIPT, "inferbook_mcp_server")


@pytest.fixture()
def layout(tmp_path: Path) -> Layout:
    return Layout(root=ROOT, build_dir=tmp_path)


# ---------------------------------------------------------------- the server's tools


def call(app: Any, tool: str, args: dict[str, Any]) -> tuple[str, bool]:
    """One tool call over the MCP protocol, in process (FastMCP's own client)."""
    from fastmcp import Client

    async def go() -> tuple[str, bool]:
        async with Client(app) as client:
            result = await client.call_tool(tool, args, raise_on_error=False)
            return "\n".join(getattr(p, "text", "") for p in result.content), bool(result.is_error)

    return asyncio.run(go())


def test_the_server_offers_the_four_repository_tools(server, tmp_path):
    from fastmcp import Client

    async def names() -> list[str]:
        async with Client(server.build(tmp_path)) as client:
            return sorted(t.name for t in await client.list_tools())

    assert asyncio.run(names()) == ["list_files", "read_file", "run_tests", "write_patch"]


def test_a_path_that_leaves_the_workspace_is_refused_for_reading_and_writing(server, tmp_path):
    root = agent_loop.make_sample_repo(tmp_path / "repo")
    (tmp_path / "secret.txt").write_text("not yours")
    app = server.build(root)
    for tool, args in (("read_file", {"path": "../secret.txt"}), ("read_file", {"path": "/etc/hostname"}),
                       ("write_patch", {"path": "../escape.py", "content": "x = 1\n"})):
        text, is_error = call(app, tool, args)
        assert is_error and "outside the repository" in text, (tool, args, text)
    assert not (tmp_path / "escape.py").exists()


def test_the_tools_read_patch_and_test_the_repository(server, tmp_path):
    root = agent_loop.make_sample_repo(tmp_path / "repo")
    app = server.build(root)
    assert call(app, "list_files", {}) == ("README.md\ncalc.py\ntest_calc.py", False)
    assert "NotImplementedError" in call(app, "read_file", {"path": "calc.py"})[0]
    assert call(app, "run_tests", {})[0].startswith("exit status 1")
    call(app, "write_patch", {"path": "calc.py", "content": "def add(a, b):\n    return a + b\n"})
    assert call(app, "run_tests", {})[0].startswith("exit status 0")
    text, is_error = call(app, "read_file", {"path": "missing.py"})
    assert is_error and "no file 'missing.py'" in text


# ---------------------------------------------------------------- features, manifests, config


def test_the_mcp_gateway_needs_the_mcp_server_and_mcp_needs_the_gateway():
    resolved = features.resolve({"mcp-gateway": True, "routing": True, "identity": True})
    assert "mcp" in resolved and "llm-gateway" in resolved
    assert [layer.name for layer in LAYERS].index("mcp") < [layer.name for layer in LAYERS].index("experience")


def test_the_server_is_the_service_the_mcp_gateway_routes_to_with_the_same_script(layout):
    objects = mcp_manifests.MANIFESTS.render(load_profile("local", layout=layout), layout)
    service = find(objects, "Service", mcp_manifests.SERVICE)
    assert (mcp_manifests.SERVICE, mcp_manifests.PORT) == (mcp_gateway.manifests.MCP_SERVICE,
                                                           mcp_gateway.manifests.MCP_PORT)
    assert service["spec"]["ports"][0]["port"] == mcp_gateway.manifests.MCP_PORT
    script = find(objects, "ConfigMap", mcp_manifests.SCRIPT_CONFIGMAP)["data"][mcp_manifests.SCRIPT_KEY]
    assert script.strip() == mcp_manifests.SERVER_SCRIPT.read_text().strip()
    pod = find(objects, "Deployment", mcp_manifests.SERVICE)["spec"]["template"]["spec"]
    install = pod["initContainers"][0]
    assert "fastmcp==4.1.6" in install["command"]
    assert any(line.startswith("fastmcp==4.1.6") for line in (ROOT / "constraints.txt").read_text().splitlines())
    server = container({"spec": {"template": {"spec": pod}}}, "server")
    assert server["securityContext"]["readOnlyRootFilesystem"] and server["securityContext"]["capabilities"] == {
        "drop": ["ALL"]}
    assert server["resources"]["limits"] and pod["securityContext"]["runAsNonRoot"]


def test_the_gateway_config_names_the_server_in_the_profiles_namespace_and_grants_need_the_keys_own(layout):
    profile = load_profile("local", {"target.namespace": "tenants-a"}, layout=layout)
    config = gateway_manifests.gateway_config(gateway_manifests.MANIFESTS.render(profile, layout))
    server = config["mcp_servers"][mcp_manifests.GATEWAY_NAME]
    assert server["url"] == "http://inferbook-mcp.tenants-a.svc.cluster.local:8000/mcp"
    assert server["transport"] == "http"
    assert config["general_settings"]["require_key_mcp_access_defined"] is True


def test_without_the_mcp_feature_the_gateway_has_no_mcp_server(layout):
    profile = load_profile("local", {"features.mcp": False}, layout=layout)
    config = gateway_manifests.gateway_config(gateway_manifests.MANIFESTS.render(profile, layout))
    assert "mcp_servers" not in config
    assert "require_key_mcp_access_defined" not in config["general_settings"]


def test_the_local_gateway_points_the_server_at_the_local_process(layout):
    profile = load_profile("local", {"local.ports.mcp": 12345}, layout=layout)
    gateway = LocalGateway(profile, layout)
    config = gateway._config(gateway_manifests.MANIFESTS.render(profile, layout))
    assert config["mcp_servers"][mcp_manifests.GATEWAY_NAME]["url"] == "http://127.0.0.1:12345/mcp"


class RecordingAdmin(Admin):
    """The admin API with every call recorded and answered as LiteLLM would (no proxy)."""

    def __init__(self) -> None:
        super().__init__("http://gateway.invalid", "sk-master")
        self.calls: list[tuple[str, str, Any]] = []

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path, body))
        return {"/team/list": [], "/team/new": {"team_id": "t1"}, "/key/list?return_full_object=true&size=100":
                {"keys": []}, "/key/generate": {"key": f"sk-{len(self.calls)}"}}.get(path, {})


def test_the_agent_key_is_granted_the_server_the_ide_key_nothing_and_the_team_their_union(layout):
    admin = RecordingAdmin()
    provision_tenants(admin, load_profile("local", layout=layout), only=("ide", "agent"), label="t")
    generated = {body["key_alias"]: body for _, path, body in admin.calls if path == "/key/generate"}
    assert generated["demo-t-agent"]["object_permission"] == {"mcp_servers": [mcp_manifests.GATEWAY_NAME]}
    assert "object_permission" not in generated["demo-t-ide"]
    team = [body for _, path, body in admin.calls if path == "/team/update"]
    assert team == [{"team_id": "t1", "object_permission": {"mcp_servers": [mcp_manifests.GATEWAY_NAME]}}]


def test_without_the_mcp_feature_no_key_is_granted_a_server(layout):
    admin = RecordingAdmin()
    provision_tenants(admin, load_profile("local", {"features.mcp": False}, layout=layout), only=("agent",))
    assert all("object_permission" not in (body or {}) for _, _, body in admin.calls)


# ---------------------------------------------------------------- the gateway's hook: a server that is down


class Text:
    def __init__(self, text: str) -> None:
        self.text = text


class HookResponse:
    """Shaped like LiteLLM's MCPPostCallResponseObject."""

    def __init__(self, text: str) -> None:
        self.mcp_tool_call_response = [Text(text)]


def test_an_unreachable_mcp_server_is_named_in_the_tool_error():
    hooks = _module(HOOK, "backend_errors_mcp")
    response = HookResponse("ConnectError: All connection attempts failed")
    kwargs = {"mcp_tool_call_metadata": {"mcp_server_name": "inferbook_mcp", "name": "read_file"}}
    answer = asyncio.run(hooks.hook.async_post_mcp_tool_call_hook(kwargs, response, None, None))
    assert answer is response
    text = response.mcp_tool_call_response[0].text
    assert "MCP server 'inferbook_mcp' is not reachable" in text and "'read_file'" in text and "ConnectError" in text


def test_what_the_server_itself_answered_is_left_alone():
    hooks = _module(HOOK, "backend_errors_mcp2")
    for text in ("path '../x' is outside the repository", "exit status 1\nConnectError: in a test log"):
        response = HookResponse(text)
        assert asyncio.run(hooks.hook.async_post_mcp_tool_call_hook({}, response, None, None)) is None
        assert response.mcp_tool_call_response[0].text == text


# ---------------------------------------------------------------- the agent's MCP workspace


class FakeTools:
    """McpTools' interface over a dict of tools; records calls."""

    url = "http://gateway.invalid/mcp"

    def __init__(self, names: list[str], answers: dict[str, Any] | None = None) -> None:
        self.names = names
        self.answers = answers or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def list_tools(self) -> list[dict[str, Any]]:
        return [{"type": "function", "function": {"name": n, "description": n, "parameters": {
            "type": "object", "properties": {"path": {"type": "string"}} if "read" in n else {}}}}
            for n in self.names]

    def call_tool(self, name: str, args: dict[str, Any]) -> ToolResult:
        self.calls.append((name, args))
        answer = self.answers.get(name, ToolResult("ok", False, 0.01))
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_agent_sees_the_servers_tools_under_their_own_names_and_calls_them_by_the_gateways():
    tools = FakeTools(["inferbook_mcp-list_files", "inferbook_mcp-read_file", "other-read_file"])
    workspace = McpWorkspace(tools)
    assert [t["function"]["name"] for t in workspace.tools] == ["list_files", "read_file"]
    assert "list_files and read_file" in workspace.system
    assert workspace.call("read_file", '{"path": "calc.py"}') == "ok"
    assert tools.calls == [("inferbook_mcp-read_file", {"path": "calc.py"})]
    assert workspace.call("write_file", "{}").startswith("error: unknown tool 'write_file'")
    assert workspace.call("read_file", "[1]").startswith("error: arguments must be a JSON object")


def test_a_refused_or_failed_tool_call_is_an_error_result_for_the_model():
    tools = FakeTools(["inferbook_mcp-list_files", "inferbook_mcp-read_file"], {
        "inferbook_mcp-list_files": McpRefused(401, "Authenticate with the gateway"),
        "inferbook_mcp-read_file": ToolResult("the MCP server 'inferbook_mcp' is not reachable", True, 0.3)})
    workspace = McpWorkspace(tools)
    assert workspace.call("list_files", "{}").startswith("error: the tool call inferbook_mcp-list_files failed: "
                                                         "refused (HTTP 401)")
    assert workspace.call("read_file", json.dumps({"path": "a"})) == (
        "error: the MCP server 'inferbook_mcp' is not reachable")


def test_a_key_offered_none_of_the_servers_tools_is_told_why():
    with pytest.raises(McpUnusable, match="lists none of MCP server 'inferbook_mcp''s tools.*grant it, or start"):
        McpWorkspace(FakeTools(["other-read_file"]))


def test_the_grammar_follows_the_tools_mcp_gave():
    import re

    workspace = McpWorkspace(FakeTools(["inferbook_mcp-read_file"]))
    grammar = re.compile(agent_loop.hermes_grammar(workspace.tools))
    assert grammar.fullmatch('<tool_call>\n{"name": "read_file", "arguments": {"path": "calc.py"}}\n</tool_call>')
    assert not grammar.fullmatch('<tool_call>\n{"name": "write_file", "arguments": {"path": "calc.py"}}\n</tool_call>')


def test_with_the_default_deny_litellm_and_only_litellm_is_let_through_to_the_server(layout):
    objects = mcp_manifests.MANIFESTS.render(load_profile("prod", layout=layout), layout)
    into = find(objects, "NetworkPolicy", "mcp-server-from-litellm")["spec"]
    assert into["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "inferbook-mcp"}
    assert into["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "litellm"}}}],
                                "ports": [{"protocol": "TCP", "port": mcp_manifests.PORT}]}]
    out = find(objects, "NetworkPolicy", "litellm-to-mcp-server")["spec"]["egress"][0]
    assert out["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "inferbook-mcp"}
    local = mcp_manifests.MANIFESTS.render(load_profile("local", {"features.security": False}, layout=layout), layout)
    assert not [o for o in local if o["kind"] == "NetworkPolicy"]


def test_the_proxy_log_keeps_only_the_first_characters_of_an_mcp_session_id():
    """LiteLLM's MCP server warns about each stale session with its id in full; the backend hook's filter cuts it,
    so the run's secret scan finds no token-shaped value in the gateway's log."""
    import io
    import logging

    module = _module(HOOK, "inferbook_backend_errors_log")
    record = logging.LogRecord("LiteLLM", logging.WARNING, "server.py", 1739,
                               "MCP session ID '%s' not found in this worker's memory. Stripping stale header",
                               ("72ca974c914e4766a0bd467782c5a727",), None)
    assert module.RedactSessionIds().filter(record)
    out = io.StringIO()
    logging.StreamHandler(out).handle(record)
    assert "72ca…'" in out.getvalue() and "72ca974c914e4766a0bd467782c5a727" not in out.getvalue()
