"""The security layer (ADR-0029 SR1, SR2): its manifests, our NetworkPolicy and Kyverno evaluators, the cluster proofs.

The evaluators are ours (no Kyverno engine ships in a registry), so they are tested on hand-written cases first,
then on the rendered layer of every profile that enables it; each check is shown able to fail. The cluster
part runs against the API-server test double, which models admission refusals (``reject``) and the Job
controller's outcome, not a network plugin: what a real connection does is the cluster's to prove.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from inferbook import layers, load_profile, targets
from inferbook.layers import security
from inferbook.layers.security import admission, cluster, inventory, steps
from inferbook.layers.security.manifests import failure_action, managed_namespaces
from inferbook.layers.security.reachability import Evaluator, Pod, PolicyError
from inferbook.paths import Layout

from .conftest import ROOT
from .kube_double import FakeKubeApiServer

SECURITY_PROFILES = [name for name in ("local", "kind", "gke-l4", "multi-gpu", "prod")
                     if "security" in load_profile(name).features]


def netpol(name: str, namespace: str, selector: dict[str, Any], types: list[str], **rules: Any) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": selector, "policyTypes": types, **rules}}


WEB = Pod("web", "app", {"app": "web"}, {"http": 8080})
CLIENT = Pod("client", "app", {"app": "client"})
OUTSIDER = Pod("outsider", "other", {"app": "client"})


# --------------------------------------------------------------------------- the evaluator on hand-written cases


def test_without_policies_everything_is_allowed():
    assert Evaluator([]).allowed(CLIENT, WEB, 8080)[0]


def test_default_deny_ingress_refuses_every_client_and_leaves_egress_open():
    ev = Evaluator([netpol("deny", "app", {}, ["Ingress"])])
    assert not ev.allowed(CLIENT, WEB, 8080)[0]
    assert ev.allowed(WEB, OUTSIDER, 80)[0]  # web's egress is not isolated, the outsider's ingress neither


def test_a_policy_allowing_only_a_port_refuses_the_others():
    ev = Evaluator([netpol("only-8080", "app", {"matchLabels": {"app": "web"}}, ["Ingress"],
                           ingress=[{"ports": [{"port": 8080}]}])])
    assert ev.allowed(CLIENT, WEB, 8080)[0]
    assert not ev.allowed(CLIENT, WEB, 9090)[0]
    assert not ev.allowed(CLIENT, WEB, 8080, "UDP")[0]


def test_a_named_port_and_an_end_port_match_as_the_api_says():
    named = Evaluator([netpol("named", "app", {}, ["Ingress"], ingress=[{"ports": [{"port": "http"}]}])])
    assert named.allowed(CLIENT, WEB, 8080)[0] and not named.allowed(CLIENT, WEB, 8081)[0]
    ranged = Evaluator([netpol("range", "app", {}, ["Ingress"],
                               ingress=[{"ports": [{"port": 8000, "endPort": 8100}]}])])
    assert ranged.allowed(CLIENT, WEB, 8080)[0] and not ranged.allowed(CLIENT, WEB, 8101)[0]


def test_a_pod_selector_peer_is_in_the_policys_namespace_and_a_namespace_selector_crosses():
    same_ns = Evaluator([netpol("from-clients", "app", {}, ["Ingress"],
                                ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}])])
    assert same_ns.allowed(CLIENT, WEB, 8080)[0]
    assert not same_ns.allowed(OUTSIDER, WEB, 8080)[0]  # same labels, other namespace
    cross = Evaluator([netpol("from-other", "app", {}, ["Ingress"], ingress=[{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "other"}}}]}])])
    assert cross.allowed(OUTSIDER, WEB, 8080)[0] and not cross.allowed(CLIENT, WEB, 8080)[0]
    both = Evaluator([netpol("other-web", "app", {}, ["Ingress"], ingress=[{"from": [{
        "namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"app": "client"}}}]}])],
        namespace_labels={"other": {"team": "x"}})
    assert both.allowed(OUTSIDER, WEB, 8080)[0]
    assert not both.allowed(Pod("db", "other", {"app": "db"}), WEB, 8080)[0]


def test_a_connection_needs_the_sources_egress_and_the_destinations_ingress():
    ingress_open = netpol("in", "app", {"matchLabels": {"app": "web"}}, ["Ingress"], ingress=[{}])
    egress_closed = netpol("out", "app", {"matchLabels": {"app": "client"}}, ["Egress"])
    assert Evaluator([ingress_open]).allowed(CLIENT, WEB, 8080)[0]
    allowed, why = Evaluator([ingress_open, egress_closed]).allowed(CLIENT, WEB, 8080)
    assert not allowed and "egress" in why and "out" in why


def test_policy_types_default_to_ingress_and_to_egress_when_egress_rules_are_written():
    no_types = {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "app"},
                "spec": {"podSelector": {}, "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}}
    ev = Evaluator([no_types])
    assert not ev.allowed(CLIENT, Pod("x", "app", {"app": "x"}), 80)[0]  # egress now isolated: only to web
    assert not ev.allowed(CLIENT, WEB, 8080)[0]  # ingress isolated too (no ingress rules)


def test_an_ip_block_matches_no_pod_and_an_unknown_operator_is_named():
    ev = Evaluator([netpol("ips", "app", {}, ["Ingress"], ingress=[{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])])
    assert not ev.allowed(CLIENT, WEB, 8080)[0]
    bad = Evaluator([netpol("bad", "app", {"matchExpressions": [{"key": "app", "operator": "Gt"}]}, ["Ingress"])])
    with pytest.raises(PolicyError, match="Gt"):
        bad.allowed(CLIENT, WEB, 8080)


# --------------------------------------------------------------------------- the rendered layer


@pytest.fixture(scope="module")
def stacks(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name in SECURITY_PROFILES:
        profile = load_profile(name)
        out[name] = steps.rendered_stack(layers.enabled(profile), profile, Layout(ROOT, tmp_path_factory.mktemp(name)))
    return out


def test_the_shipped_profiles_enable_security_where_they_belong():
    assert {"local", "kind", "gke-l4", "multi-gpu", "prod"} <= set(SECURITY_PROFILES)


@pytest.mark.parametrize("name", SECURITY_PROFILES)
def test_every_checked_connection_is_as_adr_0029_says(stacks, name):
    profile = load_profile(name)
    objects = stacks[name]
    table = steps.reachability(steps.evaluator(objects, profile), inventory.pods(objects, profile))
    assert table["pass"].all(), table[~table["pass"]].to_dict("records")
    named = set(table["connection"])
    assert {"tenant pod -> vLLM", "gateway (LiteLLM) -> vLLM", "tenant pod -> gateway (LiteLLM)",
            "Prometheus -> vLLM metrics", "LiteLLM -> Postgres", "tenant pod -> Postgres"} <= named


def test_default_deny_covers_every_managed_namespace_both_ways(stacks):
    profile = load_profile("kind")
    ev = steps.evaluator(stacks["kind"], profile)
    for ns in managed_namespaces(profile):
        pod = Pod("any", ns, {"run": "any"})
        assert ev.selecting(pod, "Ingress") and ev.selecting(pod, "Egress"), ns


def without(objects: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [o for o in objects if not (o.get("kind") == "NetworkPolicy" and o["metadata"]["name"] in names)]


def test_the_checks_fail_when_a_rule_goes_or_a_hole_is_opened(stacks):
    profile = load_profile("kind")
    objects = stacks["kind"]
    pods = inventory.pods(objects, profile)

    def row(objs: list[dict[str, Any]], connection: str) -> dict[str, Any]:
        table = steps.reachability(steps.evaluator(objs, profile), pods).set_index("connection")
        return table.loc[connection].to_dict()

    assert not row(without(objects, "serving-from-gateway-path"), "gateway (LiteLLM) -> vLLM")["pass"]
    assert not row(without(objects, "tenant-to-gateway"), "tenant pod -> gateway (LiteLLM)")["pass"]
    assert not row(without(objects, "allow-prometheus-scrape"), "Prometheus -> vLLM metrics")["pass"]
    assert not row(without(objects, "litellm-egress"), "LiteLLM -> Postgres")["pass"]
    hole = netpol("let-everyone-in", "inferbook", {"matchLabels": {"app.kubernetes.io/name": "vllm"}}, ["Ingress"],
                  ingress=[{"from": [{"namespaceSelector": {}}]}])
    opened = without(objects, "tenant-default-deny", "tenant-allow-dns", "tenant-to-gateway") + [hole]
    assert row(opened, "tenant pod -> vLLM")["evaluated"] == "allowed"
    assert not row(opened, "tenant pod -> vLLM")["pass"]


def test_the_tenant_namespace_follows_tenants_team(tmp_path):
    profile = load_profile("kind", {"tenants.team": "team-a"})
    objects = layers.render("security", profile, Layout(ROOT, tmp_path))
    tenant_objects = [o for o in objects if o["metadata"].get("namespace") == "team-a"]
    assert {o["metadata"]["name"] for o in tenant_objects} == {"tenant-default-deny", "tenant-allow-dns",
                                                               "tenant-to-gateway"}
    assert not any(o["kind"] == "Namespace" for o in objects), "the tenant's Namespace is the platform layer's"
    platform = layers.render("platform", profile, Layout(ROOT, tmp_path))
    assert any(o["kind"] == "Namespace" and o["metadata"]["name"] == "team-a" for o in platform)
    gate = next(o for o in objects if o["kind"] == "ClusterPolicy")
    assert gate["spec"]["rules"][0]["match"]["any"][0]["resources"]["namespaces"] == ["inferbook", "team-a"]
    gateway = next(o for o in objects if o["metadata"]["name"] == "litellm-from-tenants")
    assert gateway["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "team-a"}


@pytest.mark.parametrize("name,action", [("kind", "Audit"), ("gke-l4", "Audit"), ("prod", "Enforce")])
def test_failure_action_follows_the_tier(stacks, name, action):
    assert failure_action(load_profile(name)) == action
    policies = steps.kyverno_policies(stacks[name], load_profile(name))
    assert {r["validate"]["failureAction"] for p in policies for r in p["spec"]["rules"]} == {action}


# --------------------------------------------------------------------------- the Kyverno subset


def test_the_variable_path_resolves_as_jmespath_does():
    pod = {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": 1, "cpu": 1}}}, {"name": "sidecar"},
                                   {"resources": {}}]}}
    assert admission.resolve("spec.containers[].resources.limits.keys(@)[]", pod) == ["nvidia.com/gpu", "cpu"]
    assert admission.resolve('spec.containers[].resources.limits."nvidia.com/gpu"', pod) == [1]
    assert admission.resolve("spec.containers[].resources.limits.keys(@)[]", {"spec": {"containers": [{}]}}) == []
    with pytest.raises(admission.UnsupportedPolicy, match="length"):
        admission.resolve("spec.containers[].length(@)", pod)


def test_patterns_take_wildcards_lists_and_the_equality_anchor():
    digest = {"spec": {"containers": [{"image": "*@sha256:*"}], "=(initContainers)": [{"image": "*@sha256:*"}]}}
    good = {"spec": {"containers": [{"image": "a@sha256:1"}]}}
    assert admission.matches(digest, good)
    assert not admission.matches(digest, {"spec": {"containers": [{"image": "a@sha256:1"}, {"image": "b:1"}]}})
    assert not admission.matches(digest, {"spec": {"containers": [{"image": "a@sha256:1"}],
                                                   "initContainers": [{"image": "init:1"}]}})
    assert admission.matches({"metadata": {"labels": {"q": "?*"}}}, {"metadata": {"labels": {"q": "x"}}})
    assert not admission.matches({"metadata": {"labels": {"q": "?*"}}}, {"metadata": {"labels": {"q": ""}}})
    assert not admission.matches({"metadata": {"labels": {"q": "?*"}}}, {"metadata": {}})
    with pytest.raises(admission.UnsupportedPolicy, match="anchor"):
        admission.matches({"spec": {"<(x)": "y"}}, {"spec": {"x": "y"}})


@pytest.mark.parametrize("name", ["kind", "prod"])
def test_the_verdict_table_denies_what_it_must_on_each_tier(stacks, name):
    profile = load_profile(name)
    table = steps.verdicts(steps.kyverno_policies(stacks[name], profile), profile).set_index("pod")
    assert table["pass"].all(), table[~table["pass"]].to_dict("index")
    unlabelled = table.loc["GPU pod without a queue label (tenant namespace)"]
    tag_only = table.loc["serving pod with a tag-only image"]
    assert "require-gpu-queue-label" in unlabelled["violates"] and "require-image-digest" in tag_only["violates"]
    expected = "denied" if name == "prod" else "admitted"
    assert unlabelled["admission"] == tag_only["admission"] == expected
    assert table.loc["GPU pod with a queue label (tenant namespace)", "admission"] == "admitted"
    assert table.loc["serving pod with a digest-pinned image", "admission"] == "admitted"


def test_the_verdicts_fail_when_a_policy_stops_checking(stacks):
    profile = load_profile("prod")
    policies = copy.deepcopy(steps.kyverno_policies(stacks["prod"], profile))
    for p in policies:
        for rule in p["spec"]["rules"]:
            rule["validate"]["pattern"] = {"metadata": {}}  # everything matches: nothing is ever refused
    table = steps.verdicts(policies, profile)
    assert list(table.loc[~table["pass"], "pod"]) == [c.what for c in steps.cases(profile) if c.denied_by]


def test_the_layers_own_workloads_pass_the_gate_unless_a_gpu_engine_lacks_a_queue(stacks):
    kind = load_profile("kind")
    table = steps.workload_verdicts(steps.kyverno_policies(stacks["kind"], kind), stacks["kind"], kind)
    assert (table["admission"] == "admitted").all() and len(table) >= 4
    prod = load_profile("prod")
    policies = steps.kyverno_policies(stacks["prod"], prod)
    table = steps.workload_verdicts(policies, stacks["prod"], prod)
    # prod's vLLM asks for a GPU and queues in Kueue (the platform's kueue component labels it): admitted
    assert table.set_index("workload").loc["Deployment/vllm", "admission"] == "admitted"
    unqueued = copy.deepcopy(stacks["prod"])
    vllm = next(o for o in unqueued if o["kind"] == "Deployment" and o["metadata"]["name"] == "vllm")
    vllm["spec"]["template"]["metadata"]["labels"].pop("kueue.x-k8s.io/queue-name")
    table = steps.workload_verdicts(policies, unqueued, prod)
    # without its queue label the gate's Enforce mode refuses it
    assert table.set_index("workload").loc["Deployment/vllm", "admission"] == "denied"


# --------------------------------------------------------------------------- the cluster part (API-server double)


def test_the_local_target_says_which_proofs_need_a_cluster(tmp_path):
    profile = load_profile("local")
    target = targets.of(profile, Layout(ROOT, tmp_path), say=lambda *_: None)
    assert not target.has_part(security.DECLARATION)
    proof = steps.live(target, security.DECLARATION, [])
    assert list(proof["proof"]) == list(cluster.PROOFS) and set(proof["result"]) == {"needs a cluster"}


@pytest.fixture
def api(tmp_path, monkeypatch):
    with FakeKubeApiServer() as server:
        for ns in ("inferbook", "demo"):
            server.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", context="kind-inferbook")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        yield server


def part(tmp_path, name: str = "kind") -> cluster.SecurityCluster:
    """The layer's cluster part for ``name`` (kind: dev tier, Audit; prod: Enforce), on the double's context."""
    profile = load_profile(name, {"target.context": "kind-inferbook"})
    target = targets.of(profile, Layout(ROOT, tmp_path), say=lambda *_: None)
    found = target.part(security.DECLARATION)
    assert isinstance(found, cluster.SecurityCluster)
    return found


def finish_probe(api: FakeKubeApiServer, outcome: str) -> threading.Thread:
    """The Job controller: once a fresh probe Job exists (no conditions yet), its one attempt completes or fails."""
    stop = threading.Event()

    def fresh() -> bool:
        job = api.get_object("jobs", "demo", cluster.PROBE_JOB, group="batch")
        return job is not None and not (job.get("status") or {}).get("conditions")

    def run() -> None:
        for _ in range(400):
            if fresh():
                (api.complete_job if outcome == "complete" else api.fail_job)("demo", cluster.PROBE_JOB)
                return
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_tenant_probe_passes_only_when_its_connection_is_refused(api, tmp_path):
    finish_probe(api, "fail")
    row = part(tmp_path).tenant_to_vllm()
    assert row["pass"] and "refused" in row["result"]
    job = api.get_object("jobs", "demo", cluster.PROBE_JOB, group="batch")
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == [
        "vllm.inferbook.svc.cluster.local", "8000"]
    finish_probe(api, "complete")
    row = part(tmp_path).tenant_to_vllm()
    assert not row["pass"] and "does not hold" in row["result"]


def test_an_unlabelled_gpu_pod_refused_at_admission_passes_on_enforce_only(api, tmp_path):
    causes = [{"field": "", "reason": "admission webhook", "message": "policy require-gpu-queue-label denied"}]
    api.reject("pods", cluster.GPU_POD, causes)
    enforce = part(tmp_path, "prod").admission()
    assert enforce["pass"] and "refused" in enforce["result"]
    audit = part(tmp_path).admission()  # dev tier: Audit, so a refusal is wrong
    assert not audit["pass"]


def test_an_admitted_gpu_pod_on_audit_passes_and_is_deleted(api, tmp_path):
    row = part(tmp_path).admission()
    assert row["pass"] and "Audit" in row["result"]
    assert api.get_object("pods", "demo", cluster.GPU_POD) is None
    enforce = part(tmp_path, "prod").admission()
    assert not enforce["pass"]
