"""What Kueue would admit, computed offline from the rendered objects: the quota against the queued pods.

No cluster is needed to know most of what the ClusterQueue will do with the book's own workloads: its nominal
quota is in the rendered ClusterQueue, and every queued workload's requests and replica count are in its
manifest. Kueue admits a pod when what it requests fits in what the admitted ones leave of the quota (a workload
asking for more than the whole quota never fits), in priority order. The table walks the book's GPU workloads
in that order, one row per pod (a Deployment's replicas, its RollingUpdate surge pod, a Job's), with the quota
left after each. It is a model of Kueue's arithmetic, not Kueue: the live proof runs on a kube target
(:mod:`.cluster`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

from ...manifests import pod_spec
from .manifests import CLUSTER_QUEUE, GPU_RESOURCE, PRIORITIES, PRIORITY_LABEL, QUEUE_LABEL

RESOURCES = ("cpu", "memory", GPU_RESOURCE)
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "k": 10**3, "M": 10**6, "G": 10**9,
           "T": 10**12, "m": 1e-3}


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number (``500m`` -> 0.5, ``8Gi`` -> 8 * 2**30)."""
    text = str(value).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIX[suffix]
    return float(text)


def _shown(resource: str, amount: float) -> str:
    if resource == "memory":
        return f"{amount / 2**30:g}Gi"
    return f"{amount:g}"


@dataclass(frozen=True)
class Pod:
    """One pod Kueue would be asked to admit: whose, what it requests, where it queues."""

    workload: str  # Kind/name
    namespace: str
    pod: str  # "replica 1", "surge (rollout)", ...
    queue: str | None
    priority: int
    requests: dict[str, float]


def quota(objects: Iterable[dict[str, Any]]) -> dict[str, float] | None:
    """The ClusterQueue's nominal quota per resource (all flavors summed); None when none was rendered."""
    for obj in objects:
        if obj.get("kind") == "ClusterQueue" and obj["metadata"]["name"] == CLUSTER_QUEUE:
            total: dict[str, float] = {}
            for group in obj["spec"].get("resourceGroups") or []:
                for flavor in group.get("flavors") or []:
                    for res in flavor.get("resources") or []:
                        total[res["name"]] = total.get(res["name"], 0.0) + quantity(res["nominalQuota"])
            return total
    return None


def pod_requests(pod: dict[str, Any]) -> dict[str, float]:
    """What Kueue counts for one pod: the containers' requests summed, or the largest init container's if more.

    An extended resource given only as a limit (``nvidia.com/gpu``) is requested at its limit, as the API server
    defaults it.
    """

    def of(container: dict[str, Any]) -> dict[str, float]:
        res = container.get("resources") or {}
        asked = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return {r: quantity(asked[r]) for r in RESOURCES if r in asked}

    total = {r: 0.0 for r in RESOURCES}
    for c in pod.get("containers") or []:
        for r, v in of(c).items():
            total[r] += v
    for c in pod.get("initContainers") or []:
        for r, v in of(c).items():
            total[r] = max(total[r], v)
    return total


