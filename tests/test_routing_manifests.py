"""The routing layer's manifests (ADR-0005): rendered per profile, validated offline, applied to the API double.

Rendered through ``MANIFESTS.render`` directly (the layer's registry entry is declared with its local target), so
these tests need neither the registry line nor a cluster: kustomize comes from the venv's kubectl, the CRD schemas
from the committed files under manifests/crds/, the API server is tests/kube_double.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from inferbook import kube, load_profile
from inferbook import manifests as m
from inferbook.crds import CrdStore
from inferbook.layers.routing import manifests as routing
from inferbook.manifests import ManifestError
from inferbook.paths import Layout
from inferbook.profile import list_profiles
from inferbook.validate import validate

from .conftest import ROOT
from .kube_double import ApiType, FakeKubeApiServer

#: Shipped profiles that enable routing, and the local one with routing switched on (its own processes run
#: vllm-router; its render must still work, for the book's cluster view of the same profile).
ROUTED = [name for name in list_profiles(Layout.discover(start=ROOT))
          if load_profile(name).get("features.routing")]
CASES = [(name, {}) for name in ROUTED] + [("local", {"features.routing": True}),
                                          ("kind", {"routing.canary.enabled": True, "routing.canary.weight": 25})]
CASE_IDS = [name + "".join(f",{k}={v}" for k, v in overrides.items()) for name, overrides in CASES]
LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of",
          "app.kubernetes.io/managed-by"}
#: Images on a version tag because no upstream file publishes a digest to cite (never invented): GIE's endpoint
#: picker and body-based router. validate() must keep naming each of them in a digest-pinned warning.
TAG_ONLY_IMAGES = {"registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0",
                   "registry.k8s.io/gateway-api-inference-extension/bbr:v1.5.0"}


@pytest.fixture(scope="module")
def rendered(layout: Layout) -> dict[str, list[dict[str, Any]]]:
    return {case_id: routing.MANIFESTS.render(load_profile(name, overrides=overrides, layout=layout), layout)
            for case_id, (name, overrides) in zip(CASE_IDS, CASES, strict=True)}


def profile_of(case_id: str, layout: Layout):
    name, overrides = CASES[CASE_IDS.index(case_id)]
    return load_profile(name, overrides=overrides, layout=layout)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_the_routing_profiles_are_the_four_cluster_ones_and_local() -> None:
    assert set(ROUTED) == {"kind", "gke-l4", "multi-gpu", "prod", "local"}


@pytest.mark.parametrize("case", CASE_IDS)
def test_rendered_objects_validate_against_the_pinned_schemas(case: str, rendered: dict, layout: Layout,
                                                              crd_store: CrdStore) -> None:
    objects = rendered[case]
    report = validate(objects, layout, crds=crd_store)
    assert report.failures == [], report.table().to_string()
    checked = {(f.kind, f.rule, f.status) for f in report.findings}
    for kind in ("Gateway", "HTTPRoute", "InferencePool", "InferenceObjective", "AgentgatewayPolicy"):
        assert (kind, "schema", "ok") in checked, f"{kind} was not checked against its pinned CRD"
    crd_checked = [f for f in report.findings if f.rule == "schema" and "CRD of" in f.message]
    assert {f.kind for f in crd_checked} >= {"Gateway", "HTTPRoute", "InferencePool", "InferenceObjective"}
    # The only warnings: GIE's two images on a tag, each named in the warning.
    assert {(f.rule, f.status) for f in report.warnings} == {("digest-pinned", "warn")}
    named = {image for f in report.warnings for image in TAG_ONLY_IMAGES if image in f.message}
    assert named == TAG_ONLY_IMAGES, report.table().to_string()


def test_a_broken_pool_fails_schema_validation(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    """The pinned InferencePool schema is really applied: a pool without targetPorts, or with a typo, fails."""
    pool = dict(routing.pools(rendered["kind"])[routing.POOL_NAME])
    broken = {**pool, "spec": {k: v for k, v in pool["spec"].items() if k != "targetPorts"} | {"targetPort": 8000}}
    report = validate([broken], layout, crds=crd_store)
    messages = " ".join(f.message for f in report.failures)
    assert "targetPorts" in messages and "targetPort" in messages


@pytest.mark.parametrize("case", CASE_IDS)
def test_each_model_has_its_own_pool_and_rule(case: str, rendered: dict, layout: Layout) -> None:
    objects = rendered[case]
    profile = profile_of(case, layout)
    model = profile.data["models"]["chat"]["served_name"]
    coder = (profile.data["models"].get("coder") or {}).get("served_name")
    routes = routing.model_routes(objects)
    assert sorted(routes) == sorted(filter(None, [model, coder]))  # one rule per model the serving layer runs
    if coder:  # llama-server: its Service, no pool (no picker reads llama.cpp's metrics)
        assert routes[coder] == [(routing.CODER_BACKEND, 1)] and routing.CODER_BACKEND not in routing.pools(objects)
    pools = routing.pools(objects)
    stable = pools[routing.POOL_NAME]
    # The pool selects the serving layer's vLLM pods by their Deployment's own selector, on vLLM's port.
    serving = yaml.safe_load((ROOT / "manifests/serving/vllm/kustomization.yaml").read_text())
    selector_labels = next(p["pairs"] for p in serving["labels"] if p.get("includeSelectors"))
    assert stable["spec"]["selector"]["matchLabels"] == selector_labels
    assert stable["spec"]["targetPorts"] == [{"number": 8000}]
    for name, pool in pools.items():
        ref = pool["spec"]["endpointPickerRef"]  # v1.6.0's schema made it optional; GIE v1.5.0 requires it
        assert ref["name"] == routing.epp_name(name) and ref["port"] == {"number": routing.EPP_PORT}
        epp = m.find(objects, "Deployment", routing.epp_name(name))
        assert m.arg_value(m.container(epp, routing.EPP_CONTAINER)["args"], "--pool-name") == name
        service = m.find(objects, "Service", routing.epp_name(name))
        assert service["spec"]["selector"] == epp["spec"]["selector"]["matchLabels"]
        assert {p["port"] for p in service["spec"]["ports"]} == {routing.EPP_PORT, routing.EPP_METRICS_PORT}
    # BBR knows the model (else its base-model header stays empty) and the route matches the header BBR sets.
    registered = [c["data"]["baseModel"] for c in of_kind(objects, "ConfigMap")
                  if c["metadata"]["labels"].get(routing.BBR_MANAGED_LABEL) == "true"]
    assert sorted(registered) == sorted(filter(None, [model, coder]))


@pytest.mark.parametrize("case", CASE_IDS)
def test_an_unknown_model_has_no_rule(case: str, rendered: dict) -> None:
    route = m.find(rendered[case], "HTTPRoute", routing.HTTPROUTE_NAME)
    for rule in route["spec"]["rules"]:
        assert rule["matches"], "a rule without matches would catch every model"
        for match in rule["matches"]:
            exact = [h for h in match.get("headers") or []
                     if h["name"] == routing.MODEL_HEADER and h.get("type", "Exact") == "Exact"]
            assert exact, f"rule {rule.get('name')} matches requests without an exact model header"
    assert "some-unknown-model" not in routing.model_routes(rendered[case])


@pytest.mark.parametrize("case", CASE_IDS)
def test_the_gateway_is_the_service_litellm_calls_with_the_profiles_class(case: str, rendered: dict,
                                                                          layout: Layout) -> None:
    from inferbook.layers.llm_gateway.manifests import INFERENCE_GATEWAY_SERVICE

    gateway = m.find(rendered[case], "Gateway", routing.GATEWAY_NAME)
    assert routing.GATEWAY_NAME == INFERENCE_GATEWAY_SERVICE
    assert gateway["spec"]["gatewayClassName"] == profile_of(case, layout).data["routing"]["gateway_class"]
    assert gateway["spec"]["listeners"] == [{"name": "http", "protocol": "HTTP", "port": 80,
                                             "allowedRoutes": {"namespaces": {"from": "Same"}}}]
    route = m.find(rendered[case], "HTTPRoute", routing.HTTPROUTE_NAME)
    assert [p["name"] for p in route["spec"]["parentRefs"]] == [routing.GATEWAY_NAME]


def test_the_body_based_router_runs_before_routing_on_agentgateway(rendered: dict) -> None:
    policy = m.find(rendered["kind"], "AgentgatewayPolicy", routing.BBR_POLICY_NAME)
    assert policy["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                             "name": routing.GATEWAY_NAME}]
    traffic = policy["spec"]["traffic"]
    assert traffic["phase"] == "PreRouting"  # PostRouting would set the header after the rule was chosen
    assert traffic["extProc"]["backendRef"] == {"kind": "Service", "name": routing.BBR_NAME, "port": routing.BBR_PORT}
    service = m.find(rendered["kind"], "Service", routing.BBR_NAME)
    assert [p["port"] for p in service["spec"]["ports"]] == [routing.BBR_PORT]


def test_another_gateway_class_renders_no_agentgateway_policy(layout: Layout) -> None:
    profile = load_profile("kind", overrides={"routing.gateway_class": "istio"}, layout=layout)
    objects = routing.MANIFESTS.render(profile, layout)
    assert m.find(objects, "Gateway", routing.GATEWAY_NAME)["spec"]["gatewayClassName"] == "istio"
    assert not of_kind(objects, "AgentgatewayPolicy")


@pytest.mark.parametrize("case", CASE_IDS)
def test_interactive_is_above_batch_and_both_come_from_the_profile(case: str, rendered: dict, layout: Layout) -> None:
    priority = profile_of(case, layout).data["routing"]["priority"]
    objectives = {o["metadata"]["name"]: o for o in of_kind(rendered[case], "InferenceObjective")}
    assert set(objectives) == set(routing.OBJECTIVES.values())
    got = {kind: objectives[name]["spec"]["priority"] for kind, name in routing.OBJECTIVES.items()}
    assert got == {"interactive": priority["interactive"], "batch": priority["batch"]}
    assert got["interactive"] > got["batch"]
    for objective in objectives.values():
        assert objective["spec"]["poolRef"] == {"group": routing.POOL_GROUP, "kind": "InferencePool",
                                                "name": routing.POOL_NAME}


def test_priorities_follow_an_override_and_an_inverted_pair_is_refused(layout: Layout) -> None:
    profile = load_profile("kind", overrides={"routing.priority.interactive": 50}, layout=layout)
    objects = routing.MANIFESTS.render(profile, layout)
    assert m.find(objects, "InferenceObjective", routing.OBJECTIVES["interactive"])["spec"]["priority"] == 50
    inverted = load_profile("kind", overrides={"routing.priority.interactive": -5}, layout=layout)
    with pytest.raises(ManifestError, match=r"routing\.priority\.interactive \(-5\) must be above"):
        routing.MANIFESTS.render(inverted, layout)


@pytest.mark.parametrize("case", CASE_IDS)
def test_canary_weights_come_from_the_profile_and_sum_to_100(case: str, rendered: dict, layout: Layout) -> None:
    profile = profile_of(case, layout)
    canary = profile.data["routing"]["canary"]
    backends = routing.model_routes(rendered[case])[profile.data["models"]["chat"]["served_name"]]
    if not canary["enabled"]:
        assert backends == [(routing.POOL_NAME, 1)]
        assert routing.CANARY_POOL_NAME not in routing.pools(rendered[case])
        return
    assert backends == [(routing.POOL_NAME, 100 - canary["weight"]), (routing.CANARY_POOL_NAME, canary["weight"])]
    assert sum(weight for _, weight in backends) == 100


def test_multi_gpu_ships_the_90_10_canary(rendered: dict) -> None:
    (backends,) = routing.model_routes(rendered["multi-gpu"]).values()  # no coder on a GPU profile
    assert backends == [(routing.POOL_NAME, 90), (routing.CANARY_POOL_NAME, 10)]


@pytest.mark.parametrize("case", ["multi-gpu", "kind,routing.canary.enabled=True,routing.canary.weight=25"])
def test_canary_pods_are_the_serving_pod_selected_by_their_own_label(case: str, rendered: dict,
                                                                     layout: Layout) -> None:
    objects = rendered[case]
    profile = profile_of(case, layout)
    from inferbook.layers.serving.manifests import MANIFESTS as SERVING

    serving_objects = SERVING.render(profile, layout)
    serving = m.find(serving_objects, "Deployment", "vllm")
    canary = m.find(objects, "Deployment", routing.CANARY_DEPLOYMENT)
    assert m.pod_spec(canary) == m.pod_spec(serving)  # same model, flags, image, sizes for the profile
    assert canary["spec"]["replicas"] == profile.data["routing"]["canary"]["replicas"]
    pools = routing.pools(objects)
    canary_labels = canary["spec"]["template"]["metadata"]["labels"]
    stable_labels = serving["spec"]["template"]["metadata"]["labels"]
    def selects(pool: str, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in pools[pool]["spec"]["selector"]["matchLabels"].items())

    assert selects(routing.CANARY_POOL_NAME, canary_labels) and not selects(routing.POOL_NAME, canary_labels)
    assert selects(routing.POOL_NAME, stable_labels) and not selects(routing.CANARY_POOL_NAME, stable_labels)
    # The direct path (Service vllm) never reaches the canary.
    vllm_service = m.find(serving_objects, "Service", "vllm")
    assert not all(canary_labels.get(k) == v for k, v in vllm_service["spec"]["selector"].items())
    assert all(stable_labels.get(k) == v for k, v in vllm_service["spec"]["selector"].items())
    # The canary's picker is the stable one's but for the pool it picks for.
    stable_epp = m.find(objects, "Deployment", routing.EPP_NAME)
    canary_epp = m.find(objects, "Deployment", routing.CANARY_EPP_NAME)
    def strip(d: dict[str, Any]) -> list[str]:
        return [a for a in m.container(d, routing.EPP_CONTAINER)["args"] if not a.startswith("--pool-name=")]

    assert strip(canary_epp) == strip(stable_epp)
    assert {k: v for k, v in m.pod_spec(canary_epp).items() if k != "containers"} == \
           {k: v for k, v in m.pod_spec(stable_epp).items() if k != "containers"}


def test_a_canary_image_replaces_only_the_vllm_container(layout: Layout) -> None:
    image = "vllm/vllm-openai:v0.24.0@sha256:" + "0" * 64
    profile = load_profile("multi-gpu", overrides={"routing.canary.image": image}, layout=layout)
    canary = m.find(routing.MANIFESTS.render(profile, layout), "Deployment", routing.CANARY_DEPLOYMENT)
    assert m.container(canary, "vllm")["image"] == image
    assert m.container(canary, "stage-weights")["image"] != image


def test_a_canary_on_kserve_is_refused_naming_the_fix(layout: Layout) -> None:
    profile = load_profile("kind", overrides={"features.kserve": True, "routing.canary.enabled": True}, layout=layout)
    with pytest.raises(ManifestError, match="features.kserve"):
        routing.MANIFESTS.render(profile, layout)


@pytest.mark.parametrize("case", CASE_IDS)
def test_the_epps_rbac_covers_what_it_watches_and_nothing_more(case: str, rendered: dict) -> None:
    objects = rendered[case]
    role = m.find(objects, "Role", routing.EPP_SERVICE_ACCOUNT)
    granted = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    watched = {("", "pods"), ("inference.networking.k8s.io", "inferencepools"),
               ("inference.networking.x-k8s.io", "inferenceobjectives"),
               ("inference.networking.x-k8s.io", "inferencemodelrewrites")}
    assert set(granted) == watched
    assert all(verbs == {"get", "list", "watch"} for verbs in granted.values())
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    binding = m.find(objects, "RoleBinding", routing.EPP_SERVICE_ACCOUNT)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": routing.EPP_SERVICE_ACCOUNT}
    namespace = role["metadata"]["namespace"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": routing.EPP_SERVICE_ACCOUNT,
                                    "namespace": namespace}]
    for name in (routing.EPP_NAME, routing.CANARY_EPP_NAME):
        if any(o["metadata"]["name"] == name for o in of_kind(objects, "Deployment")):
            assert m.pod_spec(m.find(objects, "Deployment", name))["serviceAccountName"] == routing.EPP_SERVICE_ACCOUNT
    bbr_role = m.find(objects, "Role", routing.BBR_NAME)
    assert bbr_role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]


@pytest.mark.parametrize("case", CASE_IDS)
def test_every_object_carries_the_labels_and_every_pod_the_security_context(case: str, rendered: dict,
                                                                           layout: Layout) -> None:
    namespace = profile_of(case, layout).data["target"]["namespace"]
    for obj in rendered[case]:
        labels = obj["metadata"].get("labels") or {}
        assert LABELS <= set(labels), f"{obj['kind']}/{obj['metadata']['name']} lacks labels"
        assert labels["app.kubernetes.io/part-of"] == "inferbook"
        assert obj["metadata"]["namespace"] == namespace
        if obj["kind"] != "Deployment":
            continue
        pod = m.pod_spec(obj)
        assert LABELS <= set(obj["spec"]["template"]["metadata"]["labels"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            sc = c["securityContext"]
            where = f"{obj['metadata']['name']}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and \
                   {"cpu", "memory"} <= set(c["resources"]["limits"]), where
        if obj["metadata"]["name"] in (routing.EPP_NAME, routing.CANARY_EPP_NAME, routing.BBR_NAME):
            # The API token only where it is read, as an expiring projected token.
            assert pod["automountServiceAccountToken"] is False
            sources = next(v["projected"]["sources"] for v in pod["volumes"] if "projected" in v)
            assert sources[0]["serviceAccountToken"]["expirationSeconds"] <= 3600


def test_the_canary_component_and_base_pickers_carry_the_tag_only_images_and_nothing_else(rendered: dict) -> None:
    images = {c["image"] for o in of_kind(rendered["multi-gpu"], "Deployment") for c in m.pod_spec(o)["containers"]
              if "gateway-api-inference-extension" in c["image"]}
    assert images == TAG_ONLY_IMAGES
    assert all(c.get("imagePullPolicy") == "Always" for o in of_kind(rendered["multi-gpu"], "Deployment")
               for c in m.pod_spec(o)["containers"] if c["image"] in TAG_ONLY_IMAGES)


# --------------------------------------------------------------------------- the kube target


#: The routing kinds as a cluster with Gateway API, GIE v1.5.0 and agentgateway serves them.
ROUTING_TYPES = (
    ApiType("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    ApiType("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    ApiType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    ApiType("gateway.networking.k8s.io", "v1", "Gateway", "gateways", True, ("gtw",)),
    ApiType("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes", True),
    ApiType("inference.networking.k8s.io", "v1", "InferencePool", "inferencepools", True, ("infpool",)),
    ApiType("inference.networking.x-k8s.io", "v1alpha2", "InferenceObjective", "inferenceobjectives", True),
    ApiType("agentgateway.dev", "v1alpha1", "AgentgatewayPolicy", "agentgatewaypolicies", True, ("agpol",)),
)


@pytest.fixture
def api(tmp_path, monkeypatch):
    with FakeKubeApiServer() as server:
        server.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "inferbook"}})
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig", context="lab")))
        yield server


def test_the_kube_target_applies_every_routing_kind_by_its_resource_name(api, rendered: dict) -> None:
    api.install(*ROUTING_TYPES)
    objects = rendered["multi-gpu"]
    results = kube.apply(objects, "lab", namespace="inferbook", say=lambda line: None)
    assert [r.action for r in results] == ["created"] * len(objects)
    stored = set(api.object_keys())
    for obj in objects:
        plural = next(t.plural for t in ROUTING_TYPES + _builtin() if t.kind == obj["kind"])
        group = obj["apiVersion"].rpartition("/")[0]
        assert (group, plural, "inferbook", obj["metadata"]["name"]) in stored
    again = kube.apply(objects, "lab", namespace="inferbook", say=lambda line: None)
    assert {r.action for r in again} == {"unchanged"}


def test_a_cluster_without_gie_is_named_before_anything_is_written(api, rendered: dict) -> None:
    api.install(*[t for t in ROUTING_TYPES if t.kind != "InferencePool"])
    with pytest.raises(kube.KubeError, match="InferencePool"):
        kube.apply(rendered["kind"], "lab", namespace="inferbook", say=lambda line: None)
    assert not [r for r in api.writes() if r.method == "PATCH"]


def test_a_kind_not_yet_discovered_is_named_by_its_plural() -> None:
    ref = kube._Ref("AgentgatewayPolicy", "agentgateway.dev/v1alpha1", "body-based-routing", "inferbook")
    assert ref.resource == "agentgatewaypolicies.agentgateway.dev"
    assert kube._Ref("InferencePool", "inference.networking.k8s.io/v1").resource == \
        "inferencepools.inference.networking.k8s.io"


def _builtin() -> tuple[ApiType, ...]:
    from .kube_double import BUILTIN_TYPES

    return BUILTIN_TYPES
