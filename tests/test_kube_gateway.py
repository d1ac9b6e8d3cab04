"""The llm-gateway chapter's cluster path, against the API-server test double.

The double stands in for the cluster; it runs no controllers, so threads play them: CloudNativePG
makes the Cluster ready, the Job controller finishes the migration, the Deployment controller rolls
the proxy out. The port-forward, which the double cannot speak, is replaced by the session's real
local LiteLLM proxy in the one test that needs it (marked slow), whose master key the chapter reads
from a Secret seeded in the double. What is proven: the order of the stages, the waits and their
errors, and how the key is read; not CloudNativePG, the Job controller or LiteLLM on a cluster.
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
from typing import Any, Callable

import pytest

from inferbook import kube, layers, load_profile, manifests, targets
from inferbook.errors import InferbookError
from inferbook.layers import llm_gateway as gateway
from inferbook.layers.llm_gateway.cluster import ClusterGateway
from inferbook.paths import Layout

from .conftest import ROOT
from .kube_double import CNPG_CLUSTER, EXTERNAL_SECRET, FakeKubeApiServer

PROFILE = load_profile("gke-l4")
CONTEXT, NS = PROFILE.get("target.context"), PROFILE.get("target.namespace")
HEALTHY = {"phase": "Cluster in healthy state", "instances": 1, "readyInstances": 1, "conditions": [
    {"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready"}]}
SETTING_UP = {"phase": "Setting up primary", "phaseReason": "Creating primary instance litellm-db-1",
              "instances": 1, "readyInstances": 0, "conditions": [
                  {"type": "Ready", "status": "False", "reason": "ClusterIsNotReady",
                   "message": "Cluster Is Not Ready"}]}


def provision_kube(profile, objects: list[dict[str, Any]], say: Callable[[str], None] = print,
                   **kwargs: Any) -> gateway.GatewayEndpoint:
    """The llm-gateway layer's cluster part, as a kube target gives it to the chapter's provision step."""
    part = targets.of(profile, Layout(ROOT, ROOT), say=say).part(layers.get("llm-gateway"))
    assert isinstance(part, ClusterGateway)
    return part.provision(objects, **kwargs)


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> list[dict[str, Any]]:
    return layers.render("llm-gateway", PROFILE, Layout(ROOT, tmp_path_factory.mktemp("render")))


@pytest.fixture
def api(tmp_path, monkeypatch):
    """The double with both operators' CRDs installed, the namespace, and KUBECONFIG pointing at it."""
    with FakeKubeApiServer() as server:
        server.install(CNPG_CLUSTER, EXTERNAL_SECRET)
        server.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig", context=CONTEXT)))
        yield server


def seed_master_key(api: FakeKubeApiServer, value: str) -> None:
    """The Secret the ExternalSecret litellm-master-key would sync (by another field manager: the operator)."""
    api.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "litellm-master-key", "namespace": NS},
              "data": {"master-key": base64.b64encode(value.encode()).decode()}}, manager="external-secrets")


class Controllers:
    """Threads playing the controllers the double lacks. ``marks[name]`` is how many requests the double had
    received just before the controller acted, so a request's index says whether it came before or after."""

    def __init__(self, api: FakeKubeApiServer) -> None:
        self.api = api
        self.stop = threading.Event()
        self.marks: dict[str, int] = {}
        self.threads: list[threading.Thread] = []

    def when_created(self, mark: str, plural: str, name: str, act: Callable[[], None], *, group: str,
                     delay: float = 0.3) -> None:
        """Once ``name`` exists, wait ``delay`` (the controller's work) and ``act`` once."""
        def run() -> None:
            while not self.stop.is_set():
                if self.api.get_object(plural, NS, name, group=group):
                    if not self.stop.wait(delay):
                        self.marks[mark] = len(self.api.requests)
                        act()
                    return
                self.stop.wait(0.05)

        self.threads.append(threading.Thread(target=run, daemon=True))

    def cnpg(self, status: dict[str, Any] = HEALTHY, then: Callable[[], None] = lambda: None) -> None:
        """CloudNativePG: the primary being set up, then ``status`` (by default ready); then ``then()``."""
        def act() -> None:
            self.api.set_status("clusters", NS, "litellm-db", SETTING_UP, group="postgresql.cnpg.io")
            time.sleep(0.3)
            self.api.set_status("clusters", NS, "litellm-db", status, group="postgresql.cnpg.io")
            then()

        self.when_created("cluster ready", "clusters", "litellm-db", act, group="postgresql.cnpg.io")

    def job(self, outcome: str = "complete") -> None:
        finish = self.api.complete_job if outcome == "complete" else self.api.fail_job
        self.when_created(f"job {outcome}", "jobs", "litellm-migrate", lambda: finish(NS, "litellm-migrate"),
                          group="batch")

    def deployments(self, *names: str) -> None:
        for name in names:
            self.when_created(f"{name} rolled out", "deployments", name, lambda n=name: self.api.roll_out(NS, n),
                              group="apps")

    def __enter__(self) -> "Controllers":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