def keda_floors(objects: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """(namespace, kind, name) of each workload a ScaledObject scales -> its floor (``minReplicaCount``).

    Such a Deployment carries no ``spec.replicas`` (the HPA owns the count), so its pods at rest are KEDA's floor.
    """
    floors = {}
    for obj in objects:
        if obj.get("kind") == "ScaledObject":
            spec = obj.get("spec") or {}
            ref = spec.get("scaleTargetRef") or {}
            key = (obj["metadata"].get("namespace", "-"), ref.get("kind", "Deployment"), ref.get("name", ""))
            floors[key] = int(spec.get("minReplicaCount", 0))
    return floors


def _pods(obj: dict[str, Any], floor: int | None = None) -> list[str]:
    """The pods of a workload Kueue would admit, by name: its replicas (KEDA's ``floor`` when it owns the count),
    and the surge pod of a rolling update."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Job":
        return [f"pod {i + 1}" for i in range(int(spec.get("parallelism", 1)))]
    replicas = int(spec.get("replicas", 1 if floor is None else floor))
    pods = [f"replica {i + 1}" for i in range(replicas)] or ["replica 1 (after a scale-up from 0)"]
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "RollingUpdate" and replicas:
        surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", 1)
        pods += [f"surge {i + 1} (rollout)" for i in range(int(surge) if str(surge).isdigit() else 1)]
    return pods


def queued_pods(objects: Iterable[dict[str, Any]]) -> list[Pod]:
    """Every pod of the rendered workloads that asks for a GPU or names a queue, in the order Kueue would take them.

    Higher WorkloadPriorityClass first (a workload without one has priority 0), then in the order rendered.
    """
    objects = list(objects)
    floors = keda_floors(objects)
    found: list[Pod] = []
    for obj in objects:
        if obj.get("kind") not in ("Deployment", "StatefulSet", "Job", "Pod"):
            continue
        pod = obj["spec"] if obj["kind"] == "Pod" else pod_spec(obj)
        requests = pod_requests(pod)
        labels = obj["metadata"].get("labels") or {}
        if not requests[GPU_RESOURCE] and QUEUE_LABEL not in labels:
            continue
        priority = PRIORITIES.get(labels.get(PRIORITY_LABEL, ""), 0)
        floor = floors.get((obj["metadata"].get("namespace", "-"), obj["kind"], obj["metadata"]["name"]))
        for name in _pods(obj, floor) if obj["kind"] != "Pod" else ["pod"]:
            found.append(Pod(f"{obj['kind']}/{obj['metadata']['name']}", obj["metadata"].get("namespace", "-"),
                             name, labels.get(QUEUE_LABEL), priority, requests))
    return sorted(found, key=lambda p: -p.priority)


def local_queues(objects: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, name) of every rendered LocalQueue."""
    return {(o["metadata"].get("namespace", ""), o["metadata"]["name"])
            for o in objects if o.get("kind") == "LocalQueue"}


def table(objects: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per queued pod: its requests, the nvidia.com/gpu left after it, and whether Kueue would admit it."""
    limit = quota(objects)
    pods = queued_pods(objects)
    if limit is None:
        asking = [p for p in pods if p.requests[GPU_RESOURCE]]
        verdict = (f"{len(asking)} GPU pod(s) with no Kueue: they bypass any quota" if asking
                   else "no ClusterQueue (no GPU on this profile, so no Kueue) and no pod asks for a GPU")
        return pd.DataFrame([{"workload": "-", "namespace": "-", "pod": "-", "queue": "-", "cpu": "-", "memory": "-",
                              GPU_RESOURCE: "-", f"{GPU_RESOURCE} left": "-", "verdict": verdict}])
    queues = local_queues(objects)
    used = {r: 0.0 for r in RESOURCES}
    rows = []
    for pod in pods:
        if not pod.queue:
            verdict = "not queued: no kueue.x-k8s.io/queue-name label, it bypasses the quota"
        elif (pod.namespace, pod.queue) not in queues:
            verdict = f"inadmissible: no LocalQueue {pod.queue} in namespace {pod.namespace}"
        elif any(pod.requests[r] > limit.get(r, 0) for r in RESOURCES if pod.requests[r]):
            over = [r for r in RESOURCES if pod.requests[r] > limit.get(r, 0)]
            verdict = f"never admitted: asks more {', '.join(over)} than the whole quota"
        elif any(used[r] + pod.requests[r] > limit.get(r, 0) for r in RESOURCES if pod.requests[r]):
            short = [r for r in RESOURCES if pod.requests[r] and used[r] + pod.requests[r] > limit.get(r, 0)]
            verdict = f"waits: the quota of {', '.join(short)} is in use until an admitted pod ends"
        else:
            verdict = "admitted"
            for r in RESOURCES:
                used[r] += pod.requests[r]
        rows.append({"workload": pod.workload, "namespace": pod.namespace, "pod": pod.pod, "queue": pod.queue or "-",
                     "cpu": _shown("cpu", pod.requests["cpu"]), "memory": _shown("memory", pod.requests["memory"]),
                     GPU_RESOURCE: _shown(GPU_RESOURCE, pod.requests[GPU_RESOURCE]),
                     f"{GPU_RESOURCE} left": _shown(GPU_RESOURCE, limit.get(GPU_RESOURCE, 0) - used[GPU_RESOURCE]),
                     "verdict": verdict})
    if not rows:
        rows.append({"workload": "-", "namespace": "-", "pod": "-", "queue": "-", "cpu": "-", "memory": "-",
                     GPU_RESOURCE: "-", f"{GPU_RESOURCE} left": _shown(GPU_RESOURCE, limit.get(GPU_RESOURCE, 0)),
                     "verdict": "no queued workload rendered"})
    return pd.DataFrame(rows)


def describe_quota(objects: list[dict[str, Any]]) -> str:
    """One sentence: the ClusterQueue's quota, or that the profile renders none."""
    limit = quota(objects)
    if limit is None:
        return "No ClusterQueue: this profile has no GPU, so the platform renders no Kueue (ADR-0002 governs GPUs)."
    return (f"ClusterQueue {CLUSTER_QUEUE}: nominal quota " +
            ", ".join(f"{_shown(r, limit[r])} {r}" for r in RESOURCES if r in limit) + ".")
