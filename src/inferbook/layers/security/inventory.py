"""The pods a profile's layers make, as the NetworkPolicies see them, plus the ones around them.

Read from the rendered objects of every enabled layer: a workload's pod template (labels, namespace,
container ports), a CloudNativePG Cluster's instances (the operator labels them ``cnpg.io/cluster``), a
Gateway's proxy pods (Gateway API implementations label them ``gateway.networking.k8s.io/gateway-name``).
Around them, the pods of the operators the policies name (Prometheus and Grafana of kube-prometheus-stack
in ``monitoring``, kube-dns in ``kube-system``) and two synthetic clients: a tenant's pod in the tenant
namespace and an unlabelled pod in the serving namespace (a debug shell, say).
"""

from __future__ import annotations

from typing import Any, Iterable

from ...profile import Profile
from .manifests import serving_namespace, tenant_namespace
from .reachability import Pod

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
GATEWAY_LABEL = "gateway.networking.k8s.io/gateway-name"
#: The synthetic pods the checks name.
TENANT_POD, STRAY_POD = "tenant-client", "unlabelled-shell"


def _ports(spec: dict[str, Any]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            ports[p.get("name") or str(p["containerPort"])] = int(p["containerPort"])
    return ports


def pods(objects: Iterable[dict[str, Any]], profile: Profile) -> list[Pod]:
    """One pod per workload, Cluster and Gateway of ``objects``, then the operators' and the synthetic ones."""
    serving, tenant = serving_namespace(profile), tenant_namespace(profile)
    found: list[Pod] = []
    for obj in objects:
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        ns = meta.get("namespace") or serving
        if kind in WORKLOADS:
            template = obj["spec"]["template"]
            found.append(Pod(meta["name"], ns, dict((template.get("metadata") or {}).get("labels") or {}),
                             _ports(template["spec"])))
        elif kind == "Cluster" and str(obj.get("apiVersion", "")).startswith("postgresql.cnpg.io"):
            found.append(Pod(f"{meta['name']}-1", ns, {"cnpg.io/cluster": meta["name"], "cnpg.io/instanceRole":
                                                        "primary"}, {"postgresql": 5432, "status": 8000,
                                                                     "metrics": 9187}))
        elif kind == "Gateway":
            listeners = obj["spec"].get("listeners") or []
            found.append(Pod(f"{meta['name']}-proxy", ns, {GATEWAY_LABEL: meta["name"]},
                             {str(x.get("name")): int(x["port"]) for x in listeners}))
    found += [
        Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, {"web": 9090}),
        Pod("grafana", "monitoring", {"app.kubernetes.io/name": "grafana"}, {"http": 3000}),
        Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53}),
        Pod(TENANT_POD, tenant, {"app.kubernetes.io/name": TENANT_POD}, {"http": 8080}),
        Pod(STRAY_POD, serving, {"run": STRAY_POD}, {"http": 8080}),
    ]
    return found


def by_name(all_pods: Iterable[Pod]) -> dict[str, Pod]:
    return {p.name: p for p in all_pods}


def main_port(pod: Pod) -> tuple[int, str]:
    """The port a client would call: DNS on 53/UDP, else the pod's first declared port (80 when none)."""
    if pod.labels.get("k8s-app") == "kube-dns":
        return 53, "UDP"
    return (next(iter(pod.ports.values())) if pod.ports else 80), "TCP"
