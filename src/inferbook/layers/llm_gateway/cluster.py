"""The llm-gateway layer on a cluster: the operators' objects, then the database, the migration, the proxy.

Kept apart from :mod:`.local` (the local processes) so that a local run never imports the cluster
client; both return a :class:`~.endpoint.GatewayEndpoint`.

The layer is applied in stages, each waiting for what the next one needs (applying everything at once
would start the proxy's pods before their database and schema exist, to crash-loop until they do):

1. everything but the migration Job and the Deployments: the CloudNativePG ``Cluster``, the
   ExternalSecrets, the ConfigMap, the Services (on prod also the PodDisruptionBudget). A CRD that is
   not installed stops the step before anything is written, naming the operator to install;
2. the ``Cluster`` until it is Ready with every instance ready: CloudNativePG has then created the
   Secret ``litellm-db-app`` that the migration and the proxy read their ``DATABASE_URL`` from;
3. the migration Job, re-run on every apply (a finished one is deleted first, as the Argo CD hook
   policy in migrate-job.yaml does), until it completes: the proxy runs with
   ``DISABLE_SCHEMA_UPDATE=true`` and must start on a migrated schema of its own release;
4. the Deployments (Redis on prod, then the proxy) until they have rolled out;
5. a port-forward to the proxy's Service and a health check: database connected, master key accepted.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Any, Callable

from ... import kube
from ...errors import InferbookError
from ...layer import ClusterLayer
from ...manifests import container, find
from ...say import Say
from . import manifests
from .endpoint import GatewayEndpoint, proxy_healthy
from .manifests import MASTER_KEY_SECRET

#: The schema-migration Job of manifests/llm-gateway/litellm/migrate-job.yaml.
MIGRATION_JOB = "litellm-migrate"
CNPG_API_VERSION = "postgresql.cnpg.io/v1"
MASTER_KEY_ENV = "LITELLM_MASTER_KEY"


class ClusterGateway(ClusterLayer):
    """The llm-gateway layer's steps on a kube target (``target.part(llm_gateway)``): the same method names as
    :class:`~.local.LocalGateway` (``provision``, ``connect``), each giving a :class:`GatewayEndpoint`."""

    def provision(self, objects: list[dict[str, Any]], timeout: float = 900,
                  clock: kube.Clock = time.monotonic) -> GatewayEndpoint:
        """Apply the rendered llm-gateway ``objects`` in stages, wait for each, and reach the proxy.

        ``timeout`` bounds the whole step (database, migration and rollout together), not each wait; every
        wait reads the time from ``clock`` (tests pass a virtual one).
        """
        context, namespace, kubeconfig, say = self.context, self.namespace, self.kubeconfig, self.say
        deadline = clock() + timeout
        first, job, deployments = _stages(objects)
        database = find(objects, "Cluster", manifests.GATEWAY_DB_CLUSTER)

        applied = _apply_first(first, objects, context, namespace, kubeconfig, say)
        ready = _wait_database(context, namespace, kubeconfig, database["metadata"]["name"], _left(deadline, clock),
                               say, clock)
        applied.append(kube.run_job(job, context, namespace=namespace, kubeconfig=kubeconfig, say=say, clock=clock))
        kube.wait_job(context, namespace, MIGRATION_JOB, timeout=_left(deadline, clock), kubeconfig=kubeconfig,
                      say=say, clock=clock)
        applied += kube.apply(deployments, context, kubeconfig=kubeconfig, namespace=namespace, say=say)
        for deployment in deployments:
            kube.wait_rollout(context, namespace, deployment["metadata"]["name"], timeout=_left(deadline, clock),
                              kubeconfig=kubeconfig, say=say, clock=clock)

        status = {"healthy": True, "database": f"CloudNativePG Cluster {namespace}/{database['metadata']['name']}: "
                                               f"{_instances(ready)}",
                  "migration": f"Job {namespace}/{MIGRATION_JOB} complete", "applied": _summary(applied),
                  "reused": False}
        proxy = find(objects, "Deployment", manifests.GATEWAY_NAME)
        return self._reach(objects, _master_key(context, namespace, kubeconfig, proxy, objects), status)

    def connect(self, timeout: float = 300) -> GatewayEndpoint:
        """Reach the gateway the llm-gateway chapter applied, without applying anything: wait, port-forward.

        For later chapters (the tenant's experience) that need the gateway's URL and its admin API.
        """
        objects = manifests.MANIFESTS.render(self.profile, self.layout)
        kube.wait_rollout(self.context, self.namespace, manifests.GATEWAY_NAME, timeout=timeout,
                          kubeconfig=self.kubeconfig, say=self.say)
        proxy = find(objects, "Deployment", manifests.GATEWAY_NAME)
        return self._reach(objects, _master_key(self.context, self.namespace, self.kubeconfig, proxy, objects),
                           {"healthy": True, "reused": True})

    def _reach(self, objects: list[dict[str, Any]], master_key: Callable[[], str],
               status: dict[str, Any]) -> GatewayEndpoint:
        """Stage 5: port-forward to the proxy's Service; healthy means database connected and master key accepted."""
        context, namespace = self.context, self.namespace
        service = find(objects, "Service", manifests.GATEWAY_NAME)
        port = int(service["spec"]["ports"][0]["port"])
        stack = contextlib.ExitStack()
        base = stack.enter_context(self.target.expose(namespace, manifests.GATEWAY_NAME, port))
        try:
            healthy = proxy_healthy(base, master_key())
        except BaseException:
            stack.close()
            raise
        if not healthy:
            stack.close()
            k = f"kubectl --context {context} -n {namespace}"
            raise InferbookError(
                f"the LiteLLM proxy behind Service {namespace}/{manifests.GATEWAY_NAME} rolled out but is not healthy "
                "(GET /health/readiness without a connected database, or the master key of its Secret refused). "
                f"Read `{k} logs deploy/{manifests.GATEWAY_NAME}`; if the ExternalSecret refreshed the key after the "
                f"pods started, they still hold the old one: `{k} rollout restart deploy/{manifests.GATEWAY_NAME}`")
        self.say(f"llm-gateway: the LiteLLM proxy answers at {base} (database connected, master key accepted)")
        return GatewayEndpoint(f"{base}/v1", base, master_key, f"cluster ({context})", status, stack)


def _stages(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """(what is applied first, the migration Job, the Deployments with the proxy last), in kustomize's order."""
    job = find(objects, "Job", MIGRATION_JOB)
    deployments = sorted((o for o in objects if o["kind"] == "Deployment"),
                         key=lambda o: o["metadata"]["name"] == manifests.GATEWAY_NAME)
    later = {id(job), *map(id, deployments)}
    return [o for o in objects if id(o) not in later], job, deployments


def _left(deadline: float, clock: kube.Clock = time.monotonic) -> float:
    """Whole seconds left of the step's budget, at least one (so that an exhausted budget still looks once)."""
    return float(max(1, round(deadline - clock())))


def _apply_first(first: list[dict[str, Any]], objects: list[dict[str, Any]], context: str, namespace: str,
                 kubeconfig: str | None, say: Say) -> list[kube.AppliedObject]:
    """Stage 1; a missing CRD is re-raised naming every operator this layer needs, not only the first missing."""
    try:
        return kube.apply(first, context, kubeconfig=kubeconfig, namespace=namespace, say=say)
    except kube.MissingCrd as exc:
        needed = _operators(objects)
        raise kube.MissingCrd(
            f"{exc}\n  The llm-gateway layer needs, installed before it is applied: {needed}; and a "
            "ClusterSecretStore named 'secret-store' holding the remote keys of externalsecrets.yaml",
            kind=exc.kind, api_version=exc.api_version) from exc


def _operators(objects: list[dict[str, Any]]) -> str:
    """Who installs the CRDs of the custom resources in ``objects``, with the kinds each one serves."""
    kinds: dict[str, list[str]] = {}
    for obj in objects:
        group = obj["apiVersion"].rpartition("/")[0]
        if group in kube.CRD_PROVIDERS and obj["kind"] not in kinds.setdefault(kube.CRD_PROVIDERS[group], []):
            kinds[kube.CRD_PROVIDERS[group]].append(obj["kind"])
    return "; ".join(f"{provider} ({', '.join(names)})" for provider, names in kinds.items())


def _instances(cluster: dict[str, Any]) -> str:
    """CloudNativePG's own account of a Cluster: ready instances of the desired count, and its phase."""
    status = cluster.get("status") or {}
    desired = (cluster.get("spec") or {}).get("instances", 1)
    phase = f", phase '{status['phase']}'" if status.get("phase") else ""
    return f"{status.get('readyInstances', 0)} of {desired} instance(s) ready{phase}"


def _missing_instances(cluster: dict[str, Any]) -> str | None:
    """Why a Cluster with Ready=True is not ready yet: fewer ready instances than ``spec.instances``.

    Why both: right after ``instances`` is raised (the prod tier's 3), the Ready condition still
    describes the smaller Cluster until CloudNativePG reconciles; CloudNativePG writes no
    ``observedGeneration`` that would say so.
    """
    ready = (cluster.get("status") or {}).get("readyInstances", 0)
    desired = (cluster.get("spec") or {}).get("instances", 1)
    return None if ready >= desired else "not every instance is ready yet"


def _wait_database(context: str, namespace: str, kubeconfig: str | None, name: str, timeout: float, say: Say,
                   clock: kube.Clock = time.monotonic) -> dict[str, Any]:
    """Stage 2: the CloudNativePG Cluster Ready (condition ``Ready``) with every instance ready."""
    k = f"kubectl --context {context} -n {namespace}"
    hints = [f"{k} get pods -l cnpg.io/cluster={name}   (initdb pod, PVCs Pending, image pulls)",
             f"{k} get pvc -l cnpg.io/cluster={name}",
             f"kubectl --context {context} logs -n cnpg-system deploy/cnpg-controller-manager   (the operator; "
             "its namespace may differ)"]
    return kube.wait_condition(context, namespace, CNPG_API_VERSION, "Cluster", name, condition="Ready",
                               timeout=timeout, kubeconfig=kubeconfig, pending=_missing_instances,
                               progress=_instances, hints=hints, say=say, clock=clock)


def _summary(applied: list[kube.AppliedObject]) -> str:
    counts = Counter(r.action for r in applied)
    return f"{len(applied)}: " + ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))


