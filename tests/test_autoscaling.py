"""The autoscaling layer (ADR-0014, ADR-0025): the ScaledObject per profile, the cold-start component, KEDA's and
the HPA's formula, and the cluster part's reading of KEDA's status (against the API-server test double)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pandas as pd
import pytest

from inferbook import layers, load_profile, targets
from inferbook.layers.autoscaling import live, scaling, steps
from inferbook.layers.autoscaling import manifests as autoscaling
from inferbook.layers.autoscaling.cluster import AutoscalingCluster
from inferbook.layers.autoscaling.scaling import Trigger, desired_replicas, stabilised, trigger_replicas
from inferbook.layers.observability import cluster as observability_cluster
from inferbook.manifests import ManifestError
from inferbook.paths import Layout
from inferbook.profile import REPLICA_FLOOR, list_profiles
from inferbook.validate import validate

from .conftest import ROOT
from .kube_double import ApiType, FakeKubeApiServer

SCALING = [name for name in list_profiles(Layout.discover(start=ROOT)) if "autoscaling" in load_profile(name).features]
QUEUE = Trigger("queue", "AverageValue", 5, 0)
KV = Trigger("kv-cache", "Value", 0.8, 0)


@pytest.fixture(scope="module")
def rendered(layout: Layout) -> dict[str, list[dict[str, Any]]]:
    return {name: layers.render("autoscaling", load_profile(name), layout) for name in SCALING}


def scaled_object(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return steps.scaled_object(objects)


def trigger(so: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in so["spec"]["triggers"] if t["name"] == name)


# --------------------------------------------------------------------------- the profiles and their objects


def test_autoscaling_is_on_in_every_shipped_profile_but_local_coder() -> None:
    assert set(SCALING) == {"local", "kind", "gke-l4", "multi-gpu", "prod"}


def test_the_layer_stands_after_observability_in_the_registry() -> None:
    names = [layer.name for layer in layers.LAYERS]
    assert names.index("autoscaling") == names.index("observability") + 1


@pytest.mark.parametrize("name", SCALING)
def test_each_profile_renders_one_scaled_object_and_one_prepull_daemonset(rendered, name) -> None:
    assert sorted((o["kind"], o["metadata"]["name"]) for o in rendered[name]) == [
        ("DaemonSet", "vllm-image-prepull"), ("ScaledObject", "vllm")]
    assert all(o["metadata"]["namespace"] == load_profile(name).get("target.namespace") for o in rendered[name])


@pytest.mark.parametrize("name", SCALING)
def test_the_rendered_objects_validate_against_the_pinned_keda_crd(rendered, layout, name) -> None:
    report = validate(rendered[name], layout)
    assert not report.failures, report.table()
    schema = [f for f in report.findings if f.kind == "ScaledObject" and f.rule == "schema"]
    assert [(f.status, f.message) for f in schema] == [
        ("ok", "valid against the CRD of kedacore/keda@v2.20.2 (closed schema; CEL rules not evaluated)")]


def test_a_scaled_object_the_crd_refuses_fails_validation(rendered, layout) -> None:
    broken = copy.deepcopy(scaled_object(rendered["prod"]))
    broken["spec"]["minReplicaCount"] = "two"
    del broken["spec"]["triggers"]
    report = validate([broken], layout)
    assert [f.rule for f in report.failures] == ["schema"]


@pytest.mark.parametrize("name", SCALING)
def test_the_scaled_object_carries_the_profiles_policy(rendered, name) -> None:
    profile = load_profile(name)
    so = scaled_object(rendered[name])
    spec = so["spec"]
    namespace, model = profile.get("target.namespace"), profile.get("models.chat.served_name")
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm"}
    queue, kv = trigger(so, "queue"), trigger(so, "kv-cache")
    assert (queue["type"], queue["metricType"], kv["type"], kv["metricType"]) == (
        "prometheus", "AverageValue", "prometheus", "Value")
    assert queue["metadata"]["query"] == (
        f'sum(vllm:num_requests_waiting{{namespace="{namespace}",model_name="{model}"}})')
    assert kv["metadata"]["query"] == f'avg(vllm:kv_cache_usage_perc{{namespace="{namespace}",model_name="{model}"}})'
    assert float(queue["metadata"]["threshold"]) == profile.get("capacity.queue_target")
    assert float(kv["metadata"]["threshold"]) == profile.get("autoscaling.kv_cache_target")
    assert spec["maxReplicaCount"] == profile.get("capacity.max_replicas")
    assert spec["pollingInterval"] == profile.get("capacity.interval_seconds")
    assert spec["cooldownPeriod"] == profile.get("autoscaling.cooldown_seconds")
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == profile.get("capacity.cooldown_seconds")
    assert {t["metadata"]["serverAddress"] for t in spec["triggers"]} == {profile.get("autoscaling.prometheus_address")}
    assert "gpu" not in " ".join(t["metadata"]["query"] for t in spec["triggers"]).lower()


@pytest.mark.parametrize(("name", "floor", "paused"), [("local", 1, False), ("kind", 1, False), ("gke-l4", 0, True),
                                                       ("multi-gpu", 2, False), ("prod", 2, False)])
def test_the_floor_is_the_tiers_and_the_cost_tier_ships_paused(rendered, name, floor, paused) -> None:
    profile = load_profile(name)
    so = scaled_object(rendered[name])
    assert so["spec"]["minReplicaCount"] == floor >= REPLICA_FLOOR[profile.tier]
    assert ((so["metadata"].get("annotations") or {}).get("autoscaling.keda.sh/paused") == "true") is paused
    assert "idleReplicaCount" not in so["spec"], "KEDA wants idleReplicaCount below minReplicaCount: never with 0"


def test_the_cost_tier_wakes_from_zero_on_any_waiting_request(rendered) -> None:
    so = scaled_object(rendered["gke-l4"])
    assert so["spec"]["minReplicaCount"] == 0
    assert trigger(so, "queue")["metadata"]["activationThreshold"] == "0"
    assert trigger(so, "kv-cache")["metadata"]["activationThreshold"] == "0"
    policy = steps.policy_of(so)
    assert policy.paused and policy.min_replicas == 0
    idle = desired_replicas({"queue": 0, "kv-cache": 0}, policy.triggers, current=1, min_replicas=0, max_replicas=8)
    assert idle.replicas == 0 and not idle.active


def test_overrides_move_the_thresholds_the_floor_and_the_pause(layout) -> None:
    profile = load_profile("gke-l4", overrides={"capacity.queue_target": 3, "autoscaling.kv_cache_target": 0.7,
                                                "autoscaling.paused": False, "autoscaling.activation_queue": 2},
                           layout=layout)
    so = scaled_object(layers.render("autoscaling", profile, layout))
    assert trigger(so, "queue")["metadata"]["threshold"] == "3"
    assert trigger(so, "queue")["metadata"]["activationThreshold"] == "2"
    assert trigger(so, "kv-cache")["metadata"]["threshold"] == "0.7"
    assert "annotations" not in so["metadata"]


def test_a_ceiling_below_the_floor_is_refused_with_the_fix(layout) -> None:
    profile = load_profile("prod", overrides={"capacity.max_replicas": 1}, layout=layout)
    with pytest.raises(autoscaling.AutoscalingError, match="capacity.max_replicas to at least 2"):
        layers.render("autoscaling", profile, layout)


def test_kserve_and_autoscaling_together_are_refused(layout) -> None:
    profile = load_profile("kind", overrides={"features.kserve": True}, layout=layout)
    with pytest.raises(ManifestError, match="KServe scales its own predictor"):
        layers.select("autoscaling", profile)


def test_kedas_prometheus_is_the_one_the_observability_layer_reads() -> None:
    address = load_profile("prod").get("autoscaling.prometheus_address")
    assert address == (f"http://{observability_cluster.PROMETHEUS_SERVICE}.{observability_cluster.PROMETHEUS_NAMESPACE}"
                       f".svc:{observability_cluster.PROMETHEUS_PORT}")


@pytest.mark.parametrize("name", SCALING)
def test_the_prepull_daemonset_holds_the_serving_image_safely(rendered, layout, name) -> None:
    serving = layers.render("serving", load_profile(name), layout)
    vllm = next(o for o in serving if o["kind"] == "Deployment" and o["metadata"]["name"] == "vllm")
    image = vllm["spec"]["template"]["spec"]["containers"][0]["image"]
    ds = next(o for o in rendered[name] if o["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == image
    assert container["command"] == ["sleep", "infinity"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"] and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- the serving layer's cold-start component


@pytest.mark.parametrize("name", SCALING)
def test_serving_selects_the_cold_start_component_when_autoscaling_is_on(name) -> None:
    assert "cold-start" in layers.select("serving", load_profile(name)).component_names


def test_serving_leaves_the_cold_start_component_out_when_autoscaling_is_off(layout) -> None:
    profile = load_profile("kind", overrides={"features.autoscaling": False}, layout=layout)
    assert "cold-start" not in layers.select("serving", profile).component_names
    vllm = next(o for o in layers.render("serving", profile, layout) if o["kind"] == "Deployment")
    assert "imagePullPolicy" not in vllm["spec"]["template"]["spec"]["containers"][0]


def test_the_cold_start_component_reads_weights_from_the_cache_and_takes_the_profiles_budget(layout) -> None:
    profile = load_profile("gke-l4", overrides={"autoscaling.startup_probe.period_seconds": 5,
                                                "autoscaling.startup_probe.failure_threshold": 90}, layout=layout)
    objects = layers.render("serving", profile, layout)
    assert any(o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == "vllm-models" for o in objects)
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    (server,), (init,) = pod["containers"], pod["initContainers"]
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"]["claimName"] == "vllm-models"
    mount = next(m for m in server["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert any(a.startswith("--model=/models/") for a in server["args"])
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in server["env"]
    assert server["imagePullPolicy"] == init["imagePullPolicy"] == "IfNotPresent"
    probe = server["startupProbe"]
    assert (probe["periodSeconds"], probe["failureThreshold"]) == (5, 90)


# --------------------------------------------------------------------------- the formula


def test_twelve_waiting_with_a_floor_of_one_asks_for_three_replicas() -> None:  # ADR-0014's Validate line
    d = desired_replicas({"queue": 12, "kv-cache": 0.1}, [QUEUE, KV], current=1, min_replicas=1, max_replicas=8)
    assert d.replicas == 3 and d.per_trigger == {"queue": 3, "kv-cache": 1} and d.active


def test_average_value_divides_the_total_by_the_threshold_whatever_the_current_count() -> None:
    assert trigger_replicas(QUEUE, 23, current=1) == 5
    assert trigger_replicas(QUEUE, 23, current=3) == 5
    assert trigger_replicas(QUEUE, 0, current=4) == 0


def test_value_scales_the_current_count_by_the_ratio() -> None:
    assert trigger_replicas(KV, 0.96, current=2) == 3  # ceil(2 x 1.2)
    assert trigger_replicas(KV, 0.2, current=4) == 1  # ceil(4 x 0.25)


def test_within_the_hpas_tolerance_the_current_count_stays() -> None:
    assert trigger_replicas(QUEUE, 10.4, current=2) == 2  # ratio 1.04, ceil(10.4 / 5) would be 3
    assert trigger_replicas(QUEUE, 11.5, current=2) == 3  # ratio 1.15: outside the 10 %
    assert trigger_replicas(KV, 0.84, current=3) == 3  # ratio 1.05


def test_the_largest_trigger_wins_within_the_bounds() -> None:
    d = desired_replicas({"queue": 2, "kv-cache": 0.96}, [QUEUE, KV], current=2, min_replicas=1, max_replicas=8)
    assert d.replicas == 3 and "kv-cache" in d.reason
    capped = desired_replicas({"queue": 100, "kv-cache": 0.5}, [QUEUE, KV], current=2, min_replicas=1, max_replicas=8)
    assert capped.replicas == 8 and capped.reason == "at the ceiling"
    floored = desired_replicas({"queue": 0, "kv-cache": 0.1}, [QUEUE, KV], current=3, min_replicas=2, max_replicas=8)
    assert floored.replicas == 2 and floored.reason == "at the floor"


def test_a_floor_of_zero_scales_to_zero_when_no_trigger_is_above_its_activation() -> None:
    queue = Trigger("queue", "AverageValue", 5, activation=2)
    kv = Trigger("kv-cache", "Value", 0.8, activation=0.05)
    asleep = desired_replicas({"queue": 2, "kv-cache": 0.05}, [queue, kv], current=1, min_replicas=0, max_replicas=4)
    assert (asleep.replicas, asleep.active) == (0, False)
    woken = desired_replicas({"queue": 3, "kv-cache": 0.0}, [queue, kv], current=0, min_replicas=0, max_replicas=4)
    assert (woken.replicas, woken.active) == (1, True)
    busy = desired_replicas({"queue": 0, "kv-cache": 0.3}, [queue, kv], current=1, min_replicas=0, max_replicas=4)
    assert busy.replicas == 1, "a replica with requests in flight is active through the KV-cache trigger"


def test_a_floor_of_one_never_goes_to_zero() -> None:
    d = desired_replicas({"queue": 0, "kv-cache": 0}, [QUEUE, KV], current=2, min_replicas=1, max_replicas=8)
    assert d.replicas == 1


def test_the_formula_refuses_inputs_it_cannot_use() -> None:
    with pytest.raises(scaling.ScalingInputError, match="threshold"):
        Trigger("queue", "AverageValue", 0)
    with pytest.raises(scaling.ScalingInputError, match="no value for trigger"):
        desired_replicas({"queue": 1}, [QUEUE, KV], current=1, min_replicas=1, max_replicas=2)
    with pytest.raises(scaling.ScalingInputError, match="bounds"):
        desired_replicas({"queue": 1, "kv-cache": 0}, [QUEUE, KV], current=1, min_replicas=3, max_replicas=2)


def test_the_scale_down_window_keeps_the_largest_recent_recommendation() -> None:
    assert stabilised([0, 10, 20, 30, 40], [1, 3, 1, 1, 1], window_s=15) == [1, 3, 3, 1, 1]


# --------------------------------------------------------------------------- the chapter's computation, offline


def test_policy_of_reads_the_rendered_scaled_object_back(rendered) -> None:
    policy = steps.policy_of(scaled_object(rendered["prod"]))
    assert policy.triggers == (Trigger("queue", "AverageValue", 5.0, 0.0), Trigger("kv-cache", "Value", 0.8, 0.0))
    assert (policy.min_replicas, policy.max_replicas, policy.scale_down_window_s, policy.paused) == (2, 8, 300, False)


def test_decide_turns_samples_into_counts_with_the_window(layout) -> None:
    samples = pd.DataFrame([{"t_s": 0.0, "waiting": 0, "running": 0, "kv_cache": 0.0},
                            {"t_s": 0.5, "waiting": 12, "running": 4, "kv_cache": 0.3},
                            {"t_s": 1.0, "waiting": 0, "running": 0, "kv_cache": 0.0}])
    policy = steps.Policy((QUEUE, KV), min_replicas=1, max_replicas=8, scale_down_window_s=300, cooldown_s=300,
                          paused=False)
    table = steps.decide(live.Sampled(samples, ok=8, failed=0, seconds=1.0, errors=[]), policy)
    assert list(table["desired"]) == [1, 3, 1]
    assert list(table["after window"]) == [1, 3, 3]
    checks = steps.verify(load_profile("local"), layers.render("autoscaling", load_profile("local"), layout),
                          live.Sampled(samples, 8, 0, 1.0, []), table)
    assert all(c["pass"] for c in checks), checks


def test_the_sampler_counts_failed_requests_and_samples_until_the_load_ends(monkeypatch) -> None:
    reads: list[str] = []

    def read(base: str) -> dict[str, float]:
        reads.append(base)
        return {"waiting": 0.0, "running": 1.0, "kv_cache": 0.01}

    def chat(client, model, prompt, max_tokens):
        if "(1)" in prompt:
            raise RuntimeError("boom")
        return type("Call", (), {"ok": True})()

    monkeypatch.setattr(live.smoke, "chat", chat)
    sampled = live.sample_under_load("http://metrics", "http://127.0.0.1:9/v1", "k", "m",
                                     live.Load(requests=4, concurrency=2, interval_s=0.05), read=read)
    assert (sampled.ok, sampled.failed) == (3, 1) and "boom" in sampled.errors[0]
    assert len(sampled.samples) >= 2 and set(reads) == {"http://metrics"}
    assert list(sampled.samples.columns) == list(live.COLUMNS)


# --------------------------------------------------------------------------- the cluster part, against the double

SCALED_OBJECT_TYPE = ApiType("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects", True, ("so",))
HPA_TYPE = ApiType("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ("hpa",))
#: Built in on a real cluster; the double serves it only when asked.
DAEMONSET_TYPE = ApiType("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",))


def test_the_cluster_part_reads_keda_status_set_by_the_test(tmp_path, monkeypatch, layout) -> None:
    """The double has no KEDA: the test writes the statuses KEDA's operator and the HPA controller would."""
    profile = load_profile("prod")
    namespace = profile.get("target.namespace")
    objects = layers.render("autoscaling", profile, layout)
    with FakeKubeApiServer() as api:
        api.install(SCALED_OBJECT_TYPE, HPA_TYPE, DAEMONSET_TYPE)
        kubeconfig = api.write_kubeconfig(tmp_path / "kc", context=profile.get("target.context"))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        target = targets.of(profile, layout, say=lambda _: None)
        changes = target.apply(objects, "autoscaling")
        assert {(c.kind, c.name, c.layer) for c in changes} == {("ScaledObject", "vllm", "autoscaling"),
                                                                ("DaemonSet", "vllm-image-prepull", "autoscaling")}
        api.set_status("scaledobjects", namespace, "vllm", {
            "conditions": [{"type": "Ready", "status": "True", "reason": "ScaledObjectReady"},
                           {"type": "Active", "status": "True", "reason": "ScalerActive"},
                           {"type": "Paused", "status": "False"}],
            "hpaName": "keda-hpa-vllm", "externalMetricNames": ["s0-prometheus", "s1-prometheus"]}, group="keda.sh")
        api.seed({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                  "metadata": {"name": "keda-hpa-vllm", "namespace": namespace},
                  "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm"},
                           "minReplicas": 2, "maxReplicas": 8}}, manager="keda")
        api.set_status("horizontalpodautoscalers", namespace, "keda-hpa-vllm", {
            "currentReplicas": 2, "desiredReplicas": 3,
            "conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"}],
            "currentMetrics": [{"type": "External", "external": {"metric": {"name": "s0-prometheus"},
                                                                 "current": {"averageValue": "6"}}}]},
            group="autoscaling")
        part = target.part(layers.get("autoscaling"))
        assert isinstance(part, AutoscalingCluster)
        status = part.status(timeout=5)
    assert (status["ready"], status["active"], status["paused"]) == (True, True, False)
    assert status["hpa"] == "keda-hpa-vllm"
    assert status["external_metrics"] == ["s0-prometheus", "s1-prometheus"]
    assert status["hpa_metrics"] == [{"metric": "s0-prometheus", "value": "6"}]
    assert (status["current_replicas"], status["desired_replicas"]) == (2, 3)
    assert part.table(status).loc["replicas: current / desired", "value"] == "2 / 3"