NEVER = 10**9


def first(api: FakeKubeApiServer, method: str, path: str, **query: str) -> int:
    """Index of the first request to ``path`` (with ``query``), or :data:`NEVER` when there is none."""
    return next((i for i, r in enumerate(api.requests) if r.method == method and r.path == path
                 and all(r.query.get(k) == v for k, v in query.items())), NEVER)


JOB_PATH = f"/apis/batch/v1/namespaces/{NS}/jobs"
DEPLOY_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments"


@pytest.mark.slow
def test_stages_run_in_order_and_the_proxy_is_reached_with_the_master_key_of_its_secret(
        api, objects, monkeypatch, tmp_path, local_gateway):
    seed_master_key(api, local_gateway.master_key())

    @contextlib.contextmanager
    def forward_to_local_gateway(context, namespace, service, port, **kwargs):
        assert (context, namespace, service, port) == (CONTEXT, NS, "litellm", 4000)
        yield local_gateway.base

    monkeypatch.setattr(kube, "port_forward", forward_to_local_gateway)
    said: list[str] = []
    controllers = Controllers(api)
    controllers.cnpg()
    controllers.job("complete")
    controllers.deployments("litellm")
    with controllers:
        endpoint = gateway.provision(PROFILE, Layout(ROOT, tmp_path), objects, say=said.append, timeout=30)

    marks = controllers.marks
    # the Job is applied, and awaited, only once the Cluster is ready; the proxy only once the Job completed
    assert marks["cluster ready"] < first(api, "PATCH", f"{JOB_PATH}/litellm-migrate") < NEVER
    assert marks["cluster ready"] < first(api, "GET", JOB_PATH, watch="true") < NEVER
    assert marks["job complete"] < first(api, "PATCH", f"{DEPLOY_PATH}/litellm") < NEVER
    assert marks["job complete"] < first(api, "GET", DEPLOY_PATH, watch="true") < NEVER
    # everything else went in the first apply, before the database was waited for
    cluster_watch = first(api, "GET", f"/apis/postgresql.cnpg.io/v1/namespaces/{NS}/clusters", watch="true")
    for path in (f"/api/v1/namespaces/{NS}/configmaps/litellm-config", f"/api/v1/namespaces/{NS}/services/litellm",
                 f"/apis/external-secrets.io/v1/namespaces/{NS}/externalsecrets/litellm-master-key",
                 f"/apis/postgresql.cnpg.io/v1/namespaces/{NS}/clusters/litellm-db"):
        assert first(api, "PATCH", path) < cluster_watch, path
    assert all(r.query.get("fieldManager") == "inferbook" for r in api.writes() if r.method == "PATCH")
    became_ready = (r"Cluster inferbook/litellm-db became Ready in \d+\.\d s: Ready=True; "
                    r"1 of 1 instance\(s\) ready, phase 'Cluster in healthy state'")
    assert any(re.fullmatch(became_ready, line) for line in said), said
    assert any(line.startswith("Job inferbook/litellm-migrate completed in") for line in said), said

    assert endpoint.url == f"{local_gateway.base}/v1" and endpoint.where == f"cluster ({CONTEXT})"
    assert endpoint.status["migration"] == "Job inferbook/litellm-migrate complete"
    assert endpoint.status["database"].endswith("1 of 1 instance(s) ready, phase 'Cluster in healthy state'")
    assert isinstance(endpoint.admin().keys(), list)  # the admin API accepted the key read from the Secret
    key = local_gateway.master_key()
    assert all(key not in line for line in said) and key not in repr(endpoint) and key not in str(endpoint.status)
    seed_master_key(api, "sk-rotated")  # read when asked, never kept: a rotated Secret is seen at once
    assert endpoint.master_key() == "sk-rotated"
    endpoint.close()


