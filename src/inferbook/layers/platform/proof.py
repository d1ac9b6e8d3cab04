"""The proof's two GPU Jobs (built offline; the cluster part runs them, the chapter evaluates them offline too).

One asks for 1 ``nvidia.com/gpu`` (within the quota), one for the whole quota plus one (beyond it). Both queue in
the tenant's LocalQueue at batch priority and are created suspended, as Kueue's documentation asks.
"""

from __future__ import annotations

from typing import Any

from ...profile import Profile
from .manifests import GPU_RESOURCE, LOCAL_QUEUE, PRIORITY_LABEL, QUEUE_LABEL, gpu_quota, tenant_namespace

#: The Jobs' image: busybox, pinned by the digest the reference platform used (reference stack, ADR-0000).
PROOF_IMAGE = "busybox:1.38.0@sha256:fd8d9aa63ba2f0982b5304e1ee8d3b90a210bc1ffb5314d980eb6962f1a9715d"
WITHIN, OVER = "kueue-proof-within-quota", "kueue-proof-over-quota"


def proof_job(profile: Profile, name: str, gpus: int) -> dict[str, Any]:
    """A suspended batch Job in the tenant's LocalQueue asking for ``gpus`` GPUs; it prints one line and ends."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "platform",
              "app.kubernetes.io/part-of": "inferbook", "app.kubernetes.io/managed-by": "inferbook",
              QUEUE_LABEL: LOCAL_QUEUE, PRIORITY_LABEL: "batch"}
    container = {
        "name": "proof", "image": PROOF_IMAGE, "command": ["sh", "-c", f"echo admitted by Kueue: {name}"],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                      "limits": {"cpu": "100m", "memory": "64Mi", GPU_RESOURCE: str(gpus)}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": tenant_namespace(profile), "labels": labels},
        "spec": {
            "suspend": True, "backoffLimit": 0, "ttlSecondsAfterFinished": 600,
            "template": {"metadata": {"labels": labels}, "spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [container]}},
        },
    }


def proof_jobs(profile: Profile) -> list[dict[str, Any]]:
    """The two Jobs of the proof: 1 GPU (within the quota) and the quota plus one (beyond it)."""
    return [proof_job(profile, WITHIN, 1), proof_job(profile, OVER, gpu_quota(profile) + 1)]
