"""The pods the security chapter submits (offline to the evaluators, live to a cluster): one definition for both."""

from __future__ import annotations

from typing import Any

#: A digest-pinned image a test pod may carry: busybox as the reference platform pinned it (reference-stack.md).
DIGEST_IMAGE = "busybox:1.38.0@sha256:fd8d9aa63ba2f0982b5304e1ee8d3b90a210bc1ffb5314d980eb6962f1a9715d"
TAG_IMAGE = "busybox:1.38.0"
#: The live proofs, by the name the verification rows give them (shown as "needs a cluster" elsewhere).
PROOFS = ("unlabelled GPU pod at admission", "tenant pod's TCP connection to vLLM")


def pod(name: str, namespace: str, labels: dict[str, str], image: str, gpu: bool) -> dict[str, Any]:
    """A one-container Pod, asking for one ``nvidia.com/gpu`` when ``gpu``."""
    container: dict[str, Any] = {"name": "main", "image": image}
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [container]}}
