"""The tenant's experience: FIM formats, the agent's tools and loop, and the IDE configuration."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import openai
import pytest
import yaml

from inferbook import fim, layers, load_profile
from inferbook.errors import InferbookError
from inferbook.layers import experience
from inferbook.layers.experience import agent_loop, ide_config
from inferbook.layers.llm_gateway import enforcement
from inferbook.layers.llm_gateway.manifests import gateway_config

from .conftest import ROOT, run_cli

CONFIG_VALIDATOR = ROOT / "node_modules" / ".bin" / "config-yaml"  # Continue's own schema, from npm


# --------------------------------------------------------------------------- FIM formats


def test_a_qwen_fim_prompt_puts_prefix_suffix_then_middle():
    prompt = fim.FORMATS["qwen"].prompt("def f():\n    ", "\nf()\n")
    assert prompt == "<|fim_prefix|>def f():\n    <|fim_suffix|>\nf()\n<|fim_middle|>"


def test_a_model_without_fim_tokens_is_sent_the_prefix_only():
    assert fim.FORMATS["none"].prompt("before", "after") == "before"


def test_the_fim_format_is_inferred_from_the_model_id_or_taken_from_the_profile():
    assert fim.format_for(load_profile("gke-l4")).name == "qwen"  # Qwen2.5-Coder
    assert fim.format_for(load_profile("local")).name == "qwen"  # the coder behind coder-fim, not SmolLM2
    assert fim.format_for(load_profile("kind", overrides={"models.chat.id": "HuggingFaceTB/SmolLM2-135M-Instruct"})
                          ).name == "none"  # SmolLM2 has no FIM tokens
    assert fim.format_for(load_profile("local-coder")).name == "qwen"  # Qwen2.5-Coder-1.5B
    explicit = load_profile("local", overrides={"models.coder.fim_format": "starcoder"})
    assert fim.format_for(explicit).prompt("a", "b") == "<fim_prefix>a<fim_suffix>b<fim_middle>"


# --------------------------------------------------------------------------- the agent's tools


@pytest.fixture
def workspace(tmp_path):
    return agent_loop.Workspace(agent_loop.make_sample_repo(tmp_path / "repo"))


def test_the_verdict_runs_the_original_tests_so_editing_them_does_not_pass(workspace):
    workspace.write_file("test_calc.py", "def add(a, b):\n    return a + b\n")  # the tests, overwritten
    assert workspace.run_tests().startswith("exit status 0")  # the repository's own run now "passes" ...
    assert not workspace.tests_pass()  # ... but the original tests still fail against calc.py
    workspace.write_file("calc.py", "def add(a, b):\n    return a + b\n")
    assert workspace.tests_pass()


def test_a_required_loop_offers_done_and_ends_when_the_model_calls_it(workspace):
    class Scripted:  # a test double of the OpenAI client: the model's turns are written down
        def __init__(self, turns):
            self.turns, self.asked = list(turns), []
            self.chat = self
            self.completions = self

        def create(self, **request):
            self.asked.append(request)
            name, arguments = self.turns.pop(0)
            call = {"id": f"c{len(self.asked)}", "type": "function", "function": {"name": name, "arguments": arguments}}
            message = openai.types.chat.ChatCompletionMessage(role="assistant", content=None, tool_calls=[call])
            return openai.types.chat.ChatCompletion(
                id="x", created=0, model="m", object="chat.completion",
                choices=[{"index": 0, "finish_reason": "tool_calls", "message": message}],
                usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})

    client = Scripted([("write_file", '{"path": "calc.py", "content": "def add(a, b):\\n    return a + b\\n"}'),
                       ("done", '{"summary": "implemented add"}')])
    transcript = agent_loop.run_agent(client, "m", workspace, tool_calls="required", max_steps=5, say=lambda _: None)
    assert [request["tool_choice"] for request in client.asked] == ["required", "required"]
    assert "done" in [t["function"]["name"] for t in client.asked[0]["tools"]]
    assert transcript.stopped_by == "model" and transcript.answer == "implemented add" and transcript.tests_pass
    with pytest.raises(InferbookError, match="tool_calls must be one of native, required, grammar"):
        agent_loop.run_agent(client, "m", workspace, tool_calls="sometimes")


def test_the_sample_repository_fails_its_test_until_add_is_written(workspace):
    assert not workspace.tests_pass()
    result = workspace.call("write_file",
                            json.dumps({"path": "calc.py", "content": "def add(a, b):\n    return a + b\n"}))
    assert result.startswith("wrote")
    assert workspace.tests_pass()


def test_a_path_outside_the_repository_is_refused_not_followed(workspace, tmp_path):
    (tmp_path / "secret.txt").write_text("outside")
    assert workspace.call("read_file", '{"path": "../secret.txt"}').startswith("error: path '../secret.txt' is outside")
    assert workspace.call("write_file", '{"path": "/tmp/x.py", "content": "x"}').startswith("error:")
    assert (tmp_path / "secret.txt").read_text() == "outside"


@pytest.mark.parametrize("name, arguments, expected", [
    ("read_file", '"calc.py"', "error: arguments must be a JSON object"),
    ("read_file", "{not json", "error:"),
    ("read_file", '{"path": "missing.py"}', "error: no file 'missing.py'"),
    ("delete_repo", "{}", "error: unknown tool 'delete_repo'"),
    ("read_file", '{"file": "calc.py"}', "error:"),  # a wrong argument name
])
def test_a_bad_tool_call_becomes_an_error_result_for_the_model(workspace, name, arguments, expected):
    assert workspace.call(name, arguments).startswith(expected)


def test_the_grammar_admits_exactly_one_call_of_a_known_tool():
    grammar = re.compile(agent_loop.hermes_grammar())
    call = '<tool_call>\n{"name": "%s", "arguments": %s}\n</tool_call>'
    assert grammar.fullmatch(call % ("list_files", "{}"))
    assert grammar.fullmatch(call % ("read_file", '{"path": "calc.py"}'))
    assert grammar.fullmatch(call % ("write_file",
                                     '{"path": "calc.py", "content": "def add(a, b):\\n    return a + b"}'))
    assert not grammar.fullmatch(call % ("delete_repo", "{}"))
    assert not grammar.fullmatch(call % ("read_file", '{"path": "calc.py", "mode": "w"}'))
    assert not grammar.fullmatch((call % ("list_files", "{}")) * 2)


# --------------------------------------------------------------------------- IDE configuration


def validate_with_continue(path) -> subprocess.CompletedProcess:
    if not CONFIG_VALIDATOR.exists():
        pytest.fail("Continue's config validator is missing: "
                    "run `make assets` (npm ci installs @continuedev/config-yaml)")
    return subprocess.run([shutil.which("node") or "node", str(CONFIG_VALIDATOR), str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("profile", ["local", "gke-l4"])
def test_ide_config_writes_a_continue_config_that_continues_own_schema_accepts(tmp_path, profile):
    path = tmp_path / "config.yaml"
    result = run_cli("ide-config", "--profile", profile, "--client", "continue", "--output", str(path))
    assert result.returncode == 0, result.stderr
    checked = validate_with_continue(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_continues_schema_check_can_fail(tmp_path):
    text = ide_config.render(load_profile("local")).replace("- autocomplete", "- autocompletion")
    (tmp_path / "bad.yaml").write_text(text)
    assert validate_with_continue(tmp_path / "bad.yaml").returncode != 0


def test_the_ide_config_maps_roles_to_aliases_and_holds_no_key(tmp_path):
    text = ide_config.render(load_profile("gke-l4"), url="https://llm.example.test/v1", key_env="TEAM_KEY")
    config = yaml.safe_load(text)
    chat, autocomplete = config["models"]
    assert (chat["model"], chat["roles"], chat["capabilities"]) == ("coder-chat", ["chat", "edit", "apply"],
                                                                    ["tool_use"])
    assert (autocomplete["model"], autocomplete["roles"]) == ("coder-fim", ["autocomplete"])
    assert autocomplete["promptTemplates"]["autocomplete"] == ("<|fim_prefix|>{{{prefix}}}"
                                                               "<|fim_suffix|>{{{suffix}}}<|fim_middle|>")
    assert {m["apiBase"] for m in config["models"]} == {"https://llm.example.test/v1"}
    assert {m["apiKey"] for m in config["models"]} == {"${{ secrets.TEAM_KEY }}"}
    assert not re.search(r"sk-[A-Za-z0-9]", text)


def test_ide_config_keeps_an_existing_different_file_unless_forced(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("name: mine\n")
    result = run_cli("ide-config", "--profile", "local", "--output", str(path))
    assert result.returncode == 1 and "exists and differs" in result.stderr and "--force" in result.stderr
    assert path.read_text() == "name: mine\n"
    assert run_cli("ide-config", "--profile", "local", "--output", str(path), "--force").returncode == 0
    assert yaml.safe_load(path.read_text())["schema"] == "v1"


@pytest.mark.parametrize("args, message", [
    (["--client", "vim"], "unknown client 'vim'; supported: continue"),
    (["--key-env", "my key"], "is not an environment variable name"),
])
def test_ide_config_rejects_what_it_cannot_write(tmp_path, args, message):
    result = run_cli("ide-config", "--profile", "local", "--output", str(tmp_path / "c.yaml"), *args)
    assert result.returncode == 1 and message in result.stderr
    assert not (tmp_path / "c.yaml").exists()


# --------------------------------------------------------------------------- through the live gateway


@pytest.fixture(scope="module")
def session(local_gateway):
    with experience.connect(local_gateway.profile, local_gateway.layout) as gateway:
        admin = gateway.admin()
        tenants = enforcement.provision_tenants(admin, local_gateway.profile, only=("ide", "agent"), label="test")
        yield experience.Session(gateway.url, tenants), admin
        for name in tenants.keys:
            admin.revoke(tenants.alias(name))


@pytest.mark.slow
def test_the_agent_loop_runs_real_tool_calls_through_the_gateway_and_its_spend_is_booked(session, local_gateway,
                                                                                          tmp_path):
    tenant, admin = session
    workspace = agent_loop.Workspace(agent_loop.make_sample_repo(tmp_path / "repo"))
    transcript = tenant.agent(workspace, tool_calls="grammar", max_steps=2, say=lambda _: None)
    assert transcript.stopped_by == "step limit" and len({s.step for s in transcript.steps}) == 2
    assert {s.tool for s in transcript.steps} <= {t["function"]["name"] for t in agent_loop.TOOLS}
    assert "done" not in {s.tool for s in transcript.steps}  # the grammar mode offers no `done` tool
    tool_messages = [m for m in transcript.messages if m["role"] == "tool"]
    assert len(tool_messages) == len(transcript.steps)  # every call's result went back to the model
    config = gateway_config(layers.render("llm-gateway", local_gateway.profile, local_gateway.layout))
    spend = tenant.spend(admin, enforcement.prices(config), say=lambda _: None)
    assert (spend.loc[tenant.tenants.alias("agent"), "matches"]
            and spend.loc[tenant.tenants.alias("agent"), "requests"] == 2)


@pytest.mark.slow
def test_autocomplete_reaches_coder_fim_with_the_ide_key_but_not_the_agent_key(session):
    tenant, _ = session
    completion = tenant.autocomplete("def mean(values):\n    ", "\n", fim.FORMATS["none"])
    assert completion.call.ok and completion.inline().startswith("def mean(values):\n    \u27e8")
    with pytest.raises(openai.APIStatusError) as refused:
        tenant.client("agent").completions.create(model="coder-fim", prompt="def f():", max_tokens=4)
    assert refused.value.status_code in (401, 403)
