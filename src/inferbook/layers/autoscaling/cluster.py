"""The autoscaling layer on a cluster: what KEDA made of the ScaledObject, read back from its status.

After the objects are applied (the chapter's ``run.target.apply``), KEDA's operator reconciles the ScaledObject:
it writes conditions (``Ready``: the triggers' metadata is valid and the HPA exists; ``Active``: a trigger is above
its activation threshold; ``Paused``), the name of the HPA it made, and the external metric names it serves. The
HPA's own status holds the metric values it last read and the count it wants. This part waits for ``Ready`` and
reads both; it proves the cluster accepted the policy, not that load moves replicas (a longer drill's job).
The kube client is imported only when a status is read, so a local run never loads it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...layer import ClusterLayer
from .manifests import HPA_NAME, SCALED_OBJECT

SCALED_OBJECT_API = "keda.sh/v1alpha1"
HPA_API = "autoscaling/v2"
#: How long KEDA may take to reconcile a freshly applied ScaledObject.
READY_TIMEOUT_S = 120.0


class AutoscalingCluster(ClusterLayer):
    """Reads the ScaledObject's status and its HPA's through the kube client."""

    def _namespace(self) -> str:
        return str(self.profile.data["target"]["namespace"])

    def scaled_object(self, timeout: float = READY_TIMEOUT_S, **wait: Any) -> dict[str, Any]:
        """The ScaledObject once KEDA reports it Ready (its triggers valid, its HPA made)."""
        from ... import kube  # the cluster client only where a cluster is the target

        return kube.wait_condition(self.target.context, self._namespace(), SCALED_OBJECT_API, "ScaledObject",
                                   SCALED_OBJECT, timeout=timeout, condition="Ready", kubeconfig=self.target.kubeconfig,
                                   hints=(f"kubectl -n keda logs deploy/keda-operator | grep {SCALED_OBJECT}",),
                                   say=self.say, **wait)

    def hpa(self, name: str, timeout: float = READY_TIMEOUT_S, **wait: Any) -> dict[str, Any]:
        """The HPA KEDA made, once it is able to scale (condition AbleToScale)."""
        from ... import kube

        return kube.wait_condition(self.target.context, self._namespace(), HPA_API, "HorizontalPodAutoscaler", name,
                                   timeout=timeout, condition="AbleToScale", kubeconfig=self.target.kubeconfig,
                                   say=self.say, **wait)

    def status(self, timeout: float = READY_TIMEOUT_S, **wait: Any) -> dict[str, Any]:
        """The ScaledObject's conditions, its HPA and external metrics, and the HPA's current reading."""
        so = self.scaled_object(timeout, **wait)
        st = so.get("status") or {}
        conditions = {c["type"]: c for c in st.get("conditions", [])}
        hpa_name = st.get("hpaName") or HPA_NAME
        paused = conditions.get("Paused", {}).get("status") == "True"
        # A paused ScaledObject (the cost tier's) has its HPA removed by KEDA: nothing to wait for.
        hs = {} if paused else (self.hpa(hpa_name, timeout, **wait).get("status") or {})
        metrics = []
        for m in hs.get("currentMetrics") or []:
            ext = m.get("external") or {}
            current = ext.get("current") or {}
            metrics.append({"metric": (ext.get("metric") or {}).get("name", "?"),
                            "value": current.get("averageValue", current.get("value"))})
        return {
            "ready": conditions.get("Ready", {}).get("status") == "True",
            "active": conditions.get("Active", {}).get("status") == "True",
            "paused": paused,
            "conditions": conditions,
            "hpa": "- (paused: KEDA removes it)" if paused else hpa_name,
            "external_metrics": list(st.get("externalMetricNames") or []),
            "hpa_metrics": metrics,
            "current_replicas": hs.get("currentReplicas"),
            "desired_replicas": hs.get("desiredReplicas"),
        }

    def table(self, status: dict[str, Any]) -> pd.DataFrame:
        """The status as the chapter shows it."""
        rows = [("Ready", status["conditions"].get("Ready", {}).get("status", "-")),
                ("Active", status["conditions"].get("Active", {}).get("status", "-")),
                ("Paused", status["conditions"].get("Paused", {}).get("status", "-")),
                ("HPA", status["hpa"]),
                ("external metrics", ", ".join(status["external_metrics"]) or "-"),
                *((f"HPA reads {m['metric']}", m["value"]) for m in status["hpa_metrics"]),
                ("replicas: current / desired", f"{status['current_replicas']} / {status['desired_replicas']}")]
        return pd.DataFrame(rows, columns=["", "value"]).set_index("")
