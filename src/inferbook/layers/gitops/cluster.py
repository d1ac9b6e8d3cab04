"""The gitops layer on a cluster: apply the project and the Applications, then wait for Argo CD to converge.

Argo CD itself is installed beforehand (ADR-0028: the bootstrap is the one seam). Argo CD reports an
Application's state as ``status.sync.status`` (Synced when the cluster matches the repository at the
revision) and ``status.health.status`` (Healthy when every object it owns is); the chapter's proof on a
cluster is every Application reaching both, in wave order. The cluster client is imported only when a wait
runs, so a local run never loads it.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from ...layer import ClusterLayer
from .applications import API_VERSION, name_of, of, policy_name, wave_of

#: How long each Application may take to converge when the chapter does not say (a first sync pulls images).
DEFAULT_TIMEOUT_S = 900.0


def converged(app: dict[str, Any]) -> tuple[bool, str]:
    """(Synced and Healthy, "sync S, health H at R"): what Argo CD last reported for one Application."""
    status = app.get("status") or {}
    sync = status.get("sync") or {}
    health = (status.get("health") or {}).get("status") or "Unknown"
    state = sync.get("status") or "Unknown"
    at = f" at {str(sync['revision'])[:12]}" if sync.get("revision") else ""
    return state == "Synced" and health == "Healthy", f"sync {state}, health {health}{at}"


class ClusterGitOps(ClusterLayer):
    """Apply the AppProject and Applications with the target, then wait for each to be Synced and Healthy."""

    def deliver(self, objects: list[dict[str, Any]], timeout: float = DEFAULT_TIMEOUT_S) -> pd.DataFrame:
        """Apply ``objects`` (the layer's render) and wait (:meth:`converge`)."""
        self.target.apply(objects, "gitops")
        return self.converge(objects, timeout)

    def converge(self, objects: list[dict[str, Any]], timeout: float = DEFAULT_TIMEOUT_S,
                 clock: Any = time.monotonic) -> pd.DataFrame:
        """Wait, in wave order, for every Application to be Synced and Healthy; one row each.

        ``timeout`` bounds the whole wait. A manual (prod) Application waits for a human's sync: the timeout
        message says which command starts it.
        """
        from ... import kube  # the cluster client only where a cluster is the target

        deadline = clock() + timeout
        rows = []
        for app in of(objects):
            name = app["metadata"]["name"]
            namespace = app["metadata"]["namespace"]
            layer = name.removeprefix(name_of(""))
            hints = [] if policy_name(app) != "manual" else [
                f"argocd app sync {namespace}/{name}  (the sync policy is manual on this tier: a human syncs)"]
            seen = kube.wait_status(self.target.context, namespace, API_VERSION, "Application", name,
                                    timeout=max(deadline - clock(), 0.0), state=converged,
                                    goal=("become Synced and Healthy", "became Synced and Healthy"), hints=hints,
                                    kubeconfig=self.target.kubeconfig, say=self.say, clock=clock)
            status = seen.get("status") or {}
            rows.append({"layer": layer, "application": name, "sync wave": wave_of(app),
                         "sync": (status.get("sync") or {}).get("status"),
                         "health": (status.get("health") or {}).get("status"),
                         "revision": (status.get("sync") or {}).get("revision", "-")})
        return pd.DataFrame(rows, columns=["layer", "application", "sync wave", "sync", "health", "revision"])