def test_the_cluster_part_names_a_scaled_object_keda_never_made_ready(tmp_path, monkeypatch, layout) -> None:
    from inferbook import kube

    profile = load_profile("kind")
    namespace = profile.get("target.namespace")
    with FakeKubeApiServer() as api:
        api.install(SCALED_OBJECT_TYPE, HPA_TYPE)
        kubeconfig = api.write_kubeconfig(tmp_path / "kc", context=profile.get("target.context"))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        target = targets.of(profile, layout, say=lambda _: None)
        target.apply([o for o in layers.render("autoscaling", profile, layout) if o["kind"] == "ScaledObject"])
        api.set_status("scaledobjects", namespace, "vllm", {"conditions": [
            {"type": "Ready", "status": "False", "reason": "ScaledObjectCheckFailed",
             "message": "prometheus query failed"}]}, group="keda.sh")
        clock = api.virtual_time()
        with pytest.raises(kube.ConditionTimeout, match="ScaledObjectCheckFailed"):
            target.part(layers.get("autoscaling")).status(timeout=2, clock=clock)


def test_a_trigger_that_did_not_decide_shows_a_dash(rendered) -> None:
    table = steps.examples(steps.policy_of(scaled_object(rendered["gke-l4"])))
    first = table.iloc[0]
    assert (first["desired"], first["queue asks"], first["kv-cache asks"]) == (0, "-", "-")
    assert table.iloc[2]["queue asks"] == 3


