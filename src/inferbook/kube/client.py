"""One cluster connection (:class:`_Cluster`): the kubeconfig and context, discovery, watches, and the translation
of API errors into :mod:`.errors`; the object references (:class:`_Ref`) and the record of an apply
(:class:`AppliedObject`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd
import urllib3

from . import timing
from .errors import (
    ClusterUnreachable,
    Forbidden,
    InvalidObject,
    KubeApiError,
    KubeConfigError,
    KubeError,
    MissingCrd,
    MissingNamespace,
    Unauthorized,
)
from .timing import Clock

#: What installs the CRDs of each API group the manifests use (versions pinned in manifests/crds.lock.yaml).
CRD_PROVIDERS: dict[str, str] = {
    "monitoring.coreos.com": "the Prometheus Operator CRDs (kube-prometheus-stack, or prometheus-operator's "
                             "example/prometheus-operator-crd)",
    "serving.kserve.io": "KServe (its CRDs and controller)",
    "gateway.networking.k8s.io": "the Gateway API CRDs (kubernetes-sigs/gateway-api)",
    "gateway.networking.x-k8s.io": "the Gateway API experimental-channel CRDs",
    "inference.networking.k8s.io": "the Gateway API Inference Extension CRDs (InferencePool)",
    "inference.networking.x-k8s.io": "the Gateway API Inference Extension alpha CRDs",
    "keda.sh": "KEDA",
    "eventing.keda.sh": "KEDA",
    "kueue.x-k8s.io": "Kueue",
    "external-secrets.io": "the External Secrets Operator",
    "generators.external-secrets.io": "the External Secrets Operator",
    "kyverno.io": "Kyverno",
    "postgresql.cnpg.io": "CloudNativePG",
    "leaderworkerset.x-k8s.io": "LeaderWorkerSet (kubernetes-sigs/lws)",
    "cert-manager.io": "cert-manager",
    "argoproj.io": "Argo CD",
    "agentgateway.dev": "agentgateway",
}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AppliedObject:
    """What :func:`apply` (or :func:`delete`) did to one object.

    ``action`` is ``created``, ``configured`` (the server changed it), ``unchanged`` (the apply was a
    no-op), or for :func:`delete`: ``deleted``, ``absent`` (nothing to delete) or ``kept`` (a CRD
    that was deliberately left in place).
    """

    kind: str
    api_version: str
    namespace: str | None
    name: str
    action: str
    generation: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def __str__(self) -> str:
        return f"{self.ref}: {self.action}"


def table(results: Iterable[AppliedObject]) -> pd.DataFrame:
    """The results of an apply or delete as the table a notebook shows."""
    rows = [{"kind": r.kind, "namespace": r.namespace or "-", "name": r.name, "action": r.action,
             "generation": r.generation if r.generation is not None else "-"} for r in results]
    return pd.DataFrame(rows, columns=["kind", "namespace", "name", "action", "generation"])


def _plural(kind: str) -> str:
    """A kind's resource name before discovery has named it, as the API's own default plural forms it:
    ``AgentgatewayPolicy`` -> ``agentgatewaypolicies``, ``Ingress`` -> ``ingresses``, ``HTTPRoute`` -> ``httproutes``.

    Only for messages (discovery's name wins whenever known), so that a forbidden or missing custom kind is
    named as ``kubectl auth can-i`` and RBAC rules spell it.
    """
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return lower + "es"
    return lower + "s"


@dataclass(frozen=True)
class _Ref:
    """An object (or a type, when ``name`` is empty) as errors and progress lines name it."""

    kind: str
    api_version: str
    name: str = ""
    namespace: str | None = None
    plural: str = ""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def resource(self) -> str:
        """The RBAC resource, as ``kubectl auth can-i`` takes it: ``deployments.apps``, ``services``."""
        plural = self.plural or _plural(self.kind)
        return f"{plural}.{self.group}" if self.group else plural

    def __str__(self) -> str:
        if not self.name:
            return f"{self.kind} ({self.api_version})"
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


# --------------------------------------------------------------------------- one connection


def _status_body(exc: Any) -> dict[str, Any]:
    """The ``Status`` object of an API error answer, or {} when the body is not one."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


class _Cluster:
    """One client for one context, used by one public call and closed at its end."""

    def __init__(self, context: str, kubeconfig: str | None) -> None:
        # imported here: the local target never needs the client
        from kubernetes import client, config

        self.context = context
        path = kubeconfig or os.environ.get("KUBECONFIG") or None  # read now: the client reads it once, at import
        try:
            self.api = config.new_client_from_config(config_file=path, context=context)
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise KubeConfigError(self._config_problem(path, exc)) from exc
        self.server = self.api.configuration.host
        # The client has no default timeout and discovery passes none: give every request of this
        # client timing.REQUEST_TIMEOUT, unless it sets its own (a watch does).
        send = self.api.rest_client.request
        self.api.rest_client.request = lambda *args, _request_timeout=None, **kwargs: send(
            *args, _request_timeout=_request_timeout or timing.REQUEST_TIMEOUT, **kwargs)
        self.core, self.apps, self.batch = client.CoreV1Api(self.api), client.AppsV1Api(self.api), \
            client.BatchV1Api(self.api)
        self._tmp = tempfile.TemporaryDirectory(prefix="inferbook-discovery-")
        self._dynamic: Any = None

    def _config_problem(self, path: str | None, exc: Exception) -> str:
        from kubernetes import config

        where = path or "~/.kube/config"
        try:
            contexts, _ = config.list_kube_config_contexts(config_file=path)
            names = ", ".join(c["name"] for c in contexts) or "none"
        except Exception:  # noqa: BLE001 - the kubeconfig itself is unreadable; the first error says why
            return (f"no usable kubeconfig at {where} ({exc}); create one (kind create cluster, gcloud container "
                    "clusters get-credentials) or set KUBECONFIG")
        return (f"context '{self.context}' cannot be used from {where} ({exc}); the contexts there are: {names}. "
                "Set target.context in the profile to one of them, or create the cluster")

    def close(self) -> None:
        self.api.close()
        self._tmp.cleanup()

    def __enter__(self) -> "_Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def kubectl(self, namespace: str | None, *args: str) -> str:
        """A kubectl command line for the same context, for the reader to run."""
        ns = f" -n {namespace}" if namespace else ""
        return f"kubectl --context {self.context}{ns} {' '.join(args)}"

    # ---------------------------------------------------------------- errors

    @contextmanager
    def translating(self, verb: str, ref: _Ref | None) -> Iterator[None]:
        """Turn client and transport exceptions raised inside into :class:`KubeError` subclasses."""
        from kubernetes.client.rest import ApiException

        try:
            yield
        except ApiException as exc:
            raise self.error(exc, verb, ref) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.unreachable(exc) from exc

    def unreachable(self, exc: BaseException) -> ClusterUnreachable:
        reason = getattr(exc, "reason", None) or exc
        text = str(reason)
        text = text.split(": ", 1)[-1] if "Connection" in text and ": " in text else text
        return ClusterUnreachable(
            f"cannot reach the API server of context '{self.context}' at {self.server} "
            f"({type(reason).__name__}: {text[:200]}). Start the cluster, or fix network access (VPN, firewall, "
            f"expired cloud credentials); `kubectl --context {self.context} cluster-info` shows the same")

    def error(self, exc: Any, verb: str, ref: _Ref | None) -> KubeError:
        status = getattr(exc, "status", None)
        body = _status_body(exc)
        message = body.get("message") or getattr(exc, "reason", None) or str(exc)
        details = body.get("details") or {}
        what = str(ref) if ref else "the API server"
        namespace = ref.namespace if ref else None
        if not status:  # status 0: the transport failed (TLS, websocket) before an HTTP answer
            return self.unreachable(exc)
        if status == 401:
            return Unauthorized(
                f"the API server of context '{self.context}' ({self.server}) rejected its credentials (401 "
                f"Unauthorized) on {verb} {what}. Refresh them (gcloud container clusters get-credentials, "
                f"kind export kubeconfig); `kubectl --context {self.context} auth whoami` checks them")
        if status == 403 and any(c.get("reason") == "NamespaceTerminating" for c in details.get("causes") or []
                                 if isinstance(c, dict)):
            return KubeApiError(
                f"{what} cannot be written: namespace '{namespace}' is being deleted (Terminating), probably by a "
                f"teardown that has not finished. Wait until it is gone (`kubectl --context {self.context} get "
                f"namespace {namespace} -w`) and run again", status)
        if status == 403 and verb == "discover":
            return Forbidden(
                f"forbidden: the identity of context '{self.context}' may not read API discovery (/api, /apis), "
                f"needed to map {what} to its REST path.\n  server: {message}\n  fix: bind it the ClusterRole "
                "system:discovery (bound to all authenticated users by default)",
                verb="get", resource="(discovery)", namespace=None)
        if status == 403:
            resource = ref.resource if ref else "(discovery)"
            group = ref.group if ref else ""
            scope = f" in namespace {namespace}" if namespace else " at cluster scope"
            role = "a Role in that namespace" if namespace else "a ClusterRole"
            return Forbidden(
                f"forbidden: the identity of context '{self.context}' may not {verb} {resource}{scope} "
                f"(needed for {what}).\n  server: {message}\n"
                f"  fix: grant it {role} with verb '{verb}' on resource '{resource.split('.')[0]}' in API group "
                f"'{group}' (inferbook needs get, list, watch, patch and delete on what it applies); check with "
                f"`{self.kubectl(namespace, 'auth can-i', verb, resource)}`",
                verb=verb, resource=resource, namespace=namespace)
        if status == 422:
            causes = [c for c in details.get("causes") or [] if isinstance(c, dict)]
            lines = [f"  - {c.get('field') or '(object)'}: {c.get('message', '')}"
                     + (f" ({c['reason']})" if c.get("reason") else "") for c in causes] or [f"  - {message}"]
            return InvalidObject(
                f"{what} was rejected as invalid by the API server of context '{self.context}':\n"
                + "\n".join(lines)
                + "\n  fix the manifest that renders it; `kubectl --context "
                f"{self.context} apply --server-side --dry-run=server -f FILE` reproduces this check",
                causes=causes)
        if status == 404 and verb == "patch" and ref is not None:
            if details.get("kind") == "namespaces":
                ns = details.get("name") or namespace
                return MissingNamespace(
                    f"{what} cannot be created: namespace '{ns}' does not exist. Include its Namespace in the "
                    f"objects applied, or `kubectl --context {self.context} "
                    f"create namespace {ns}`")
            return self.missing_type(ref, vanished=True)
        if status == 409:
            return KubeApiError(
                f"conflict on {verb} {what}: {message}. If the manifest carries metadata.resourceVersion, "
                "remove it; otherwise another writer changed the object at the same moment: run again",
                status)
        if status in {429, 500, 502, 503, 504}:
            return KubeApiError(
                f"the API server of context '{self.context}' is overloaded or failing ({status}) on {verb} "
                f"{what}: {message}. Run again; if it persists, `kubectl --context {self.context} get --raw "
                "/readyz?verbose` shows which part is unhealthy", status)
        return KubeApiError(f"the API server answered {status} to {verb} {what}: {message}", status)

    def missing_type(self, ref: _Ref, *, vanished: bool = False) -> MissingCrd:
        """The error for a kind the cluster does not serve, naming the CRD's group and who installs it."""
        group, _, version = ref.api_version.rpartition("/")
        served: list[str] = []
        if group:
            try:
                with self.translating("discover", None):  # the group list, read again: it may have changed
                    served = list(self.dynamic.resources.parse_api_groups(update=True)["apis"].get(group, {}))
            except KubeError:
                served = []
        needed = f", the kind of '{ref.name}'" if ref.name else ""
        head = (f"the API server of context '{self.context}' stopped serving {ref.kind} ({ref.api_version}) while "
                "inferbook was applying" if vanished else
                f"the cluster of context '{self.context}' does not serve {ref.kind} ({ref.api_version}){needed}")
        provider = CRD_PROVIDERS.get(group)
        builtin = not group or (provider is None and (group.endswith(".k8s.io") or "." not in group))
        if builtin:
            fix = (f"{ref.api_version} is a built-in API that this cluster's Kubernetes version does not serve; use a "
                   f"cluster of a version that does (`kubectl --context {self.context} version`)")
        else:
            if version in served:
                found = f"the group {group}/{version} is served but has no {ref.kind}: its CRD is missing"
            elif served:
                found = (f"the group {group} is served only as {', '.join(served)}, not {version}: the installed CRDs "
                         "are a different version from the ones pinned in manifests/crds.lock.yaml")
            else:
                found = f"no CustomResourceDefinition provides the API group {group}"
            fix = (f"{found}. Install {provider or 'the operator that owns ' + group}, at the version pinned in "
                   f"manifests/crds.lock.yaml, or turn off the profile feature that renders {ref.kind}; "
                   f"`kubectl --context {self.context} api-resources --api-group={group}` lists what is served")
        return MissingCrd(f"{head}: {fix}", kind=ref.kind, api_version=ref.api_version)

    # ---------------------------------------------------------------- requests

    def call(self, verb: str, ref: _Ref | None, method: Callable[..., Any], *args: Any, missing_ok: bool = False,
             **kwargs: Any) -> dict[str, Any] | None:
        """One call of the client that answers raw (see the module docstring), errors translated.

        Returns the decoded JSON answer, or None for a 404 when ``missing_ok``.
        """
        from kubernetes.client.rest import ApiException

        with self.translating(verb, ref):
            try:
                data = method(*args, **kwargs).data
            except ApiException as exc:
                if missing_ok and exc.status == 404:
                    return None
                raise
        try:
            return json.loads(data) if data else {}
        except ValueError as exc:
            raise KubeApiError(f"the API server of context '{self.context}' answered {verb} {ref or '/version'} "
                               f"with something that is not JSON ({data[:80]!r}): is {self.server} really a "
                               "Kubernetes API server?", None) from exc

    def probe(self) -> None:
        """Read ``/version`` first: an unreachable server, bad credentials or a server that is not a Kubernetes
        API server fail here, clearly, before discovery (which would not say so) and before any write."""
        from kubernetes.client import VersionApi

        self.call("get", None, VersionApi(self.api).get_code, _preload_content=False)

    @property
    def dynamic(self) -> Any:
        """The discovering client; building it reads ``/version`` and ``/apis``, so it is built when first needed."""
        if self._dynamic is None:
            from kubernetes.dynamic import DynamicClient

            with self.translating("discover", None):
                self._dynamic = DynamicClient(self.api, cache_file=str(Path(self._tmp.name) / "discovery.json"))
        return self._dynamic

    def resource(self, ref: _Ref) -> Any:
        """The discovered REST resource of ``ref``'s kind (path, scope); :class:`MissingCrd` when not served."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError

        group, _, version = ref.api_version.rpartition("/")
        with self.translating("discover", ref):
            try:
                # prefix and group narrow the search: without them the client fetches every group's discovery
                return self.dynamic.resources.get(prefix="apis" if group else "api", group=group or None,
                                                  api_version=version, kind=ref.kind)
            except ResourceNotFoundError:
                raise self.missing_type(ref) from None
            except ResourceNotUniqueError as exc:
                raise KubeApiError(f"{ref.kind} ({ref.api_version}) matches several resources in discovery: {exc}",
                                   None) from exc

    def watch_until(self, ref: _Ref, list_objects: Callable[..., Any], done: Callable[[dict | None], bool],
                    deadline: float, heartbeat: Callable[[], None], clock: Clock = time.monotonic) -> bool:
        """Watch ``ref`` until ``done(object)`` holds (True) or the deadline (False).

        ``list_objects`` is the list call of ``ref``'s collection (a typed API's ``list_namespaced_*``,
        or a dynamic resource's ``get`` with ``serialize=False``) that :class:`kubernetes.watch.Watch`
        turns into a watch. Each watch asks the server to end it after at most :data:`timing.PROGRESS_EVERY`
        seconds, so the caller's ``heartbeat`` can print progress while nothing changes; every new watch
        starts without a resourceVersion, so its first event is the object's current state (this also
        recovers from an expired watch, 410 Gone). ``done(None)`` means the object was deleted.
        ``deadline`` is a reading of ``clock``.
        """
        from kubernetes import watch

        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return False
            chunk = max(1, math.ceil(min(remaining, timing.PROGRESS_EVERY)))
            watcher = watch.Watch(return_type="object")  # events stay plain dicts: no model validation
            # a silently dead connection ends too
            read_timeout = (timing.REQUEST_TIMEOUT[0], chunk + timing.WATCH_READ_SLACK)
            stream = watcher.stream(list_objects, field_selector=f"metadata.name={ref.name}", timeout_seconds=chunk,
                                    _request_timeout=read_timeout)
            try:
                with self.translating("watch", ref):
                    for event in stream:
                        if event.get("type") == "BOOKMARK":
                            continue
                        if done(None if event.get("type") == "DELETED" else event.get("raw_object")):
                            return True
                        if clock() >= deadline:
                            return False
            except KubeApiError as exc:
                if exc.status != 410:
                    raise
            finally:
                stream.close()
            if clock() < deadline:
                heartbeat()


# --------------------------------------------------------------------------- rollout


def _conditions(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (dep.get("status") or {}).get("conditions") or [] if isinstance(c, dict)}


def _shorten(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _tail(text: str, limit: int = 400) -> str:
    """The end of a command's output, where its error is, on one line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[3 - limit:]


def _condition_text(conditions: dict[str, dict[str, Any]]) -> str:
    return "; ".join(f"{t}={c.get('status')} ({c.get('reason')}: {_shorten(c.get('message'), 160)})"
                     for t, c in conditions.items())
