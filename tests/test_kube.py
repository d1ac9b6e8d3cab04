"""The kube target's apply path, against FakeKubeApiServer: a test double of the API server.

No Kubernetes API server can run on the project's machines, so these tests check what the
client code sends (server-side apply, order, namespaces), what it concludes from the answers
(created / configured / unchanged / deleted / absent), and the errors it reports. They do not
check cluster behaviour: the double runs no controllers, admission or RBAC (see its docstring).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
import urllib3

from inferbook import kube
from inferbook.errors import InferbookError
from inferbook.kube import (
    ClusterUnreachable,
    Forbidden,
    InvalidObject,
    KubeConfigError,
    MalformedObject,
    MissingCrd,
    MissingNamespace,
    PortForwardError,
    RolloutFailed,
    RolloutTimeout,
    Unauthorized,
    apply,
    delete,
    port_forward,
    wait_rollout,
)

from .kube_double import APPLY_PATCH, FakeKubeApiServer

NS = "inferbook"
CONTEXT = "lab"


def namespace() -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NS, "labels": {"app.kubernetes.io/part-of": "inferbook"}}}


def deployment(replicas: int = 1, image: str = "vllm/vllm-openai:v0.11.0") -> dict:
    labels = {"app": "vllm"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "vllm", "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "vllm", "image": image,
                                                           "ports": [{"name": "http", "containerPort": 8000}]}]}}}}


def service() -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vllm"},
            "spec": {"selector": {"app": "vllm"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def service_monitor() -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "vllm"},
            "spec": {"selector": {"matchLabels": {"app": "vllm"}}, "endpoints": [{"port": "http", "path": "/metrics"}]}}


def layer() -> list[dict]:
    """A small layer, Namespace deliberately last: apply must reorder it."""
    return [deployment(), service(), service_monitor(), namespace()]


@pytest.fixture
def api():
    with FakeKubeApiServer() as server:
        yield server


@pytest.fixture
def kubeconfig(api, tmp_path) -> str:
    return str(api.write_kubeconfig(tmp_path / "kubeconfig", context=CONTEXT))


class Lines(list):
    """Collects what a call says, as a notebook would show it."""

    def __call__(self, line: str) -> None:
        self.append(line)


def run_apply(objects: list[dict], kubeconfig: str, **kwargs) -> list[kube.AppliedObject]:
    kwargs.setdefault("say", Lines())
    return apply(objects, CONTEXT, kubeconfig=kubeconfig, namespace=NS, **kwargs)


def once_watched(api: FakeKubeApiServer, change, *args, **kwargs) -> None:
    """Make ``change(*args, **kwargs)`` from a thread once the client has opened a watch: a change that
    happens while the wait watches (not before it looked), whatever the load of the machine."""
    def run() -> None:
        for _ in range(6000):  # a guard: a wait that never watches fails its test without this thread
            if any(r.query.get("watch") == "true" for r in list(api.requests)):
                change(*args, **kwargs)
                return
            time.sleep(0.01)

    threading.Thread(target=run, daemon=True).start()




# --------------------------------------------------------------------------- apply


def test_apply_uses_server_side_apply_namespace_first_and_the_target_namespace(api, kubeconfig):
    objects = layer()
    said = Lines()
    results = run_apply(objects, kubeconfig, say=said)

    assert [(r.kind, r.namespace, r.action) for r in results] == [
        ("Namespace", None, "created"), ("Deployment", NS, "created"), ("Service", NS, "created"),
        ("ServiceMonitor", NS, "created")]
    writes = api.writes()
    assert [w.path for w in writes] == [
        f"/api/v1/namespaces/{NS}",
        f"/apis/apps/v1/namespaces/{NS}/deployments/vllm",
        f"/api/v1/namespaces/{NS}/services/vllm",
        f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors/vllm"]
    for write in writes:
        assert write.method == "PATCH"
        assert write.content_type == APPLY_PATCH
        assert write.query == {"fieldManager": "inferbook", "force": "true"}
    assert [w.body["metadata"].get("namespace") for w in writes] == [None, NS, NS, NS]
    stored = api.get_object("deployments", NS, "vllm", group="apps")
    assert stored["metadata"]["namespace"] == NS and stored["metadata"]["generation"] == 1
    assert api.get_object("servicemonitors", NS, "vllm", group="monitoring.coreos.com") is not None
    assert "namespace" not in objects[0]["metadata"], "apply must not modify the caller's objects"
    assert said == ["Namespace inferbook: created", "Deployment inferbook/vllm: created",
                    "Service inferbook/vllm: created", "ServiceMonitor inferbook/vllm: created"]
    assert kube.table(results)["action"].tolist() == ["created"] * 4


def test_an_object_keeps_its_own_namespace(api, kubeconfig):
    other = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}}
    monitor = service_monitor()
    monitor["metadata"]["namespace"] = "monitoring"
    [_, _, result] = run_apply([namespace(), other, monitor], kubeconfig)
    assert result.namespace == "monitoring"
    assert api.get_object("servicemonitors", "monitoring", "vllm", group="monitoring.coreos.com") is not None
    assert api.get_object("servicemonitors", NS, "vllm", group="monitoring.coreos.com") is None


def test_applying_twice_is_idempotent(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    keys = api.object_keys()
    def versions() -> dict:
        return {key: api.get_object(key[1], key[2], key[3], group=key[0])["metadata"]["resourceVersion"]
                for key in keys}

    before = versions()

    again = run_apply(layer(), kubeconfig)

    assert [r.action for r in again] == ["unchanged"] * 4
    assert api.object_keys() == keys, "no duplicate or extra object"
    assert versions() == before
    assert [r.generation for r in again if r.kind == "Deployment"] == [1]


def test_a_changed_spec_is_configured_and_bumps_the_generation(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    objects = layer()
    objects[0] = deployment(replicas=2)
    results = {r.kind: r for r in run_apply(objects, kubeconfig)}
    assert results["Deployment"].action == "configured"
    assert results["Deployment"].generation == 2
    assert {results[k].action for k in ("Namespace", "Service", "ServiceMonitor")} == {"unchanged"}
    assert api.get_object("deployments", NS, "vllm", group="apps")["spec"]["replicas"] == 2


def test_force_takes_over_fields_another_manager_set(api, kubeconfig):
    run_apply([namespace()], kubeconfig)
    hand_edited = deployment(replicas=3)
    hand_edited["metadata"]["namespace"] = NS
    api.seed(hand_edited, manager="kubectl-edit")
    # Without force, the double answers a conflict, as the API server does: so force=true matters here.
    body = json.dumps(deployment()).encode()
    url = f"{api.url}/apis/apps/v1/namespaces/{NS}/deployments/vllm?fieldManager=inferbook"
    request = urllib.request.Request(url, data=body, method="PATCH",
                                     headers={"Content-Type": APPLY_PATCH, "Authorization": f"Bearer {api.token}"})
    with pytest.raises(urllib.error.HTTPError) as conflict:
        urllib.request.urlopen(request)
    assert conflict.value.code == 409

    [result] = run_apply([deployment(replicas=1)], kubeconfig)
    assert result.action == "configured"
    assert api.get_object("deployments", NS, "vllm", group="apps")["spec"]["replicas"] == 1


def test_a_crd_in_the_batch_is_applied_and_established_before_its_custom_resources(api, kubeconfig):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    results = run_apply([widget, crd, namespace()], kubeconfig)
    assert [(r.kind, r.action) for r in results] == [
        ("Namespace", "created"), ("CustomResourceDefinition", "created"), ("Widget", "created")]
    assert results[2].namespace == NS
    assert api.get_object("widgets", NS, "w", group="example.com")["spec"] == {"size": 1}
    crd_watch = [i for i, r in enumerate(api.requests) if r.query.get("watch") == "true"
                 and r.path == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"]
    widget_write = [i for i, r in enumerate(api.requests) if r.method == "PATCH" and r.path.endswith("/widgets/w")]
    assert crd_watch and widget_write and crd_watch[0] < widget_write[0], "the CRD is waited for before its objects"


# --------------------------------------------------------------------------- apply errors


def test_a_missing_crd_names_the_kind_group_and_operator_and_writes_nothing(api, kubeconfig):
    api.uninstall("monitoring.coreos.com", "servicemonitors")
    with pytest.raises(MissingCrd) as error:
        run_apply(layer(), kubeconfig)
    message = str(error.value)
    assert "ServiceMonitor (monitoring.coreos.com/v1)" in message
    assert "no CustomResourceDefinition provides the API group monitoring.coreos.com" in message
    assert "Prometheus Operator" in message
    assert f"kubectl --context {CONTEXT} api-resources --api-group=monitoring.coreos.com" in message
    assert error.value.kind == "ServiceMonitor"
    assert api.writes() == [], "a missing CRD is found before the first write"


def test_a_crd_served_at_another_version_says_so(api, kubeconfig):
    monitor = service_monitor()
    monitor["apiVersion"] = "monitoring.coreos.com/v2"
    with pytest.raises(MissingCrd, match="served only as v1, not v2"):
        run_apply([namespace(), monitor], kubeconfig)


def test_forbidden_names_the_verb_and_resource_to_grant(api, kubeconfig):
    api.forbid("patch", "deployments", group="apps")
    with pytest.raises(Forbidden) as error:
        run_apply(layer(), kubeconfig)
    message = str(error.value)
    assert "may not patch deployments.apps in namespace inferbook" in message
    assert "cannot patch resource \"deployments\" in API group \"apps\"" in message  # the server's own words
    assert f"kubectl --context {CONTEXT} -n {NS} auth can-i patch deployments.apps" in message
    assert (error.value.verb, error.value.resource, error.value.namespace) == ("patch", "deployments.apps", NS)
    assert isinstance(error.value, InferbookError)


def test_a_forbidden_watch_names_the_watch_verb(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    api.forbid("watch", "deployments", group="apps")
    with pytest.raises(Forbidden, match="may not watch deployments.apps in namespace inferbook"):
        wait_rollout(CONTEXT, NS, "vllm", timeout=5, kubeconfig=kubeconfig, say=Lines())


def test_a_terminating_namespace_is_not_mistaken_for_rbac(api, kubeconfig):
    run_apply([namespace()], kubeconfig)
    api.terminate_namespace(NS)
    with pytest.raises(kube.KubeApiError) as error:
        run_apply(layer(), kubeconfig)
    assert not isinstance(error.value, Forbidden)
    assert "namespace 'inferbook' is being deleted (Terminating)" in str(error.value)
    assert error.value.status == 403


def test_invalid_shows_the_servers_causes(api, kubeconfig):
    api.reject("deployments", "vllm", group="apps", causes=[
        {"reason": "FieldValueRequired", "message": "Required value",
         "field": "spec.template.spec.containers[0].image"}])
    with pytest.raises(InvalidObject) as error:
        run_apply(layer(), kubeconfig)
    message = str(error.value)
    assert message.startswith("Deployment inferbook/vllm was rejected as invalid")
    assert "- spec.template.spec.containers[0].image: Required value (FieldValueRequired)" in message
    assert error.value.causes[0]["field"] == "spec.template.spec.containers[0].image"


def test_an_invalid_name_is_reported_with_its_field(api, kubeconfig):
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Model_Config"}, "data": {"a": "b"}}
    with pytest.raises(InvalidObject, match=r"metadata\.name: Invalid value: \"Model_Config\""):
        run_apply([namespace(), bad], kubeconfig)


def test_a_missing_namespace_says_to_create_it(api, kubeconfig):
    with pytest.raises(MissingNamespace, match="namespace 'inferbook' does not exist"):
        run_apply([deployment()], kubeconfig)


def test_a_namespaced_object_needs_a_namespace(api, kubeconfig):
    with pytest.raises(MalformedObject, match="pass namespace="):
        apply([deployment()], CONTEXT, kubeconfig=kubeconfig, say=Lines())


def test_an_object_without_a_name_is_refused_before_any_request(api, kubeconfig):
    with pytest.raises(MalformedObject, match="metadata.name"):
        run_apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}], kubeconfig)
    assert api.requests == []


def test_an_unreachable_api_server(tmp_path, monkeypatch):
    with FakeKubeApiServer() as dead:
        path = str(dead.write_kubeconfig(tmp_path / "kc", context=CONTEXT))
    # the double has stopped: its port now refuses connections
    attempts: list[tuple] = []
    connect = urllib3.util.connection.create_connection

    def counted(address, timeout=None, *args, **kwargs):
        attempts.append((address, timeout))
        return connect(address, timeout, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    with pytest.raises(ClusterUnreachable) as error:
        run_apply(layer(), path)
    # it gives up on the refusals themselves, without waiting: at most 4 connection attempts (urllib3's own 3
    # retries, no retry loop of inferbook's), each bounded by the connect timeout (a black-holed server too)
    port = int(dead.url.rsplit(":", 1)[1])
    assert 1 <= len(attempts) <= 4, attempts
    assert set(attempts) == {(("127.0.0.1", port), kube.REQUEST_TIMEOUT[0])}, attempts
    message = str(error.value)
    assert f"cannot reach the API server of context '{CONTEXT}' at {dead.url}" in message
    assert f"kubectl --context {CONTEXT} cluster-info" in message


def test_rejected_credentials(api, tmp_path):
    path = str(api.write_kubeconfig(tmp_path / "kc", context=CONTEXT, token="expired"))
    with pytest.raises(Unauthorized, match="rejected its credentials"):
        run_apply(layer(), path)


def test_a_missing_kubeconfig_says_how_to_make_one(tmp_path):
    with pytest.raises(KubeConfigError, match=r"no usable kubeconfig .*\(kind create cluster"):
        apply(layer(), CONTEXT, kubeconfig=str(tmp_path / "absent"), namespace=NS, say=Lines())


def test_an_unknown_context_lists_the_known_ones(api, kubeconfig):
    with pytest.raises(KubeConfigError, match="context 'kind-inferbook' cannot be used .* the contexts there are: lab"):
        apply(layer(), "kind-inferbook", kubeconfig=kubeconfig, namespace=NS, say=Lines())


# --------------------------------------------------------------------------- wait_rollout


def test_wait_rollout_returns_when_the_deployment_becomes_available(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    api.stall(NS, "vllm")
    clock = api.virtual_time(held=True)  # no watch can time out: only a delivered change ends the wait
    started = clock()
    api.requests.clear()
    once_watched(api, api.roll_out, NS, "vllm")
    said = Lines()
    wait_rollout(CONTEXT, NS, "vllm", timeout=10, kubeconfig=kubeconfig, say=said, clock=clock)
    assert clock() == started, "a watch sees the change; no waiting until a poll interval"
    assert [(r.method, r.path, r.query.get("watch")) for r in api.requests] == [
        ("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/vllm", None),
        ("GET", f"/apis/apps/v1/namespaces/{NS}/deployments", "true")], "one look, then one watch: no polling"
    assert said[0] == "waiting up to 10 s for deploy/vllm in inferbook to roll out: 0 of 1 updated replicas available"
    assert re.fullmatch(r"deploy/vllm in inferbook rolled out in \d+\.\d s: 1 of 1 replicas available", said[-1])
    watches = [r for r in api.requests if r.query.get("watch") == "true"]
    assert watches and watches[0].path == f"/apis/apps/v1/namespaces/{NS}/deployments"
    assert watches[0].query["fieldSelector"] == "metadata.name=vllm"


def test_wait_rollout_waits_for_the_controller_to_observe_the_new_generation(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    api.roll_out(NS, "vllm")
    objects = layer()
    objects[0] = deployment(image="vllm/vllm-openai:v0.12.0")
    run_apply(objects, kubeconfig)  # generation 2; the status still describes generation 1
    with pytest.raises(RolloutTimeout, match="waiting for the Deployment controller to observe the new spec"):
        wait_rollout(CONTEXT, NS, "vllm", timeout=1, kubeconfig=kubeconfig, say=Lines())


def test_wait_rollout_is_immediate_for_zero_replicas(api, kubeconfig):
    objects = layer()
    objects[0] = deployment(replicas=0)
    run_apply(objects, kubeconfig)
    said = Lines()
    api.requests.clear()
    wait_rollout(CONTEXT, NS, "vllm", timeout=30, kubeconfig=kubeconfig, say=said)
    assert [str(r) for r in api.requests] == [f"GET /apis/apps/v1/namespaces/{NS}/deployments/vllm"], \
        "one look and done: nothing waited for"
    assert said == ["deploy/vllm in inferbook: scaled to zero: nothing to roll out"]
    assert not [r for r in api.requests if r.query.get("watch") == "true"]


def test_wait_rollout_times_out_naming_the_deployment_its_conditions_and_what_to_look_at(api, kubeconfig, monkeypatch):
    monkeypatch.setattr(kube.timing, "PROGRESS_EVERY", 1.0)
    run_apply(layer(), kubeconfig)
    api.stall(NS, "vllm")
    clock = api.virtual_time()  # time runs: each watch of the stalled Deployment ends after its timeoutSeconds
    said = Lines()
    started = clock()
    with pytest.raises(RolloutTimeout) as error:
        wait_rollout(CONTEXT, NS, "vllm", timeout=2, kubeconfig=kubeconfig, say=said, clock=clock)
    assert clock() - started == 2, "it gives up once its 2 s have passed, not before and not later"
    assert [r.query["timeoutSeconds"] for r in api.requests if r.query.get("watch") == "true"] == ["1", "1"]
    message = str(error.value)
    assert message.startswith(f"Deployment {NS}/vllm did not roll out within 2 s (context '{CONTEXT}'): "
                              "0 of 1 updated replicas available")
    assert "Available=False (MinimumReplicasUnavailable: Deployment does not have minimum availability.)" in message
    assert f"kubectl --context {CONTEXT} -n {NS} describe deploy/vllm" in message
    assert f"kubectl --context {CONTEXT} -n {NS} describe pods -l app=vllm" in message
    assert any(re.fullmatch(r"\s+\d+ s: 0 of 1 updated replicas available", line) for line in said), said


def test_wait_rollout_fails_at_once_past_the_progress_deadline(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    api.stall(NS, "vllm")
    clock = api.virtual_time(held=True)  # no watch can time out: only a delivered change ends the wait
    started = clock()
    once_watched(api, api.fail_progress, NS, "vllm")
    with pytest.raises(RolloutFailed, match="exceeded its progress deadline"):
        wait_rollout(CONTEXT, NS, "vllm", timeout=20, kubeconfig=kubeconfig, say=Lines(), clock=clock)
    assert clock() == started, "it fails on the change the watch delivers, without waiting for the timeout"
    assert len([r for r in api.requests if r.query.get("watch") == "true"]) == 1


def test_wait_rollout_of_an_absent_deployment(api, kubeconfig):
    run_apply([namespace()], kubeconfig)
    with pytest.raises(RolloutFailed, match="does not exist .* apply it first"):
        wait_rollout(CONTEXT, NS, "vllm", timeout=5, kubeconfig=kubeconfig, say=Lines())


def test_wait_rollout_waits_for_old_replicas_to_go(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    api.roll_out(NS, "vllm")
    dep = api.get_object("deployments", NS, "vllm", group="apps")
    api.set_status("deployments", NS, "vllm", group="apps", status={**dep["status"], "replicas": 2})  # surge pod left
    with pytest.raises(RolloutTimeout, match="1 old replica\\(s\\) pending termination"):
        wait_rollout(CONTEXT, NS, "vllm", timeout=1, kubeconfig=kubeconfig, say=Lines())


# --------------------------------------------------------------------------- delete


def test_delete_removes_in_reverse_order_and_tolerates_absent_objects(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    api.requests.clear()
    said = Lines()
    results = delete(layer(), CONTEXT, kubeconfig=kubeconfig, namespace=NS, say=said)
    assert [(r.kind, r.action) for r in results] == [
        ("ServiceMonitor", "deleted"), ("Service", "deleted"), ("Deployment", "deleted"), ("Namespace", "deleted")]
    assert api.object_keys() == []
    deletes = api.writes()
    assert [d.method for d in deletes] == ["DELETE"] * 4
    assert deletes[-1].path == f"/api/v1/namespaces/{NS}"
    assert all(d.query == {"propagationPolicy": "Background"} for d in deletes)

    again = delete(layer(), CONTEXT, kubeconfig=kubeconfig, namespace=NS, say=Lines())
    assert [r.action for r in again] == ["absent"] * 4


def test_delete_of_a_kind_whose_crd_is_gone_is_absent_and_crds_are_kept(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    api.uninstall("monitoring.coreos.com", "servicemonitors")
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "servicemonitors.monitoring.coreos.com"}}
    results = {r.kind: r.action for r in delete([*layer(), crd], CONTEXT, kubeconfig=kubeconfig, namespace=NS,
                                                 say=Lines())}
    assert results == {"ServiceMonitor": "absent", "Service": "deleted", "Deployment": "deleted",
                       "Namespace": "deleted", "CustomResourceDefinition": "kept"}
    assert not [r for r in api.requests if r.method == "DELETE" and "customresourcedefinitions" in r.path]


# --------------------------------------------------------------------------- port-forward (choice of pod only)


def test_port_forward_needs_a_ready_pod_behind_the_service(api, kubeconfig):
    run_apply(layer(), kubeconfig)
    with pytest.raises(PortForwardError, match="no ready pod behind service inferbook/vllm \\(selector app=vllm\\)"):
        with port_forward(CONTEXT, NS, "vllm", 80, kubeconfig=kubeconfig, say=Lines()):
            pass  # pragma: no cover - never reached


def test_port_forward_picks_a_ready_pod_and_resolves_a_named_port():
    svc = service()
    svc["metadata"]["namespace"] = NS

    def pod(name: str, ready: bool) -> dict:
        return {"metadata": {"name": name}, "spec": {"containers": [{"name": "vllm", "ports": [
                    {"name": "http", "containerPort": 8000}]}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}}

    assert kube._backend(svc, [pod("vllm-b", True), pod("vllm-a", False)], 80) == ("vllm-b", 8000)
    with pytest.raises(PortForwardError, match="has no port 8080 \\(it has: 80\\)"):
        kube._backend(svc, [pod("vllm-b", True)], 8080)



# --------------------------------------------------------------------------- wait_condition, wait_job, run_job, secrets


def inference_service() -> dict:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "vllm"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"}}}}}


def job(name: str = "migrate", image: str = "litellm:v1") -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "migrate", "image": image}]}}}}


def ready(status: str, generation: int | None = None, reason: str = "Reconciled") -> dict:
    condition = {"type": "Ready", "status": status, "reason": reason, "message": f"the service is {status}"}
    return {"conditions": [{**condition, **({"observedGeneration": generation} if generation else {})}]}


def test_wait_condition_returns_the_object_once_its_condition_is_true(api, kubeconfig):
    run_apply([namespace(), inference_service()], kubeconfig)
    api.set_status("inferenceservices", NS, "vllm", ready("False", reason="PredictorNotReady"),
                   group="serving.kserve.io")
    clock = api.virtual_time(held=True)  # no watch can time out: only a delivered change ends the wait
    started = clock()
    api.requests.clear()
    once_watched(api, api.set_status, "inferenceservices", NS, "vllm", ready("True"), group="serving.kserve.io")
    said = Lines()
    obj = kube.wait_condition(CONTEXT, NS, "serving.kserve.io/v1beta1", "InferenceService", "vllm", timeout=10,
                              kubeconfig=kubeconfig, say=said, clock=clock)
    assert clock() == started, "a watch sees the change; no waiting until a poll interval"
    path = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
    assert [(r.path, r.query.get("watch")) for r in api.requests if r.path.startswith(path)] == [
        (f"{path}/vllm", None), (path, "true")], "one look, then one watch: no polling"
    assert obj["status"]["conditions"][0]["status"] == "True"
    assert said[0] == ("waiting up to 10 s for InferenceService inferbook/vllm to become Ready: "
                       "Ready=False (PredictorNotReady: the service is False)")
    assert re.fullmatch(r"InferenceService inferbook/vllm became Ready in \d+\.\d s: Ready=True", said[-1])
    watches = [r for r in api.requests if r.query.get("watch") == "true"]
    assert watches[0].path == f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"


def test_wait_condition_does_not_trust_a_condition_of_an_older_generation(api, kubeconfig):
    run_apply([namespace(), inference_service()], kubeconfig)
    changed = inference_service()
    changed["spec"]["predictor"]["minReplicas"] = 2
    run_apply([changed], kubeconfig)  # generation 2
    api.set_status("inferenceservices", NS, "vllm", ready("True", generation=1), group="serving.kserve.io")
    with pytest.raises(kube.ConditionTimeout, match="describes generation 1: waiting for the controller to observe"):
        kube.wait_condition(CONTEXT, NS, "serving.kserve.io/v1beta1", "InferenceService", "vllm", timeout=1,
                            kubeconfig=kubeconfig, say=Lines())


def test_wait_condition_waits_for_what_pending_reports_and_times_out_with_hints(api, kubeconfig, monkeypatch):
    monkeypatch.setattr(kube.timing, "PROGRESS_EVERY", 1.0)
    run_apply([namespace(), inference_service()], kubeconfig)
    api.set_status("inferenceservices", NS, "vllm", ready("True"), group="serving.kserve.io")
    said = Lines()
    with pytest.raises(kube.ConditionTimeout) as error:
        kube.wait_condition(CONTEXT, NS, "serving.kserve.io/v1beta1", "InferenceService", "vllm", timeout=2,
                            pending=lambda obj: "no URL yet", progress=lambda obj: "predictor 0/1",
                            hints=["kubectl get pods -l app=x"], kubeconfig=kubeconfig, say=said)
    message = str(error.value)
    assert message.startswith(f"InferenceService {NS}/vllm did not become Ready within 2 s (context '{CONTEXT}'): "
                              "Ready=True but no URL yet; predictor 0/1")
    assert f"kubectl --context {CONTEXT} -n {NS} describe inferenceservices.serving.kserve.io/vllm" in message
    assert "kubectl get pods -l app=x" in message
    assert any(re.fullmatch(r"\s+\d+ s: Ready=True but no URL yet; predictor 0/1", line) for line in said), said


def test_wait_condition_without_any_status_asks_whether_the_operator_runs(api, kubeconfig):
    run_apply([namespace(), inference_service()], kubeconfig)
    with pytest.raises(kube.ConditionTimeout, match=r"none reported \(is KServe \(its CRDs and controller\) running"):
        kube.wait_condition(CONTEXT, NS, "serving.kserve.io/v1beta1", "InferenceService", "vllm", timeout=1,
                            kubeconfig=kubeconfig, say=Lines())


def test_wait_condition_of_a_kind_that_is_not_served_is_a_missing_crd(api, kubeconfig):
    with pytest.raises(MissingCrd, match="CloudNativePG"):
        kube.wait_condition(CONTEXT, NS, "postgresql.cnpg.io/v1", "Cluster", "db", timeout=1, kubeconfig=kubeconfig,
                            say=Lines())


def test_wait_job_returns_when_the_job_completes(api, kubeconfig):
    run_apply([namespace(), job()], kubeconfig)
    once_watched(api, api.complete_job, NS, "migrate")
    said = Lines()
    done = kube.wait_job(CONTEXT, NS, "migrate", timeout=10, kubeconfig=kubeconfig, say=said)
    assert done["status"]["succeeded"] == 1
    assert said[0] == ("waiting up to 10 s for Job inferbook/migrate to complete: no status yet: waiting for the Job "
                       "controller to create its pod")
    assert re.fullmatch(r"Job inferbook/migrate completed in \d+\.\d s: complete, .*1 succeeded.*", said[-1])


def test_wait_job_fails_at_once_with_where_the_logs_are(api, kubeconfig):
    run_apply([namespace(), job()], kubeconfig)
    clock = api.virtual_time(held=True)  # no watch can time out: only a delivered change ends the wait
    started = clock()
    once_watched(api, api.fail_job, NS, "migrate")
    with pytest.raises(kube.JobFailed) as error:
        kube.wait_job(CONTEXT, NS, "migrate", timeout=20, kubeconfig=kubeconfig, say=Lines(), clock=clock)
    assert clock() == started, "it fails on the change the watch delivers, without waiting for the timeout"
    assert len([r for r in api.requests if r.query.get("watch") == "true"]) == 1
    message = str(error.value)
    assert message.startswith("Job inferbook/migrate cannot complete: it failed (BackoffLimitExceeded: ")
    assert f"kubectl --context {CONTEXT} -n {NS} logs job/migrate" in message
    assert f"kubectl --context {CONTEXT} -n {NS} get pods -l job-name=migrate" in message


def test_wait_job_of_an_absent_job(api, kubeconfig):
    run_apply([namespace()], kubeconfig)
    with pytest.raises(kube.ConditionFailed, match="Job inferbook/migrate does not exist .* apply it first"):
        kube.wait_job(CONTEXT, NS, "migrate", timeout=5, kubeconfig=kubeconfig, say=Lines())


def test_run_job_deletes_a_finished_job_before_creating_it_anew(api, kubeconfig):
    run_apply([namespace(), job()], kubeconfig)
    api.complete_job(NS, "migrate")
    first_uid = api.get_object("jobs", NS, "migrate", group="batch")["metadata"]["uid"]
    api.requests.clear()
    said = Lines()
    result = kube.run_job(job(image="litellm:v2"), CONTEXT, namespace=NS, kubeconfig=kubeconfig, say=said)
    assert result.action == "created"
    writes = api.writes()
    assert [w.method for w in writes] == ["DELETE", "PATCH"]
    assert writes[0].query == {"propagationPolicy": "Background"}
    again = api.get_object("jobs", NS, "migrate", group="batch")
    assert again["metadata"]["uid"] != first_uid and "status" not in again
    assert said[0] == "Job inferbook/migrate: the previous run is complete; deleting it so that the Job runs again"


def test_run_job_applies_onto_a_job_that_still_runs(api, kubeconfig):
    run_apply([namespace(), job()], kubeconfig)
    api.set_status("jobs", NS, "migrate", {"active": 1}, group="batch")
    api.requests.clear()
    result = kube.run_job(job(), CONTEXT, namespace=NS, kubeconfig=kubeconfig, say=Lines())
    assert result.action == "unchanged"
    assert [w.method for w in api.writes()] == ["PATCH"]


def test_secret_value_decodes_one_key_and_names_what_is_missing_without_values(api, kubeconfig):
    import base64

    run_apply([namespace()], kubeconfig)
    api.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": NS},
              "data": {"token": base64.b64encode(b"sk-value").decode()}})
    assert kube.secret_value(CONTEXT, NS, "s", "token", kubeconfig=kubeconfig) == "sk-value"
    with pytest.raises(kube.SecretUnavailable, match=r"has no key 'other' \(its keys: token\)") as error:
        kube.secret_value(CONTEXT, NS, "s", "other", kubeconfig=kubeconfig)
    assert "sk-value" not in str(error.value)
    with pytest.raises(kube.SecretUnavailable, match="Secret inferbook/absent does not exist .*: made by X"):
        kube.secret_value(CONTEXT, NS, "absent", "token", kubeconfig=kubeconfig, made_by="made by X")
