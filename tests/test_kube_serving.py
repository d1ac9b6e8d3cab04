"""The serving chapter's cluster path, end to end against the API-server test double.

The double stands in for the cluster (it has no controllers, so a thread plays
the Deployment controller); the port-forward, which the double cannot speak,
is replaced by the session's real local vLLM, whose key the chapter reads from
the Secret in the double. What is proven: the orchestration (apply, scale the
cost tier to one replica for the smoke, wait for the rollout, read the key,
reach the server), not cluster semantics.
"""

from __future__ import annotations

import base64
import contextlib
import threading

import pytest

from inferbook import kube, layers, load_profile, smoke, targets
from inferbook.layers.serving.cluster import ClusterServing
from inferbook.paths import Layout

from .conftest import ROOT
from .kube_double import FakeKubeApiServer

pytestmark = pytest.mark.slow


def play_deployment_controller(api: FakeKubeApiServer, namespace: str, name: str, stop: threading.Event) -> None:
    """Roll the Deployment out each time its spec asks for replicas (what the real controller would do)."""
    seen = None
    while not stop.is_set():
        dep = api.get_object("deployments", namespace, name, group="apps")
        if dep and (dep["metadata"]["generation"], dep["spec"].get("replicas")) != seen:
            api.roll_out(namespace, name)
            seen = (dep["metadata"]["generation"], dep["spec"].get("replicas"))
        stop.wait(0.2)


def test_the_cost_tier_is_applied_scaled_for_the_smoke_and_reached(tmp_path, monkeypatch, local_serving):
    profile = load_profile("gke-l4")
    namespace = profile.get("target.namespace")
    objects = layers.render("serving", profile, Layout(ROOT, tmp_path))
    with FakeKubeApiServer() as api:
        monkeypatch.setenv("KUBECONFIG",
                           str(api.write_kubeconfig(tmp_path / "kc", context=profile.get("target.context"))))
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        api.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vllm-api-key", "namespace": namespace},
                  "data": {"api-key": base64.b64encode(local_serving.api_key().encode()).decode()}})

        @contextlib.contextmanager
        def forward_to_local_vllm(context, ns, service, port, **kwargs):
            assert (context, ns, service, port) == (profile.get("target.context"), namespace, "vllm", 8000)
            yield local_serving.base

        monkeypatch.setattr(kube, "port_forward", forward_to_local_vllm)
        stop = threading.Event()
        controller = threading.Thread(target=play_deployment_controller, args=(api, namespace, "vllm", stop),
                                      daemon=True)
        controller.start()
        said: list[str] = []
        try:
            part = targets.of(profile, Layout(ROOT, tmp_path), say=said.append).part(layers.get("serving"))
            assert isinstance(part, ClusterServing)
            endpoint = part.provision(objects, timeout=30)
        finally:
            stop.set()
            controller.join()
        applies = [r for r in api.writes() if r.method == "PATCH"]
        assert applies and all(r.content_type == "application/apply-patch+yaml" for r in applies)
        assert all(r.query.get("fieldManager") == "inferbook" for r in applies)
        assert {k[1] for k in api.object_keys()} >= {"deployments", "services",
                                                     "persistentvolumeclaims", "servicemonitors"}
        assert api.get_object("deployments", namespace, "vllm", group="apps")["spec"]["replicas"] == 1
        assert any("scaling to 1 for the smoke test" in line for line in said)
        assert endpoint.url == f"{local_serving.base}/v1"
        assert endpoint.target == f"cluster ({profile.get('target.context')})"
        # the key is read from the Secret in the double when asked, and it opens the real server
        c = smoke.client(endpoint.url, endpoint.api_key())
        assert local_serving.served_name in [m.id for m in c.models.list().data]
        endpoint.close()
