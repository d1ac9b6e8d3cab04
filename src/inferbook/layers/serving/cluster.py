"""The serving layer on a cluster: apply, wait for the rollout, reach the Service, fetch the key.

Kept apart from :mod:`.local` (the local process) so that a local run never imports the cluster client;
both return the same :class:`~.endpoint.Endpoint`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
from typing import Any, Callable

from ... import kube
from ...errors import InferbookError
from ...layer import ClusterLayer
from ...manifests import find
from ...profile import Profile
from .endpoint import Endpoint, probe
from .manifests import LAYER

SERVICE_PORT = 8000
#: The port of the llama-server Service (manifests/serving/components/llamacpp/service.yaml).
CODER_SERVICE_PORT = 8080
KEY_SECRET, KEY_FIELD = "vllm-api-key", "api-key"


def _workload(profile: Profile) -> tuple[str, str]:
    """The Deployment and Service that serve: ours, or the ones KServe creates for the InferenceService."""
    if "kserve" in profile.features:
        return "vllm-predictor", "vllm-predictor"
    return "vllm", "vllm"


class ClusterServing(ClusterLayer):
    """The serving layer's steps on a kube target (``target.part(serving)``): the same method names as
    :class:`~.local.LocalServing` (``provision``, ``connect``, ``reach_coder``), each giving an :class:`Endpoint`."""

    def provision(self, objects: list[dict[str, Any]], timeout: float = 900) -> Endpoint:
        """Server-side apply the layer, wait for its rollout, and port-forward to its Service.

        The cost tier ships with 0 replicas (scale-to-zero). A smoke test needs one
        replica, so the chapter applies the Deployment once more with 1 replica and says
        so; scaling it back to the profile's count is left to the operator.
        """
        profile = self.profile
        applied = self.target.apply(objects, LAYER)
        deployment, _ = _workload(profile)
        if "kserve" not in profile.features and profile.data["serving"]["replicas"] == 0:
            self.say("serving: the profile keeps 0 replicas (scale-to-zero); scaling to 1 for the smoke test")
            scaled = copy.deepcopy(find(objects, "Deployment", "vllm"))
            scaled["spec"]["replicas"] = 1
            self.target.apply([scaled], LAYER)
        kube.wait_rollout(self.context, self.namespace, deployment, timeout=timeout, kubeconfig=self.kubeconfig,
                          say=self.say)
        return self._reach({"applied": len(applied)})

    def connect(self, timeout: float = 300) -> Endpoint:
        """Reach the vLLM the serving chapter applied, without applying anything: wait for it, port-forward.

        For later chapters that read vLLM itself (its /metrics, to prove a refused call never reached
        it) while the tenants' traffic goes through the cluster's own Services.
        """
        profile = self.profile
        deployment, _ = _workload(profile)
        kube.wait_rollout(self.context, self.namespace, deployment, timeout=timeout, kubeconfig=self.kubeconfig,
                          say=self.say)
        try:
            return self._reach({"applied": 0})
        except kube.PortForwardError as exc:
            if profile.data["serving"]["replicas"] == 0 and "kserve" not in profile.features:
                raise kube.PortForwardError(
                    f"{exc}. The profile keeps serving.replicas: 0 (scale-to-zero); run the serving chapter first, "
                    "which scales it to 1 for the smoke test") from exc
            raise

    def _reach(self, facts: dict[str, Any]) -> Endpoint:
        """Port-forward to the rolled-out serving Service and check that vLLM answers with the Secret's key."""
        context, namespace = self.context, self.namespace
        deployment, service = _workload(self.profile)
        stack = contextlib.ExitStack()
        base = stack.enter_context(self.target.expose(namespace, service, SERVICE_PORT))
        key = _secret(context, namespace)
        found = probe(base, key())
        if not found:
            stack.close()
            raise InferbookError(
                f"the vLLM Service {namespace}/{service} answered the rollout but not /v1/models with the key from "
                f"Secret {KEY_SECRET}; check `kubectl --context {context} -n {namespace} logs deploy/{deployment}`"
            )
        status = {"healthy": True, "version": found["version"], **facts, "reused": False}
        return Endpoint(f"{base}/v1", base, self.profile.data["models"]["chat"]["served_name"], f"cluster ({context})",
                        key, status, closer=stack)

    def reach_coder(self, timeout: float = 600) -> Endpoint:
        """The coder's llama-server on a CPU cluster (models.coder): wait for its rollout, port-forward to its
        Service, check that it serves the coder with the Secret's key."""
        from .local_llamacpp import probe as probe_llama
        from .manifests import LLAMACPP_NAME

        context, namespace = self.context, self.namespace
        kube.wait_rollout(context, namespace, LLAMACPP_NAME, timeout=timeout, kubeconfig=self.kubeconfig, say=self.say)
        stack = contextlib.ExitStack()
        base = stack.enter_context(self.target.expose(namespace, LLAMACPP_NAME, CODER_SERVICE_PORT))
        key = _secret(context, namespace)
        served = self.profile.data["models"]["coder"]["served_name"]
        found = probe_llama(base, key())
        if not found or served not in found["models"]:
            stack.close()
            raise InferbookError(f"the Service {namespace}/{LLAMACPP_NAME} does not serve {served} with the key from "
                                 f"Secret {KEY_SECRET}; check `kubectl --context {context} -n {namespace} logs deploy/"
                                 f"{LLAMACPP_NAME}`")
        return Endpoint(f"{base}/v1", base, served, f"cluster ({context}), llama.cpp", key,
                        {"healthy": True, "version": "llama.cpp", "reused": False}, closer=stack)


def _secret(context: str, namespace: str) -> Callable[[], str]:
    """A callable that reads the vLLM key from its Secret when asked (the value never sits in a variable)."""
    from kubernetes import client, config

    def read() -> str:
        # $KUBECONFIG read now: the client library reads it only once, at import
        api = client.CoreV1Api(config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"), context=context))
        try:
            secret = api.read_namespaced_secret(KEY_SECRET, namespace)
        except client.ApiException as exc:
            raise InferbookError(
                f"cannot read Secret {namespace}/{KEY_SECRET} (HTTP {exc.status}); create it (External Secrets "
                f"does on a configured cluster) or: kubectl -n {namespace} create secret generic {KEY_SECRET} "
                f"--from-literal={KEY_FIELD}=..."
            ) from None
        return base64.b64decode(secret.data[KEY_FIELD]).decode()

    return read
