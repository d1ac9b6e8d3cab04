"""The target seam: one interface, a class per kind of target; what each does with a layer's objects."""

from __future__ import annotations

import pytest

from inferbook import targets
from inferbook.layers import get, render
from inferbook.paths import Layout
from inferbook.profile import load_profile


@pytest.fixture()
def run_layout(tmp_path) -> Layout:
    return Layout.from_run_dir(tmp_path / "runs" / "x")


def test_each_profile_gets_the_target_its_kind_names(run_layout: Layout) -> None:
    assert isinstance(targets.of(load_profile("local"), run_layout), targets.LocalTarget)
    assert isinstance(targets.of(load_profile("kind"), run_layout), targets.KubeTarget)
    assert isinstance(targets.of(load_profile("kind"), run_layout, dry_run=True), targets.DryRunTarget)


def test_the_local_target_plans_in_apply_order_and_applies_nothing(run_layout: Layout) -> None:
    profile = load_profile("kind")
    objects = render("serving", profile, run_layout)
    objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "late"}})
    changes = targets.LocalTarget(profile, run_layout).apply(objects, "serving")
    assert [c.kind for c in changes][0] == "Namespace"  # namespaces first, as kube.apply sends them
    assert {c.action for c in changes} == {"not applied: no cluster"}
    assert all(c.layer == "serving" for c in changes)
    table = targets.changes_table(changes)
    assert list(table.columns) == ["kind", "name", "namespace", "layer", "action"]
    assert table.loc[table.kind == "Namespace", "namespace"].item() == "-"
    assert "no API server" in targets.LocalTarget(profile, run_layout).limits()


def test_a_layer_without_a_part_on_a_target_says_where_it_runs(run_layout: Layout) -> None:
    local = targets.of(load_profile("local"), run_layout)
    assert local.has_part(get("serving"))
    assert not local.has_part(get("economics"))
    with pytest.raises(targets.NoPart, match="economics.*kube profile"):
        local.part(get("economics"))
    with pytest.raises(targets.NoPart, match="dry run"):
        targets.of(load_profile("kind"), run_layout, dry_run=True).part(get("serving"))


def test_a_profile_of_an_unknown_target_kind_is_refused_with_the_kinds(run_layout: Layout, monkeypatch) -> None:
    profile = load_profile("local")
    monkeypatch.setitem(profile.data["target"], "kind", "nomad")
    with pytest.raises(targets.NoPart, match="no target of kind 'nomad'.*local, kube, dry-run"):
        targets.of(profile, run_layout)


#: The layers that do more on a cluster than apply their objects: each declares its cluster part.
CLUSTER_PARTS = {"serving": "ClusterServing", "routing": "ClusterRouting", "llm-gateway": "ClusterGateway",
                 "observability": "ClusterObservability"}


def test_the_layers_with_cluster_steps_declare_their_cluster_part(run_layout: Layout) -> None:
    from inferbook.layer import ClusterLayer

    kube_target = targets.of(load_profile("kind"), run_layout)
    for name, cls in CLUSTER_PARTS.items():
        part = kube_target.part(get(name))
        assert isinstance(part, ClusterLayer) and type(part).__name__ == cls, name
        assert part.target is kube_target and part.namespace == kube_target.namespace


def test_a_layer_s_local_and_cluster_parts_answer_the_same_steps(run_layout: Layout) -> None:
    """The chapter's steps call one method name whatever the target: each part has it."""
    steps = {"serving": ("provision", "connect", "reach_coder"), "routing": ("provision",),
             "llm-gateway": ("provision", "connect"), "observability": ("provision", "ledger")}
    local, kube_target = targets.of(load_profile("local"), run_layout), targets.of(load_profile("kind"), run_layout)
    for name, methods in steps.items():
        for target in (local, kube_target):
            part = target.part(get(name))
            assert all(callable(getattr(part, m, None)) for m in methods), (name, target.kind)