def test_a_failed_migration_stops_before_the_proxy_and_says_where_its_logs_are(api, objects):
    controllers = Controllers(api)
    controllers.cnpg()
    controllers.job("failed")
    with controllers, pytest.raises(kube.JobFailed) as error:
        provision_kube(PROFILE, objects, say=lambda _: None, timeout=30)
    message = str(error.value)
    assert message.startswith("Job inferbook/litellm-migrate cannot complete: it failed (BackoffLimitExceeded: ")
    assert f"kubectl --context {CONTEXT} -n {NS} logs job/litellm-migrate" in message
    assert first(api, "PATCH", f"{DEPLOY_PATH}/litellm") == NEVER, "the proxy must not start on an unmigrated schema"


@pytest.mark.parametrize("missing, operator", [(CNPG_CLUSTER, "CloudNativePG"),
                                               (EXTERNAL_SECRET, "the External Secrets Operator")])
def test_a_missing_operator_is_named_before_anything_is_written(api, objects, missing, operator):
    api.uninstall(missing.group, missing.plural)
    with pytest.raises(kube.MissingCrd) as error:
        provision_kube(PROFILE, objects, say=lambda _: None, timeout=30)
    message = str(error.value)
    assert error.value.kind == missing.kind and error.value.api_version == missing.group_version
    assert f"does not serve {missing.kind} ({missing.group_version})" in message
    assert f"Install {operator}" in message
    assert "The llm-gateway layer needs, installed before it is applied: the External Secrets Operator " \
           "(ExternalSecret); " in message and "; CloudNativePG (Cluster)" in message
    assert "ClusterSecretStore named 'secret-store'" in message
    assert api.writes() == []


def test_a_cluster_that_never_becomes_ready_times_out_naming_it_and_what_to_look_at(api, objects, monkeypatch):
    monkeypatch.setattr(kube.timing, "PROGRESS_EVERY", 1.0)
    clock = api.virtual_time(held=True)  # time stands still until CloudNativePG has written its status
    controllers = Controllers(api)
    controllers.cnpg(SETTING_UP, then=api.release_time)  # the primary is never set up; from then on, time runs
    started = clock()
    with controllers, pytest.raises(kube.ConditionTimeout) as error:
        provision_kube(PROFILE, objects, say=lambda _: None, timeout=3, clock=clock)
    assert clock() - started == 3, "the step's timeout bounds the wait: it gives up once its 3 s have passed"
    message = str(error.value)
    assert re.match(rf"Cluster {NS}/litellm-db did not become Ready within \d s \(context '{CONTEXT}'\): "
                    r"Ready=False \(ClusterIsNotReady: Cluster Is Not Ready\); 0 of 1 instance\(s\) ready, "
                    r"phase 'Setting up primary'", message), message
    assert f"kubectl --context {CONTEXT} -n {NS} describe clusters.postgresql.cnpg.io/litellm-db" in message
    assert f"kubectl --context {CONTEXT} -n {NS} get pods -l cnpg.io/cluster=litellm-db" in message
    assert first(api, "PATCH", f"{JOB_PATH}/litellm-migrate") == NEVER, "no migration without a database"


def test_a_cluster_without_any_status_asks_whether_cloudnativepg_runs(api, objects, monkeypatch):
    monkeypatch.setattr(kube.timing, "PROGRESS_EVERY", 1.0)
    with pytest.raises(kube.ConditionTimeout, match=r"none reported \(is CloudNativePG running\?"):
        provision_kube(PROFILE, objects, say=lambda _: None, timeout=2)


