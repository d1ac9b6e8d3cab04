"""The OpenCost layer's manifests: its namespace in the RBAC binding, the cluster's id, the default-deny opening.

``manifests/opencost/cost`` holds OpenCost (read-only RBAC, Deployment, Service, ServiceMonitor). What the
profile sets: the namespace the ClusterRoleBinding names (the profile's target namespace), ``CLUSTER_ID`` (the
profile's name, which OpenCost puts on every cost series), and with ``features.security`` the component that
lets OpenCost reach Prometheus and Prometheus scrape it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...manifests import LayerManifests, Selection, container, find, guarded_replace, index_of, json6902
from ...profile import Profile

LAYER = "opencost"
NAME, PORT = "opencost", 9003
#: The Prometheus OpenCost reads: the observability layer's (kube-prometheus-stack's Service in monitoring).
PROMETHEUS_ENDPOINT = "http://prometheus-operated.monitoring.svc.cluster.local:9090"


def selection(profile: Profile) -> Selection:
    components: list[tuple[str, str]] = []
    if "security" in profile.features:
        components.append(("networkpolicy", "features.security: OpenCost reaches Prometheus and is scraped through "
                                            "the default-deny"))
    return Selection(layer=LAYER, base="opencost/cost", base_reason="OpenCost pricing what runs per namespace and "
                     f"label, from the observability layer's Prometheus ({PROMETHEUS_ENDPOINT})",
                     components=tuple(components))


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    namespace = str(profile.data["target"].get("namespace") or "inferbook")
    binding = find(base_objects, "ClusterRoleBinding", "inferbook-opencost")
    deployment = find(base_objects, "Deployment", NAME)
    env = container(deployment, NAME)["env"]
    i = index_of(env, "CLUSTER_ID", "env", "manifests/opencost/cost/deployment.yaml")
    return [json6902("ClusterRoleBinding", "rbac.authorization.k8s.io", "inferbook-opencost", guarded_replace(
                "/subjects/0/namespace", binding["subjects"][0]["namespace"], namespace)),
            json6902("Deployment", "apps", NAME, guarded_replace(
                f"/spec/template/spec/containers/0/env/{i}/value", env[i]["value"], profile.name))]


MANIFESTS = LayerManifests(LAYER, selection, patches)