def test_a_kube_target_s_serving_part_provisions_through_the_kube_client(tmp_path, monkeypatch) -> None:
    """``target.part(serving).provision``: server-side apply, the cost tier scaled to one replica, the rollout
    awaited, the Service exposed through the target and vLLM probed with the key of its Secret."""
    import base64
    import contextlib
    import threading

    from inferbook import kube
    from inferbook.layers.serving.cluster import ClusterServing

    from .conftest import ROOT
    from .kube_double import FakeKubeApiServer

    profile = load_profile("gke-l4")
    context, namespace = profile.get("target.context"), profile.get("target.namespace")
    objects = render("serving", profile, Layout(ROOT, tmp_path))
    with FakeKubeApiServer() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kc", context=context)))
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        api.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vllm-api-key", "namespace": namespace},
                  "data": {"api-key": base64.b64encode(b"vllm-key").decode()}})
        forwarded: list[tuple] = []

        @contextlib.contextmanager
        def forward(ctx, ns, service, port, **kwargs):
            forwarded.append((ctx, ns, service, port))
            yield "http://127.0.0.1:9"

        probed: list[str] = []
        monkeypatch.setattr(kube, "port_forward", forward)
        monkeypatch.setattr("inferbook.layers.serving.cluster.probe",
                            lambda base, key: probed.append(key) or {"version": "0.11.0", "models": ["m"]})
        stop = threading.Event()

        def controller() -> None:  # the double runs no controllers: roll the Deployment out when asked
            seen = None
            while not stop.is_set():
                dep = api.get_object("deployments", namespace, "vllm", group="apps")
                if dep and (dep["metadata"]["generation"], dep["spec"].get("replicas")) != seen:
                    api.roll_out(namespace, "vllm")
                    seen = (dep["metadata"]["generation"], dep["spec"].get("replicas"))
                stop.wait(0.1)

        thread = threading.Thread(target=controller, daemon=True)
        thread.start()
        said: list[str] = []
        try:
            part = targets.of(profile, Layout(ROOT, tmp_path), say=said.append).part(get("serving"))
            assert isinstance(part, ClusterServing)
            endpoint = part.provision(objects, timeout=30)
        finally:
            stop.set()
            thread.join()
        applies = [r for r in api.writes() if r.method == "PATCH"]
        assert applies and all(r.content_type == "application/apply-patch+yaml" for r in applies)
        assert {k[1] for k in api.object_keys()} >= {"deployments", "services", "persistentvolumeclaims"}
        assert api.get_object("deployments", namespace, "vllm", group="apps")["spec"]["replicas"] == 1
        assert any("scaling to 1 for the smoke test" in line for line in said)
        assert forwarded == [(context, namespace, "vllm", 8000)] and probed == ["vllm-key"]
        assert endpoint.base == "http://127.0.0.1:9" and endpoint.target == f"cluster ({context})"
        assert endpoint.status["applied"] == len(objects)
        endpoint.close()


def test_a_plan_names_no_namespace_for_cluster_scoped_kinds_and_keeps_a_namespaced_cluster_kind(
        run_layout: Layout) -> None:
    profile = load_profile("gke-l4")
    objects = [o for name in ("platform", "llm-gateway") for o in render(name, profile, run_layout)]
    plan = {(c.kind, c.name): c.namespace for c in targets.DryRunTarget(profile, run_layout).plan(objects)}
    assert plan[("ClusterQueue", "gpu")] is None
    assert plan[("Cluster", "litellm-db")] == "inferbook"  # CloudNativePG's Cluster is namespaced
    rendered = {(o["kind"], o["metadata"]["name"]): o["metadata"].get("namespace") for o in objects}
    assert rendered[("ClusterQueue", "gpu")] is None and rendered[("Cluster", "litellm-db")] == "inferbook"


def test_reading_every_layer_s_declaration_does_not_import_the_kubernetes_package() -> None:
    """``layer.lazy``: the local stack, preflight and the command line read every declaration; the cluster parts
    that talk to a cluster (through the kubernetes package) are imported only when a kube target builds one."""
    import subprocess
    import sys

    code = ("import sys, inferbook.cli, inferbook.layers; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_lazy_cluster_hook_refuses_what_is_not_a_cluster_part(run_layout: Layout) -> None:
    from inferbook.layer import lazy

    kind = load_profile("kind")
    hook = lazy("inferbook.layers.serving.cluster", "ClusterServing")
    part = hook(kind, run_layout, target=targets.of(kind, run_layout))
    assert type(part).__name__ == "ClusterServing"
    with pytest.raises(TypeError, match="SimpleNamespace is not a ClusterLayer"):
        lazy("types", "SimpleNamespace")(target=None)