def test_a_rerun_deletes_the_finished_migration_and_runs_it_again(api, objects, monkeypatch):
    """The hook policy of migrate-job.yaml (BeforeHookCreation): the migration runs on every apply."""
    api.seed(manifests.find(objects, "Job", "litellm-migrate"), manager="inferbook")  # applied by an earlier run
    api.complete_job(NS, "litellm-migrate")
    old_uid = api.get_object("jobs", NS, "litellm-migrate", group="batch")["metadata"]["uid"]
    seed_master_key(api, "sk-test")

    @contextlib.contextmanager
    def forward(context, namespace, service, port, **kwargs):
        yield "http://127.0.0.1:9"

    checked: list[str] = []
    monkeypatch.setattr(kube, "port_forward", forward)
    monkeypatch.setattr("inferbook.layers.llm_gateway.cluster.proxy_healthy",
                        lambda base, key: checked.append(key) or True)
    said: list[str] = []
    controllers = Controllers(api)
    controllers.cnpg()
    controllers.deployments("litellm")

    def complete_new_job() -> None:
        while not controllers.stop.is_set():
            job = api.get_object("jobs", NS, "litellm-migrate", group="batch")
            if job and job["metadata"]["uid"] != old_uid:
                time.sleep(0.2)
                api.complete_job(NS, "litellm-migrate")
                return
            controllers.stop.wait(0.05)

    controllers.threads.append(threading.Thread(target=complete_new_job, daemon=True))
    with controllers:
        endpoint = provision_kube(PROFILE, objects, say=said.append, timeout=30)
    delete = first(api, "DELETE", f"{JOB_PATH}/litellm-migrate")
    assert delete < first(api, "PATCH", f"{JOB_PATH}/litellm-migrate") < NEVER
    assert api.get_object("jobs", NS, "litellm-migrate", group="batch")["metadata"]["uid"] != old_uid
    assert "Job inferbook/litellm-migrate: the previous run is complete; deleting it so that the Job runs again" in said
    assert checked == ["sk-test"]  # the health check got the Secret's key
    assert endpoint.url == "http://127.0.0.1:9/v1"


def test_an_unhealthy_proxy_after_the_rollout_is_an_error_with_where_to_look(api, objects, monkeypatch):
    seed_master_key(api, "sk-test")
    closed: list[bool] = []

    @contextlib.contextmanager
    def forward(context, namespace, service, port, **kwargs):
        try:
            yield "http://127.0.0.1:9"  # nothing listens on the discard port: the proxy does not answer
        finally:
            closed.append(True)

    monkeypatch.setattr(kube, "port_forward", forward)
    controllers = Controllers(api)
    controllers.cnpg()
    controllers.job("complete")
    controllers.deployments("litellm")
    with controllers, pytest.raises(InferbookError) as error:
        provision_kube(PROFILE, objects, say=lambda _: None, timeout=30)
    assert f"kubectl --context {CONTEXT} -n {NS} logs deploy/litellm" in str(error.value)
    assert "rollout restart deploy/litellm" in str(error.value)
    assert closed == [True], "the port-forward is closed when the endpoint is not returned"


def test_a_missing_master_key_secret_names_the_external_secret_that_makes_it(api, objects, monkeypatch):
    @contextlib.contextmanager
    def forward(context, namespace, service, port, **kwargs):
        yield "http://127.0.0.1:9"

    monkeypatch.setattr(kube, "port_forward", forward)
    controllers = Controllers(api)
    controllers.cnpg()
    controllers.job("complete")
    controllers.deployments("litellm")
    with controllers, pytest.raises(kube.SecretUnavailable) as error:
        provision_kube(PROFILE, objects, say=lambda _: None, timeout=30)
    assert str(error.value).startswith(f"Secret {NS}/litellm-master-key does not exist in the cluster of context "
                                       f"'{CONTEXT}': the ExternalSecret {NS}/litellm-master-key creates it")
    assert "describe externalsecret litellm-master-key" in str(error.value)


def test_the_local_gateway_still_refuses_a_cluster_profile_and_points_to_the_book(tmp_path):
    with pytest.raises(InferbookError, match="inferbook run --profile gke-l4"):
        gateway.LocalGateway(PROFILE, Layout(ROOT, tmp_path)).start()


