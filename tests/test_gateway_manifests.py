"""The llm-gateway layer's manifests: LiteLLM + CloudNativePG per profile, offline validation, the config contract.

Everything here runs without a cluster or the internet: kustomize from the venv's
kubectl, CRD schemas from manifests/crds/. The LiteLLM config is checked as the contract
other code reads through :func:`inferbook.gw.gateway_config`.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferbook import layers, load_profile
from inferbook import manifests as m
from inferbook.crds import CrdStore, load_lock
from inferbook.layers.llm_gateway import manifests as gw
from inferbook.paths import Layout
from inferbook.profile import Profile, list_profiles
from inferbook.validate import validate

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = list_profiles(Layout.discover(start=ROOT))
LAYER = "llm-gateway"
LITELLM_IMAGE = "ghcr.io/berriai/litellm:v1.108.7"
POSTGRES_IMAGE = ("ghcr.io/cloudnative-pg/postgresql@sha256:"
                  "0f29b435fb501ee534cd0c555d122a6b8e90de477de8e8381c82c5e10d9a9de4")
LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
          "app.kubernetes.io/managed-by"}
#: Env vars of the proxy that carry credentials: each must come from a Secret.
CREDENTIALS = {"LITELLM_MASTER_KEY": ("litellm-master-key", "master-key"),
               "LITELLM_SALT_KEY": ("litellm-salt-key", "salt-key"),
               "DATABASE_URL": ("litellm-db-app", "uri"),
               "VLLM_API_KEY": ("vllm-api-key", "api-key")}


@pytest.fixture(scope="module")
def gateway_profiles(layout: Layout) -> dict[str, Profile]:
    return {name: p for name in SHIPPED if LAYER in (p := load_profile(name, layout=layout)).features}


@pytest.fixture(scope="module")
def rendered(gateway_profiles: dict[str, Profile], layout: Layout) -> dict[str, list[dict[str, Any]]]:
    return {name: layers.render(LAYER, profile, layout) for name, profile in gateway_profiles.items()}


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return m.find(objects, "Deployment", "litellm")


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def entries(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["model_name"]: e for e in config["model_list"]}


def render(layout: Layout, name: str, **overrides: Any) -> tuple[Profile, list[dict[str, Any]]]:
    profile = load_profile(name, overrides=overrides or None, layout=layout)
    return profile, layers.render(LAYER, profile, layout)


# --------------------------------------------------------------------------- every profile


def test_every_shipped_profile_runs_the_gateway(gateway_profiles: dict[str, Profile]) -> None:
    assert set(gateway_profiles) >= {"local", "kind", "gke-l4", "multi-gpu", "prod"}


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_renders_and_validates_without_failures(name: str, rendered: dict, layout: Layout,
                                                        crd_store: CrdStore) -> None:
    objects = rendered[name]
    kinds = {o["kind"] for o in objects}
    assert {"ConfigMap", "Deployment", "Service", "ServiceMonitor", "Job", "Cluster", "ExternalSecret"} <= kinds
    assert "Secret" not in kinds  # credentials come from External Secrets and CloudNativePG, never from git
    report = validate(objects, layout, crds=crd_store)
    assert report.failures == [], report.table().to_string()
    # The only warnings: images on a version tag because no digest could be cited (never invented).
    assert {(f.rule, f.status) for f in report.warnings} <= {("digest-pinned", "warn")}
    assert all("redis:" in f.message or LITELLM_IMAGE in f.message for f in report.warnings)
    checked = {(f.kind, f.rule, f.status) for f in report.findings}
    for kind in ("Cluster", "ExternalSecret", "ServiceMonitor", "Deployment", "Job"):
        assert (kind, "schema", "ok") in checked


@pytest.mark.parametrize("name", SHIPPED)
def test_objects_are_labelled_and_namespaced(name: str, rendered: dict, gateway_profiles: dict) -> None:
    namespace = gateway_profiles[name].data["target"]["namespace"]
    for obj in rendered[name]:
        labels = obj["metadata"].get("labels", {})
        assert LABELS <= set(labels), f"{obj['kind']}/{obj['metadata']['name']} lacks labels"
        assert labels["app.kubernetes.io/component"] == "llm-gateway"
        assert obj["metadata"]["namespace"] == namespace
    dep = deployment(rendered[name])
    selector = {"app.kubernetes.io/name": "litellm", "app.kubernetes.io/component": "llm-gateway"}
    assert dep["spec"]["selector"]["matchLabels"] == selector
    assert LABELS <= set(dep["spec"]["template"]["metadata"]["labels"])
    service = m.find(rendered[name], "Service", "litellm")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "http", "port": 4000, "protocol": "TCP", "targetPort": "http"}]
    monitor = m.find(rendered[name], "ServiceMonitor", "litellm")
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["endpoints"][0]["port"] == "http" and monitor["spec"]["endpoints"][0]["path"] == "/metrics/"
    # The migration pods must not look like proxy pods to the Service (or the prod PDB).
    job_labels = m.find(rendered[name], "Job", "litellm-migrate")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= job_labels.items()


def test_namespace_follows_the_profile(layout: Layout) -> None:
    _, objects = render(layout, "local", **{"target.namespace": "team-x", "features.routing": False})
    assert {o["metadata"]["namespace"] for o in objects} == {"team-x"}
    upstreams = {e["model_name"]: e["litellm_params"]["api_base"] for e in gw.gateway_config(objects)["model_list"]}
    assert upstreams == {"coder-chat": "http://llama-server.team-x.svc.cluster.local:8080/v1",  # models.coder
                         "coder-fim": "http://llama-server.team-x.svc.cluster.local:8080/v1",
                         "smollm2-135m-instruct": "http://vllm.team-x.svc.cluster.local:8000/v1"}
    _, routed = render(layout, "local", **{"target.namespace": "team-x"})  # routing on: one upstream, moved too
    assert {e["litellm_params"]["api_base"] for e in gw.gateway_config(routed)["model_list"]} == \
        {"http://inference-gateway.team-x.svc.cluster.local/v1"}


def test_the_gateway_routes_by_model_name_to_either_engine(layout: Layout) -> None:
    _, objects = render(layout, "local")
    models = {e["model_name"]: e["litellm_params"]["model"] for e in gw.gateway_config(objects)["model_list"]}
    assert models == {"coder-chat": "llamacpp/qwen2.5-coder-1.5b-instruct",  # inferbook's provider: real tool calls
                      "coder-fim": "hosted_vllm/qwen2.5-coder-1.5b-instruct",
                      "smollm2-135m-instruct": "hosted_vllm/smollm2-135m-instruct"}
    config = gw.gateway_config(objects)
    assert config["litellm_settings"]["custom_provider_map"] == [
        {"provider": "llamacpp", "custom_handler": "llamacpp_tools.provider"}]
    assert "llamacpp_tools.py" in gw.gateway_files(objects)  # shipped beside the config, which names it
    assert "custom_provider_map" not in gw.gateway_config(without_coder := render(layout, "kind")[1]).get(
        "litellm_settings", {}) and "llamacpp_tools.py" not in gw.gateway_files(without_coder)
    _, without = render(layout, "kind")  # no coder: vLLM (through the inference gateway) serves every name alike
    assert {e["litellm_params"]["api_base"] for e in gw.gateway_config(without)["model_list"]} == \
        {"http://inference-gateway.inferbook.svc.cluster.local/v1"}


# --------------------------------------------------------------------------- the proxy


@pytest.mark.parametrize("name", SHIPPED)
def test_proxy_container_contract(name: str, rendered: dict) -> None:
    dep = deployment(rendered[name])
    proxy = m.container(dep, "litellm")
    assert proxy["image"] == LITELLM_IMAGE
    assert m.arg_value(proxy["args"], "--config") == "/etc/litellm/config.yaml"
    assert m.arg_value(proxy["args"], "--port") == "4000"
    env = env_of(proxy)
    assert env["DISABLE_SCHEMA_UPDATE"]["value"] == "true"  # only the migration Job changes the schema
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"]["value"] == "true"
    assert env["LITELLM_TELEMETRY_DISABLED"]["value"] == "true"
    assert env["LITELLM_MODE"]["value"] == "PRODUCTION"  # reads no .env file: only the environment given here
    assert proxy["startupProbe"]["httpGet"]["path"] == "/health/liveliness"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/health/liveliness"
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert proxy["ports"] == [{"name": "http", "containerPort": 4000, "protocol": "TCP"}]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert proxy["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsUser"] >= 10000 and pod["automountServiceAccountToken"] is False
    mounts = {v["mountPath"]: v["name"] for v in proxy["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/litellm"]]["configMap"]["name"] == "litellm-config"  # config and hooks, together
    # A read-only image: LiteLLM's temporary files and Prisma's toolchain (under $HOME) land on emptyDirs.
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[mounts[env["HOME"]["value"]]] and "emptyDir" in volumes[mounts["/tmp"]]
    # A changed config rolls the pods: its digest is in the pod template.
    assert dep["spec"]["template"]["metadata"]["annotations"][gw.GATEWAY_CONFIG_HASH_ANNOTATION] == \
        gw.config_digest(gw.gateway_config(rendered[name]), gw.gateway_files(rendered[name]))


@pytest.mark.parametrize("name", SHIPPED)
def test_tuning_keeps_what_the_ledger_budgets_and_limits_need(name: str, rendered: dict) -> None:
    """Speed settings from LiteLLM's production guidance may not cost a promise of the gateway."""
    config = gw.gateway_config(rendered[name])
    general, settings = config["general_settings"], config["litellm_settings"]
    assert general.get("disable_spend_logs") is False  # the per-request ledger rows feed the spend dashboard
    assert "prometheus" in settings["callbacks"]  # observability scrapes the proxy
    # spend is written in batches: the book's spend check waits 90 s, LiteLLM adds up to 5 s of jitter
    assert general.get("proxy_batch_write_at", 10) + 5 < 90
    proxy = m.container(deployment(rendered[name]), "litellm")
    workers = int(m.arg_value(proxy["args"], "--num_workers") or 1)
    # rate limits and budgets are counted per process unless the processes share Redis (prod only)
    assert workers == 1 or "redis_host" in config.get("router_settings", {})


