"""The security layer on a cluster: what only a cluster shows, proven with real connections and admissions.

ADR-0029: "the check must test real connections, not the presence of the object". Two proofs, each
against the kube client's public functions:

- admission: a Pod asking for ``nvidia.com/gpu`` without ``kueue.x-k8s.io/queue-name`` is sent to the API
  server; on an Enforce tier Kyverno's webhook must refuse it, on an Audit tier it is admitted (and reported)
  and deleted again;
- network: a Job in the tenant namespace opens a TCP connection to vLLM's Service (busybox ``nc -z``, one
  attempt, no retry); it must fail (the default-deny holds), while the gateway's own traffic keeps flowing
  (the gateway chapter's calls).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ... import kube
from ...layer import ClusterLayer
from .manifests import QUEUE_LABEL, failure_action, serving_namespace, tenant_namespace
from .probes import DIGEST_IMAGE, PROOFS
from .probes import pod as _pod

PROBE_JOB = "security-probe-tenant-to-vllm"
GPU_POD = "security-probe-gpu-unlabelled"
VLLM_SERVICE, VLLM_PORT = "vllm", 8000
PROBE_TIMEOUT_S = 90.0


def gpu_probe(namespace: str) -> dict[str, Any]:
    """The Pod the GPU gate must refuse: it asks for a GPU and names no queue."""
    pod = _pod(GPU_POD, namespace, {"app.kubernetes.io/name": GPU_POD, "app.kubernetes.io/part-of": "inferbook"},
               DIGEST_IMAGE, True)
    pod["spec"]["containers"][0]["command"] = ["true"]
    pod["spec"]["restartPolicy"] = "Never"
    assert QUEUE_LABEL not in pod["metadata"]["labels"]
    return pod


def tcp_probe_job(namespace: str, host: str, port: int) -> dict[str, Any]:
    """A Job whose one pod succeeds iff a TCP connection to ``host:port`` opens within 5 s (no retry)."""
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": PROBE_JOB, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": PROBE_JOB, "app.kubernetes.io/part-of": "inferbook"}},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 600,
                     "template": {"metadata": {"labels": {"app.kubernetes.io/name": PROBE_JOB}}, "spec": {
                         "restartPolicy": "Never",
                         "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [{"name": "probe", "image": DIGEST_IMAGE,
                                         "command": ["nc", "-z", "-w", "5", host, str(port)],
                                         "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                                       "limits": {"cpu": "100m", "memory": "32Mi"}},
                                         "securityContext": {"allowPrivilegeEscalation": False,
                                                             "readOnlyRootFilesystem": True,
                                                             "capabilities": {"drop": ["ALL"]}}}]}}}}


class SecurityCluster(ClusterLayer):
    """The layer's proofs on the profile's cluster (after its objects and the serving layer's are applied)."""

    @property
    def _context(self) -> tuple[str, str | None]:
        return str(self.profile.data["target"]["context"]), self.profile.data["target"].get("kubeconfig")

    def admission(self) -> dict[str, Any]:
        """Send the unlabelled GPU pod: refused on Enforce; on Audit admitted, then deleted."""
        context, kubeconfig = self._context
        namespace = tenant_namespace(self.profile)
        pod = gpu_probe(namespace)
        enforce = failure_action(self.profile) == "Enforce"
        try:
            kube.apply([pod], context, kubeconfig=kubeconfig, namespace=namespace, say=self.say)
        except kube.KubeError as exc:
            refused = "require-gpu-queue-label" in str(exc) or "denied" in str(exc).lower()
            return {"proof": PROOFS[0], "result": f"refused: {str(exc)[:160]}",
                    "pass": enforce and refused}
        kube.delete([pod], context, kubeconfig=kubeconfig, namespace=namespace, say=self.say)
        return {"proof": PROOFS[0], "result": "admitted (Audit: reported, not refused)", "pass": not enforce}

    def tenant_to_vllm(self) -> dict[str, Any]:
        """Run the tenant's TCP probe to vLLM: the Job must fail (connection refused or timed out)."""
        context, kubeconfig = self._context
        namespace = tenant_namespace(self.profile)
        host = f"{VLLM_SERVICE}.{serving_namespace(self.profile)}.svc.cluster.local"
        job = tcp_probe_job(namespace, host, VLLM_PORT)
        kube.run_job(job, context, namespace=namespace, kubeconfig=kubeconfig, say=self.say)
        try:
            kube.wait_job(context, namespace, PROBE_JOB, timeout=PROBE_TIMEOUT_S, kubeconfig=kubeconfig,
                          say=self.say)
        except kube.JobFailed:
            return {"proof": PROOFS[1], "result": f"refused: the probe could not connect to {host}:{VLLM_PORT}",
                    "pass": True}
        return {"proof": PROOFS[1], "result": f"connected to {host}:{VLLM_PORT}: the default-deny does not hold "
                                              "(is NetworkPolicy enforced by this cluster's network plugin?)",
                "pass": False}

    def prove(self, objects: list[dict[str, Any]]) -> pd.DataFrame:
        """Both proofs, as the rows the chapter shows."""
        return pd.DataFrame([self.admission(), self.tenant_to_vllm()])