def test_prod_waits_for_every_database_instance_and_rolls_redis_out_before_the_proxy(tmp_path, api, monkeypatch):
    prod = load_profile("prod")
    assert prod.get("target.namespace") == NS
    objects = layers.render("llm-gateway", prod, Layout(ROOT, tmp_path))
    context = prod.get("target.context")
    monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kc-prod", context=context)))
    seed_master_key(api, "sk-test")

    @contextlib.contextmanager
    def forward(context, namespace, service, port, **kwargs):
        yield "http://127.0.0.1:9"

    monkeypatch.setattr(kube, "port_forward", forward)
    monkeypatch.setattr("inferbook.layers.llm_gateway.cluster.proxy_healthy", lambda base, key: True)
    one_of_three = {**HEALTHY, "instances": 3, "readyInstances": 1}  # Ready=True still describes the old size

    def cnpg() -> None:
        api.set_status("clusters", NS, "litellm-db", one_of_three, group="postgresql.cnpg.io")
        time.sleep(0.5)
        controllers.marks["all instances"] = len(api.requests)
        api.set_status("clusters", NS, "litellm-db", {**HEALTHY, "instances": 3, "readyInstances": 3},
                       group="postgresql.cnpg.io")

    controllers = Controllers(api)
    controllers.when_created("cluster ready", "clusters", "litellm-db", cnpg, group="postgresql.cnpg.io")
    controllers.job("complete")
    controllers.deployments("litellm-redis", "litellm")
    said: list[str] = []
    with controllers:
        endpoint = provision_kube(prod, objects, say=said.append, timeout=30)
    assert api.get_object("clusters", NS, "litellm-db", group="postgresql.cnpg.io")["spec"]["instances"] == 3
    assert controllers.marks["all instances"] < first(api, "PATCH", f"{JOB_PATH}/litellm-migrate") < NEVER
    waiting = "Ready=True but not every instance is ready yet; 1 of 3 instance(s) ready"
    assert any(waiting in line for line in said), said
    awaited = list(dict.fromkeys(m.group(1) for line in said if (m := re.search(r"deploy/([\w-]+) in ", line))))
    assert awaited == ["litellm-redis", "litellm"]
    assert endpoint.status["database"].endswith("3 of 3 instance(s) ready, phase 'Cluster in healthy state'")


# --------------------------------------------------------------------------- serving.connect: vLLM's own metrics


def test_serving_connect_on_a_cluster_port_forwards_without_applying(api, monkeypatch):
    from inferbook.layers import serving

    api.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vllm-api-key", "namespace": NS},
              "data": {"api-key": base64.b64encode(b"vllm-key").decode()}})
    labels = {"app.kubernetes.io/name": "vllm"}
    api.seed({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "vllm", "namespace": NS},
              "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                       "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "vllm"}]}}}})
    api.roll_out(NS, "vllm")
    forwarded: list[tuple] = []

    @contextlib.contextmanager
    def forward(context, namespace, service, port, **kwargs):
        forwarded.append((context, namespace, service, port))
        yield "http://127.0.0.1:9"

    probed: list[str] = []
    monkeypatch.setattr(kube, "port_forward", forward)
    monkeypatch.setattr("inferbook.layers.serving.cluster.probe",
                        lambda base, key: probed.append(key) or {"version": "0.11.0", "models": ["m"]})
    endpoint = serving.connect(PROFILE, Layout(ROOT, ROOT), say=lambda _: None, timeout=5)
    assert forwarded == [(CONTEXT, NS, "vllm", 8000)]
    assert endpoint.base == "http://127.0.0.1:9" and endpoint.status["applied"] == 0
    assert probed == ["vllm-key"]
    assert api.writes() == [], "connect applies nothing"


