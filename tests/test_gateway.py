"""The tenant gateway on the local target: the real LiteLLM proxy on a real Postgres, in front of the real vLLM."""

from __future__ import annotations

import json
import secrets

import openai
import pytest

from inferbook import layers, load_profile, smoke
from inferbook.jsonapi import call_json
from inferbook.layers import llm_gateway
from inferbook.layers.benchmarks import harness
from inferbook.layers.llm_gateway import enforcement
from inferbook.layers.llm_gateway.manifests import gateway_config

from .conftest import run_cli

pytestmark = pytest.mark.slow

#: vLLM's model by its served name: these tests read vLLM's own metrics, so they call the alias vLLM serves (on
#: local, coder-chat is the coder on llama.cpp).
VLLM_ALIAS = load_profile("local").data["models"]["chat"]["served_name"]


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


@pytest.fixture(scope="module")
def admin(local_gateway):
    return llm_gateway.connect(local_gateway.profile, local_gateway.layout).admin()


@pytest.fixture
def new_key(admin):
    """Make a throw-away key with the given limits; revoked afterwards."""
    made = []

    def make(**limits):
        alias = f"test-{secrets.token_hex(4)}"
        made.append(alias)
        return alias, admin.create_key(alias, [VLLM_ALIAS], **limits)

    yield make
    for alias in made:
        admin.revoke(alias)


@pytest.fixture(scope="module")
def backends(local_gateway, local_serving) -> list[str]:
    """Every vLLM behind coder-chat (with routing on, each replica of the pool and the canary)."""
    return enforcement.chat_backends(local_gateway.profile, local_serving.base)


def ask(gateway, key: str, max_tokens: int = 16):
    return smoke.client(gateway.url, key).chat.completions.create(
        model=VLLM_ALIAS, messages=[{"role": "user", "content": "Name a prime number."}],
        max_tokens=max_tokens, temperature=0)


def test_a_spent_budget_is_refused_before_the_call_reaches_vllm(local_gateway, backends, new_key):
    _, key = new_key(max_budget=0.00001)  # one call of a few dozen tokens spends it
    assert ask(local_gateway, key, max_tokens=32).usage.total_tokens > 10
    served_before = enforcement.vllm_requests(backends)
    code, message = enforcement.call_status(lambda: ask(local_gateway, key))
    assert code in (400, 422, 429) and "budget has been exceeded" in message.lower(), (code, message)  # LiteLLM: 422
    assert enforcement.vllm_requests(backends) == served_before


def test_the_rpm_limit_answers_429_after_its_allowance(local_gateway, new_key):
    _, key = new_key(rpm=2)
    codes = [enforcement.call_status(lambda: ask(local_gateway, key, max_tokens=1))[0] for _ in range(3)]
    assert codes == [200, 200, 429]


def test_spend_is_booked_from_the_reported_usage_and_survives_a_restart(local_gateway, admin, new_key):
    alias, key = new_key(max_budget=5)
    usage = [ask(local_gateway, key).usage for _ in range(2)]
    price_in, price_out = enforcement.prices(gateway_config(
        layers.render("llm-gateway", local_gateway.profile, local_gateway.layout)))
    expected = sum(u.prompt_tokens * price_in + u.completion_tokens * price_out for u in usage)
    booked = enforcement.wait_for_spend(admin, alias, expected, say=lambda _: None)
    assert booked == pytest.approx(expected, rel=0.01)

    local_gateway.process.stop(lambda _: None)  # the proxy only; Postgres keeps the ledger
    local_gateway.start()
    after = {row["alias"]: row["spend_usd"] for row in admin.keys()}
    assert after[alias] == pytest.approx(booked, rel=1e-6)  # spend lives in Postgres, not in the proxy
    assert ask(local_gateway, key).choices[0].message.content is not None  # and so does the key


def test_the_overhead_benchmark_times_both_paths_with_the_same_call(local_gateway, local_serving, new_key):
    _, key = new_key(max_budget=1)
    direct = smoke.client(local_serving.url, local_serving.api_key())
    table = harness.measure(direct, local_serving.served_name, smoke.client(local_gateway.url, key), VLLM_ALIAS,
                             requests=3)
    assert list(table.index) == ["vLLM directly", "through the gateway"]
    assert (table["requests"] == 3).all() and (table["min_ms"] > 0).all()
    assert table.loc["through the gateway", "added_median_ms"] == pytest.approx(
        table.loc["through the gateway", "median_ms"] - table.loc["vLLM directly", "median_ms"], abs=0.2)


def max_tokens_sent_to_vllm(backends: list[str]) -> float:
    """Sum of max_tokens over the requests vLLM has received (its ``vllm:request_params_max_tokens`` histogram),
    over every replica behind the alias."""
    return smoke.metric_total(backends, "vllm:request_params_max_tokens_sum")


def test_an_alias_gives_a_request_without_max_tokens_its_default_and_the_request_wins_otherwise(
        local_gateway, backends, new_key):
    _, key = new_key(max_budget=1)
    config = gateway_config(layers.render("llm-gateway", local_gateway.profile, local_gateway.layout))
    default = next(e["litellm_params"]["max_tokens"] for e in config["model_list"] if e["model_name"] == VLLM_ALIAS)
    client = smoke.client(local_gateway.url, key)
    before = max_tokens_sent_to_vllm(backends)
    client.chat.completions.create(model=VLLM_ALIAS, messages=[{"role": "user", "content": "Say OK."}],
                                   temperature=0, stop=["\n"])  # no max_tokens: the alias' default goes to vLLM
    middle = max_tokens_sent_to_vllm(backends)
    ask(local_gateway, key, max_tokens=3)
    after = max_tokens_sent_to_vllm(backends)
    assert (middle - before, after - middle) == (default, 3)


def test_a_request_for_more_tokens_than_the_context_holds_is_lowered_not_refused(local_gateway, local_serving,
                                                                                  backends, new_key):
    """Agents ask for 32,000 tokens and more; vLLM answers 400 to a max_tokens beyond its context. The gateway
    lowers it to what the alias's context leaves after the prompt."""
    _, key = new_key(max_budget=1)
    context = local_serving.profile.data["serving"]["max_model_len"]
    asked = max(32_000, context + 1000)
    messages = [{"role": "user", "content": "Reply with the single word: ready"}]
    with pytest.raises(openai.BadRequestError, match="cannot be greater than max_model_len"):  # the control
        smoke.client(local_serving.url, local_serving.api_key()).chat.completions.create(
            model=local_serving.served_name, messages=messages, max_tokens=asked)
    before = max_tokens_sent_to_vllm(backends)
    response = smoke.client(local_gateway.url, key).chat.completions.create(
        model=VLLM_ALIAS, messages=messages, max_tokens=asked, temperature=0, stop=["\n"])  # one line
    sent = max_tokens_sent_to_vllm(backends) - before
    assert response.choices[0].message.content.strip()
    assert 0 < sent < context  # what vLLM got: what the context leaves after the prompt (and LiteLLM's margin)
