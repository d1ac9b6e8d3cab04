"""The serving layer's manifests: rendering per profile and offline validation.

Everything here runs without a cluster or the internet: kustomize comes from the
venv's kubectl, CRD schemas from the committed files under manifests/crds/.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from inferbook import layers, load_profile
from inferbook import manifests as m
from inferbook.crds import CrdStore
from inferbook.paths import Layout
from inferbook.profile import list_profiles
from inferbook.validate import DIGEST, ManifestInvalid, ValidationReport, validate

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = list_profiles(Layout.discover(start=ROOT))
GPU_IMAGE = "vllm/vllm-openai:v0.23.0@sha256:6d8429e38e3747723ca07ee1b17972e09bb9c51c4032b266f24fb1cc3b22ed8f"
LLAMACPP_IMAGE = "ghcr.io/ggml-org/llama.cpp:server"
CPU_IMAGE = ("vllm/vllm-openai-cpu:v0.23.0-x86_64@sha256:"
             "6240a6bba604e607300e47490e3477211f968bdf125211bb877d19a70b8fe844")
LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
          "app.kubernetes.io/managed-by"}


@pytest.fixture(scope="module")
def rendered(layout: Layout) -> dict[str, list[dict[str, Any]]]:
    return {name: layers.render("serving", load_profile(name, layout=layout), layout) for name in SHIPPED}


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return m.find(objects, "Deployment", "vllm")


def images(objects: list[dict[str, Any]]) -> list[str]:
    found = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "InferenceService"):
            pod = m.pod_spec(obj)
            found += [c["image"] for c in [*pod.get("initContainers", []), *pod["containers"]]]
    return found


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# --------------------------------------------------------------------------- every profile


def test_the_five_profiles_are_covered() -> None:
    assert set(SHIPPED) >= {"local", "kind", "gke-l4", "multi-gpu", "prod"}


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_renders_and_validates_cleanly(name: str, rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    objects = rendered[name]
    kinds = sorted(o["kind"] for o in objects)
    assert {"Deployment", "Service", "PersistentVolumeClaim", "ServiceMonitor"} <= set(kinds)
    assert "Secret" not in kinds  # the API key Secret comes from External Secrets, never from git
    report = validate(objects, layout, crds=crd_store)
    assert report.failures == [], report.table().to_string()
    # The one warning allowed: llama.cpp's server image is on a tag, for no digest could be cited (never invented).
    tag_only = [(f.kind, f.name, f.rule) for f in report.warnings]
    assert tag_only in ([], [("Deployment", "llama-server", "digest-pinned")]), report.table().to_string()
    checked = {(f.kind, f.rule) for f in report.findings}
    assert {("Deployment", "schema"), ("ServiceMonitor", "schema"), ("Deployment", "non-root")} <= checked


@pytest.mark.parametrize("name", SHIPPED)
def test_objects_are_labelled_and_namespaced(name: str, rendered: dict, layout: Layout) -> None:
    profile = load_profile(name, layout=layout)
    for obj in rendered[name]:
        labels = obj["metadata"].get("labels", {})
        assert LABELS <= set(labels), f"{obj['kind']} lacks labels"
        assert labels["app.kubernetes.io/part-of"] == "inferbook"
        expected_ns = ("gpu-operator" if obj["metadata"]["name"] == "time-slicing-config"
                       else profile.data["target"]["namespace"])
        assert obj["metadata"]["namespace"] == expected_ns
    dep = deployment(rendered[name])
    # Selectors stay stable: only the name and component, never ownership labels.
    assert dep["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm",
                                                      "app.kubernetes.io/component": "serving"}
    assert LABELS <= set(dep["spec"]["template"]["metadata"]["labels"])
    service = m.find(rendered[name], "Service", "vllm")
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "protocol": "TCP", "targetPort": "http"}]
    monitor = m.find(rendered[name], "ServiceMonitor", "vllm")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_namespace_follows_the_profile(layout: Layout) -> None:
    profile = load_profile("kind", overrides={"target.namespace": "team-x"}, layout=layout)
    assert {o["metadata"]["namespace"] for o in layers.render("serving", profile, layout)} == {"team-x"}


@pytest.mark.parametrize("name", SHIPPED)
def test_args_env_and_probes_of_the_vllm_container(name: str, rendered: dict, layout: Layout) -> None:
    profile = load_profile(name, layout=layout)
    chat = profile.data["models"]["chat"]
    vllm = m.container(deployment(rendered[name]), "vllm")
    args = vllm["args"]
    assert vllm["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    # The contract: one `--flag[=value]` element per flag, so flags are found by prefix.
    assert all(a.startswith("--") and " " not in a for a in args)
    flags = [a.split("=", 1)[0] for a in args]
    assert len(flags) == len(set(flags))
    model_dir = "/models/" + chat["id"].rsplit("/", 1)[-1]
    assert m.arg_value(args, "--model") == model_dir
    assert m.arg_value(args, "--served-model-name") == chat["served_name"]
    assert m.arg_value(args, "--max-model-len") == str(profile.data["serving"]["max_model_len"])
    assert m.arg_value(args, "--host") == "0.0.0.0" and m.arg_value(args, "--port") == "8000"
    assert m.arg_value(args, "--enable-auto-tool-choice") == ""
    assert m.arg_value(args, "--tool-call-parser") == "hermes"
    assert m.arg_value(args, "--disable-log-requests") is None  # removed from recent vLLM releases
    env = env_of(vllm)
    assert env["HF_HUB_OFFLINE"]["value"] == "1" and env["HF_HOME"]["value"] == "/models/.hf"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"]["path"] == "/health"
    init = m.container(deployment(rendered[name]), "stage-weights")
    init_env = env_of(init)
    assert init_env["MODEL_ID"]["value"] == chat["id"]
    assert init_env["MODEL_DIR"]["value"] == model_dir
    assert init_env["HF_HUB_OFFLINE"]["value"] == "0"  # the hub is reachable from the init container only
    assert '"$MODEL_DIR/config.json"' in init["args"][0] and "download" in init["args"][0]


def test_overrides_reach_the_args(layout: Layout) -> None:
    profile = load_profile("local", overrides={"serving.max_model_len": 4096,
                                               "models.chat.served_name": "tiny-chat"}, layout=layout)
    args = m.container(deployment(layers.render("serving", profile, layout)), "vllm")["args"]
    assert "--max-model-len=4096" in args
    assert "--max-model-len=8192" not in args
    assert "--served-model-name=tiny-chat" in args
    text = (m.overlay_dir("serving", profile, layout) / "kustomization.yaml").read_text()
    assert "serving.max_model_len=4096" in text  # the overlay records which overrides made it


@pytest.mark.parametrize("name", SHIPPED)
def test_api_key_only_by_secret_reference(name: str, rendered: dict) -> None:
    for obj in rendered[name]:
        if obj["kind"] != "Deployment":
            continue
        for c in m.pod_spec(obj)["containers"]:
            key = env_of(c)["LLAMA_API_KEY" if c["name"] == "llama-server" else "VLLM_API_KEY"]
            assert "value" not in key
            assert key["valueFrom"]["secretKeyRef"] == {"name": "vllm-api-key", "key": "api-key"}


@pytest.mark.parametrize("name", SHIPPED)
def test_images_are_digest_pinned(name: str, rendered: dict) -> None:
    found = [i for i in images(rendered[name]) if i != LLAMACPP_IMAGE]  # no llama.cpp digest could be cited
    assert found and all(DIGEST.search(i) for i in found)
    assert set(found) <= {GPU_IMAGE, CPU_IMAGE}


# --------------------------------------------------------------------------- the profile knobs


def test_cost_tier_scales_to_zero_with_recreate(rendered: dict, layout: Layout) -> None:
    # cold-start: gke-l4 turns autoscaling on (the serving layer's ADR-0025 levers)
    selected = layers.select("serving", load_profile("gke-l4", layout=layout)).component_names
    assert selected == ["cost-tier", "cold-start", "kueue"]
    spec = deployment(rendered["gke-l4"])["spec"]
    assert spec["replicas"] == 0
    assert spec["strategy"] == {"type": "Recreate"}


def test_multi_gpu_rolls_without_downtime_and_time_slices(rendered: dict) -> None:
    objects = rendered["multi-gpu"]
    spec = deployment(objects)["spec"]
    assert "replicas" not in spec  # KEDA's HPA owns the count (floor 2: the ScaledObject's minReplicaCount)
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pdb = m.find(objects, "PodDisruptionBudget", "vllm")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = spec["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    config = yaml.safe_load(m.find(objects, "ConfigMap", "time-slicing-config")["data"]["any"])
    assert config["version"] == "v1"
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 2}]


@pytest.mark.parametrize(("overrides", "replicas"), [
    ({}, None),  # autoscaling on, not paused: the HPA owns spec.replicas, so the Deployment leaves it out
    ({"features.autoscaling": False}, 2),  # nobody else scales: the profile's count
    ({"autoscaling.paused": True}, 2),  # a paused ScaledObject scales nothing: the profile's count
])
def test_the_serving_deployment_leaves_its_replica_count_to_keda_only_when_keda_scales_it(
        layout: Layout, overrides: dict[str, Any], replicas: int | None) -> None:
    profile = load_profile("prod", overrides=overrides, layout=layout)
    spec = deployment(layers.render("serving", profile, layout))["spec"]
    assert spec.get("replicas") == replicas
    if replicas is None:
        scaled = m.find(layers.render("autoscaling", profile, layout), "ScaledObject", "vllm")
        assert scaled["spec"]["minReplicaCount"] == profile.data["serving"]["replicas"] == 2


def test_time_slicing_replicas_come_from_the_profile(layout: Layout) -> None:
    profile = load_profile("multi-gpu", overrides={"gpu.time_slicing": 4}, layout=layout)
    cm = m.find(layers.render("serving", profile, layout), "ConfigMap", "time-slicing-config")
    assert yaml.safe_load(cm["data"]["any"])["sharing"]["timeSlicing"]["resources"][0]["replicas"] == 4


def test_prod_runs_two_replicas_without_an_operator_configmap(rendered: dict) -> None:
    spec = deployment(rendered["prod"])["spec"]
    assert "replicas" not in spec  # KEDA's HPA owns the count (floor 2: the ScaledObject's minReplicaCount)
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert m.arg_value(m.container(deployment(rendered["prod"]), "vllm")["args"], "--max-model-len") == "4096"
    assert m.find(rendered["prod"], "PodDisruptionBudget", "vllm")["spec"]["minAvailable"] == 1
    # gke-managed GPUs: no GPU Operator reads the device plugin ConfigMap, so none is rendered.
    assert not [o for o in rendered["prod"] if o["kind"] == "ConfigMap"]


@pytest.mark.parametrize("name", ["kind", "local"])
def test_cpu_profiles_use_the_cpu_image_and_no_gpu(name: str, rendered: dict) -> None:
    dep = deployment(rendered[name])
    pod = dep["spec"]["template"]["spec"]
    assert "tolerations" not in pod
    assert "nvidia.com/gpu" not in yaml.safe_dump(rendered[name])
    vllm = m.container(dep, "vllm")
    assert vllm["image"] == CPU_IMAGE
    assert m.container(dep, "stage-weights")["image"] == CPU_IMAGE
    assert env_of(vllm)["VLLM_CPU_KVCACHE_SPACE"]["value"] == "1"
    assert m.arg_value(vllm["args"], "--dtype") == "bfloat16"


@pytest.mark.parametrize("name", ["gke-l4", "multi-gpu", "prod"])
def test_gpu_profiles_ask_for_and_tolerate_a_gpu(name: str, rendered: dict) -> None:
    dep = deployment(rendered[name])
    vllm = m.container(dep, "vllm")
    assert vllm["image"] == GPU_IMAGE
    assert str(vllm["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            in dep["spec"]["template"]["spec"]["tolerations"])
    assert m.arg_value(vllm["args"], "--dtype") == "auto"


def test_pods_are_hardened(rendered: dict) -> None:
    pod = deployment(rendered["gke-l4"])["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] >= 10000 and pod["securityContext"]["runAsGroup"] >= 10000
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in [*pod["initContainers"], *pod["containers"]]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        # A read-only image: every place the container writes is a volume.
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {v["mountPath"]: v["name"] for v in c["volumeMounts"]}
        home = next(e["value"] for e in c["env"] if e["name"] == "HOME")
        assert "emptyDir" in volumes[mounts[home]] and "emptyDir" in volumes[mounts["/tmp"]], c["name"]
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "vllm-models"


def test_kserve_feature_renders_a_validating_inference_service(layout: Layout, crd_store: CrdStore) -> None:
    profile = load_profile("gke-l4", overrides={"features.kserve": True}, layout=layout)
    assert layers.select("serving", profile).base == "serving/kserve"
    objects = layers.render("serving", profile, layout)
    assert [o["kind"] for o in objects] == ["InferenceService"]
    isvc = m.find(objects, "InferenceService", "vllm")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    # KServe >= 0.17 calls the former RawDeployment mode "Standard" (RawDeployment is a deprecated alias).
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = isvc["spec"]["predictor"]
    assert predictor["minReplicas"] == 0  # cost tier
    container = m.container(isvc, "kserve-container")
    assert container["image"] == GPU_IMAGE
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert m.arg_value(container["args"], "--model") == "/mnt/models"
    assert m.arg_value(container["args"], "--served-model-name") == "qwen2.5-coder-0.5b-instruct"
    assert "value" not in env_of(container)["VLLM_API_KEY"]
    assert env_of(container)["STORAGE_URI"]["value"].startswith("oci://")
    report = validate(objects, layout, crds=crd_store)
    assert report.failures == [], report.table().to_string()
    schema = [f for f in report.findings if f.rule == "schema"]
    assert schema[0].status == "ok" and "kserve/kserve@v0.20.0" in schema[0].message
    # The modelcar is a documented placeholder: reported, never silently accepted.
    assert [(f.rule, f.status) for f in report.warnings] == [("digest-pinned", "warn")]
    assert "modelcar oci://" in report.warnings[0].message
    assert "vllm/vllm-openai" not in report.warnings[0].message  # the images themselves are pinned


def test_kserve_on_cpu_drops_the_gpu(layout: Layout, crd_store: CrdStore) -> None:
    profile = load_profile("local", overrides={"features.kserve": True}, layout=layout)
    objects = layers.render("serving", profile, layout)
    isvc = m.find(objects, "InferenceService", "vllm")
    assert "tolerations" not in isvc["spec"]["predictor"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(objects)
    container = m.container(isvc, "kserve-container")
    assert container["image"] == CPU_IMAGE
    assert m.arg_value(container["args"], "--served-model-name") == "smollm2-135m-instruct"
    assert "smollm2-135m-instruct" in env_of(container)["STORAGE_URI"]["value"]
    assert validate(objects, layout, crds=crd_store).failures == []


def test_bases_render_on_their_own(layout: Layout, crd_store: CrdStore) -> None:
    """A GitOps tool can apply a base without inferbook; on a GPU cluster it adds the kueue component too.

    The GPU base alone names no Kueue LocalQueue (the queue is the platform layer's, ADR-0002), so the one rule it
    fails is gpu-queue-label, and only on the GPU workload: the rule that sends it through components/kueue.
    """
    for base in ("serving/vllm", "serving/kserve"):
        objects = m.kustomize(ROOT / "manifests" / base)
        failures = validate(objects, layout, crds=crd_store).failures
        assert [(f.kind, f.name, f.rule) for f in failures] == [(objects_kind(base), "vllm", "gpu-queue-label")]


def objects_kind(base: str) -> str:
    return "InferenceService" if base.endswith("kserve") else "Deployment"


def test_unknown_layer_is_a_clear_error(layout: Layout) -> None:
    with pytest.raises(layers.UnknownLayer, match="no manifests for layer 'experience' yet"):
        layers.render("experience", load_profile("local", layout=layout), layout)


def test_write_round_trips(rendered: dict, tmp_path: Path) -> None:
    path = m.write(rendered["kind"], tmp_path / "out" / "serving.yaml")
    assert [d for d in yaml.safe_load_all(path.read_text()) if d] == rendered["kind"]


def test_find_names_what_exists(rendered: dict) -> None:
    with pytest.raises(m.ManifestError, match="found: .*Deployment/vllm"):
        m.find(rendered["kind"], "StatefulSet", "vllm")


# --------------------------------------------------------------------------- kustomize failures


def test_kustomize_failure_carries_stderr(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(m.KustomizeFailed) as info:
        m.kustomize(tmp_path)
    assert "missing.yaml" in str(info.value)
    assert "Fix:" in str(info.value)


def test_missing_kubectl_is_actionable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(m.KubectlNotFound, match="make venv"):
        m.kubectl()


# --------------------------------------------------------------------------- the validator's rules


def _one(report: ValidationReport, rule: str, kind: str | None = None) -> Any:
    found = [f for f in report.findings if f.rule == rule and (kind is None or f.kind == kind)]
    assert len(found) == 1, found
    return found[0]


def test_crd_validation_names_a_typo(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    monitor = copy.deepcopy(m.find(rendered["kind"], "ServiceMonitor", "vllm"))
    monitor["spec"]["endpoints"][0]["scrapeIntervall"] = "30s"
    finding = _one(validate([monitor], layout, crds=crd_store), "schema")
    assert finding.status == "fail"
    assert "scrapeIntervall" in finding.message and "spec.endpoints[0]" in finding.message


def test_crd_validation_checks_types(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    monitor = copy.deepcopy(m.find(rendered["kind"], "ServiceMonitor", "vllm"))
    monitor["spec"]["endpoints"] = "http"
    assert _one(validate([monitor], layout, crds=crd_store), "schema").status == "fail"


def test_deployment_typo_fails_the_kubernetes_schema(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    dep = copy.deepcopy(deployment(rendered["kind"]))
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    finding = _one(validate([dep], layout, crds=crd_store), "schema")
    assert finding.status == "fail" and "imagePullPolicyy" in finding.message


def test_unknown_kind_fails_rather_than_passing(layout: Layout, crd_store: CrdStore) -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "labels": {}}}
    finding = _one(validate([widget], layout, crds=crd_store), "schema")
    assert finding.status == "fail" and "crds.lock.yaml" in finding.message


def test_missing_labels_fail_the_label_rule(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    service = copy.deepcopy(m.find(rendered["kind"], "Service", "vllm"))
    del service["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    service["metadata"]["labels"]["app.kubernetes.io/part-of"] = "something-else"
    report = validate([service], layout, crds=crd_store)
    finding = _one(report, "labels")
    assert finding.status == "fail"
    assert "app.kubernetes.io/managed-by" in finding.message and "something-else" in finding.message
    assert _one(report, "schema").status == "ok"


def test_unpinned_image_is_a_warning_naming_it(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    dep = copy.deepcopy(deployment(rendered["kind"]))
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:latest"
    report = validate([dep], layout, crds=crd_store)
    finding = _one(report, "digest-pinned")
    assert finding.status == "warn" and "vllm/vllm-openai:latest" in finding.message
    assert report.failures == []
    report.raise_for_failures()  # warnings alone do not raise


def test_gpu_without_toleration_fails(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    dep = copy.deepcopy(deployment(rendered["gke-l4"]))
    assert _one(validate([dep], layout, crds=crd_store), "gpu-toleration").status == "ok"
    del dep["spec"]["template"]["spec"]["tolerations"]
    assert _one(validate([dep], layout, crds=crd_store), "gpu-toleration").status == "fail"


def test_policy_rules_catch_root_missing_limits_and_inline_secrets(rendered: dict, layout: Layout,
                                                                    crd_store: CrdStore) -> None:
    dep = copy.deepcopy(deployment(rendered["kind"]))
    pod = dep["spec"]["template"]["spec"]
    del pod["securityContext"]["runAsNonRoot"]
    del pod["containers"][0]["securityContext"]["runAsNonRoot"]
    del pod["initContainers"][0]["resources"]["limits"]
    pod["containers"][0]["env"][0] = {"name": "VLLM_API_KEY", "value": "sk-not-a-real-key"}
    report = validate([dep], layout, crds=crd_store)
    assert _one(report, "non-root").status == "fail" and "vllm" in _one(report, "non-root").message
    assert "stage-weights has no limits" in _one(report, "resources").message
    assert _one(report, "secrets-by-reference").status == "fail"
    assert "sk-not-a-real-key" not in report.table().to_string()  # a finding never echoes a secret
    with pytest.raises(ManifestInvalid) as info:
        report.raise_for_failures()
    for rule in ("non-root", "resources", "secrets-by-reference"):
        assert f"[{rule}]" in str(info.value)


def test_a_secret_mounted_as_a_file_is_named_by_its_path_not_inlined(rendered: dict, layout: Layout,
                                                                      crd_store: CrdStore) -> None:
    dep = copy.deepcopy(deployment(rendered["kind"]))
    init = m.container(dep, "stage-weights")
    env = {e["name"]: e for e in init["env"]}
    assert env["HF_TOKEN_PATH"]["value"] == "/var/run/secrets/huggingface/token" and "HF_TOKEN" not in env
    mounts = {v["name"]: v["mountPath"] for v in init["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert mounts["hf-token"] == "/var/run/secrets/huggingface"
    assert volumes["hf-token"]["secret"] == {"secretName": "hf-token", "optional": True}
    assert _one(validate([dep], layout, crds=crd_store), "secrets-by-reference").status == "ok"
    init["env"].append({"name": "HF_TOKEN", "value": "hf_not_a_real_token"})
    finding = _one(validate([dep], layout, crds=crd_store), "secrets-by-reference")
    assert finding.status == "fail" and "stage-weights sets HF_TOKEN inline" in finding.message


def test_report_table_has_one_row_per_finding(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    report = validate(rendered["multi-gpu"], layout, crds=crd_store)
    table = report.table()
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["kind", "name", "rule", "status", "message"]
    assert len(table) == len(report.findings) and set(table["status"]) == {"ok"}
    assert "0 failed" in report.summary()


def test_a_server_without_a_readiness_probe_fails_the_probes_rule(rendered: dict, layout: Layout,
                                                                   crd_store: CrdStore) -> None:
    dep = copy.deepcopy(deployment(rendered["kind"]))
    assert _one(validate([dep], layout, crds=crd_store), "probes").status == "ok"
    container = dep["spec"]["template"]["spec"]["containers"][0]
    del container["readinessProbe"]
    finding = _one(validate([dep], layout, crds=crd_store), "probes")
    assert finding.status == "fail" and f"{container['name']} serves port(s)" in finding.message
    assert "Fix: add a readinessProbe" in finding.message


def test_a_secret_rendered_with_values_fails_and_an_empty_one_passes(layout: Layout, crd_store: CrdStore) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "leak", "labels": {
        "app.kubernetes.io/name": "leak", "app.kubernetes.io/part-of": "inferbook"}}, "type": "Opaque"}
    assert _one(validate([secret], layout, crds=crd_store), "no-secret-data").status == "ok"
    secret["stringData"] = {"api-key": "sk-not-a-real-one"}
    finding = _one(validate([secret], layout, crds=crd_store), "no-secret-data")
    assert finding.status == "fail" and "api-key" in finding.message and "sk-not" not in finding.message
