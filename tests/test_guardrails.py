"""The guardrails layer without a live gateway: the real Presidio server (its pinned environment, on a port of its
own) answering the images' routes, the book's secret recognizers, the rendered manifests and LiteLLM config, the
profile's knobs, the hook that names Presidio when it is down, and the prompt log the chapter reads."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from inferbook import layers, load_profile
from inferbook.envs import PRESIDIO
from inferbook.layers.guardrails import evaluation, steps
from inferbook.layers.guardrails.manifests import ANALYZER_SERVICE, ANONYMIZER_SERVICE, SERVER_SCRIPT
from inferbook.layers.llm_gateway import manifests as gateway_manifests
from inferbook.paths import Layout
from inferbook.waiting import until, wait_for

from .conftest import ROOT, free_port

HOOK = ROOT / "src/inferbook/layers/llm_gateway/proxy_hooks/backend_errors.py"


@pytest.fixture()
def layout(tmp_path: Path) -> Layout:
    return Layout(root=ROOT, build_dir=tmp_path)




def _post(base: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
            return json.loads(response.read()).get("status") == "ok"
    except OSError:
        return False


@pytest.fixture(scope="session")
def presidio(tmp_path_factory) -> Any:
    """The local Presidio server on its pinned environment (built once, as the book builds it)."""
    python = PRESIDIO.ensure(Path.home() / ".cache" / "inferbook")
    port = free_port()
    log = tmp_path_factory.mktemp("presidio") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(python), str(SERVER_SCRIPT), "--host=127.0.0.1", f"--port={port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(until(lambda: _healthy(base) or proc.poll() is not None, "not up"), timeout=120,
                 what="the Presidio server", say=lambda _: None, interval=0.3)
        assert proc.poll() is None, log.read_text()[-2000:]
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _recognizers() -> list[dict[str, Any]]:
    return steps.recognizers(Layout(root=ROOT, build_dir=ROOT / "_build"))


def _analyze(base: str, text: str) -> list[dict[str, Any]]:
    entities = load_profile("local").data["guardrails"]["pii_entities"]
    return _post(base, "/analyze", {"text": text, "language": "en", "entities": entities,
                                    "ad_hoc_recognizers": _recognizers()})


# ---------------------------------------------------------------- the server, as LiteLLM calls it


def test_the_server_answers_health_with_the_presidio_version_and_the_pattern_entities(presidio):
    with urllib.request.urlopen(f"{presidio}/health", timeout=5) as response:
        health = json.loads(response.read())
    assert health["version"] == "2.2.361"
    assert set(health["entities"]) == {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN"}


def test_analyze_then_anonymize_masks_an_email_and_a_card_as_the_images_do(presidio):
    text = "Write to jane.doe@example.com about card 4111 1111 1111 1111 please"
    found = _analyze(presidio, text)
    assert {r["entity_type"] for r in found} == {"EMAIL_ADDRESS", "CREDIT_CARD"}
    masked = _post(presidio, "/anonymize", {"text": text, "analyzer_results": found})
    assert masked["text"] == "Write to <EMAIL_ADDRESS> about card <CREDIT_CARD> please"
    assert {i["entity_type"] for i in masked["items"]} == {"EMAIL_ADDRESS", "CREDIT_CARD"}


@pytest.mark.parametrize("entity", sorted(steps.SECRET_TYPES))
def test_the_book_s_secret_recognizers_find_every_labelled_secret(presidio, entity):
    samples = [s for s in evaluation.LABELLED if any(e == entity for e, _ in s.spans)]
    assert samples
    for sample in samples:
        found = _analyze(presidio, sample.text)
        for label, value in sample.spans:
            if label != entity:
                continue
            start = sample.text.index(value)
            assert any(r["entity_type"] == entity and r["start"] < start + len(value) and start < r["end"]
                       for r in found), f"{entity} not found in: {sample.text[:80]}"


def test_clean_coding_prompts_get_no_secret_detection(presidio):
    for sample in evaluation.untouched():
        found = [r for r in _analyze(presidio, sample.text) if r["entity_type"] in steps.SECRET_TYPES]
        assert found == [], sample.text[:80]


def test_a_body_without_text_is_refused_with_a_400_that_says_why(presidio):
    with pytest.raises(urllib.error.HTTPError) as refused:
        _post(presidio, "/analyze", {"language": "en"})
    assert refused.value.code == 400
    assert "text" in json.loads(refused.value.read())["error"]


def test_the_score_thresholds_of_the_profile_leave_bare_nine_digit_numbers_alone(presidio):
    thresholds = load_profile("local").data["guardrails"]["score_thresholds"]
    bare = [r for r in _analyze(presidio, "assert fib(44) == 701408733") if r["entity_type"] == "US_SSN"]
    dashed = [r for r in _analyze(presidio, "ssn=536-22-8726") if r["entity_type"] == "US_SSN"]
    assert bare and all(r["score"] < thresholds["US_SSN"] for r in bare)
    assert dashed and all(r["score"] >= thresholds["US_SSN"] for r in dashed)


# ---------------------------------------------------------------- manifests and the gateway's config


def test_the_layer_renders_presidio_pinned_by_digest_only_when_the_feature_is_on(layout):
    on = layers.render("guardrails", load_profile("prod", layout=layout), layout)
    images = {c["image"] for o in on if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]}
    assert {i.split("@")[0] for i in images} == {"mcr.microsoft.com/presidio-analyzer:2.2.361",
                                                 "mcr.microsoft.com/presidio-anonymizer:2.2.361"}
    assert all("@sha256:" in i for i in images)
    assert {o["metadata"]["name"] for o in on if o["kind"] == "Service"} == {ANALYZER_SERVICE, ANONYMIZER_SERVICE}
    off = load_profile("local", overrides={"features.guardrails": False}, layout=layout)
    assert "guardrails" not in {layer.name for layer in layers.enabled(off)}


def test_with_security_on_litellm_reaches_presidio_through_the_default_deny(layout):
    objects = layers.render("guardrails", load_profile("prod", layout=layout), layout)
    policies = {o["metadata"]["name"] for o in objects if o["kind"] == "NetworkPolicy"}
    assert policies == {"presidio-from-litellm", "litellm-to-presidio"}


def _gateway_config(profile_name: str, layout: Layout, **overrides: Any) -> tuple[dict[str, Any], dict[str, str]]:
    profile = load_profile(profile_name, overrides=overrides, layout=layout)
    objects = layers.render("llm-gateway", profile, layout)
    return gateway_manifests.gateway_config(objects), gateway_manifests.gateway_files(objects)


def test_the_gateway_config_masks_the_profile_s_entities_and_blocks_its_categories(layout):
    config, files = _gateway_config("prod", layout)
    pii = gateway_manifests.guardrail(config, gateway_manifests.PII_GUARDRAIL)
    injection = gateway_manifests.guardrail(config, gateway_manifests.INJECTION_GUARDRAIL)
    section = load_profile("prod", layout=layout).data["guardrails"]
    assert pii["guardrail"] == "pii_guardrail.TieredPresidio" and pii["mode"] == "pre_call"
    assert pii["default_on"] is True
    assert pii["pii_entities_config"] == {e: "MASK" for e in section["pii_entities"]}
    assert pii["presidio_score_thresholds"] == section["score_thresholds"]
    assert pii["presidio_analyzer_api_base"] == "http://presidio-analyzer.inferbook.svc.cluster.local:3000"
    assert [c["category"] for c in injection["categories"]] == section["injection_categories"]
    assert all(c["action"] == "BLOCK" for c in injection["categories"])
    assert json.loads(files[gateway_manifests.GUARDRAILS_RECOGNIZERS]) == _recognizers()
    assert pii["presidio_ad_hoc_recognizers"] == f"/etc/litellm/{gateway_manifests.GUARDRAILS_RECOGNIZERS}"


def test_a_profile_turns_the_guardrails_off_per_request_and_changes_what_is_masked(layout):
    config, _ = _gateway_config("prod", layout, **{"guardrails.default_on": False,
                                                   "guardrails.pii_entities": ["EMAIL_ADDRESS"]})
    pii = gateway_manifests.guardrail(config, gateway_manifests.PII_GUARDRAIL)
    assert pii["default_on"] is False
    assert pii["pii_entities_config"] == {"EMAIL_ADDRESS": "MASK"}


def test_without_the_feature_the_gateway_has_no_guardrails_and_no_recognizers_file(layout):
    config, files = _gateway_config("local", layout, **{"features.guardrails": False})
    assert "guardrails" not in config
    assert gateway_manifests.GUARDRAILS_RECOGNIZERS not in files


def test_an_unknown_entity_in_the_profile_is_refused_naming_the_allowed_ones(layout):
    from inferbook.errors import ProfileError

    with pytest.raises(ProfileError) as refused:
        load_profile("local", overrides={"guardrails.pii_entities": ["EMAIL", "US_SSN"]}, layout=layout)
    assert "EMAIL" in str(refused.value)


def test_the_local_gateway_points_the_guardrail_at_the_local_presidio(layout):
    from inferbook.layers.llm_gateway.local import LocalGateway

    profile = load_profile("local", layout=layout)
    gateway = LocalGateway(profile, layout, cache_dir=layout.build_dir / "cache")
    config = gateway._config(layers.render("llm-gateway", profile, layout))
    pii = gateway_manifests.guardrail(config, gateway_manifests.PII_GUARDRAIL)
    port = profile.data["local"]["ports"]["guardrails"]
    assert pii["presidio_analyzer_api_base"] == pii["presidio_anonymizer_api_base"] == f"http://127.0.0.1:{port}"
    assert pii["presidio_ad_hoc_recognizers"] == str(gateway.config_path.with_name("presidio_recognizers.json"))


def test_vllm_logs_the_prompts_it_receives_only_where_guardrails_are_on(layout, tmp_path):
    from inferbook.layers.serving.local import PROMPT_LOG_CONFIG, launch_spec
    from inferbook.secrets import SecretStore

    def spec(**overrides: Any) -> Any:
        profile = load_profile("local", overrides=overrides, layout=layout)
        return launch_spec(profile, layout, tmp_path / "model", tmp_path / "python",
                           SecretStore(profile.name, tmp_path / "secrets"), tmp_path / "cache")

    on, off = spec(), spec(**{"features.guardrails": False})
    assert "--enable-log-requests" in on.argv and on.env["VLLM_LOGGING_CONFIG_PATH"] == str(PROMPT_LOG_CONFIG)
    assert "--enable-log-requests" not in off.argv and "VLLM_LOGGING_CONFIG_PATH" not in off.env
    config = json.loads(PROMPT_LOG_CONFIG.read_text())
    assert config["loggers"]["vllm"]["level"] == "INFO"
    assert config["loggers"]["vllm.entrypoints.serve.utils.request_logger"]["level"] == "DEBUG"


# ---------------------------------------------------------------- what the chapter reads and shows


def test_the_prompt_log_reader_finds_what_vllm_wrote_escaped():
    line = ("DEBUG 12-06 20:23:54 vllm.entrypoints.serve.utils.request_logger: Request chatcmpl-1 details: prompt: "
            "'<|im_start|>user\\nprobeabc: it\\'s <EMAIL_ADDRESS><|im_end|>\\n', prompt_token_ids: [1, 2], "
            "prompt_embeds shape: None.\n")
    assert steps.received_prompts("noise\n" + line) == ["<|im_start|>user\nprobeabc: it's <EMAIL_ADDRESS><|im_end|>\n"]


def test_a_prompt_log_reads_only_what_was_written_after_it_was_opened(tmp_path):
    log = tmp_path / "serving.log"
    before = "x details: prompt: 'old probeold', prompt_token_ids: []\n"
    log.write_text(before)
    reader = steps.PromptLog([log, tmp_path / "absent.log"])
    with log.open("a") as handle:
        handle.write("x details: prompt: 'new probenew', prompt_token_ids: []\n")
    assert reader.new_prompts() == ["new probenew"]
    assert reader.wait_for("probenew", timeout=1) == "new probenew"
    assert reader.wait_for("probeold", timeout=0.3) is None


def test_a_secret_is_shown_by_its_first_characters_only():
    assert steps.redact("CLOUD_KEY", "AKIAIOSFODNN7EXAMPLE") == "AKIA… (20 chars)"
    assert steps.redact("EMAIL_ADDRESS", "jane@example.com") == "jane@example.com"


def test_the_proofs_fail_when_one_entity_reaches_vllm_unmasked():
    import pandas as pd

    masking = pd.DataFrame([{"masked": True}, {"masked": False}])
    injection = pd.DataFrame([{"blocked": True}])
    untouched = pd.DataFrame([{"vLLM received it unchanged": True, "answer equals vLLM's direct one": True}])
    overhead = pd.DataFrame([{"figure": "client wall-clock (ms)", "added p50": 9.0, "added p95": 15.0}])
    overhead.attrs["errors"] = 0
    fault = pd.DataFrame([{"tier": "dev", "expected": "fails open", "observed": "200", "pass": True}])
    scores = evaluation.scores_table(evaluation.evaluate(lambda text: [])[0])
    rows = steps.proofs(masking, injection, untouched, overhead, fault, scores).set_index("proof")
    assert not rows.loc["each PII type reaches vLLM masked (vLLM's request log)", "pass"]
    assert rows["pass"].drop("each PII type reaches vLLM masked (vLLM's request log)").all()


def test_off_or_on_a_cluster_the_live_steps_say_why_instead_of_running(layout):
    from inferbook.layers.benchmarks.overhead import guardrails_cost

    off = steps.live(load_profile("local", overrides={"features.guardrails": False}, layout=layout), layout)
    assert off.proofs().empty and "off" in off.masking().iloc[0, 0]
    cluster = steps.live(load_profile("prod", layout=layout), layout)
    assert "local profile" in cluster.injection().iloc[0, 0]
    assert cluster.proofs()["pass"].all() and steps.plot_overhead(cluster.overhead(guardrails_cost)) is None


# ---------------------------------------------------------------- the hook: Presidio down


def _hook() -> Any:
    spec = importlib.util.spec_from_file_location("inferbook_backend_errors", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_presidio_unreachable_becomes_a_503_naming_it_and_saying_no_model_was_called():
    import asyncio

    hook = _hook()
    failure = Exception("Presidio PII analysis failed: ClientConnectorError")
    answer = asyncio.run(hook.hook.async_post_call_failure_hook({"model": "coder-chat"}, failure, None))
    assert answer.status_code == 503
    assert "Presidio" in answer.detail["error"] and "not sent to any model" in answer.detail["error"]
    other = asyncio.run(hook.hook.async_post_call_failure_hook({"model": "coder-chat"}, Exception("bad request"),
                                                                None))
    assert other is None


# ---------------------------------------------------------------- the PII guardrail in LiteLLM, per tier

_TIERED = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from pii_guardrail import TieredPresidio

async def once(fallback, base):
    guard = TieredPresidio(unreachable_fallback=fallback, guardrail_name="inferbook-pii", event_hook="pre_call",
                           default_on=True, presidio_analyzer_api_base=base, presidio_anonymizer_api_base=base,
                           pii_entities_config={"EMAIL_ADDRESS": "MASK"}, presidio_filter_scope="input")
    data = {"messages": [{"role": "user", "content": "mail jane@example.com"}], "metadata": {}}
    try:
        out = await guard.async_pre_call_hook(None, None, data, "completion")
        return ["passed", out["messages"][0]["content"]]
    except Exception as exc:
        return ["refused", str(exc)]

print(json.dumps({f"{fb} {name}": asyncio.run(once(fb, base))
                  for name, base in (("down", sys.argv[2]), ("up", sys.argv[3]))
                  for fb in ("fail_open", "fail_closed")}))
"""


