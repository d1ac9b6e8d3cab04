"""Every layer with manifests through the kube apply path, against the API-server test double (no cluster here).

What the double proves per layer: the objects go in the order a server needs (Namespaces first), a second apply
changes nothing, and a teardown deletes exactly the layer's objects, leaving what someone else made beside them.
Error translation (403, 409, 422, a missing CRD) is layer-independent: tests/test_kube.py proves it once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inferbook import kube, layers
from inferbook.kube.client import _plural
from inferbook.manifests import namespace_of
from inferbook.paths import Layout
from inferbook.profile import load_profile
from tests.kube_double import ApiType, FakeKubeApiServer

CONTEXT = "lab"
#: Every profile that runs on a cluster; between them they enable every layer with manifests.
CLUSTER_PROFILES = ("gke-l4", "kind", "multi-gpu", "prod")
CASES = [(p, layer.name) for p in CLUSTER_PROFILES for layer in layers.enabled(load_profile(p))]


def test_the_cluster_profiles_cover_every_layer_with_manifests() -> None:
    assert {name for _, name in CASES} == {layer.name for layer in layers.LAYERS if layer.manifests is not None}


def _types(objects: list[dict]) -> list[ApiType]:
    """The kinds of ``objects`` the double does not serve by default, served as a cluster with the CRDs would."""
    found = {}
    for obj in objects:
        group, _, version = obj["apiVersion"].rpartition("/")
        found[(group, obj["kind"])] = ApiType(group, version, obj["kind"], _plural(obj["kind"]),
                                              namespace_of(obj, None) is not None or obj["kind"] == "Cluster")
    return list(found.values())


@pytest.mark.parametrize(("profile_name", "layer"), CASES, ids=[f"{p}-{n}" for p, n in CASES])
def test_a_layer_applies_in_order_reapplies_unchanged_and_tears_down_only_its_own(
        profile_name: str, layer: str, tmp_path: Path) -> None:
    profile = load_profile(profile_name)
    objects = layers.render(layer, profile, Layout.from_run_dir(tmp_path / "runs" / profile_name))
    namespace = profile.data["target"]["namespace"]
    with FakeKubeApiServer() as api:
        api.install(*_types(objects))  # installing a type the double already serves replaces it with the same
        for ns in {namespace, "monitoring", "argocd", "demo", "gpu-operator", "inferbook-secrets"}:
            if not any(o["kind"] == "Namespace" and o["metadata"]["name"] == ns for o in objects):
                api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        # someone else's ConfigMap beside the layer's objects; in a namespace of its own when the layer makes the
        # serving namespace (deleting a Namespace deletes what is in it, on a real server as on the double)
        owns = any(o["kind"] == "Namespace" and o["metadata"]["name"] == namespace for o in objects)
        beside = "elsewhere" if owns else namespace
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}})
        foreign = api.seed({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "someone-elses", "namespace": beside}})
        config = str(api.write_kubeconfig(tmp_path / "kubeconfig", context=CONTEXT))

        first = kube.apply(objects, CONTEXT, kubeconfig=config, namespace=namespace, say=lambda _: None)
        assert len(first) == len(objects)
        kinds = [a.kind for a in first]
        assert kinds[:kinds.count("Namespace")] == ["Namespace"] * kinds.count("Namespace")
        assert {a.action for a in first} == {"created"}

        again = kube.apply(objects, CONTEXT, kubeconfig=config, namespace=namespace, say=lambda _: None)
        assert {a.action for a in again} == {"unchanged"}, [str(a) for a in again if a.action != "unchanged"]

        gone = kube.delete(objects, CONTEXT, kubeconfig=config, namespace=namespace, say=lambda _: None)
        assert {a.action for a in gone} == {"deleted"}
        assert len(gone) == len(objects)
        assert api.get_object("configmaps", beside, foreign["metadata"]["name"]) is not None
