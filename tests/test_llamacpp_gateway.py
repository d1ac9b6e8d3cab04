"""The llama.cpp provider live: inside a real LiteLLM proxy (no database), in front of a real llama-server
serving the coder's GGUF (built, joined and installed through inferbook's own caches the first time).

Slow: llama-server and LiteLLM start (about half a minute each), then three short constrained answers.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import free_port
from .test_llamacpp_tools import PROVIDER, record

pytestmark = pytest.mark.slow


CODER = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
SERVED = "qwen2.5-coder-1.5b-instruct"




def _wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not come up in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def llamacpp_gateway(tmp_path_factory: pytest.TempPathFactory):
    """llama-server with the coder's GGUF, and a LiteLLM proxy (no database) serving it as ``llamacpp/``."""
    from inferbook import envs
    from inferbook.layers.serving import llamacpp, models
    from inferbook.paths import default_cache_dir

    say = lambda message: print(message, file=sys.stderr)  # noqa: E731
    cache = default_cache_dir()
    server = llamacpp.ensure(cache, say).binary
    gguf = models.prepare_gguf(CODER, cache, say)
    python = envs.LITELLM.ensure(cache, say)
    folder = tmp_path_factory.mktemp("llamacpp-gateway")
    engine_port, proxy_port, key = free_port(), free_port(), f"sk-test-{secrets.token_hex(8)}"
    config = {
        "model_list": [{"model_name": "coder-chat",
                        "litellm_params": {"model": f"llamacpp/{SERVED}",
                                           "api_base": f"http://127.0.0.1:{engine_port}/v1", "max_tokens": 256},
                        "model_info": {"mode": "chat", "input_cost_per_token": 0.000001,
                                       "output_cost_per_token": 0.000002}}],
        "general_settings": {"master_key": "os.environ/TEST_MASTER_KEY"},
        "litellm_settings": {"telemetry": False, "drop_params": True,
                             "custom_provider_map": [{"provider": "llamacpp",
                                                      "custom_handler": "llamacpp_tools.provider"}]},
    }
    (folder / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    shutil.copy(PROVIDER, folder / PROVIDER.name)
    threads = str(max(1, min(4, os.cpu_count() or 1)))
    engine_log, proxy_log = folder / "llama-server.log", folder / "litellm.log"
    processes = []
    try:
        with engine_log.open("wb") as log:
            processes.append(subprocess.Popen(
                [str(server), "-m", str(gguf), "-c", "4096", "-t", threads, "-np", "1", "--jinja",
                 "--alias", SERVED, "--host", "127.0.0.1", "--port", str(engine_port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_until_up(f"http://127.0.0.1:{engine_port}/health", processes[0], engine_log)
        env = {**os.environ, "TEST_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "true",
               "DISABLE_SCHEMA_UPDATE": "true", "LITELLM_TELEMETRY_DISABLED": "true"}
        with proxy_log.open("wb") as log:
            processes.append(subprocess.Popen(
                [str(python.with_name("litellm")), "--config", str(folder / "config.yaml"),
                 "--host", "127.0.0.1", "--port", str(proxy_port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True))
        _wait_until_up(f"http://127.0.0.1:{proxy_port}/health/liveliness", processes[1], proxy_log)
        yield f"http://127.0.0.1:{proxy_port}", key
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _sse(answer: Any) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in answer.read().decode().splitlines()
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]")]


def _post(base: str, path: str, key: str, body: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key, "anthropic-version": "2023-06-01",
               "Content-Type": "application/json"}
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    return urllib.request.urlopen(request, timeout=600)


def test_a_required_call_streams_whole_through_the_proxy_on_every_protocol(llamacpp_gateway):
    base, key = llamacpp_gateway
    tools = record("gguf", "required-time", stream=False)["request"]["tools"]
    ask = "What time is it in Paris? Use the tool."
    found = {}

    chat = _sse(_post(base, "/v1/chat/completions", key, {
        "model": "coder-chat", "messages": [{"role": "user", "content": ask}], "tools": tools,
        "tool_choice": "required", "max_tokens": 60, "temperature": 0, "stream": True}))
    deltas = [d for c in chat for ch in c["choices"] for d in ch["delta"].get("tool_calls") or []]
    found["chat"] = ([d["function"]["name"] for d in deltas],
                     json.loads("".join(d["function"].get("arguments") or "" for d in deltas)))
    assert [ch["finish_reason"] for c in chat for ch in c["choices"] if ch.get("finish_reason")] == ["tool_calls"]

    responses = _sse(_post(base, "/v1/responses", key, {
        "model": "coder-chat", "input": ask, "tool_choice": "required", "max_output_tokens": 60, "temperature": 0,
        "stream": True, "tools": [{"type": "function", **t["function"]} for t in tools]}))
    items = [e["item"] for e in responses if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in items] == ["function_call"]
    found["responses"] = ([items[0]["name"]], json.loads(items[0]["arguments"]))  # a JSON string, by the spec

    messages = _sse(_post(base, "/v1/messages", key, {
        "model": "coder-chat", "messages": [{"role": "user", "content": ask}], "tool_choice": {"type": "any"},
        "max_tokens": 60, "temperature": 0, "stream": True,
        "tools": [{"name": t["function"]["name"], "description": t["function"]["description"],
                   "input_schema": t["function"]["parameters"]} for t in tools]}))
    starts = [e["content_block"] for e in messages if e["type"] == "content_block_start"]
    assert [b["type"] for b in starts] == ["tool_use"]
    partial = "".join(e["delta"]["partial_json"] for e in messages
                      if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta")
    found["messages"] = ([starts[0]["name"]], json.loads(partial))
    assert [e["delta"]["stop_reason"] for e in messages if e["type"] == "message_delta"] == ["tool_use"]

    for protocol, (names, arguments) in found.items():
        assert names == ["get_time"] and isinstance(arguments, dict) and isinstance(arguments.get("city"), str), (
            protocol, names, arguments)