def _offline_env(home: Path) -> dict[str, str]:
    """LiteLLM imported outside its proxy: its bundled cost map, not a fetch from GitHub."""
    import os

    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HOME": str(home)}


def test_the_pii_guardrail_fails_open_on_dev_and_closed_on_prod_inside_litellm(presidio, tmp_path):
    """LiteLLM's own presidio class under inferbook's subclass, on LiteLLM's interpreter, against the real Presidio
    and against a port nothing listens on."""
    from inferbook.envs import LITELLM

    python = LITELLM.ensure(Path.home() / ".cache" / "inferbook")
    script = tmp_path / "tiered.py"
    script.write_text(_TIERED)
    proc = subprocess.run([str(python), str(script), str(HOOK.parent), f"http://127.0.0.1:{free_port()}", presidio],
                          capture_output=True, text=True, timeout=300, env=_offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["fail_open down"] == ["passed", "mail jane@example.com"]
    assert "UNMASKED" in proc.stderr
    assert seen["fail_closed down"][0] == "refused" and "Presidio PII analysis failed" in seen["fail_closed down"][1]
    assert seen["fail_open up"] == seen["fail_closed up"] == ["passed", "mail <EMAIL_ADDRESS>"]


def test_the_tier_sets_the_fallback_prod_closed_dev_open(layout):
    for name, fallback in (("prod", "fail_closed"), ("local", "fail_open")):
        config, files = _gateway_config(name, layout)
        pii = gateway_manifests.guardrail(config, gateway_manifests.PII_GUARDRAIL)
        assert pii["unreachable_fallback"] == fallback
        assert pii["guardrail"] == "pii_guardrail.TieredPresidio" and pii["presidio_filter_scope"] == "input"
        assert files[gateway_manifests.GUARDRAILS_PII_FILE] == gateway_manifests.hook_source("pii_guardrail.py")


def test_status_says_what_the_gateway_does_while_presidio_is_down(layout, tmp_path):
    from inferbook.layers.guardrails import LocalPresidio

    port = {"local.ports.guardrails": free_port()}  # nothing answers there, whatever runs on this machine
    dev = LocalPresidio(load_profile("local", overrides=port, layout=layout), layout, cache_dir=tmp_path,
                        say=lambda _: None)
    prod_tier = {**port, "tier": "prod", "serving.replicas": 2, "database.instances": 3, "database.redis": True}
    prod = LocalPresidio(load_profile("local", overrides=prod_tier, layout=layout), layout,
                         cache_dir=tmp_path, say=lambda _: None)
    assert "UNMASKED" in dev.when_down() and "UNMASKED" in dev.diagnosis()
    assert "refuses every request" in prod.when_down() and "fails closed" in prod.diagnosis()


_CONTENT_FILTER = """
import asyncio, json, sys
from litellm.proxy.guardrails.guardrail_hooks.litellm_content_filter.content_filter import ContentFilterGuardrail

config = json.loads(sys.argv[1])
guard = ContentFilterGuardrail(guardrail_name="inferbook-injection", categories=config["categories"],
                               event_hook="pre_call", default_on=True)

async def once(text):
    try:
        await guard.apply_guardrail({"texts": [text]}, {"messages": [], "metadata": {}}, "request")
        return None
    except Exception as exc:
        return [getattr(exc, "status_code", None), str(getattr(exc, "detail", exc))]

print(json.dumps([asyncio.run(once(t)) for t in json.loads(sys.stdin.read())]))
"""


def test_the_injection_filter_as_configured_blocks_each_pattern_and_passes_the_clean_prompts(layout, tmp_path):
    """LiteLLM's content filter with the categories the gateway config names, on LiteLLM's interpreter."""
    from inferbook.envs import LITELLM

    config, _ = _gateway_config("local", layout)
    injection = gateway_manifests.guardrail(config, gateway_manifests.INJECTION_GUARDRAIL)
    python = LITELLM.ensure(Path.home() / ".cache" / "inferbook")
    script = tmp_path / "content_filter.py"
    script.write_text(_CONTENT_FILTER)
    clean = [s.text for s in evaluation.untouched()]
    proc = subprocess.run([str(python), str(script), json.dumps(injection)], input=json.dumps([*steps.INJECTIONS,
                          *clean]), capture_output=True, text=True, timeout=300,
                          env=_offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdicts = json.loads(proc.stdout.strip().splitlines()[-1])
    blocked, passed = verdicts[:len(steps.INJECTIONS)], verdicts[len(steps.INJECTIONS):]
    assert all(v is not None and v[0] == 400 and "prompt_injection" in v[1] for v in blocked), blocked
    assert [text for text, v in zip(clean, passed, strict=True) if v is not None] == []