# --------------------------------------------------------------------------- live, against the session's vLLM


@pytest.mark.slow
def test_the_live_sampler_reads_the_servers_signals_under_load_and_the_counts_stay_in_bounds(local_serving,
                                                                                             layout) -> None:
    profile = load_profile("local")
    policy = steps.policy_of(scaled_object(layers.render("autoscaling", profile, layout)))
    sampled = live.sample_under_load(local_serving.base, local_serving.url, local_serving.api_key(),
                                     local_serving.served_name, live.Load(requests=8, concurrency=8, max_tokens=16))
    assert (sampled.ok, sampled.failed) == (8, 0), sampled.errors
    table = steps.decide(sampled, policy, current=1)
    assert len(table) >= 3 and (table["running"] > 0).any(), table
    assert ((table["kv_cache"] >= 0) & (table["kv_cache"] <= 1)).all()
    assert table["desired"].between(policy.min_replicas, policy.max_replicas).all()
    # one replica is running: the queue asks ceil(waiting / 5) outside the HPA's tolerance, and the floor is 1
    for row in table.to_dict("records"):
        ratio = row["waiting"] / 5
        assert row["queue asks"] == (1 if abs(1 - ratio) <= 0.1 else math.ceil(ratio))
        assert row["desired"] == max(1, row["queue asks"], row["kv-cache asks"])
    assert all(c["pass"] for c in steps.verify(profile, layers.render("autoscaling", profile, layout), sampled, table))


