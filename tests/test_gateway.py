"""The tenant gateway on the local target: the real LiteLLM proxy on a real Postgres, in front of the real vLLM."""

from __future__ import annotations

import json
import secrets

import openai
import pytest

from inferbook import smoke
from inferbook.gateway import call_json

from .conftest import run_cli

pytestmark = pytest.mark.slow


def cli_keys(gateway, *args: str):
    return run_cli("keys", *args, "--profile", "local", "--build-dir", str(gateway.layout.build_dir))


@pytest.fixture(scope="module")
def chat_key(local_gateway):
    alias = f"test-chat-{secrets.token_hex(4)}"
    result = cli_keys(local_gateway, "create", "--alias", alias, "--models", "coder-chat", "--max-budget", "5",
                      "--budget-duration", "30d", "--rpm", "100", "--team", "test-team")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("sk-") and "\n" not in key  # only the key is printed
    yield alias, key
    cli_keys(local_gateway, "revoke", "--alias", alias)


def test_the_proxy_is_ready_with_its_database(local_gateway):
    status, ready = call_json("GET", f"{local_gateway.base}/health/readiness")
    assert status == 200 and ready["db"] == "connected"


def test_status_reports_the_gateway_beside_serving(local_gateway):
    result = run_cli("status", "--profile", "local", "--build-dir", str(local_gateway.layout.build_dir), "--json")
    report = json.loads(result.stdout)
    assert report["llm-gateway"]["url"] == f"http://127.0.0.1:{local_gateway.port}/v1"
    assert report["llm-gateway"]["healthy"] is True and report["serving"]["healthy"] is True
    assert local_gateway.master_key() not in result.stdout


def test_a_key_reaches_the_model_through_its_alias(local_gateway, chat_key):
    _, key = chat_key
    call = smoke.chat(smoke.client(local_gateway.url, key), "coder-chat", "Say hi.", max_tokens=8)
    assert call.ok and call.tokens_out > 0


def test_a_model_not_on_the_key_is_refused(local_gateway, chat_key):
    _, key = chat_key
    with pytest.raises((openai.PermissionDeniedError, openai.AuthenticationError)) as info:
        smoke.client(local_gateway.url, key).chat.completions.create(
            model="coder-fim", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert info.value.status_code in (401, 403)


def test_an_invalid_key_is_401(local_gateway):
    with pytest.raises(openai.AuthenticationError):
        smoke.client(local_gateway.url, "sk-" + secrets.token_urlsafe(16)).models.list()


def test_keys_list_shows_settings_but_never_the_key(local_gateway, chat_key):
    alias, key = chat_key
    result = cli_keys(local_gateway, "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["alias"]: row for row in json.loads(result.stdout)}
    assert rows[alias]["models"] == "coder-chat" and rows[alias]["max_budget_usd"] == 5 and rows[alias]["rpm"] == 100
    assert key not in result.stdout and local_gateway.master_key() not in result.stdout


def test_a_revoked_key_is_401(local_gateway):
    alias = f"test-revoke-{secrets.token_hex(4)}"
    key = cli_keys(local_gateway, "create", "--alias", alias, "--models", "coder-chat").stdout.strip()
    assert smoke.client(local_gateway.url, key).models.list().data
    result = cli_keys(local_gateway, "revoke", "--alias", alias)
    assert result.returncode == 0 and f"revoked key '{alias}'" in result.stdout
    with pytest.raises(openai.AuthenticationError):
        smoke.client(local_gateway.url, key).models.list()


def test_keys_survive_a_restart_of_the_proxy(local_gateway, chat_key):
    _, key = chat_key
    local_gateway.process.stop(lambda _: None)  # the proxy only; Postgres keeps the ledger
    local_gateway.start()
    assert smoke.client(local_gateway.url, key).models.list().data
