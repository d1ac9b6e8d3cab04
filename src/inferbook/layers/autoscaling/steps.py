"""The autoscaling chapter's steps: the rendered ScaledObject read back as the formula's inputs, the live
computation's table and plot, and the checks.

The triggers and bounds the chapter computes with are read from the *rendered* ScaledObject
(:func:`policy_of`), not from the profile again, so what the chapter shows is what a cluster would get.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...manifests import find
from ...profile import REPLICA_FLOOR, Profile
from .live import Sampled
from .manifests import HPA_NAME, KV_TRIGGER, PAUSED_ANNOTATION, QUEUE_TRIGGER, SCALED_OBJECT, Settings
from .scaling import Trigger, desired_replicas, stabilised

#: The signal each trigger reads, in a sample's columns.
SIGNAL = {QUEUE_TRIGGER: "waiting", KV_TRIGGER: "kv_cache"}


@dataclass(frozen=True)
class Policy:
    """A rendered ScaledObject as the formula reads it."""

    triggers: tuple[Trigger, ...]
    min_replicas: int
    max_replicas: int
    scale_down_window_s: int
    cooldown_s: int
    paused: bool


def scaled_object(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The layer's ScaledObject among the rendered objects."""
    return find(objects, "ScaledObject", SCALED_OBJECT)


def policy_of(so: dict[str, Any]) -> Policy:
    """The triggers (metric type, threshold, activation) and bounds of a rendered ScaledObject."""
    spec = so["spec"]
    triggers = tuple(Trigger(t["name"], t.get("metricType", "AverageValue"), float(t["metadata"]["threshold"]),
                             float(t["metadata"].get("activationThreshold", 0))) for t in spec["triggers"])
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
    return Policy(triggers, int(spec.get("minReplicaCount", 0)), int(spec.get("maxReplicaCount", 100)),
                  int(behavior.get("scaleDown", {}).get("stabilizationWindowSeconds", 300)),
                  int(spec.get("cooldownPeriod", 300)),
                  (so["metadata"].get("annotations") or {}).get(PAUSED_ANNOTATION) == "true")


def settings_table(profile: Profile, so: dict[str, Any]) -> pd.DataFrame:
    """Each number of the rendered ScaledObject beside the profile field it comes from."""
    spec = so["spec"]
    by_name = {t["name"]: t for t in spec["triggers"]}
    q, kv = by_name[QUEUE_TRIGGER], by_name[KV_TRIGGER]
    hpa = spec["advanced"]["horizontalPodAutoscalerConfig"]
    rows = [
        ("scale target", f"{spec['scaleTargetRef']['kind']}/{spec['scaleTargetRef']['name']}", "the serving layer"),
        ("queue trigger", q["metadata"]["query"], "ADR-0014"),
        ("  threshold (waiting per replica), metricType", f"{q['metadata']['threshold']}, {q.get('metricType')}",
         "capacity.queue_target"),
        ("  activationThreshold", q["metadata"]["activationThreshold"], "autoscaling.activation_queue"),
        ("KV-cache trigger", kv["metadata"]["query"], "ADR-0003 headroom"),
        ("  threshold (average fill), metricType", f"{kv['metadata']['threshold']}, {kv.get('metricType')}",
         "autoscaling.kv_cache_target"),
        ("  activationThreshold", kv["metadata"]["activationThreshold"], "autoscaling.activation_kv_cache"),
        ("minReplicaCount (floor)", spec["minReplicaCount"], f"serving.replicas (tier {profile.tier})"),
        ("maxReplicaCount", spec["maxReplicaCount"], "capacity.max_replicas"),
        ("pollingInterval (s)", spec["pollingInterval"], "capacity.interval_seconds"),
        ("scale-down window (s)", hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
         "capacity.cooldown_seconds"),
        ("cooldownPeriod, to zero (s)", spec["cooldownPeriod"], "autoscaling.cooldown_seconds"),
        ("Prometheus", q["metadata"]["serverAddress"], "autoscaling.prometheus_address"),
        ("HPA KEDA makes", hpa.get("name", HPA_NAME), "-"),
        ("paused", "yes" if policy_of(so).paused else "no", "autoscaling.paused (null: paused on the cost tier)"),
    ]
    return pd.DataFrame(rows, columns=["setting", "value", "from"]).set_index("setting")


