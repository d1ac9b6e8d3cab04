"""The platform layer on a cluster: prove that Kueue holds the quota and that the secret store is Ready.

Applying the layer's objects is the target's job (the chapter does it first); what only a running Kueue and a
running External Secrets Operator can show is proven here with two small GPU Jobs in the tenant's LocalQueue:

- one asking for 1 ``nvidia.com/gpu``, within the quota: Kueue admits it (unsuspends it), so it runs to completion;
- one asking for one GPU more than the whole quota: Kueue never admits it, so it stays suspended (the Job
  controller's ``Suspended`` condition stays True) after the first one has run;

and the ClusterSecretStore ``secret-store`` reports ``Ready`` (its provider answered with the configured identity).
Both Jobs are created suspended, as Kueue's documentation asks (the webhook would suspend them too), and are
deleted at the end. Kept apart from the layer's offline code so that a local run never imports the cluster client.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from ... import kube
from ...layer import ClusterLayer
from .manifests import GPU_RESOURCE, SECRET_STORE, gpu_quota, kueue_on, tenant_namespace
from .proof import OVER, WITHIN, proof_jobs

#: Seconds for the admitted Job to complete: on a cost-tier cluster its GPU node is created first (ADR-0001).
ADMITTED_TIMEOUT = 900.0
#: Seconds for the Job controller to report the over-quota Job suspended, and for the store to be Ready.
SUSPENDED_TIMEOUT = 120.0
STORE_TIMEOUT = 120.0


class PlatformCluster(ClusterLayer):
    """The layer's proof on a kube target: two GPU Jobs against the quota, and the secret store's readiness."""

    #: Where the waits read the time (a test passes the double's virtual clock).
    clock = staticmethod(time.monotonic)

    def _kube(self) -> dict[str, Any]:
        return {"kubeconfig": self.target.kubeconfig, "say": self.say}

    def prove(self, objects: list[dict[str, Any]]) -> pd.DataFrame:
        """Rows (check, expected, observed, pass) of what the cluster showed."""
        rows = self._quota_rows() if kueue_on(self.profile) else [{
            "check": "Kueue admits within the quota, holds beyond it", "expected": "no Kueue on a CPU profile",
            "observed": "gpu.type none: no ClusterQueue rendered, nothing to prove", "pass": True}]
        rows.append(self._store_row())
        return pd.DataFrame(rows)

    def _quota_rows(self) -> list[dict[str, Any]]:
        context, namespace = self.target.context, tenant_namespace(self.profile)
        within, over = proof_jobs(self.profile)
        quota = gpu_quota(self.profile)
        try:
            for job in (within, over):
                kube.run_job(job, context, namespace=namespace, clock=self.clock, **self._kube())
            done = kube.wait_job(context, namespace, WITHIN, timeout=ADMITTED_TIMEOUT, clock=self.clock,
                                 **self._kube())
            held = kube.wait_condition(context, namespace, "batch/v1", "Job", OVER, condition="Suspended",
                                       timeout=SUSPENDED_TIMEOUT, clock=self.clock, **self._kube())
        finally:
            kube.delete([within, over], context, namespace=namespace, **self._kube())
        suspended = (held.get("spec") or {}).get("suspend") is True
        return [
            {"check": f"a Job asking 1 {GPU_RESOURCE} of {quota} is admitted and runs",
             "expected": "admitted (unsuspended), complete",
             "observed": f"complete, {(done.get('status') or {}).get('succeeded', 0)} pod(s) succeeded",
             "pass": True},
            {"check": f"a Job asking {quota + 1} {GPU_RESOURCE} (beyond the quota of {quota}) is held",
             "expected": "suspended, after the first one ran",
             "observed": "suspended (Suspended=True, spec.suspend true)" if suspended
             else "running: Kueue admitted it (is the ClusterQueue's quota larger than rendered?)",
             "pass": suspended},
        ]

    def _store_row(self) -> dict[str, Any]:
        provider = self.profile.data["platform"]["secret_store"]["provider"]
        store = kube.wait_condition(self.target.context, None, "external-secrets.io/v1", "ClusterSecretStore",
                                    SECRET_STORE, condition="Ready", timeout=STORE_TIMEOUT, clock=self.clock,
                                    **self._kube())
        ready = next((c for c in (store.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
        return {"check": f"ClusterSecretStore {SECRET_STORE} ({provider}) is Ready", "expected": "Ready=True",
                "observed": f"Ready={ready.get('status')} ({ready.get('reason', '-')})", "pass": True}
