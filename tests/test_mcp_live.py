"""The book's MCP server behind a real LiteLLM (slow): per-key tool permissions, the call log with the key, a
third-party client, and the server-down fault, through the gateway's /mcp.

The stack is this module's own (the MCP server, LiteLLM and its Postgres on ports of its own; no model: MCP needs
none), so stopping its MCP server touches no other run.
"""

from __future__ import annotations

import sys
from typing import Iterator

import pytest

from inferbook import load_profile
from inferbook.layers import mcp
from inferbook.layers.experience import agent_loop, issue_keys
from inferbook.layers.experience.mcp_workspace import McpWorkspace
from inferbook.layers.llm_gateway import LocalGateway
from inferbook.layers.mcp import steps
from inferbook.layers.mcp.client import McpRefused, McpTools
from inferbook.layers.mcp.manifests import GATEWAY_NAME
from inferbook.paths import Layout

from .conftest import ROOT

pytestmark = pytest.mark.slow
PORTS = {"local.ports.mcp": 12050, "local.ports.llm-gateway": 12051, "local.ports.postgres": 12052,
         "local.ports.serving": 12053, "local.ports.coder": 12054, "local.ports.prometheus": 12055,
         "features.routing": False}
#: Seconds within which a call to a server that is down must come back (it must not hang).
BOUND = 30


def say(message: str) -> None:
    print(message, file=sys.stderr)


class Stack:
    def __init__(self, layout: Layout) -> None:
        self.profile = load_profile("local", PORTS, layout=layout)
        self.layout = layout
        self.server = mcp.LocalMcp(self.profile, layout, say=say)
        self.gateway = LocalGateway(self.profile, layout, say=say)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    layout = Layout(root=ROOT, build_dir=tmp_path_factory.mktemp("mcp-live"))
    found = Stack(layout)
    try:
        found.server.start()
        found.gateway.start()
        yield found
    finally:
        found.gateway.stop()
        found.server.stop()


@pytest.fixture(scope="module")
def keyed(stack: Stack):
    admin = stack.gateway.connect().admin()
    return admin, issue_keys(admin, stack.profile)


def url(stack: Stack) -> str:
    return steps.gateway_mcp_url(stack.gateway.base)


def test_the_agent_key_lists_and_calls_the_tools_and_the_others_are_refused(stack, keyed):
    admin, tenants = keyed
    table = steps.permissions(url(stack), admin, tenants, say=say)
    say(table.to_string())
    assert table["pass"].all(), table.to_string()
    agent = table.loc[f"{tenants.alias('agent')} (granted {GATEWAY_NAME})"]
    assert f"{GATEWAY_NAME}-read_file" in agent["lists"] and agent["calls"] == "answered"
    refused = table.drop(index=agent.name)
    assert refused["lists"].str.startswith("refused, HTTP 40").all() and refused["calls"].str.startswith(
        "refused, HTTP 40").all()
    with pytest.raises(McpRefused) as no_key:
        McpTools(url(stack), None).list_tools()
    with pytest.raises(McpRefused) as ide:
        McpTools(url(stack), tenants.keys["ide"]).call_tool(f"{GATEWAY_NAME}-read_file", {"path": "README.md"})
    assert (no_key.value.status, ide.value.status) == (401, 403)


def test_tool_calls_are_logged_with_the_key_that_made_them(stack, keyed):
    admin, tenants = keyed
    tools = McpTools(url(stack), tenants.keys["agent"])
    assert not tools.call_tool(f"{GATEWAY_NAME}-list_files", {}).is_error
    log = steps.tool_log(stack.gateway.base, stack.gateway.master_key(),
                         {tenants.alias("agent"): tenants.keys["agent"]}, at_least=1, say=say)
    calls = log[log["operation"] == "call_mcp_tool"]
    assert len(calls) >= 1
    assert set(calls["key alias"]) == {tenants.alias("agent")}
    assert set(calls["key (sha256, first 12)"]) == {steps.key_hash(tenants.keys["agent"])[:12]}
    assert f"{GATEWAY_NAME}-list_files" in set(calls["tool"])


def test_the_agents_workspace_over_mcp_is_confined_and_judged_by_the_original_tests(stack, keyed):
    _, tenants = keyed
    workspace = McpWorkspace(McpTools(url(stack), tenants.keys["agent"]))
    workspace.reset()
    assert not workspace.tests_pass()
    assert workspace.call("read_file", '{"path": "../../state.json"}') == (
        "error: path '../../state.json' is outside the repository")
    workspace.call("write_patch", '{"path": "calc.py", "content": "def add(a, b):\\n    return a + b\\n"}')
    assert workspace.call("run_tests", "{}").startswith("exit status 0")
    assert workspace.tests_pass()
    workspace.call("write_patch", '{"path": "test_calc.py", "content": "print(1)\\n"}')  # editing the tests
    assert workspace.tests_pass(agent_loop.SAMPLE_REPO)  # ... does not change the verdict: the original tests run


def test_a_third_party_mcp_client_lists_and_calls_the_tools_with_a_virtual_key(stack, keyed):
    _, tenants = keyed
    McpWorkspace(McpTools(url(stack), tenants.keys["agent"])).reset()
    table = steps.third_party(url(stack), tenants.keys["agent"])
    assert f"{GATEWAY_NAME}-write_patch" in table.loc["tools listed", "value"]
    assert table.iloc[-1]["value"] == "# calc"


def test_with_the_server_down_a_tool_call_is_a_prompt_error_naming_it_and_calls_answer_once_it_is_back(stack, keyed):
    _, tenants = keyed
    found = steps.outage(stack.server, url(stack), tenants.keys["agent"], timeout=BOUND)
    say(str(found))
    assert found.call_is_error and found.names_server, found.call
    assert f"MCP server '{GATEWAY_NAME}' is not reachable" in found.call
    assert found.call_s < BOUND and found.list_s < BOUND
    assert found.listed == "0 tool(s)"  # LiteLLM leaves an unreachable server out of the listing
    assert found.back
    # and the agent's workspace turns it into a clear tool error, not a hang
    workspace = McpWorkspace(McpTools(url(stack), tenants.keys["agent"], timeout=BOUND))
    stack.server.stop()
    try:
        answer = workspace.call("list_files", "{}")
    finally:
        stack.server.start()
    assert answer.startswith(f"error: the MCP server '{GATEWAY_NAME}' is not reachable from the gateway")