@pytest.mark.parametrize("name", SHIPPED)
def test_no_literal_secret_anywhere(name: str, rendered: dict) -> None:
    proxy = m.container(deployment(rendered[name]), "litellm")
    env = env_of(proxy)
    for var, (secret, key) in CREDENTIALS.items():
        assert "value" not in env[var], var
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}
    for obj in rendered[name]:
        if obj["kind"] in ("Deployment", "Job"):
            for c in m.pod_spec(obj)["containers"]:
                for e in c.get("env", []):
                    if any(w in e["name"] for w in ("KEY", "PASSWORD", "DATABASE_URL", "TOKEN", "SECRET")):
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"], (obj["kind"], e["name"])
    config = gw.gateway_config(rendered[name])
    settings = config["general_settings"]
    assert settings["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert settings["database_url"] == "os.environ/DATABASE_URL"
    for entry in config["model_list"]:
        assert entry["litellm_params"]["api_key"] == "os.environ/VLLM_API_KEY"
    redis_password = config.get("router_settings", {}).get("redis_password")
    assert redis_password in (None, "os.environ/REDIS_PASSWORD")
    assert not re.search(r"\bsk-[A-Za-z0-9_-]{6,}", yaml.safe_dump_all(rendered[name]))  # no key-shaped value


@pytest.mark.parametrize("name", SHIPPED)
def test_external_secrets_use_the_cluster_secret_store(name: str, rendered: dict) -> None:
    found = {o["metadata"]["name"]: o for o in rendered[name] if o["kind"] == "ExternalSecret"}
    assert {"litellm-master-key", "litellm-salt-key", "vllm-api-key"} <= set(found)
    for es in found.values():
        assert es["apiVersion"] == "external-secrets.io/v1"
        assert es["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "secret-store"}
        assert es["spec"]["target"]["name"] == es["metadata"]["name"]
        for item in es["spec"]["data"]:
            assert item["remoteRef"]["key"].startswith("inferbook-")
    keys = {name: [d["secretKey"] for d in es["spec"]["data"]] for name, es in found.items()}
    assert keys["litellm-master-key"] == ["master-key"]
    assert keys["litellm-salt-key"] == ["salt-key"]
    assert keys["vllm-api-key"] == ["api-key"]


@pytest.mark.parametrize("name", SHIPPED)
def test_migration_is_a_presync_job_on_the_same_image(name: str, rendered: dict) -> None:
    job = m.find(rendered[name], "Job", "litellm-migrate")
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    migrate = m.container(job, "migrate")
    assert migrate["image"] == m.container(deployment(rendered[name]), "litellm")["image"]
    assert migrate["command"] == ["litellm"] and "--skip_server_startup" in migrate["args"]
    env = env_of(migrate)
    assert env["DISABLE_SCHEMA_UPDATE"]["value"] == "false"
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "litellm-db-app", "key": "uri"}
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    # A read-only image: the copied migrations and Prisma's toolchain go to the emptyDir at $HOME.
    assert migrate["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {v["mountPath"]: v["name"] for v in migrate["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    home = env["HOME"]["value"]
    assert "emptyDir" in volumes[mounts[home]] and env["LITELLM_MIGRATION_DIR"]["value"].startswith(home + "/")


# --------------------------------------------------------------------------- tiers


@pytest.mark.parametrize("name", ["local", "kind", "gke-l4", "multi-gpu"])
def test_cost_and_dev_fail_open_with_one_of_each(name: str, rendered: dict) -> None:
    objects = rendered[name]
    assert deployment(objects)["spec"]["replicas"] == 1
    assert gw.gateway_config(objects)["general_settings"]["allow_requests_on_db_unavailable"] is True
    assert m.find(objects, "Cluster", "litellm-db")["spec"]["instances"] == 1
    assert "router_settings" not in gw.gateway_config(objects)
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget" or "redis" in o["metadata"]["name"]]


def test_prod_is_ha_and_fails_closed(rendered: dict, layout: Layout) -> None:
    profile = load_profile("prod", layout=layout)
    # with the MCP gateway on (#22), prod has the book's MCP server behind LiteLLM too (features.mcp, #23)
    # and the guardrails (features.guardrails, #23): PII masking and the injection block before any model call
    assert layers.select(LAYER, profile).component_names == ["prod-gateway", "mcp", "guardrails"]
    objects = rendered["prod"]
    dep = deployment(objects)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    config = gw.gateway_config(objects)
    assert config["general_settings"]["allow_requests_on_db_unavailable"] is False
    assert m.find(objects, "Cluster", "litellm-db")["spec"]["instances"] == 3
    # Redis shares the counters of the two replicas.
    redis = m.find(objects, "Deployment", "litellm-redis")
    redis_service = m.find(objects, "Service", "litellm-redis")
    assert redis_service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    # redis-server writes only /data (no persistence): an emptyDir on a read-only image.
    redis_pod = redis["spec"]["template"]["spec"]
    assert m.container(redis, "redis")["securityContext"]["readOnlyRootFilesystem"] is True
    assert {v["mountPath"] for v in m.container(redis, "redis")["volumeMounts"]} == {"/data"}
    assert redis_pod["securityContext"]["runAsUser"] >= 10000 and redis_pod["automountServiceAccountToken"] is False
    router = config["router_settings"]
    assert router["redis_host"] == redis_service["metadata"]["name"]
    assert router["redis_port"] == redis_service["spec"]["ports"][0]["port"] == 6379
    assert env_of(m.container(dep, "litellm"))["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == \
        env_of(m.container(redis, "redis"))["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == \
        {"name": "litellm-redis-password", "key": "password"}
    redis_secret = m.find(objects, "ExternalSecret", "litellm-redis-password")
    assert redis_secret["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "secret-store"}
    pdb = m.find(objects, "PodDisruptionBudget", "litellm")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_tier_override_switches_the_budget_mode(layout: Layout) -> None:
    _, objects = render(layout, "prod", tier="dev")
    assert gw.gateway_config(objects)["general_settings"]["allow_requests_on_db_unavailable"] is True
    assert deployment(objects)["spec"]["replicas"] == 1
    assert m.find(objects, "Cluster", "litellm-db")["spec"]["instances"] == 3  # database.instances stays the profile's


@pytest.mark.parametrize("name", SHIPPED)
def test_every_tier_runs_the_ledger_guard_beside_its_config(name: str, rendered: dict) -> None:
    """Fail-open covers budgets and spend, never authentication: the guard ships in the ConfigMap, named twice."""
    objects = rendered[name]
    files = gw.gateway_files(objects)
    files.pop("llamacpp_tools.py", None)  # the coder's provider, where a profile names models.coder
    files.pop("presidio_recognizers.json", None)  # the guardrails (features.guardrails): their recognizers
    files.pop("pii_guardrail.py", None)  # and inferbook's PII guardrail class
    assert files == {"ledger_guard.py": gw.guard_source(), "backend_errors.py": gw.hook_source("backend_errors.py")}
    config = gw.gateway_config(objects)
    assert config["general_settings"]["custom_auth"] == "ledger_guard.authenticate"
    assert config["litellm_settings"]["callbacks"] == ["prometheus", "backend_errors.hook", "ledger_guard.guard"]
    # The pod finds the file beside config.yaml: the whole ConfigMap is mounted at the config's folder.
    proxy = m.container(deployment(objects), "litellm")
    mount = next(v for v in proxy["volumeMounts"] if v["mountPath"] == "/etc/litellm")
    assert "subPath" not in mount and m.arg_value(proxy["args"], "--config") == "/etc/litellm/config.yaml"


def test_a_changed_guard_rolls_the_proxy_pods(rendered: dict) -> None:
    objects = rendered["local"]
    config, files = gw.gateway_config(objects), gw.gateway_files(objects)
    changed = {name: text + "\n# changed\n" for name, text in files.items()}
    assert gw.config_digest(config, changed) != gw.config_digest(config, files)


def test_a_custom_auth_of_the_config_is_refused_rather_than_replaced() -> None:
    config = {"model_list": [], "general_settings": {"custom_auth": "mine.auth"}}
    with pytest.raises(m.ManifestError, match="ledger guard is the custom auth"):
        gw.install_guard(config)
    ours = {"model_list": [], "general_settings": {}, "litellm_settings": {"callbacks": ["prometheus"]}}
    gw.install_guard(ours)
    gw.install_guard(ours)  # twice: still one of each
    assert ours["litellm_settings"]["callbacks"] == ["prometheus", "backend_errors.hook", "ledger_guard.guard"]


def test_the_local_gateway_runs_the_prod_tier_without_its_redis(layout: Layout) -> None:
    """One local proxy holds its own counters: prod's router_settings.redis_* have nothing to point at."""
    from inferbook.layers.llm_gateway import LocalGateway

    prod = {"tier": "prod", "serving.replicas": 2, "database.instances": 3, "database.redis": True}
    profile, objects = render(layout, "local", **prod)
    assert "redis_host" in gw.gateway_config(objects)["router_settings"]
    config = LocalGateway(profile, layout)._config(objects)
    assert "router_settings" not in config
    assert config["general_settings"]["allow_requests_on_db_unavailable"] is False


def test_postgres_cluster(rendered: dict) -> None:
    cluster = m.find(rendered["local"], "Cluster", "litellm-db")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["imageName"] == POSTGRES_IMAGE
    assert cluster["spec"]["bootstrap"]["initdb"] == {"database": "litellm", "owner": "litellm"}
    assert cluster["spec"]["storage"]["size"]
    assert {"requests", "limits"} <= set(cluster["spec"]["resources"])


# --------------------------------------------------------------------------- the config contract


@pytest.mark.parametrize("name", SHIPPED)
def test_aliases_point_at_the_profiles_model_and_upstream(name: str, rendered: dict,
                                                          gateway_profiles: dict[str, Profile]) -> None:
    profile = gateway_profiles[name]
    namespace = profile.data["target"]["namespace"]
    coder = profile.data["models"].get("coder")
    served = (coder or profile.data["models"]["chat"])["served_name"]
    config = gw.gateway_config(rendered[name])
    aliases = entries(config)
    assert {"coder-chat", "coder-fim", profile.data["models"]["chat"]["served_name"]} <= set(aliases)
    expected = (f"http://inference-gateway.{namespace}.svc.cluster.local/v1" if "routing" in profile.features
                else f"http://llama-server.{namespace}.svc.cluster.local:8080/v1" if coder
                else f"http://vllm.{namespace}.svc.cluster.local:8000/v1")
    for alias in ("coder-chat", "coder-fim"):
        params = aliases[alias]["litellm_params"]
        provider = {"coder-chat": "llamacpp", "coder-fim": "hosted_vllm"}[alias] if coder else "hosted_vllm"
        assert params["model"] == f"{provider}/{served}"
        assert params["api_base"] == expected
        info = aliases[alias]["model_info"]
        assert info["input_cost_per_token"] > 0 and info["output_cost_per_token"] > 0  # budgets bind
    assert config["litellm_settings"]["telemetry"] is False


def test_routing_on_sends_the_gateway_to_the_inference_gateway_and_off_straight_to_vllm(rendered: dict,
                                                                                       layout: Layout) -> None:
    kind = entries(gw.gateway_config(rendered["kind"]))["coder-chat"]["litellm_params"]["api_base"]
    assert kind == "http://inference-gateway.inferbook.svc.cluster.local/v1"
    _, direct = render(layout, "local", **{"features.routing": False})
    local = entries(gw.gateway_config(direct))["smollm2-135m-instruct"]["litellm_params"]["api_base"]
    assert local == "http://vllm.inferbook.svc.cluster.local:8000/v1"


def test_served_name_override_and_fim_model(layout: Layout) -> None:
    _, objects = render(layout, "kind", **{"models.chat.served_name": "tiny-chat",
                                           "models.fim": {"id": "Qwen/Qwen2.5-Coder-0.5B", "served_name": "tiny-fim"}})
    aliases = entries(gw.gateway_config(objects))
    assert aliases["coder-chat"]["litellm_params"]["model"] == "hosted_vllm/tiny-chat"
    assert aliases["coder-fim"]["litellm_params"]["model"] == "hosted_vllm/tiny-fim"


def test_embeddings_alias_only_with_the_feature(layout: Layout, crd_store: CrdStore, rendered: dict) -> None:
    for objects in rendered.values():
        assert "embeddings" not in entries(gw.gateway_config(objects))
    profile, objects = render(layout, "local", **{"features.embeddings": True})
    assert "embeddings" in layers.select(LAYER, profile).component_names
    embeddings = entries(gw.gateway_config(objects))["embeddings"]
    assert embeddings["model_info"]["mode"] == "embedding"
    assert embeddings["model_info"]["input_cost_per_token"] > 0
    assert embeddings["litellm_params"]["api_base"] == "http://vllm-embeddings.inferbook.svc.cluster.local:8000/v1"
    assert validate(objects, layout, crds=crd_store).failures == []
    _, routed = render(layout, "kind", **{"features.embeddings": True})
    # no InferencePool serves the embeddings model: with routing on it keeps its own Service
    assert entries(gw.gateway_config(routed))["embeddings"]["litellm_params"]["api_base"] == \
        "http://vllm-embeddings.inferbook.svc.cluster.local:8000/v1"


def test_gateway_config_returns_the_parsed_configmap(rendered: dict) -> None:
    objects = rendered["local"]
    config = gw.gateway_config(objects)
    text = m.find(objects, "ConfigMap", "litellm-config")["data"]["config.yaml"]
    assert config == yaml.safe_load(text)
    assert list(config)[:2] == ["model_list", "general_settings"]
    # A caller may rewrite its copy (e.g. api_base to local vLLM) without touching the rendered objects.
    config["model_list"][0]["litellm_params"]["api_base"] = "http://127.0.0.1:8000/v1"
    assert gw.gateway_config(objects)["model_list"][0]["litellm_params"]["api_base"] != "http://127.0.0.1:8000/v1"


def test_gateway_config_errors_name_the_fix(rendered: dict) -> None:
    with pytest.raises(m.ManifestError, match="no ConfigMap named 'litellm-config'"):
        gw.gateway_config([o for o in rendered["local"] if o["kind"] != "ConfigMap"])
    broken = copy.deepcopy(rendered["local"])
    m.find(broken, "ConfigMap", "litellm-config")["data"]["config.yaml"] = "general_settings: {}\n"
    with pytest.raises(m.ManifestError, match="no model_list"):
        gw.gateway_config(broken)


def test_merge_keeps_base_entries_and_replaces_by_alias() -> None:
    base = {"model_list": [{"model_name": "a", "x": 1}, {"model_name": "b", "x": 1}],
            "general_settings": {"keep": 1, "flip": True}}
    merged = gw.merge_gateway_config(base, {"model_list": [{"model_name": "b", "x": 2}, {"model_name": "c"}],
                                           "general_settings": {"flip": False}, "router_settings": {"r": 1}})
    assert merged["model_list"] == [{"model_name": "a", "x": 1}, {"model_name": "b", "x": 2}, {"model_name": "c"}]
    assert merged["general_settings"] == {"keep": 1, "flip": False}
    assert merged["router_settings"] == {"r": 1}
    assert base["model_list"][1]["x"] == 1 and base["general_settings"]["flip"] is True  # the base is untouched


# --------------------------------------------------------------------------- selection, base, CRDs


def test_selection_requires_the_feature(layout: Layout) -> None:
    off = {f"features.{name}": False
           for name in ("llm-gateway", "experience", "benchmarks", "resilience", "security", "mcp", "guardrails")}
    profile = load_profile("local", overrides=off, layout=layout)
    with pytest.raises(m.ManifestError, match="features.llm-gateway: true"):
        layers.select(LAYER, profile)
    table = layers.select(LAYER, load_profile("prod", layout=layout)).table()
    assert list(table.index) == ["manifests/llm-gateway/litellm", "manifests/llm-gateway/components/prod-gateway",
                                 "manifests/llm-gateway/components/mcp", "manifests/llm-gateway/components/guardrails"]


def test_overlay_is_a_kustomize_patch_not_a_template(rendered: dict, gateway_profiles: dict, layout: Layout) -> None:
    text = (m.overlay_dir(LAYER, gateway_profiles["local"], layout) / "kustomization.yaml").read_text()
    overlay = yaml.safe_load(text)
    assert overlay["resources"][0].endswith("manifests/llm-gateway/litellm")
    patched = {(p["target"]["kind"], p["target"]["name"]) for p in overlay["patches"]}
    assert patched == {("ConfigMap", "litellm-config"), ("Deployment", "litellm"), ("Cluster", "litellm-db")}


def test_base_renders_and_validates_on_its_own(layout: Layout, crd_store: CrdStore) -> None:
    """A GitOps tool can apply the base without inferbook."""
    objects = m.kustomize(ROOT / "manifests" / "llm-gateway" / "litellm")
    assert validate(objects, layout, crds=crd_store).failures == []
    assert {"coder-chat", "coder-fim"} <= set(entries(gw.gateway_config(objects)))


def test_cnpg_and_external_secrets_crds_are_pinned(layout: Layout, crd_store: CrdStore) -> None:
    sources = {(s.group, s.kind): s for s in load_lock(layout)}
    cluster = sources[("postgresql.cnpg.io", "Cluster")]
    assert (cluster.repo, cluster.tag) == ("cloudnative-pg/cloudnative-pg", "v1.30.0")
    secret = sources[("external-secrets.io", "ExternalSecret")]
    assert (secret.repo, secret.tag) == ("external-secrets/external-secrets", "v2.9.0")
    for source in (cluster, secret):  # a committed schema, verified against the lock
        assert crd_store.document(source)["source"]["sha256"] == source.upstream_sha256


def test_cluster_typo_fails_the_crd_schema(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    cluster = copy.deepcopy(m.find(rendered["local"], "Cluster", "litellm-db"))
    cluster["spec"]["instancess"] = 3
    finding = next(f for f in validate([cluster], layout, crds=crd_store).findings if f.rule == "schema")
    assert finding.status == "fail" and "instancess" in finding.message


def test_external_secret_typo_fails_the_crd_schema(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    es = copy.deepcopy(m.find(rendered["local"], "ExternalSecret", "litellm-master-key"))
    es["spec"]["secretStoreRef"]["kindd"] = "ClusterSecretStore"
    finding = next(f for f in validate([es], layout, crds=crd_store).findings if f.rule == "schema")
    assert finding.status == "fail" and "kindd" in finding.message


def test_serving_layer_is_unchanged_by_the_gateway(layout: Layout) -> None:
    profile = load_profile("local", layout=layout)
    assert layers.select("serving", profile).base == "serving/vllm"
    assert [(o["kind"], o["metadata"]["name"].removesuffix("-models")) for o in layers.render("serving", profile,
                                                                                              layout)] == \
        [(kind, name) for kind in ("Service", "PersistentVolumeClaim", "Deployment", "ServiceMonitor")
         for name in ("llama-server", "vllm")]
