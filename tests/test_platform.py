"""The platform layer: namespaces, Kueue's GPU quota, the GPU stack and the secret store (ADR-0001, 0002, 0011).

Rendered and validated on every shipped profile; the quota is the hardware's GPU slots; every GPU workload of
the book carries the queue label, and the policy rule that says so fails without it; the offline admission
table follows Kueue's arithmetic; the cluster part's proof runs against the API-server test double, with the
statuses Kueue, the Job controller and the External Secrets Operator would write set by the test (the double
has no controllers); and the chapter runs on ``local``.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import nbformat
import pytest

from inferbook import layers, manifests, targets
from inferbook.errors import ProfileError
from inferbook.layers import platform
from inferbook.layers.platform import admission
from inferbook.layers.platform.proof import OVER, WITHIN, proof_jobs
from inferbook.paths import Layout
from inferbook.profile import list_profiles, load_profile
from inferbook.validate import validate

from .conftest import ROOT
from .kube_double import ApiType, FakeKubeApiServer

PROFILES = list_profiles()
GPU_PROFILES = ["gke-l4", "multi-gpu", "prod"]
#: Objects the platform layer renders per shipped profile (the report's figures; a change here is deliberate).
OBJECTS = {"gke-l4": 10, "multi-gpu": 15, "prod": 10, "kind": 8, "local": 8, "local-coder": 8}
CLUSTER_SECRET_STORE = ApiType("external-secrets.io", "v1", "ClusterSecretStore", "clustersecretstores", False)


@pytest.fixture(scope="module")
def rendered(layout: Layout) -> dict[str, list[dict[str, Any]]]:
    return {name: layers.render("platform", load_profile(name, layout=layout), layout) for name in PROFILES}


def _kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def _workloads(name: str, layout: Layout, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    profile = load_profile(name, overrides=overrides, layout=layout)
    return [o for layer in layers.enabled(profile) if layer.name in ("serving", "routing", "autoscaling")
            for o in layer.render(profile, layout)]


def _asks_gpu(obj: dict[str, Any]) -> bool:
    return obj["kind"] in ("Deployment", "InferenceService") and "nvidia.com/gpu" in str(obj["spec"])


# --------------------------------------------------------------------------- rendering


def test_the_platform_feature_is_on_in_every_profile_and_the_layer_comes_first() -> None:
    assert all("platform" in load_profile(name).features for name in PROFILES)
    assert layers.LAYERS[0].name == "platform" and layers.LAYERS[1].name == "serving"


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_renders_the_layer_and_it_validates(name: str, rendered: dict, layout: Layout,
                                                          crd_store) -> None:
    objects = rendered[name]
    assert len(objects) == OBJECTS[name]
    report = validate(objects, layout, crds=crd_store)
    assert report.failures == []
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    profile = load_profile(name, layout=layout)
    assert {profile.get("target.namespace"), profile.get("tenants.team")} <= namespaces


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_the_kueue_objects_validate_against_the_pinned_crds(name: str, rendered: dict, layout: Layout,
                                                            crd_store) -> None:
    kueue = [o for o in rendered[name] if o["apiVersion"].startswith("kueue.x-k8s.io/")]
    assert _kinds(kueue) == ["ClusterQueue", "LocalQueue", "LocalQueue", "ResourceFlavor", "WorkloadPriorityClass",
                             "WorkloadPriorityClass"]
    schema = [f for f in validate(kueue, layout, crds=crd_store).findings if f.rule == "schema"]
    assert all(f.status == "ok" and "CRD" in f.message for f in schema), schema
    # the cluster-scoped kinds carry no namespace (kustomize would give them the overlay's)
    assert all("namespace" not in o["metadata"] for o in kueue if o["kind"] != "LocalQueue")


def test_a_typo_in_a_kueue_object_fails_its_crd_schema(rendered: dict, layout: Layout, crd_store) -> None:
    queue = copy.deepcopy(manifests.find(rendered["gke-l4"], "ClusterQueue", "gpu"))
    queue["spec"]["resourceGroup"] = queue["spec"].pop("resourceGroups")
    assert [f.rule for f in validate([queue], layout, crds=crd_store).failures] == ["schema"]


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_the_gpu_quota_is_the_gpu_slots(name: str, rendered: dict, layout: Layout) -> None:
    profile = load_profile(name, layout=layout)
    quota = admission.quota(rendered[name])
    assert quota is not None
    assert quota["nvidia.com/gpu"] == profile.get("gpu.count") * profile.get("gpu.time_slicing")
    if profile.get("gpu.time_slicing") == 1:
        assert quota["nvidia.com/gpu"] == profile.get("gpu.count")
    assert quota["cpu"] == admission.quantity(profile.get("platform.quota.cpu"))
    assert quota["memory"] == admission.quantity(profile.get("platform.quota.memory"))


@pytest.mark.parametrize("name", ["kind", "local"])
def test_a_cpu_profile_renders_no_kueue(name: str, rendered: dict) -> None:
    assert not any(o["apiVersion"].startswith("kueue.x-k8s.io/") for o in rendered[name])
    assert admission.quota(rendered[name]) is None


def test_the_flavor_selects_the_gpu_nodes_of_the_profiles_stack(rendered: dict) -> None:
    def labels(name: str) -> dict[str, str]:
        return manifests.find(rendered[name], "ResourceFlavor", "gpu-any")["spec"]["nodeLabels"]

    assert labels("gke-l4") == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert labels("multi-gpu") == {"nvidia.com/gpu.present": "true"}


def test_each_gpu_stack_renders_its_component(rendered: dict, layout: Layout) -> None:
    def stack(name: str) -> dict[str, str]:
        return manifests.find(rendered[name], "ConfigMap", "gpu-stack")["data"]

    assert [stack(n)["stack"] for n in ("gke-l4", "multi-gpu", "kind")] == ["gke-managed", "operator", "none"]
    assert stack("multi-gpu")["chart-version"] == "v26.3.3"  # ADR-0001's chart; its ClusterPolicy is not pinned
    operator_ns = [o for o in rendered["multi-gpu"] if o["kind"] == "Namespace" and o["metadata"]["name"]
                   == "gpu-operator"]
    assert len(operator_ns) == 1
    assert not any(o["metadata"]["name"] == "gpu-operator" for o in rendered["gke-l4"] if o["kind"] == "Namespace")
    assert not any(o["kind"] == "ClusterPolicy" for name in PROFILES for o in rendered[name])


def test_the_secret_store_follows_the_profile(rendered: dict) -> None:
    gcp = manifests.find(rendered["gke-l4"], "ClusterSecretStore", "secret-store")["spec"]["provider"]
    assert gcp["gcpsm"]["projectID"] == load_profile("gke-l4").get("platform.secret_store.project_id")
    assert "workloadIdentity" in gcp["gcpsm"]["auth"]  # no key anywhere (ADR-0011)
    kind = manifests.find(rendered["kind"], "ClusterSecretStore", "secret-store")["spec"]["provider"]
    assert list(kind) == ["kubernetes"] and kind["kubernetes"]["remoteNamespace"] == "inferbook-secrets"
    assert not any(o["kind"] == "Secret" for name in PROFILES for o in rendered[name])


def test_a_gcp_secret_store_without_a_project_is_refused() -> None:
    with pytest.raises(ProfileError, match="platform.secret_store.project_id"):
        load_profile("kind", overrides={"platform.secret_store.provider": "gcpsm"})


# --------------------------------------------------------------------------- the queue label


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_every_gpu_serving_workload_carries_the_queue_label(name: str, layout: Layout) -> None:
    gpu = [o for o in _workloads(name, layout) if _asks_gpu(o)]
    assert gpu
    for obj in gpu:
        assert obj["metadata"]["labels"][platform.QUEUE_LABEL] == platform.LOCAL_QUEUE, obj["metadata"]["name"]
        assert obj["spec"]["template"]["metadata"]["labels"][platform.QUEUE_LABEL] == platform.LOCAL_QUEUE
    if name == "multi-gpu":
        assert {o["metadata"]["name"] for o in gpu} == {"vllm", "vllm-canary"}


def test_the_kserve_predictor_carries_the_queue_label_too(layout: Layout) -> None:
    isvc = manifests.find(_workloads("gke-l4", layout, {"features.kserve": True, "features.autoscaling": False}),
                          "InferenceService", "vllm")
    assert isvc["metadata"]["labels"][platform.QUEUE_LABEL] == platform.LOCAL_QUEUE
    assert isvc["spec"]["predictor"]["labels"][platform.QUEUE_LABEL] == platform.LOCAL_QUEUE


def test_a_cpu_profile_labels_nothing(layout: Layout) -> None:
    assert platform.QUEUE_LABEL not in str(_workloads("local", layout))
    assert "kueue" not in layers.select("serving", load_profile("kind")).component_names


def test_the_queue_label_policy_fails_an_unlabelled_gpu_deployment(layout: Layout, crd_store) -> None:
    labelled = manifests.find(_workloads("gke-l4", layout), "Deployment", "vllm")

    def verdict(obj: dict[str, Any]) -> list[str]:
        return [f.status for f in validate([obj], layout, crds=crd_store).findings if f.rule == "gpu-queue-label"]

    assert verdict(labelled) == ["ok"]
    bare = copy.deepcopy(labelled)
    del bare["metadata"]["labels"][platform.QUEUE_LABEL]
    del bare["spec"]["template"]["metadata"]["labels"][platform.QUEUE_LABEL]
    assert verdict(bare) == ["fail"]
    failure = validate([bare], layout, crds=crd_store).failures[0]
    assert "kueue.x-k8s.io/queue-name" in failure.message and "Fix:" in failure.message
    pods_only = copy.deepcopy(labelled)
    del pods_only["spec"]["template"]["metadata"]["labels"][platform.QUEUE_LABEL]
    assert verdict(pods_only) == ["fail"]  # the Deployment is queued, its pods would not be
    cpu = manifests.find(_workloads("kind", layout), "Deployment", "vllm")
    assert verdict(cpu) == []  # the rule applies to GPU workloads only


# --------------------------------------------------------------------------- the admission table


def test_the_book_s_gpu_pods_fit_the_quota_they_were_sized_for(rendered: dict, layout: Layout) -> None:
    table = platform.admission_table(rendered["multi-gpu"], _workloads("multi-gpu", layout))
    assert list(table["pod"]) == ["replica 1", "replica 2", "surge 1 (rollout)", "replica 1"]
    assert set(table["verdict"]) == {"admitted"} and list(table["nvidia.com/gpu left"]) == ["3", "2", "1", "0"]
    assert list(table["workload"]) == ["Deployment/vllm"] * 3 + ["Deployment/vllm-canary"]  # interactive first
    scaled = platform.admission_table(rendered["gke-l4"], _workloads("gke-l4", layout))
    assert list(scaled["pod"]) == ["replica 1 (after a scale-up from 0)"] and list(scaled["verdict"]) == ["admitted"]


def test_pods_beyond_the_quota_wait_and_a_pod_larger_than_it_never_fits(rendered: dict, layout: Layout) -> None:
    objects = copy.deepcopy(rendered["multi-gpu"])
    queue = manifests.find(objects, "ClusterQueue", "gpu")
    queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"][2]["nominalQuota"] = 2  # time-slicing forgotten
    table = platform.admission_table(objects, _workloads("multi-gpu", layout) + proof_jobs(load_profile("multi-gpu")))
    verdicts = list(table["verdict"])
    assert verdicts[:2] == ["admitted", "admitted"]
    assert verdicts[2].startswith("waits: the quota of nvidia.com/gpu is in use")  # the rollout's surge pod
    assert table.set_index("workload").loc[f"Job/{OVER}", "verdict"].startswith("never admitted")


def test_an_unlabelled_gpu_pod_and_a_queue_that_does_not_exist_are_named(rendered: dict, layout: Layout) -> None:
    workloads = _workloads("gke-l4", layout)
    bare = copy.deepcopy(manifests.find(workloads, "Deployment", "vllm"))
    del bare["metadata"]["labels"][platform.QUEUE_LABEL]
    bare["metadata"]["name"] = "unlabelled"
    lost = copy.deepcopy(manifests.find(workloads, "Deployment", "vllm"))
    lost["metadata"]["namespace"] = "elsewhere"
    table = platform.admission_table(rendered["gke-l4"], [bare, lost]).set_index("workload")
    assert table.loc["Deployment/unlabelled", "verdict"].startswith("not queued")
    assert table.loc["Deployment/vllm", "verdict"] == "inadmissible: no LocalQueue gpu in namespace elsewhere"


def test_quantities_are_read_as_kubernetes_writes_them() -> None:
    assert [admission.quantity(q) for q in ("500m", "2", "8Gi", "1k")] == [0.5, 2.0, 8 * 2**30, 1000.0]
    pod = {"initContainers": [{"resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}],
           "containers": [{"resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"nvidia.com/gpu": 1}}},
                          {"resources": {"requests": {"cpu": "1"}}}]}
    assert admission.pod_requests(pod) == {"cpu": 3.0, "memory": 2 * 2**30, "nvidia.com/gpu": 1.0}


# --------------------------------------------------------------------------- the proof


def test_without_a_cluster_the_proof_says_what_it_needs_and_what_kueue_should_do(rendered: dict,
                                                                                  tmp_path: Path) -> None:
    profile = load_profile("gke-l4")
    target = targets.of(profile, Layout.from_run_dir(tmp_path / "run"), dry_run=True)
    proof = platform.prove(target, rendered["gke-l4"])
    assert list(proof["expected"]) == ["admitted", "never admitted: asks more nvidia.com/gpu than the whole quota",
                                       "Ready=True"]
    assert all(o.startswith("needs a cluster: dry run") for o in proof["observed"])
    rows = platform.verify(profile, rendered["gke-l4"], [], proof)
    assert all(r["pass"] for r in rows) and not any(r["check"].startswith("live:") for r in rows)


def test_the_proof_jobs_validate_and_queue_in_the_tenant_s_local_queue(layout: Layout, crd_store) -> None:
    jobs = proof_jobs(load_profile("prod"))
    assert validate(jobs, layout, crds=crd_store).failures == []
    assert [j["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
            for j in jobs] == ["1", "4"]  # prod: 3 GPUs
    assert {j["metadata"]["namespace"] for j in jobs} == {"demo"} and all(j["spec"]["suspend"] for j in jobs)


def _play_controllers(api: FakeKubeApiServer, namespace: str, stop: threading.Event, *, admit_over: bool = False,
                      store_ready: bool = True) -> None:
    """What Kueue, the Job controller and ESO would write (the double has no controllers): the Job within the
    quota admitted and complete, the one beyond it suspended (or, with ``admit_over``, wrongly admitted), the
    store Ready."""
    done: set[str] = set()
    while not stop.is_set():
        if WITHIN not in done and api.get_object("jobs", namespace, WITHIN, group="batch"):
            api.complete_job(namespace, WITHIN)
            done.add(WITHIN)
        if OVER not in done and api.get_object("jobs", namespace, OVER, group="batch"):
            status = "False" if admit_over else "True"
            api.set_status("jobs", namespace, OVER, group="batch", status={"conditions": [
                {"type": "Suspended", "status": status, "reason": "JobResumed" if admit_over else "JobSuspended",
                 "message": "Job resumed" if admit_over else "Job suspended"}]})
            done.add(OVER)
        if store_ready and "store" not in done and api.get_object("clustersecretstores", None, "secret-store",
                                                                  group="external-secrets.io"):
            api.set_status("clustersecretstores", "", "secret-store", group="external-secrets.io", status={
                "conditions": [{"type": "Ready", "status": "True", "reason": "Valid", "message": "store validated"}]})
            done.add("store")
        stop.wait(0.05)


def _cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeKubeApiServer, objects: list,
             name: str = "gke-l4") -> Any:
    """The layer's cluster part of profile ``name``'s kube target, on the double, after the chapter's apply."""
    profile = load_profile(name)
    monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kc", context=profile.get("target.context"))))
    api.install(CLUSTER_SECRET_STORE)
    api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    api.seed(manifests.find(objects, "ClusterSecretStore", "secret-store"))  # as the chapter's apply left it
    target = targets.of(profile, Layout.from_run_dir(tmp_path / "run"), say=lambda line: None)
    return target.part(platform.DECLARATION)


