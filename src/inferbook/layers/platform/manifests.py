"""The platform layer's manifests: the namespaces, the GPU quota (Kueue), the GPU stack and the secret store.

The base ``manifests/platform/base`` holds the serving namespace (``target.namespace``) and the tenant team's
(``tenants.team``). Components add Kueue when the profile has a GPU (ADR-0002), the GPU stack ``gpu.stack``
names (``gpu-gke-managed``, ``gpu-operator``, ``gpu-none``; ADR-0001) and the ClusterSecretStore of
``platform.secret_store.provider`` (ADR-0011). The profile's values (namespace names, the flavor's node label,
the quota, the GCP project) go into the overlay as JSON6902 patches guarded by the base's values.

The layers above read two names from here: :data:`QUEUE_LABEL` and :data:`LOCAL_QUEUE`, the label a GPU workload
carries and the LocalQueue it names; :func:`kueue_on` says whether the profile renders Kueue at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...manifests import LayerManifests, ManifestError, Selection, dump, find, guarded_replace, json6902, pointer
from ...profile import Profile

LAYER = "platform"
#: The label Kueue reads to queue a workload, and the LocalQueue (one per queued namespace) it names.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
LOCAL_QUEUE = "gpu"
#: The label naming a workload's WorkloadPriorityClass, and the two classes.
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
PRIORITIES = {"interactive": 1000, "batch": 100}
CLUSTER_QUEUE = "gpu"
FLAVOR = "gpu-any"
GPU_RESOURCE = "nvidia.com/gpu"
#: The ClusterSecretStore every ExternalSecret names (ADR-0011).
SECRET_STORE = "secret-store"
#: The base's placeholder names of the two namespaces (the overlay writes the profile's).
SERVING_NAMESPACE, TENANT_NAMESPACE = "inferbook", "tenant"
#: The node label of the GPU nodes, by stack: GKE's accelerator label, or the GPU Operator's feature discovery.
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
OPERATOR_GPU_LABEL = "nvidia.com/gpu.present"
#: The GPU stack component of each ``gpu.stack`` value.
GPU_STACK_COMPONENTS = {"gke-managed": "gpu-gke-managed", "operator": "gpu-operator", "none": "gpu-none"}


def kueue_on(profile: Profile) -> bool:
    """Whether the profile renders Kueue: with a GPU (ADR-0002's quota governs GPUs; a CPU profile has none)."""
    return profile.data["gpu"]["type"] != "none"


def gpu_quota(profile: Profile) -> int:
    """The ClusterQueue's nvidia.com/gpu quota: the slots the device plugin advertises (count x time-slicing).

    With time-slicing each slot is one ``nvidia.com/gpu`` to the scheduler and to Kueue, so a quota of physical
    GPUs alone would never admit the rollout's surge pod or the canary the profile sized its slots for.
    """
    return int(profile.gpu_slots)


def node_label(profile: Profile) -> tuple[str, str]:
    """(key, value) of the label the profile's GPU nodes carry: what the ResourceFlavor selects."""
    gpu = profile.data["gpu"]
    if gpu["stack"] == "gke-managed":
        return GKE_ACCELERATOR_LABEL, f"nvidia-{gpu['type']}"
    return OPERATOR_GPU_LABEL, "true"


def tenant_namespace(profile: Profile) -> str:
    """The tenant team's namespace: ``tenants.team`` (ADR-0002's team-a, team-b)."""
    return str(profile.data["tenants"]["team"])


def selection(profile: Profile) -> Selection:
    """The namespaces, Kueue on a GPU profile, the GPU stack and the secret store the profile names."""
    gpu = profile.data["gpu"]
    store = profile.data["platform"]["secret_store"]
    components: list[tuple[str, str]] = []
    if kueue_on(profile):
        components.append(("kueue", f"gpu.type {gpu['type']}: a ClusterQueue of {gpu_quota(profile)} "
                                    f"nvidia.com/gpu slot(s) (ADR-0002)"))
    stack = gpu["stack"]
    components.append((GPU_STACK_COMPONENTS[stack], f"gpu.stack: {stack} (ADR-0001)"))
    why = ("GCP Secret Manager with Workload Identity" if store["provider"] == "gcpsm"
           else "the Secrets of namespace inferbook-secrets in this cluster")
    components.append((f"secret-store-{store['provider']}",
                       f"platform.secret_store.provider: {store['provider']}, {why} (ADR-0011)"))
    if tenant_namespace(profile) == profile.data["target"]["namespace"]:
        raise ManifestError(f"profile {profile.name}: tenants.team '{tenant_namespace(profile)}' is also "
                            "target.namespace; the tenant's namespace must differ from the serving one. "
                            "Fix: rename tenants.team or target.namespace")
    return Selection(layer=LAYER, base="platform/base",
                     base_reason="the serving namespace (target.namespace) and the tenant's (tenants.team)",
                     components=tuple(components))


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    """The profile's namespace names, the flavor's node label, the quota and the secret store's project."""
    serving_ns = profile.data["target"]["namespace"]
    out = [
        _rename_namespace(find(base_objects, "Namespace", SERVING_NAMESPACE), serving_ns),
        _rename_namespace(find(base_objects, "Namespace", TENANT_NAMESPACE), tenant_namespace(profile)),
    ]
    if "kueue" in selection.component_names:
        out += _kueue_patches(profile)
    if "secret-store-gcpsm" in selection.component_names:
        project = profile.data["platform"]["secret_store"]["project_id"]
        out.append(json6902("ClusterSecretStore", "external-secrets.io", SECRET_STORE,
                            guarded_replace("/spec/provider/gcpsm/projectID", "your-gcp-project", project)))
    return out


def _rename_namespace(namespace: dict[str, Any], name: str) -> dict[str, Any]:
    return {"target": {"version": "v1", "kind": "Namespace", "name": namespace["metadata"]["name"]},
            "patch": dump(guarded_replace("/metadata/name", namespace["metadata"]["name"], name))}


def _kueue_patches(profile: Profile) -> list[dict[str, Any]]:
    quota = profile.data["platform"]["quota"]
    key, value = node_label(profile)
    flavor_ops = [{"op": "replace", "path": "/spec/nodeLabels", "value": {key: value}}]
    resources = "/spec/resourceGroups/0/flavors/0/resources"
    queue_ops = (guarded_replace(f"{resources}/0/name", "cpu", "cpu")
                 + [{"op": "replace", "path": f"{resources}/0/nominalQuota", "value": str(quota["cpu"])}]
                 + guarded_replace(f"{resources}/1/name", "memory", "memory")
                 + [{"op": "replace", "path": f"{resources}/1/nominalQuota", "value": str(quota["memory"])}]
                 + guarded_replace(f"{resources}/2/name", GPU_RESOURCE, GPU_RESOURCE)
                 + [{"op": "replace", "path": f"{resources}/2/nominalQuota", "value": gpu_quota(profile)}])
    tenant = {"target": {"group": "kueue.x-k8s.io", "kind": "LocalQueue", "name": LOCAL_QUEUE,
                         "namespace": TENANT_NAMESPACE},
              "patch": dump(guarded_replace("/metadata/namespace", TENANT_NAMESPACE, tenant_namespace(profile)))}
    return [json6902("ResourceFlavor", "kueue.x-k8s.io", FLAVOR, flavor_ops),
            json6902("ClusterQueue", "kueue.x-k8s.io", CLUSTER_QUEUE, queue_ops),
            tenant]


def queue_label_ops(labels_path: str, labels: dict[str, Any] | None) -> list[dict[str, Any]]:
    """JSON6902 ops that add ``QUEUE_LABEL: gpu`` at ``labels_path`` (creating the map when there is none).

    For the layers above whose GPU workloads are built by a patch rather than a component (the routing canary).
    """
    if labels is None:
        return [{"op": "add", "path": labels_path, "value": {QUEUE_LABEL: LOCAL_QUEUE}}]
    return [{"op": "add", "path": f"{labels_path}/{pointer(QUEUE_LABEL)}", "value": LOCAL_QUEUE}]


MANIFESTS = LayerManifests(LAYER, selection, patches)
