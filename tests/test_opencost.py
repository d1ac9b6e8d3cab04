"""The OpenCost layer: it reads the observability layer's Prometheus, is bound in the profile's namespace, and
attributes cost to tenants by namespace and to models by workload."""

from __future__ import annotations

from inferbook import layers, load_profile
from inferbook.layers.observability.cluster import PROMETHEUS_NAMESPACE, PROMETHEUS_PORT, PROMETHEUS_SERVICE
from inferbook.layers.opencost import steps
from inferbook.layers.security import steps as security_steps
from inferbook.paths import Layout

from .conftest import ROOT


def test_the_shipped_profiles_enable_opencost_where_they_belong():
    assert all("opencost" in load_profile(n).features for n in ("gke-l4", "prod", "kind"))
    assert not any("opencost" in load_profile(n).features for n in ("local", "multi-gpu"))


def test_opencost_reads_the_prometheus_the_observability_layer_reaches(tmp_path):
    objects = layers.render("opencost", load_profile("gke-l4"), Layout(ROOT, tmp_path))
    assert steps.prometheus_of(objects) == (f"http://{PROMETHEUS_SERVICE}.{PROMETHEUS_NAMESPACE}.svc.cluster.local:"
                                            f"{PROMETHEUS_PORT}")


def test_the_binding_and_cluster_id_follow_the_profile(tmp_path):
    profile = load_profile("gke-l4", {"target.namespace": "llm"})
    objects = layers.render("opencost", profile, Layout(ROOT, tmp_path))
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "llm"
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CLUSTER_ID"] == "gke-l4"
    assert {o["kind"] for o in objects} >= {"ServiceMonitor", "NetworkPolicy", "ClusterRole"}
    off = layers.render("opencost", load_profile("gke-l4", {"features.security": False}), Layout(ROOT, tmp_path / "b"))
    assert not [o for o in off if o["kind"] == "NetworkPolicy"]


def test_cost_goes_to_the_tenant_by_namespace_and_to_the_model_for_shared_engines(tmp_path):
    profile = load_profile("gke-l4")
    stack = security_steps.rendered_stack(layers.enabled(profile), profile, Layout(ROOT, tmp_path))
    cost = [o for o in stack if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "opencost"]
    table = steps.attribution(stack, profile, cost).set_index("workload")
    assert "the model it serves" in table.loc["Deployment/vllm", "cost goes to"]
    assert table.loc["(any pod of the tenant)", "cost goes to"] == "tenant demo (its namespace)"
    assert "off" in steps.attribution(stack, profile, []).loc[0, "cost goes to"]