def test_serving_connect_to_a_scaled_to_zero_vllm_says_to_run_the_serving_chapter(api):
    from inferbook.layers import serving

    labels = {"app.kubernetes.io/name": "vllm"}
    api.seed({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "vllm", "namespace": NS},
              "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                       "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "vllm"}]}}}})
    api.seed({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vllm", "namespace": NS},
              "spec": {"selector": labels, "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}})
    hint = r"no ready pod behind service inferbook/vllm .*serving.replicas: 0 \(scale-to-zero\); run the serving"
    with pytest.raises(kube.PortForwardError, match=hint):
        serving.connect(PROFILE, Layout(ROOT, ROOT), say=lambda _: None, timeout=5)


def test_serving_connect_locally_needs_a_running_vllm(tmp_path):
    import socket

    from inferbook.layers import serving

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    local = load_profile("local", overrides={"local.ports.serving": port})
    with pytest.raises(InferbookError, match="inferbook up --profile local --until serving"):
        serving.connect(local, Layout(ROOT, tmp_path), say=lambda _: None)


@pytest.mark.slow
def test_gateway_provision_locally_reuses_the_running_proxy(local_gateway, tmp_path):
    endpoint = gateway.provision(local_gateway.profile, local_gateway.layout, [], say=lambda _: None)
    assert endpoint.status["reused"] is True and endpoint.status["healthy"] is True
    assert endpoint.url == local_gateway.url and endpoint.where == "local process"
    assert isinstance(endpoint.admin().keys(), list)
    assert local_gateway.master_key() not in repr(endpoint) + endpoint.table().to_string()


def test_a_later_chapter_connects_to_the_applied_gateway_without_applying_anything(api, objects, monkeypatch,
                                                                                   tmp_path):
    seed_master_key(api, "sk-test")
    api.seed(manifests.find(objects, "Deployment", "litellm"), manager="inferbook")  # applied by the gateway chapter
    api.roll_out(NS, "litellm")

    @contextlib.contextmanager
    def forward(context, namespace, service, port, **kwargs):
        assert (service, port) == ("litellm", 4000)
        yield "http://127.0.0.1:9"

    checked: list[str] = []
    monkeypatch.setattr(kube, "port_forward", forward)
    monkeypatch.setattr("inferbook.layers.llm_gateway.cluster.proxy_healthy",
                        lambda base, key: checked.append(key) or True)
    writes_before = len(api.writes())
    part = targets.of(PROFILE, Layout(ROOT, tmp_path), say=lambda _: None).part(layers.get("llm-gateway"))
    endpoint = part.connect(timeout=5)  # renders the layer (into tmp_path) to find the proxy's Service
    assert endpoint.url == "http://127.0.0.1:9/v1" and checked == ["sk-test"]
    assert len(api.writes()) == writes_before  # nothing applied
    assert endpoint.admin().master_key == "sk-test"


def test_connecting_to_a_local_gateway_that_is_not_running_says_how_to_start_it(tmp_path):
    profile = load_profile("local", overrides={"local.ports.llm-gateway": 4999})
    with pytest.raises(InferbookError, match=r"not running at http://127.0.0.1:4999/v1.*inferbook up --profile local"):
        gateway.connect(profile, Layout(ROOT, tmp_path), say=lambda _: None)


def test_the_experience_chapter_holds_the_gateway_port_forward_until_it_closes_the_endpoint(api, objects, monkeypatch,
                                                                                          tmp_path):
    """On a cluster the gateway is reached through a port-forward that lives as long as its endpoint.

    The forward here is a generator context manager like :func:`inferbook.kube.port_forward`: once nothing
    holds it, CPython finalises the generator and its ``finally`` stops the forward. The chapter's connect
    must therefore hand the endpoint itself to the chapter, not only its URL.
    """
    import gc

    from inferbook.layers import experience

    seed_master_key(api, "sk-test")
    api.seed(manifests.find(objects, "Deployment", "litellm"), manager="inferbook")
    api.roll_out(NS, "litellm")
    events: list[str] = []

    @contextlib.contextmanager
    def forward(context, namespace, service, port, **kwargs):
        events.append("opened")
        try:
            yield "http://127.0.0.1:9"
        finally:
            events.append("closed")

    monkeypatch.setattr(kube, "port_forward", forward)
    monkeypatch.setattr("inferbook.layers.llm_gateway.cluster.proxy_healthy", lambda base, key: True)
    experience.connect(PROFILE, Layout(ROOT, tmp_path), say=lambda _: None)  # dropped at once, as the URL-only
    gc.collect()  # connect of before did with its endpoint: the forward is gone before the chapter calls it
    assert events == ["opened", "closed"]
    events.clear()
    with experience.connect(PROFILE, Layout(ROOT, tmp_path), say=lambda _: None) as endpoint:
        gc.collect()  # what a chapter does between its cells: nothing keeps the forward but the endpoint
        assert events == ["opened"], "the port-forward closed under the chapter"
        assert endpoint.url == "http://127.0.0.1:9/v1" and endpoint.admin().master_key == "sk-test"
        gc.collect()
        assert events == ["opened"]
    assert events == ["opened", "closed"]  # the chapter's end (or close()) releases it