def _master_key(context: str, namespace: str, kubeconfig: str | None, proxy: dict[str, Any],
                objects: list[dict[str, Any]]) -> Callable[[], str]:
    """A callable that reads the master key from the Secret the proxy's container reads it from.

    The Secret is the one named by ``LITELLM_MASTER_KEY``'s secretKeyRef in the rendered Deployment
    (``litellm-master-key/master-key``); each call reads it afresh, so the value never waits in a
    variable or an output.
    """
    env = container(proxy, manifests.GATEWAY_CONTAINER).get("env") or []
    ref = next((((e.get("valueFrom") or {}).get("secretKeyRef") or {}) for e in env if e.get("name") == MASTER_KEY_ENV),
               {})
    default_name, default_key = MASTER_KEY_SECRET.split("/")
    name, key = ref.get("name", default_name), ref.get("key", default_key)
    owner = next((o["metadata"]["name"] for o in objects if o["kind"] == "ExternalSecret"
                  and ((o.get("spec") or {}).get("target") or {}).get("name", o["metadata"]["name"]) == name), None)
    made_by = (f"the ExternalSecret {namespace}/{owner} creates it from the ClusterSecretStore; `kubectl --context "
               f"{context} -n {namespace} describe externalsecret {owner}` says whether it synced" if owner else
               f"create it: kubectl -n {namespace} create secret generic {name} --from-literal={key}=sk-...")

    def read() -> str:
        return kube.secret_value(context, namespace, name, key, kubeconfig=kubeconfig, made_by=made_by)

    return read
