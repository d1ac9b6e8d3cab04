"""The replica count a KEDA ScaledObject asks for: KEDA's activation and the HPA's formula, as pure functions.

Written from the two controllers' documented rules, so that the chapter can say what the rendered ScaledObject
would do with the metrics it reads, and the tests can pin it:

- KEDA (activation phase): a trigger is *active* when its metric is above its ``activationThreshold``. With
  ``minReplicaCount`` 0, a fleet with no active trigger is scaled to zero (after ``cooldownPeriod``) and one at zero
  with an active trigger is scaled to one; between one and the ceiling the HPA decides.
- The HPA (scaling phase), per external metric, with its default tolerance of 10 %:
  ``AverageValue`` (KEDA's default for the Prometheus scaler): the query's value is the fleet's total, and the HPA
  asks for ``ceil(value / threshold)``; ``Value``: the query's value is compared as it is, and the HPA asks for
  ``ceil(current x value / threshold)``. Within the tolerance (the ratio to what the current fleet is meant to hold
  is within 1 +- 0.1) a metric asks for the current count. The HPA takes the largest count over the metrics, never
  below ``max(minReplicaCount, 1)`` nor above ``maxReplicaCount``.
- Over time the HPA's scale-down stabilisation window keeps the largest recommendation of the last window
  (:func:`stabilised`); rate limits (the HPA's scale-up defaults, the base's one pod a minute down) are not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

from ...errors import InferbookError

#: The HPA controller's default ``--horizontal-pod-autoscaler-tolerance``.
TOLERANCE = 0.1

MetricType = Literal["AverageValue", "Value"]


class ScalingInputError(InferbookError):
    """A trigger or a metric the formula cannot use (no threshold, a metric missing from a sample)."""


@dataclass(frozen=True)
class Trigger:
    """One ScaledObject trigger as the formula needs it: its name, metric type, threshold and activation."""

    name: str
    metric_type: MetricType
    threshold: float
    activation: float = 0.0

    def __post_init__(self) -> None:
        if self.threshold <= 0:
            raise ScalingInputError(f"trigger '{self.name}' has threshold {self.threshold}; the HPA divides by it. "
                                    "Fix: a threshold above 0")
        if self.metric_type not in ("AverageValue", "Value"):
            raise ScalingInputError(f"trigger '{self.name}' has metricType {self.metric_type!r}. "
                                    "Fix: AverageValue or Value (Utilization is for CPU and memory triggers)")


@dataclass(frozen=True)
class Decision:
    """What the ScaledObject asks for at one moment, and why."""

    replicas: int
    active: bool
    #: Each trigger's own count (before the bounds); empty when KEDA decided alone (to or from zero).
    per_trigger: dict[str, int] = field(default_factory=dict)
    reason: str = ""


def trigger_replicas(trigger: Trigger, value: float, current: int, tolerance: float = TOLERANCE) -> int:
    """The count the HPA computes from one external metric, with ``current`` replicas running."""
    if trigger.metric_type == "AverageValue":
        if current > 0 and abs(1.0 - value / (trigger.threshold * current)) <= tolerance:
            return current
        return math.ceil(value / trigger.threshold)
    ratio = value / trigger.threshold
    if current == 0:
        return math.ceil(ratio)
    if abs(1.0 - ratio) <= tolerance:
        return current
    return math.ceil(ratio * current)


def desired_replicas(values: Mapping[str, float], triggers: Sequence[Trigger], *, current: int, min_replicas: int,
                     max_replicas: int, tolerance: float = TOLERANCE) -> Decision:
    """The replica count the ScaledObject asks for, given each trigger's metric value and the current count."""
    if not triggers:
        raise ScalingInputError("no trigger given. Fix: pass the ScaledObject's triggers")
    if min_replicas < 0 or max_replicas < max(min_replicas, 1):
        raise ScalingInputError(f"bounds min {min_replicas}, max {max_replicas}: KEDA needs 0 <= min <= max and "
                                "max >= 1. Fix: the profile's serving.replicas and capacity.max_replicas")
    missing = [t.name for t in triggers if t.name not in values]
    if missing:
        raise ScalingInputError(f"no value for trigger(s) {', '.join(missing)}. Fix: sample every trigger's metric")
    active = any(values[t.name] > t.activation for t in triggers)
    if min_replicas == 0 and not active:
        return Decision(0, False, reason="no trigger above its activation threshold: scale to zero")
    if current == 0:
        return Decision(max(min_replicas, 1), active,
                        reason="a trigger is active: KEDA scales from zero, then the HPA decides")
    per = {t.name: trigger_replicas(t, values[t.name], current, tolerance) for t in triggers}
    wanted = max(per.values())
    bounded = min(max(wanted, min_replicas, 1), max_replicas)
    reason = ("at the ceiling" if bounded < wanted else "at the floor" if bounded > wanted
              else f"set by {max(per, key=lambda k: per[k])}")
    return Decision(bounded, active, per, reason)


def stabilised(times_s: Sequence[float], recommendations: Sequence[int], window_s: float) -> list[int]:
    """The HPA's scale-down stabilisation: at each moment, the largest recommendation of the last ``window_s``."""
    if len(times_s) != len(recommendations):
        raise ScalingInputError("times and recommendations differ in length. Fix: one time per recommendation")
    out = []
    for i, t in enumerate(times_s):
        out.append(max(r for s, r in zip(times_s[:i + 1], recommendations[:i + 1], strict=True) if s >= t - window_s))
    return out