def examples(policy: Policy, current: int = 1) -> pd.DataFrame:
    """The formula on a few chosen signals, with this profile's policy: the worked examples of ADR-0014."""
    cases = [(0, 0.0), (3, 0.2), (12, 0.3), (12, 0.95), (40, 0.5), (1000, 0.99)]
    rows = []
    for waiting, kv in cases:
        d = desired_replicas({QUEUE_TRIGGER: waiting, KV_TRIGGER: kv}, policy.triggers, current=current,
                             min_replicas=policy.min_replicas, max_replicas=policy.max_replicas)
        rows.append({"waiting (sum)": waiting, "KV cache (avg)": kv, "current": current,
                     **{f"{k} asks": v for k, v in d.per_trigger.items()}, "desired": d.replicas, "why": d.reason})
    return _dashes(pd.DataFrame(rows))


def _dashes(table: pd.DataFrame) -> pd.DataFrame:
    """A trigger's own count is absent where KEDA decided alone (to or from zero): shown as "-", not NaN."""
    for column in [c for c in table.columns if c.endswith(" asks")]:
        table[column] = table[column].map(lambda v: "-" if pd.isna(v) else int(v)).astype(object)
    return table


def decide(sampled: Sampled, policy: Policy, current: int = 1) -> pd.DataFrame:
    """Each sample with what each trigger asks for, the ScaledObject's count and the count after the window."""
    rows = []
    for s in sampled.samples.to_dict("records"):
        values = {t.name: float(s[SIGNAL[t.name]]) for t in policy.triggers}
        d = desired_replicas(values, policy.triggers, current=current, min_replicas=policy.min_replicas,
                             max_replicas=policy.max_replicas)
        rows.append({**s, **{f"{k} asks": v for k, v in d.per_trigger.items()}, "desired": d.replicas,
                     "why": d.reason})
    table = _dashes(pd.DataFrame(rows))
    if not table.empty:
        table["after window"] = stabilised(list(table["t_s"]), list(table["desired"]), policy.scale_down_window_s)
    return table