@pytest.mark.slow
def test_on_a_cluster_kueue_admits_within_the_quota_holds_beyond_it_and_the_store_is_ready(
        rendered: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeKubeApiServer() as api:
        part = _cluster(tmp_path, monkeypatch, api, rendered["gke-l4"])
        stop = threading.Event()
        controllers = threading.Thread(target=_play_controllers, args=(api, "demo", stop), daemon=True)
        controllers.start()
        try:
            proof = part.prove(rendered["gke-l4"])
        finally:
            stop.set()
            controllers.join()
        assert list(proof["pass"]) == [True, True, True]
        assert list(proof["observed"]) == ["complete, 1 pod(s) succeeded", "suspended (Suspended=True, spec.suspend "
                                           "true)", "Ready=True (Valid)"]
        applied = [r.body for r in api.writes() if r.method == "PATCH" and "/jobs/" in r.path]
        assert {j["metadata"]["name"] for j in applied} == {WITHIN, OVER} and all(j["spec"]["suspend"] for j in applied)
        assert api.get_object("jobs", "demo", WITHIN, group="batch") is None  # the proof leaves no Job behind
        assert api.get_object("jobs", "demo", OVER, group="batch") is None
        rows = platform.verify(load_profile("gke-l4"), rendered["gke-l4"], [], proof)
        assert sum(r["check"].startswith("live:") for r in rows) == 3 and all(r["pass"] for r in rows)


@pytest.mark.slow
def test_on_a_cluster_a_job_beyond_the_quota_that_runs_fails_the_proof(
        rendered: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferbook import kube

    with FakeKubeApiServer() as api:
        part = _cluster(tmp_path, monkeypatch, api, rendered["gke-l4"])
        part.clock = api.virtual_time()  # time runs: the wait for Suspended=True ends by timing out
        stop = threading.Event()
        controllers = threading.Thread(target=_play_controllers, args=(api, "demo", stop),
                                       kwargs={"admit_over": True}, daemon=True)
        controllers.start()
        try:
            with pytest.raises(kube.ConditionTimeout, match=f"{OVER}.*Suspended"):
                part.prove(rendered["gke-l4"])
        finally:
            stop.set()
            controllers.join()
        assert api.get_object("jobs", "demo", OVER, group="batch") is None  # cleaned up on failure too


@pytest.mark.slow
def test_on_a_cluster_a_store_that_never_gets_ready_fails_the_proof_naming_it(
        rendered: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferbook import kube

    with FakeKubeApiServer() as api:
        part = _cluster(tmp_path, monkeypatch, api, rendered["kind"], "kind")  # a CPU profile: only the store
        part.clock = api.virtual_time()  # time runs: nothing ever writes the store's status
        with pytest.raises(kube.ConditionTimeout, match="ClusterSecretStore secret-store"):
            part.prove(rendered["kind"])
        assert not [r for r in api.writes() if "/jobs/" in r.path]  # no Kueue on kind: no Job was submitted


# --------------------------------------------------------------------------- the chapter


@pytest.mark.slow
def test_the_chapter_runs_on_local_and_verifies(tmp_path: Path) -> None:
    """The chapter's code cells in order with the runner's parameters (as tests/test_benchmarks.py runs its
    chapter): it renders, validates, plans, evaluates the quota, says what the proof needs, and verifies."""
    import contextlib
    import io
    import json

    cells = [c for c in nbformat.read(ROOT / "notebooks" / "10-platform.ipynb", as_version=4).cells
             if c.cell_type == "code"]
    namespace: dict[str, object] = {}
    exec(cells[0].source, namespace)
    run_dir = tmp_path / "runs" / "local"
    namespace.update(profile_name="local", overrides={}, run_dir=str(run_dir))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for cell in cells[1:]:
            exec(cell.source, namespace)
    assert "local target: no API server here" in printed.getvalue()
    assert "No ClusterQueue" in printed.getvalue()
    checks = json.loads((run_dir / "artifacts" / "platform-checks.json").read_text())
    assert len(checks) == 5 and all(c["pass"] for c in checks)
    assert {p.name for p in (run_dir / "artifacts").iterdir()} >= {"platform.yaml", "platform-admission.json",
                                                                    "platform-proof.json"}


def test_a_deployment_keda_scales_is_counted_at_keda_s_floor(rendered: dict, layout: Layout) -> None:
    """The serving Deployment leaves spec.replicas to the HPA where KEDA scales it: its pods at rest are the
    ScaledObject's minReplicaCount, not the API server's default of one."""
    workloads = _workloads("multi-gpu", layout)
    assert "replicas" not in manifests.find(workloads, "Deployment", "vllm")["spec"]
    assert platform.admission.keda_floors(workloads) == {("inferbook", "Deployment", "vllm"): 2}
    without_keda = [o for o in workloads if o["kind"] != "ScaledObject"]
    pods = [p.pod for p in platform.admission.queued_pods(without_keda) if p.workload == "Deployment/vllm"]
    assert pods == ["replica 1", "surge 1 (rollout)"]
