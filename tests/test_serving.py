"""The serving layer on the local target: a real vLLM on the CPU, started once per session.

These talk to the live server through the `openai` client, as a tenant's tools will.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import openai
import pytest

from inferbook import load_profile, smoke
from inferbook.errors import InferbookError
from inferbook.layers.serving import LocalServing, launch_spec
from inferbook.paths import Layout
from inferbook.process import LayerDied, PortInUse
from inferbook.secrets import SecretStore

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def client(local_serving):
    return smoke.client(local_serving.url, local_serving.api_key())


@pytest.fixture(scope="session")
def model(local_serving):
    return local_serving.served_name


def test_models_lists_the_served_name(client, model):
    assert model in [m.id for m in client.models.list().data]


def test_chat_answers_with_text_and_usage(client, model):
    call = smoke.chat(client, model, "Say hello to a developer.", max_tokens=24)
    assert call.ok and call.output.strip()
    assert 0 < call.tokens_out <= 24


def test_streaming_chat_reports_usage_in_the_last_chunk(client, model):
    call = smoke.chat_stream(client, model, "Count from one to five.", max_tokens=24)
    assert call.ok, call.detail
    assert call.ttft_s is not None and call.ttft_s < call.latency_s
    assert call.detail.endswith("usage in last chunk")


def test_fim_uses_the_stated_fallback_for_a_model_without_fim_tokens(local_serving, client, model):
    tokens = smoke.fim_tokens(local_serving.base, local_serving.api_key(), model)
    assert tokens is None  # SmolLM2's tokenizer has no FIM markers: each splits into several tokens
    call = smoke.fim(client, model, "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n", tokens)
    assert call.ok and "no FIM tokens" in call.detail


def test_a_fim_prompt_on_completions_is_accepted_raw(client, model):
    # The native FIM path: a prompt written with FIM markers goes to /v1/completions as-is.
    prompt = smoke.fim_prompt("def add(a, b):\n    ", "\n", smoke.FIM_STYLES[0])
    response = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
    assert response.choices[0].text is not None and response.usage.prompt_tokens > 3


def test_fim_suffix_parameter_is_refused_with_400(client, model):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=model, prompt="def f(", suffix=")", max_tokens=4)


def test_a_grammar_constrained_tool_call_is_parsed_into_tool_calls(client, model):
    call = smoke.tool_call(client, model, how="grammar")
    assert call.ok, call.detail
    assert call.detail.startswith("get_weather(") and json.loads(call.detail[len("get_weather("):-1])["city"]


def test_metrics_expose_the_slo_names(local_serving):
    names = smoke.metric_names(local_serving.base)
    assert set(smoke.SLO_METRICS) <= names


def test_an_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4)


def test_an_over_long_request_is_400(client, model, local_serving):
    too_long = local_serving.profile.data["serving"]["max_model_len"] + 100  # "word" is one token, at least
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * too_long}],
                                       max_tokens=4)


def test_a_wrong_key_is_401(local_serving, model):
    bad = smoke.client(local_serving.url, "sk-wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_starting_again_reuses_the_healthy_server(local_serving, tmp_path):
    messages: list[str] = []
    again = LocalServing(local_serving.profile, Layout(ROOT, tmp_path), say=messages.append)
    status = again.start()
    assert status["healthy"] and status["pid"] == local_serving.status()["pid"]
    assert any("reusing the healthy vLLM" in m for m in messages)


def test_status_json_reports_the_serving_endpoint(local_serving):
    result = run_cli("status", "--profile", "local", "--build-dir", str(local_serving.layout.build_dir), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["serving"]["url"] == f"http://127.0.0.1:{local_serving.port}/v1"
    assert report["serving"]["model"] == local_serving.served_name and report["serving"]["healthy"] is True
    assert local_serving.api_key() not in result.stdout


def test_a_port_held_by_another_process_is_a_clear_error(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        profile = load_profile("local", overrides={"local.ports.serving": port})
        with pytest.raises(PortInUse, match=f"port {port} .local.ports.serving. is in use by pid"):
            LocalServing(profile, Layout(ROOT, tmp_path)).start()


def test_a_server_that_dies_fails_with_its_last_log_lines(tmp_path, local_serving):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"architectures": ["NoSuchArchitecture"], "model_type": "nonsense"}')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = load_profile("local", overrides={"local.ports.serving": port, "models.chat.id": str(broken)})
    serving = LocalServing(profile, Layout(ROOT, tmp_path), cache_dir=local_serving.cache_dir)
    with pytest.raises(LayerDied, match="exited with status") as info:
        serving.start(timeout=300)
    assert "last" in str(info.value) and str(serving.log_path) in str(info.value)


def test_the_launch_command_comes_from_the_rendered_deployment(local_serving, tmp_path):
    profile = load_profile("local", overrides={"serving.max_model_len": 4096})
    secrets = SecretStore("local", tmp_path / "secrets")
    spec = launch_spec(profile, Layout(ROOT, tmp_path), Path("/models/x"), Path("/venv/bin/python"), secrets, tmp_path)
    assert spec.argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    for arg in ("--model=/models/x", "--max-model-len=4096", "--enable-auto-tool-choice",
                "--tool-call-parser=hermes", "--host=127.0.0.1", f"--port={profile.get('local.ports.serving')}"):
        assert arg in spec.argv
    assert spec.env["HF_HUB_OFFLINE"] == "1" and "HOME" not in spec.env
    assert spec.env["VLLM_HOST_IP"] == "127.0.0.1"  # the pod's IP (fieldRef status.podIP) is loopback here
    assert spec.secret_env == {"VLLM_API_KEY": "vllm-api-key/api-key"}
    shown = spec.table().to_string()
    assert spec.env["VLLM_API_KEY"] not in shown and "(from secret vllm-api-key/api-key)" in shown
    assert (tmp_path / "secrets" / "local.json").stat().st_mode & 0o777 == 0o600


def test_a_model_neither_packaged_nor_local_fails_clearly_offline(tmp_path, local_serving, monkeypatch):
    """A hub model id is a documented choice where the hub is reachable; offline it fails with the fix.

    The hub lookup is expected here, so the egress guard records it in this test's own log (not the
    session's), and the test proves the failure came from the refused hub and nothing else.
    """
    from inferbook.layers.serving import models

    from . import egress

    log = tmp_path / "egress.jsonl"
    monkeypatch.setenv("INFERBOOK_EGRESS_LOG", str(log))
    with pytest.raises(InferbookError, match="is not packaged and the Hugging Face hub did not deliver it"):
        models.prepare("nobody/no-such-model-anywhere", tmp_path / "models", Path(local_serving.launch().argv[0]))
    assert {r["target"] for r in egress.records(log)} == {"huggingface.co"}


def test_up_via_the_cli_reuses_the_running_server(local_serving):
    result = run_cli("up", "--profile", "local", "--until", "serving",
                     "--build-dir", str(local_serving.layout.build_dir))
    assert result.returncode == 0, result.stderr
    assert f"serving: {local_serving.url} ({local_serving.served_name}) healthy=True" in result.stdout
    assert "reusing the healthy vLLM" in result.stderr


def test_down_with_nothing_running_says_so(tmp_path):
    keys = list(load_profile("local").data["local"]["ports"])  # every local port, routing's and Prometheus' too
    ports = []
    for _ in keys:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    overrides = [f"local.ports.{key}={port}" for key, port in zip(keys, ports, strict=True)]
    args = [arg for o in overrides for arg in ("-p", o)]
    result = run_cli("down", "--profile", "local", *args, "--build-dir", str(tmp_path))
    assert result.returncode == 0 and "nothing was running" in result.stdout, result.stdout + result.stderr


def test_up_refuses_a_cluster_profile_with_a_pointer_to_the_book():
    result = run_cli("up", "--profile", "kind")
    assert result.returncode == 1
    assert "targets a cluster" in result.stderr and "inferbook run --profile kind" in result.stderr


def test_up_until_an_unknown_layer_names_the_known_ones():
    result = run_cli("up", "--profile", "local", "--until", "autoscaling")
    assert (result.returncode == 1
            and "unknown layer 'autoscaling'; the local stack has: serving, routing, llm-gateway" in result.stderr)


def test_up_until_a_layer_the_profile_leaves_off_says_how_to_turn_it_on():
    result = run_cli("up", "--profile", "local", "-p", "features.routing=false", "--until", "routing")
    assert result.returncode == 1 and "does not enable the routing layer" in result.stderr
    assert "-p features.routing=true" in result.stderr