def plot(table: pd.DataFrame, policy: Policy) -> Any:
    """Left: the signals over the load; right: the replicas the ScaledObject would ask for."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    left.step(table["t_s"], table["waiting"], where="post", label="waiting (sum)")
    left.step(table["t_s"], table["running"], where="post", label="running")
    queue = next(t for t in policy.triggers if t.name == QUEUE_TRIGGER)
    left.axhline(queue.threshold, color="grey", linestyle="--", linewidth=1, label=f"queue target {queue.threshold:g}")
    left.set_xlabel("seconds into the load")
    left.set_ylabel("requests")
    kv_axis = left.twinx()
    kv_axis.plot(table["t_s"], table["kv_cache"], color="tab:green", label="KV cache (fill)")
    kv_axis.set_ylim(0, 1)
    kv_axis.set_ylabel("KV-cache fill")
    handles = left.get_legend_handles_labels()[0] + kv_axis.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + kv_axis.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="upper right", fontsize=8)
    left.set_title("vLLM's signals, sampled from /metrics")
    right.step(table["t_s"], table["desired"], where="post", label="desired (per sample)")
    right.step(table["t_s"], table["after window"], where="post", linestyle=":",
               label=f"after the {policy.scale_down_window_s} s scale-down window")
    right.axhline(policy.min_replicas, color="grey", linestyle="--", linewidth=1, label="floor")
    right.set_ylim(-0.2, max(int(table["desired"].max()), policy.min_replicas, 1) + 1)
    right.set_xlabel("seconds into the load")
    right.set_ylabel("replicas")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend(loc="upper right", fontsize=8)
    right.set_title("replicas the ScaledObject would ask for")
    fig.tight_layout()
    return fig


def verify(profile: Profile, objects: list[dict[str, Any]], sampled: Sampled | None,
           table: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The chapter's checks: the rendered policy is the profile's, and the live computation had data."""
    so = scaled_object(objects)
    policy = policy_of(so)
    s = Settings.from_profile(profile)
    queries = " ".join(t["metadata"]["query"] for t in so["spec"]["triggers"])
    checks = [
        {"check": "the ScaledObject scales the vLLM Deployment", "expected": "Deployment/vllm",
         "observed": f"{so['spec']['scaleTargetRef']['kind']}/{so['spec']['scaleTargetRef']['name']}",
         "pass": so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm"}},
        {"check": "queue trigger: sum of waiting requests, per-replica target", "expected": f"{s.queue_target:g}",
         "observed": next(f"{t.threshold:g} ({t.metric_type})" for t in policy.triggers if t.name == QUEUE_TRIGGER),
         "pass": any(t.name == QUEUE_TRIGGER and t.threshold == s.queue_target and t.metric_type == "AverageValue"
                     for t in policy.triggers) and "sum(vllm:num_requests_waiting" in queries},
        {"check": "no trigger on GPU utilisation (ADR-0014)", "expected": "none", "observed":
         "none" if "gpu" not in queries.lower() else queries, "pass": "gpu" not in queries.lower()},
        {"check": "floor is the tier's", "expected": f">= {_tier_floor(profile)} (tier {profile.tier})",
         "observed": str(policy.min_replicas), "pass": policy.min_replicas >= _tier_floor(profile)
         and policy.min_replicas == s.min_replicas},
        {"check": "cost tier ships paused, others active (ADR-0014)", "expected": "paused" if s.paused else "active",
         "observed": "paused" if policy.paused else "active", "pass": policy.paused == s.paused},
    ]
    if sampled is not None and table is not None:
        checks += [
            {"check": "the load was answered", "expected": f"{sampled.ok + sampled.failed} answers",
             "observed": f"{sampled.ok} ok, {sampled.failed} failed", "pass": sampled.failed == 0 and sampled.ok > 0},
            {"check": "signals sampled during the load", "expected": ">= 3 samples",
             "observed": f"{len(table)} samples, {int((table['running'] > 0).sum())} with requests running",
             "pass": len(table) >= 3 and bool((table["running"] > 0).any())},
            {"check": "every desired count within the bounds", "expected":
             f"{policy.min_replicas}..{policy.max_replicas}", "observed":
             f"{int(table['desired'].min())}..{int(table['desired'].max())}",
             "pass": bool(table["desired"].between(policy.min_replicas, policy.max_replicas).all())},
        ]
    return checks


def _tier_floor(profile: Profile) -> int:
    return REPLICA_FLOOR[profile.tier]


def figures(table: pd.DataFrame, sampled: Sampled, policy: Policy) -> dict[str, Any]:
    """The numbers for the closing notes."""
    return {"samples": len(table), "load_seconds": sampled.seconds, "answers_ok": sampled.ok,
            "answers_failed": sampled.failed, "max_waiting": float(table["waiting"].max()),
            "max_running": float(table["running"].max()), "max_kv_cache": round(float(table["kv_cache"].max()), 4),
            "max_desired": int(table["desired"].max()), "floor": policy.min_replicas,
            "ceiling": policy.max_replicas}


def cluster_status(target: Any, layer: Any, timeout: float = 120.0) -> pd.DataFrame:
    """On a target where the layer has a part (a cluster): KEDA's status of the ScaledObject and its HPA; elsewhere
    one row saying what this target cannot show (its :meth:`limits`). A question to the target, not a branch on its
    kind."""
    if not target.has_part(layer):
        rows = [("KEDA status", target.limits() or "no cluster part")]
        return pd.DataFrame(rows, columns=["", "value"]).set_index("")
    part = target.part(layer)
    return part.table(part.status(timeout=timeout))


def cold_start_table(serving_objects: list[dict[str, Any]]) -> pd.DataFrame:
    """ADR-0025's levers as the rendered serving Deployment carries them (the serving layer's cold-start component)."""
    deployment = find(serving_objects, "Deployment", SCALED_OBJECT)  # the ScaledObject's target: Deployment/vllm
    pod = deployment["spec"]["template"]["spec"]
    server = next(c for c in pod["containers"] if c["name"] == "vllm")
    mount = next((m for m in server.get("volumeMounts", []) if m["name"] == "models"), {})
    claim = next((v.get("persistentVolumeClaim", {}).get("claimName") for v in pod.get("volumes", [])
                  if v["name"] == "models"), None)
    probe = server.get("startupProbe", {})
    budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    rows = [("weights", f"PVC {claim} at {mount.get('mountPath')}, "
                        f"{'read-only' if mount.get('readOnly') else 'read-write'} in the server", "ADR-0016 cache"),
            ("image pull", f"imagePullPolicy {server.get('imagePullPolicy', 'default')}; the pre-pull DaemonSet "
                           "keeps the image on each node", "this layer's DaemonSet"),
            ("runtime start", f"startupProbe {probe.get('failureThreshold')} x {probe.get('periodSeconds')} s "
                              f"= {budget} s", "autoscaling.startup_probe"),
            ("node provisioning", "the tier's floor keeps replicas warm", "serving.replicas")]
    return pd.DataFrame(rows, columns=["lever", "in the manifests", "from"]).set_index("lever")
