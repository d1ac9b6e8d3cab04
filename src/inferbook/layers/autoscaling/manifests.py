"""The autoscaling layer's manifests: the KEDA ScaledObject on the serving Deployment and the image pre-pull.

The base is ``manifests/autoscaling/keda``; the profile's values go into the overlay as JSON6902 patches: the
triggers' queries (namespace and served model), thresholds and activation thresholds, the floor, the ceiling, the
polling interval, KEDA's cooldown and the HPA's scale-down window, and Prometheus's address. The queue target, the
ceiling, the interval and the scale-down window are the ``capacity:`` section's, so the policy applied is the one the
capacity chapter simulates; the floor is ``serving.replicas`` (at or above the tier's, ADR-0014).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...manifests import LayerManifests, ManifestError, Selection, find, json6902
from ...profile import Profile
from ..serving.manifests import WORKLOAD_NAME

LAYER = "autoscaling"
#: The ScaledObject, and the HPA KEDA makes for it (named in the base, so the cluster part knows where to look).
SCALED_OBJECT = "vllm"
HPA_NAME = "keda-hpa-vllm"
PREPULL = "vllm-image-prepull"
#: The triggers, by the names the base gives them (the HPA's metrics and the chapter's columns follow).
QUEUE_TRIGGER = "queue"
KV_TRIGGER = "kv-cache"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"
RUNNING = "vllm:num_requests_running"
PAUSED_ANNOTATION = "autoscaling.keda.sh/paused"


class AutoscalingError(ManifestError):
    """The profile asks for a ScaledObject that cannot be rendered (bounds crossed, KServe on)."""


@dataclass(frozen=True)
class Settings:
    """The ScaledObject's numbers for one profile, each from the one field that owns it."""

    namespace: str
    model: str
    prometheus: str
    queue_target: float
    kv_cache_target: float
    activation_queue: float
    activation_kv_cache: float
    min_replicas: int
    max_replicas: int
    polling_s: int
    cooldown_s: int
    scale_down_window_s: int
    paused: bool

    @classmethod
    def from_profile(cls, profile: Profile) -> "Settings":
        a, c = profile.data["autoscaling"], profile.data["capacity"]
        floor, ceiling = int(profile.data["serving"]["replicas"]), int(c["max_replicas"])
        if ceiling < max(floor, 1):
            raise AutoscalingError(
                f"profile '{profile.name}': capacity.max_replicas {ceiling} is below the floor serving.replicas "
                f"{floor} (or 1). Fix: set capacity.max_replicas to at least {max(floor, 1)}")
        return cls(namespace=profile.data["target"]["namespace"],
                   model=profile.data["models"]["chat"]["served_name"], prometheus=a["prometheus_address"],
                   queue_target=float(c["queue_target"]), kv_cache_target=float(a["kv_cache_target"]),
                   activation_queue=float(a["activation_queue"]), activation_kv_cache=float(a["activation_kv_cache"]),
                   min_replicas=floor, max_replicas=ceiling, polling_s=_whole(c["interval_seconds"]),
                   cooldown_s=int(a["cooldown_seconds"]), scale_down_window_s=_whole(c["cooldown_seconds"]),
                   paused=profile.autoscaling_paused)

    def query(self, metric: str, aggregate: str) -> str:
        """The PromQL of a trigger: the served model's series in the profile's namespace."""
        return f'{aggregate}({metric}{{namespace="{self.namespace}",model_name="{self.model}"}})'


def _whole(seconds: float) -> int:
    """KEDA and the HPA take whole seconds (int32 fields)."""
    return max(int(round(float(seconds))), 0)


def _number(value: float) -> str:
    """A threshold as KEDA's metadata wants it: a string, without a trailing .0."""
    return f"{value:g}"


def selection(profile: Profile) -> Selection:
    """The KEDA base, the CPU image on a CPU cluster, and the pause on the cost tier."""
    if "kserve" in profile.features:
        raise AutoscalingError(f"profile '{profile.name}' turns on both kserve and autoscaling: KServe scales its "
                               "own predictor (spec.predictor.minReplicas/maxReplicas), and there is no Deployment "
                               f"'{WORKLOAD_NAME}' for the ScaledObject. Fix: turn one of them off")
    settings = Settings.from_profile(profile)
    components: list[tuple[str, str]] = []
    if profile.data["gpu"]["type"] == "none":
        components.append(("cpu", "gpu.type: none: pre-pull vLLM's CPU image, the one serving runs"))
    if settings.paused:
        why = ("tier: cost, shipped paused (ADR-0014)" if profile.data["autoscaling"]["paused"] is None
               else "autoscaling.paused: true")
        components.append(("paused", why))
    return Selection(layer=LAYER, base="autoscaling/keda",
                     base_reason="KEDA ScaledObject on the vLLM queue and KV cache, image pre-pull (ADR-0014, 0025)",
                     components=tuple(components))


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    """The profile's numbers in the ScaledObject; each trigger found by its name, so a reordered base still fits."""
    s = Settings.from_profile(profile)
    so = find(base_objects, "ScaledObject", SCALED_OBJECT)
    spec = so["spec"]
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/spec/scaleTargetRef/name", "value": WORKLOAD_NAME},
        {"op": "replace", "path": "/spec/minReplicaCount", "value": s.min_replicas},
        {"op": "replace", "path": "/spec/maxReplicaCount", "value": s.max_replicas},
        {"op": "replace", "path": "/spec/pollingInterval", "value": s.polling_s},
        {"op": "replace", "path": "/spec/cooldownPeriod", "value": s.cooldown_s},
        {"op": "replace", "path": "/spec/advanced/horizontalPodAutoscalerConfig/behavior/scaleDown/"
                                  "stabilizationWindowSeconds", "value": s.scale_down_window_s},
    ]
    values = {QUEUE_TRIGGER: (s.query(WAITING, "sum"), s.queue_target, s.activation_queue),
              KV_TRIGGER: (s.query(KV_CACHE, "avg"), s.kv_cache_target, s.activation_kv_cache)}
    for name, (query, threshold, activation) in values.items():
        i = next((i for i, t in enumerate(spec["triggers"]) if t.get("name") == name), None)
        if i is None:
            raise ManifestError(f"the ScaledObject has no trigger named '{name}'. "
                                "Fix: restore it in manifests/autoscaling/keda/scaledobject.yaml")
        path = f"/spec/triggers/{i}/metadata"
        ops += [{"op": "test", "path": f"/spec/triggers/{i}/name", "value": name},
                {"op": "replace", "path": f"{path}/serverAddress", "value": s.prometheus},
                {"op": "replace", "path": f"{path}/query", "value": query},
                {"op": "replace", "path": f"{path}/threshold", "value": _number(threshold)},
                {"op": "replace", "path": f"{path}/activationThreshold", "value": _number(activation)}]
    return [json6902("ScaledObject", "keda.sh", SCALED_OBJECT, ops)]


MANIFESTS = LayerManifests(LAYER, selection, patches)