#: /metrics as vLLM 0.23 exposes the three signals (one engine, labelled by model).
VLLM_METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2-135m-instruct"} 4.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2-135m-instruct"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2-135m-instruct"} 0.0625
"""


def test_read_signals_parses_vllms_exposition_and_names_an_unreachable_server() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = VLLM_METRICS.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert live.read_signals(base) == {"waiting": 3.0, "running": 4.0, "kv_cache": 0.0625}
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(live.SamplingError, match=r"could not read .*/metrics.*Fix: check the serving layer is up"):
        live.read_signals(base, timeout=2)


def test_the_cluster_part_does_not_wait_for_the_hpa_of_a_paused_scaled_object(tmp_path, monkeypatch, layout) -> None:
    profile = load_profile("gke-l4")
    namespace = profile.get("target.namespace")
    with FakeKubeApiServer() as api:
        api.install(SCALED_OBJECT_TYPE, HPA_TYPE, DAEMONSET_TYPE)
        kubeconfig = api.write_kubeconfig(tmp_path / "kc", context=profile.get("target.context"))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        target = targets.of(profile, layout, say=lambda _: None)
        target.apply(layers.render("autoscaling", profile, layout), "autoscaling")
        assert api.get_object("scaledobjects", namespace, "vllm", group="keda.sh")["metadata"]["annotations"] == {
            "autoscaling.keda.sh/paused": "true"}
        api.set_status("scaledobjects", namespace, "vllm", {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Active", "status": "False"},
            {"type": "Paused", "status": "True", "reason": "ScaledObjectPaused"}]}, group="keda.sh")
        status = target.part(layers.get("autoscaling")).status(timeout=2, clock=api.virtual_time())
    assert (status["ready"], status["active"], status["paused"]) == (True, False, True)
    assert status["hpa"].startswith("- (paused") and status["hpa_metrics"] == []
