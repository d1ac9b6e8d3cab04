"""The kube target: apply a layer's objects to a real cluster, wait for them, tear them down, reach them.

The official ``kubernetes`` client does the talking. Ours is what no library knows about the book:
the *order* of an apply (every kind checked in discovery before the first write; Namespaces, then
CRDs until Established, then the rest), *waits* that print progress and fail early with a
diagnosis, and the *translation* of API errors into messages that say what to do.

From the library: :class:`kubernetes.dynamic.DynamicClient` maps a kind, built-in or custom, to its
REST path and scope (discovery, as kubectl does) and applies, reads and deletes through it.
``server_side_apply(field_manager="inferbook", force_conflicts=True)``: the API server merges the
manifests into what is stored and records the fields inferbook owns, so a re-run changes nothing and
a field dropped from a manifest is removed, with no client-side diff; ``force`` because the book is
the source of truth of its fields, so a hand edit (``kubectl scale``) is taken back on the next run
instead of failing it. The built-in kinds that waits, Jobs, Secrets and port-forwards read go
through the typed APIs (``AppsV1Api``, ...), whose paths need no discovery round trip, and are
waited for with :class:`kubernetes.watch.Watch`: a change is seen when it happens, not at the next
poll. Every call answers raw JSON (``_preload_content=False``, ``serialize=False``): objects stay
the plain dicts an operator wrote, never validated into models. Every request has a timeout,
discovery's too (the client has none by default): a black-holed API server fails in seconds.

:func:`port_forward` runs the pinned ``kubectl port-forward`` (found as :func:`inferbook.manifests.kubectl`
finds it) rather than ``kubernetes.stream.portforward``: kubectl owns the stream protocol (SPDY or
websockets), many connections over one session and their errors, where the client's gives one socket
per websocket and leaves a listener and copying threads per connection to us. Which pod and port it
reaches is still chosen here (:func:`_backend`), so that "no ready pod" is a clear error.

No global state: every public function builds its own client from (kubeconfig, context) and closes
it, never ``kubernetes.config.load_kube_config`` (a process-wide default); the discovery cache lives
in a temporary folder that dies with the call.

Tested against ``tests/kube_double.py``, a test double of the API server (no cluster can run on the
project's machines); what it does not model (controllers, admission, RBAC, real field ownership) is
only exercised against a real cluster, and :func:`port_forward` only there.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import re
import shlex
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd
import urllib3

from .errors import InferbookError
from .say import Say
from .waiting import wait_for

FIELD_MANAGER = "inferbook"
#: (connect, read) seconds for one request: a black-holed API server fails in seconds, not minutes.
REQUEST_TIMEOUT = (10.0, 60.0)
#: A wait prints a progress line at least this often (seconds), even when nothing changes.
PROGRESS_EVERY = 10.0
#: How long a freshly applied CRD may take to be Established before its custom resources are applied.
CRD_ESTABLISH_TIMEOUT = 60.0
#: Extra seconds of socket read timeout beyond a watch's server-side timeoutSeconds.
WATCH_READ_SLACK = 15.0
#: How long ``kubectl port-forward`` may take to start forwarding.
PORT_FORWARD_START_TIMEOUT = 30.0

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

#: Where a wait reads the time: seconds that only go forward. ``time.monotonic``, unless a test passes
#: a virtual clock (``clock=``) to drive a wait's timeout without spending the seconds.
Clock = Callable[[], float]


# --------------------------------------------------------------------------- errors


class KubeError(InferbookError):
    """Something on the kube target failed; the message says what and how to fix it."""


class KubeConfigError(KubeError):
    """No usable kubeconfig, or the profile's context is not in it."""


class ClusterUnreachable(KubeError):
    """The API server of the context could not be reached (refused, timed out, DNS, TLS)."""


class Unauthorized(KubeError):
    """The API server rejected the credentials of the context (401)."""


class Forbidden(KubeError):
    """RBAC denied a verb on a resource (403)."""

    def __init__(self, message: str, verb: str, resource: str, namespace: str | None) -> None:
        super().__init__(message)
        self.verb = verb
        self.resource = resource
        self.namespace = namespace


class InvalidObject(KubeError):
    """The API server rejected an object as invalid (422); ``causes`` are the server's."""

    def __init__(self, message: str, causes: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.causes = causes


class MissingCrd(KubeError):
    """The cluster does not serve an object's kind: its CRD (or its operator) is not installed."""

    def __init__(self, message: str, kind: str, api_version: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.api_version = api_version


class MissingNamespace(KubeError):
    """A namespaced object was applied into a namespace that does not exist."""


class MalformedObject(KubeError):
    """An object handed to :func:`apply` or :func:`delete` lacks apiVersion, kind, name or namespace."""


class KubeApiError(KubeError):
    """Any other error answer of the API server (409, 429, 5xx, ...)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class RolloutTimeout(KubeError):
    """A Deployment did not become available within the time given."""


class RolloutFailed(KubeError):
    """A Deployment cannot roll out (absent, deleted, paused, past its progress deadline)."""


class CrdNotEstablished(KubeError):
    """A CRD was applied but the API server did not start serving it."""


class PortForwardError(KubeError):
    """No pod to forward to, or no such port on the Service."""


class ConditionTimeout(KubeError):
    """An object (a custom resource, a Job) did not reach the state waited for within the time given."""


class ConditionFailed(KubeError):
    """An object can never reach the state waited for: it is absent, was deleted, or failed for good."""


class JobFailed(ConditionFailed):
    """A Job failed for good (its backoff limit or its deadline was exceeded); its pods' logs say why."""


class SecretUnavailable(KubeError):
    """A Secret, or the key asked for in it, does not exist (yet)."""


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
        # client REQUEST_TIMEOUT, unless it sets its own (a watch does).
        send = self.api.rest_client.request
        self.api.rest_client.request = lambda *args, _request_timeout=None, **kwargs: send(
            *args, _request_timeout=_request_timeout or REQUEST_TIMEOUT, **kwargs)
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
        turns into a watch. Each watch asks the server to end it after at most :data:`PROGRESS_EVERY`
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
            chunk = max(1, math.ceil(min(remaining, PROGRESS_EVERY)))
            watcher = watch.Watch(return_type="object")  # events stay plain dicts: no model validation
            read_timeout = (REQUEST_TIMEOUT[0], chunk + WATCH_READ_SLACK)  # a silently dead connection ends too
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


# --------------------------------------------------------------------------- apply and delete


def _plan(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deep copies of ``objects`` (``List`` kinds flattened), checked, Namespaces then CRDs then the rest.

    The sort is stable: within a rank the caller's order (kustomize's) is kept.
    """
    flat: list[dict[str, Any]] = []
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise MalformedObject(f"object #{index + 1} is a {type(obj).__name__}, not a mapping")
        if obj.get("kind") == "List" and isinstance(obj.get("items"), list):
            flat.extend(copy.deepcopy(item) for item in obj["items"])
        else:
            flat.append(copy.deepcopy(obj))
    for index, obj in enumerate(flat):
        meta = obj.get("metadata")
        missing = [f for f, ok in (("apiVersion", obj.get("apiVersion")), ("kind", obj.get("kind")),
                                   ("metadata.name", isinstance(meta, dict) and meta.get("name"))) if not ok]
        if missing:
            raise MalformedObject(f"object #{index + 1} ({obj.get('kind', 'no kind')}) has no "
                                  f"{', '.join(missing)}: every object needs apiVersion, kind and metadata.name")
    return sorted(flat, key=_rank)


def plan_order(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order :func:`apply` sends ``objects`` in (Namespaces, CRDs, the rest), checked; no cluster needed."""
    return _plan(objects)


def _rank(obj: dict[str, Any]) -> int:
    """0 for Namespaces, 1 for CRDs, 2 for everything else: what must exist before what lives in it."""
    if obj["kind"] == "Namespace" and obj["apiVersion"] == "v1":
        return 0
    if obj["kind"] == "CustomResourceDefinition" and obj["apiVersion"].startswith("apiextensions.k8s.io/"):
        return 1
    return 2


def _scope(obj: dict[str, Any], resource: Any, namespace: str | None) -> str | None:
    """Put ``obj`` in its namespace: the target one when it carries none; cluster-scoped objects get none."""
    meta = obj["metadata"]
    if not resource.namespaced:
        meta.pop("namespace", None)
        return None
    meta.setdefault("namespace", namespace)
    if not meta["namespace"]:
        raise MalformedObject(f"{obj['kind']} {meta['name']} is namespaced but has no metadata.namespace and no "
                              "namespace was given: pass namespace= (the profile's target.namespace)")
    return meta["namespace"]


def _ref(obj: dict[str, Any], namespace: str | None = None, resource: Any = None) -> _Ref:
    return _Ref(obj["kind"], obj["apiVersion"], obj["metadata"]["name"],
                namespace if namespace is not None else obj["metadata"].get("namespace"),
                getattr(resource, "name", "") or "")


def apply(objects: list[dict[str, Any]], context: str, *, kubeconfig: str | None = None,
          field_manager: str = FIELD_MANAGER, namespace: str | None = None, say: Say = print,
          crd_timeout: float = CRD_ESTABLISH_TIMEOUT) -> list[AppliedObject]:
    """Server-side apply ``objects`` to the cluster of ``context``; one result per object, in apply order.

    Namespaces go first and CRDs next (both must exist before what lives in them); the CRDs are
    waited for until Established, so the custom resources after them find their type. Every
    kind not provided by a CRD of this batch is looked up in discovery before the first write,
    so a missing CRD fails the call without a half-applied layer. Namespaced objects without a
    namespace get ``namespace``. Applying the same objects twice gives ``unchanged``; nothing
    printed includes an object's content (Secrets pass through here).
    """
    planned = _plan(objects)
    with _Cluster(context, kubeconfig) as cluster:
        cluster.probe()
        from_crds = {((crd.get("spec") or {}).get("group"), ((crd.get("spec") or {}).get("names") or {}).get("kind"))
                     for crd in planned if _rank(crd) == 1}
        for obj in planned:
            if (obj["apiVersion"].rpartition("/")[0], obj["kind"]) not in from_crds:
                cluster.resource(_ref(obj))

        results: list[AppliedObject] = []
        crds_to_wait: list[str] = []
        for obj in planned:
            if crds_to_wait and obj["kind"] != "CustomResourceDefinition":
                _wait_crds(cluster, crds_to_wait, crd_timeout, say)
                crds_to_wait = []
            result = _apply_one(cluster, obj, namespace, field_manager)
            say(str(result))
            results.append(result)
            if obj["kind"] == "CustomResourceDefinition":
                crds_to_wait.append(obj["metadata"]["name"])
        if crds_to_wait:
            _wait_crds(cluster, crds_to_wait, crd_timeout, say)
        return results


def _apply_one(cluster: _Cluster, obj: dict[str, Any], namespace: str | None, field_manager: str) -> AppliedObject:
    """Server-side apply one object; ``created`` when it did not exist, ``unchanged`` when its resourceVersion
    stayed the same (the server made no change), else ``configured``."""
    resource = cluster.resource(_ref(obj))
    ns = _scope(obj, resource, namespace)
    ref = _ref(obj, ns, resource)
    # Metadata only: the state before, without reading a Secret's data or a 2 MB CRD schema.
    before = cluster.call("get", ref, resource.get, name=ref.name, namespace=ns, serialize=False, missing_ok=True,
                          header_params={"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,"
                                                   "application/json"})
    after = cluster.call("patch", ref, resource.server_side_apply, body=obj, name=ref.name, namespace=ns,
                         field_manager=field_manager, force_conflicts=True, serialize=False) or {}
    after_meta = after.get("metadata", {})
    if before is None:
        action = "created"
    elif before.get("metadata", {}).get("resourceVersion") == after_meta.get("resourceVersion"):
        action = "unchanged"
    else:
        action = "configured"
    return AppliedObject(ref.kind, ref.api_version, ns, ref.name, action, after_meta.get("generation"))


def _wait_crds(cluster: _Cluster, names: list[str], timeout: float, say: Say) -> None:
    """Wait until each CRD is Established: until then its custom resources are 404 on the server."""
    crds = cluster.resource(_Ref("CustomResourceDefinition", "apiextensions.k8s.io/v1"))
    start = time.monotonic()
    for name in names:
        seen: dict[str, dict[str, Any]] = {}

        def established(crd: dict | None, name: str = name, seen: dict[str, dict[str, Any]] = seen) -> bool:
            if crd is None:
                raise CrdNotEstablished(f"CRD {name} was deleted while inferbook waited for it to be Established")
            seen.update(_conditions(crd))
            accepted = seen.get("NamesAccepted", {})
            if accepted.get("status") == "False":
                raise CrdNotEstablished(f"CRD {name} was not accepted: {accepted.get('reason')}: "
                                        f"{accepted.get('message')} (another CRD already uses its names?)")
            return seen.get("Established", {}).get("status") == "True"

        if not cluster.watch_until(_Ref(crds.kind, crds.group_version, name, None, crds.name),
                                   partial(crds.get, serialize=False), established, start + timeout,
                                   lambda name=name: say(f"  {time.monotonic() - start:4.0f} s: waiting for CRD "
                                                         f"{name} to be Established")):
            raise CrdNotEstablished(
                f"CRD {name} was applied but not Established within {timeout:g} s (conditions: "
                f"{_condition_text(seen) or 'none'}); `{cluster.kubectl(None, 'describe crd', name)}` shows why")


def delete(objects: list[dict[str, Any]], context: str, *, kubeconfig: str | None = None,
           namespace: str | None = None, delete_crds: bool = False, say: Say = print) -> list[AppliedObject]:
    """Delete ``objects`` in the reverse of apply order; one that is already gone counts as ``absent``.

    CRDs are ``kept`` unless ``delete_crds``: deleting a CRD deletes every object of its kind in
    every namespace, including other teams' ServiceMonitors. Deletion is asynchronous on a real
    cluster (pods terminate, a Namespace goes through Terminating): ``deleted`` means the API
    server accepted the deletion. Dependents go with ``propagationPolicy=Background``.
    """
    planned = list(reversed(_plan(objects)))
    with _Cluster(context, kubeconfig) as cluster:
        cluster.probe()
        results: list[AppliedObject] = []
        for obj in planned:
            ref = _ref(obj)
            if obj["kind"] == "CustomResourceDefinition" and not delete_crds:
                action, ns = "kept", None
            else:
                try:
                    resource = cluster.resource(ref)
                except MissingCrd:  # the kind is not served, so no object of it can exist
                    action, ns = "absent", obj["metadata"].get("namespace") or namespace
                else:
                    ns = _scope(obj, resource, namespace)
                    ref = _ref(obj, ns, resource)
                    gone = cluster.call("delete", ref, resource.delete, name=ref.name, namespace=ns,
                                        propagation_policy="Background", serialize=False, missing_ok=True)
                    action = "absent" if gone is None else "deleted"
            result = AppliedObject(ref.kind, ref.api_version, ns, ref.name, action)
            say(str(result))
            results.append(result)
        return results


# --------------------------------------------------------------------------- rollout


def _conditions(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (dep.get("status") or {}).get("conditions") or [] if isinstance(c, dict)}


def _rollout_state(dep: dict[str, Any]) -> tuple[bool, str, str | None]:
    """(rolled out?, where the rollout is, why it can never finish or None), after kubectl's rollout status."""
    spec, status, meta = dep.get("spec") or {}, dep.get("status") or {}, dep.get("metadata") or {}
    desired = spec.get("replicas", 1)
    if desired == 0:
        return True, "scaled to zero: nothing to roll out", None
    if spec.get("paused"):
        return False, "paused", "the Deployment is paused (spec.paused); resume it with `kubectl rollout resume`"
    if status.get("observedGeneration", 0) < meta.get("generation", 1):
        return False, "waiting for the Deployment controller to observe the new spec", None
    progressing = _conditions(dep).get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return False, "past its progress deadline", (
            f"it exceeded its progress deadline ({progressing.get('message', '')})")
    updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    if updated < desired:
        return False, f"{updated} of {desired} new replicas updated", None
    if total > updated:
        return False, f"{total - updated} old replica(s) pending termination", None
    if available < desired:
        return False, f"{available} of {desired} updated replicas available", None
    return True, f"{available} of {desired} replicas available", None


def _diagnosis(cluster: _Cluster, dep: dict[str, Any], namespace: str, name: str) -> str:
    """Conditions, replica counts and the kubectl commands that show why a Deployment is stuck."""
    status = dep.get("status") or {}
    conditions = _condition_text(_conditions(dep)) or "none reported (is the kube-controller-manager running?)"
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    pods = cluster.kubectl(namespace, "describe pods", f"-l {selector}") if selector else \
        cluster.kubectl(namespace, "get pods")
    return (f"\n  conditions: {conditions}"
            f"\n  replicas: desired {(dep.get('spec') or {}).get('replicas', 1)}, updated "
            f"{status.get('updatedReplicas', 0)}, ready {status.get('readyReplicas', 0)}, available "
            f"{status.get('availableReplicas', 0)}"
            f"\n  look at:\n    {cluster.kubectl(namespace, 'describe', f'deploy/{name}')}"
            f"\n    {pods}   (pod events: Pending for lack of a GPU, image pulls, failing probes)"
            f"\n    {cluster.kubectl(namespace, 'get events --sort-by=.lastTimestamp')}")


def wait_rollout(context: str, namespace: str, name: str, *, timeout: float, kubeconfig: str | None = None,
                 say: Say = print, clock: Clock = time.monotonic) -> None:
    """Wait until Deployment ``name`` has rolled out: the controller saw its latest spec and every
    desired replica is updated and available, with no old one left.

    A Deployment scaled to 0 (the cost tier) is rolled out at once. Progress lines carry the
    elapsed time, on every change and at least every :data:`PROGRESS_EVERY` seconds. A paused
    Deployment, or one past its progress deadline, fails at once with :class:`RolloutFailed`;
    at ``timeout`` seconds :class:`RolloutTimeout` names the Deployment, its conditions and the
    kubectl commands that show why. ``clock`` is where the wait reads the time (tests pass a virtual one).
    """
    ref = _Ref("Deployment", "apps/v1", name, namespace, "deployments")
    with _Cluster(context, kubeconfig) as cluster:
        apps = cluster.apps
        _wait_for(cluster, ref, partial(apps.read_namespaced_deployment, name, namespace, _preload_content=False),
                  partial(apps.list_namespaced_deployment, namespace), _rollout_state,
                  lambda dep: _diagnosis(cluster, dep, namespace, name), ("roll out", "rolled out"), timeout, say,
                  failed=RolloutFailed, timed_out=RolloutTimeout, label=f"deploy/{name} in {namespace}", clock=clock)


# --------------------------------------------------------------------------- conditions, Jobs, Secrets

#: (done?, where the object is, why it can never get there or None): what a wait learns from one state.
State = tuple[bool, str, str | None]


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


def _stale(obj: dict[str, Any], condition: dict[str, Any] | None = None) -> int | None:
    """The generation the status (or ``condition``) describes when it is older than the spec's, else None.

    Why: right after an apply the controller has not yet looked at the new spec, and a ``Ready=True``
    written for the previous spec would end the wait too early.
    """
    generation = (obj.get("metadata") or {}).get("generation")
    observed = [v for v in ((obj.get("status") or {}).get("observedGeneration"),
                            (condition or {}).get("observedGeneration")) if isinstance(v, int) and v > 0]
    older = [v for v in observed if isinstance(generation, int) and v < generation]
    return min(older) if older else None


def _wait_for(cluster: _Cluster, ref: _Ref, read: Callable[[], Any], list_objects: Callable[..., Any],
              state: Callable[[dict[str, Any]], State],
              diagnosis: Callable[[dict[str, Any]], str], goal: tuple[str, str], timeout: float, say: Say,
              failed: type[KubeError] = ConditionFailed, timed_out: type[KubeError] = ConditionTimeout,
              label: str | None = None, clock: Clock = time.monotonic) -> dict[str, Any]:
    """Watch ``ref`` until ``state`` says done, fails for good, or ``timeout`` passes; returns the last object.

    ``read`` gets the object (raw), ``list_objects`` is the list call that :meth:`_Cluster.watch_until` watches.

    The one wait loop of every kind (rollouts, conditions, Jobs): ``goal`` is the awaited state as a verb
    phrase and its past ("become Ready", "became Ready"); progress lines name the object as ``label``
    (default: the ref) and carry the elapsed time, on every change and at least every
    :data:`PROGRESS_EVERY` seconds; ``failed`` and ``timed_out`` are the errors raised, and they end with
    ``diagnosis`` (conditions, kubectl commands). Every reading of the time comes from ``clock``.
    """
    label = label or str(ref)
    start = clock()
    obj = cluster.call("get", ref, read, missing_ok=True)
    if obj is None:
        raise failed(f"{ref} does not exist in the cluster of context '{cluster.context}': apply it first "
                     f"(`{cluster.kubectl(ref.namespace, 'get', ref.resource)}` lists what is there)")
    latest: dict[str, Any] = {"obj": obj}

    def observe(current: dict | None) -> bool:
        if current is None:
            raise failed(f"{ref} was deleted while inferbook waited for it to {goal[0]}")
        latest["obj"] = current
        done, text, why = state(current)
        if why:
            raise failed(f"{ref} cannot {goal[0]}: {why}" + diagnosis(current))
        if text != latest.get("text") and not done and "text" in latest:
            say(f"  {clock() - start:4.0f} s: {text}")
        latest["text"] = text
        return done

    if observe(obj):
        say(f"{label}: {latest['text']}")
        return obj
    say(f"waiting up to {timeout:g} s for {label} to {goal[0]}: {latest['text']}")

    def heartbeat() -> None:
        say(f"  {clock() - start:4.0f} s: {latest['text']}")

    if cluster.watch_until(ref, list_objects, observe, start + timeout, heartbeat, clock):
        say(f"{label} {goal[1]} in {clock() - start:.1f} s: {latest['text']}")
        return latest["obj"]
    raise timed_out(f"{ref} did not {goal[0]} within {timeout:g} s (context '{cluster.context}'): "
                           f"{latest['text']}" + diagnosis(latest["obj"]))


def _condition_state(obj: dict[str, Any], condition: str, pending: Callable[[dict[str, Any]], str | None] | None,
                     progress: Callable[[dict[str, Any]], str] | None) -> State:
    """Where an object is on its way to ``condition``=True (and ``pending`` having nothing left to wait for)."""
    found = _conditions(obj).get(condition)
    shown = progress(obj) if progress else ""

    def text(head: str) -> str:
        return f"{head}; {shown}" if shown else head

    stale = _stale(obj, found)
    if stale is not None:
        return False, text(f"the status describes generation {stale}: waiting for the controller to observe the "
                           f"new spec (generation {obj['metadata']['generation']})"), None
    if found is None:
        return False, text(f"no {condition} condition reported yet"), None
    if found.get("status") != "True":
        return False, text(f"{condition}={found.get('status')} ({found.get('reason')}: "
                           f"{_shorten(found.get('message'))})"), None
    left = pending(obj) if pending else None
    if left:
        return False, text(f"{condition}=True but {left}"), None
    return True, text(f"{condition}=True"), None


def _condition_diagnosis(cluster: _Cluster, ref: _Ref, obj: dict[str, Any], hints: Iterable[str]) -> str:
    """Conditions of a custom resource and the kubectl commands that show why it is not there yet."""
    conditions = _condition_text(_conditions(obj))
    if not conditions:
        owner = CRD_PROVIDERS.get(ref.group, f"the controller of {ref.group or ref.kind}")
        conditions = f"none reported (is {owner} running? its controller writes this status)"
    lines = [cluster.kubectl(ref.namespace, "describe", f"{ref.resource}/{ref.name}"), *hints,
             cluster.kubectl(ref.namespace, "get events", f"--field-selector involvedObject.name={ref.name}",
                             "--sort-by=.lastTimestamp")]
    return f"\n  conditions: {conditions}\n  look at:" + "".join(f"\n    {line}" for line in lines)


def wait_condition(context: str, namespace: str | None, api_version: str, kind: str, name: str, *, timeout: float,
                   condition: str = "Ready", pending: Callable[[dict[str, Any]], str | None] | None = None,
                   progress: Callable[[dict[str, Any]], str] | None = None, hints: Iterable[str] = (),
                   kubeconfig: str | None = None, say: Say = print, clock: Clock = time.monotonic) -> dict[str, Any]:
    """Wait until object ``name`` reports condition ``condition`` with status True; returns the object.

    Operators report readiness this way (CloudNativePG, External Secrets, KServe, cert-manager): a
    ``status.conditions`` entry of that type. A status whose ``observedGeneration`` (top level, or the
    condition's own) is older than the object's generation is not trusted: it describes the spec before
    the last apply. ``pending(obj)`` returns what is still missing although the condition holds (None
    when nothing), ``progress(obj)`` a short state for the progress lines, and ``hints`` are extra
    kubectl commands for the timeout message. The kind is looked up in discovery, so a kind that is not
    served is :class:`MissingCrd`; at ``timeout`` seconds :class:`ConditionTimeout` names the object, its
    conditions (or says that no controller wrote any) and what to look at. ``clock`` is where the wait
    reads the time (tests pass a virtual one).
    """
    with _Cluster(context, kubeconfig) as cluster:
        resource = cluster.resource(_Ref(kind, api_version, name, namespace))
        scoped = namespace if resource.namespaced else None
        ref = _Ref(kind, api_version, name, scoped, resource.name)
        return _wait_for(cluster, ref, partial(resource.get, name=name, namespace=scoped, serialize=False),
                         partial(resource.get, namespace=scoped, serialize=False),
                         lambda obj: _condition_state(obj, condition, pending, progress),
                         lambda obj: _condition_diagnosis(cluster, ref, obj, hints),
                         (f"become {condition}", f"became {condition}"), timeout, say, clock=clock)


def _job_finished(job: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` when the Job will run no more pods, else None."""
    conditions = _conditions(job)
    if any(conditions.get(t, {}).get("status") == "True" for t in ("Failed", "FailureTarget")):
        return "Failed"
    spec, status = job.get("spec") or {}, job.get("status") or {}
    wanted = spec.get("completions")
    if any(conditions.get(t, {}).get("status") == "True" for t in ("Complete", "SuccessCriteriaMet")) or \
            status.get("succeeded", 0) >= (1 if wanted is None else wanted):
        return "Complete"
    return None


def _job_state(job: dict[str, Any]) -> State:
    """Where a Job is: complete, failed for good, suspended, or its pods so far."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    attempts = (f"{status.get('active', 0)} pod(s) running, {status.get('succeeded', 0)} succeeded, "
                f"{status.get('failed', 0)} failed (backoff limit {spec.get('backoffLimit', 6)})")
    finished = _job_finished(job)
    if finished == "Failed":
        conditions = _conditions(job)
        failure = conditions.get("Failed") or conditions.get("FailureTarget") or {}
        return False, attempts, f"it failed ({failure.get('reason')}: {_shorten(failure.get('message'))})"
    if finished == "Complete":
        return True, f"complete, {attempts}", None
    if spec.get("suspend"):
        return False, ("suspended (spec.suspend: true): it starts when a queue admits it (Kueue), or with "
                       "`kubectl patch job NAME --type=merge -p '{\"spec\":{\"suspend\":false}}'`"), None
    if not status:
        return False, "no status yet: waiting for the Job controller to create its pod", None
    return False, attempts, None


def _job_diagnosis(cluster: _Cluster, job: dict[str, Any], namespace: str, name: str) -> str:
    """The Job's conditions and where its pods' output is."""
    conditions = _condition_text(_conditions(job)) or "none reported yet"
    return (f"\n  conditions: {conditions}"
            f"\n  read its output: `{cluster.kubectl(namespace, 'logs', f'job/{name}', '--all-containers')}` "
            f"(one pod per attempt: `{cluster.kubectl(namespace, 'get pods', f'-l job-name={name}')}`)"
            f"\n  look at: {cluster.kubectl(namespace, 'describe', f'job/{name}')}   (pods Pending, a missing "
            "Secret, image pulls)")


def wait_job(context: str, namespace: str, name: str, *, timeout: float, kubeconfig: str | None = None,
             say: Say = print, clock: Clock = time.monotonic) -> dict[str, Any]:
    """Wait until Job ``name`` has completed (condition Complete, or enough pods succeeded); returns it.

    A Job that failed for good (condition Failed, or FailureTarget while its last pods stop) raises
    :class:`JobFailed` at once, with the command that shows its pods' output: the reason of a failed
    batch step is in its log, not in the Job's status. A suspended Job is waited for (a queue may admit
    it); at ``timeout`` seconds :class:`ConditionTimeout` says how many attempts ran and what to look at.
    ``clock`` is where the wait reads the time (tests pass a virtual one).
    """
    ref = _Ref("Job", "batch/v1", name, namespace, "jobs")
    with _Cluster(context, kubeconfig) as cluster:
        batch = cluster.batch
        return _wait_for(cluster, ref, partial(batch.read_namespaced_job, name, namespace, _preload_content=False),
                         partial(batch.list_namespaced_job, namespace), _job_state,
                         lambda job: _job_diagnosis(cluster, job, namespace, name), ("complete", "completed"),
                         timeout, say, failed=JobFailed, clock=clock)


def _wait_gone(cluster: _Cluster, ref: _Ref, deadline: float, say: Say, clock: Clock = time.monotonic) -> None:
    """Return once Job ``ref`` no longer exists (a finalizer or a foreground deletion may keep it a while)."""
    while cluster.call("get", ref, cluster.batch.read_namespaced_job, ref.name, ref.namespace, missing_ok=True,
                       _preload_content=False) is not None:
        if clock() >= deadline:
            raise ConditionTimeout(f"{ref} was deleted but is still there (finalizers?); "
                                   f"`{cluster.kubectl(ref.namespace, 'get', ref.resource, ref.name, '-o yaml')}` "
                                   "shows what holds it")
        # a bounded watch: if the object vanished between the GET and the watch, the next GET sees it
        cluster.watch_until(ref, partial(cluster.batch.list_namespaced_job, ref.namespace), lambda obj: obj is None,
                            min(deadline, clock() + PROGRESS_EVERY), lambda: say(f"  waiting for {ref} to be gone"),
                            clock)


def run_job(job: dict[str, Any], context: str, *, namespace: str, kubeconfig: str | None = None, say: Say = print,
            timeout: float = 60.0, clock: Clock = time.monotonic) -> AppliedObject:
    """Apply a Job so that it runs for this apply: a finished Job of the same name is deleted first.

    Why: a Job runs once. Re-applying an unchanged finished Job changes nothing (the old result would be
    awaited again, a failure included), and applying a changed one (a new image) is rejected, as a Job's
    pod template is immutable. So, like Argo CD's ``BeforeHookCreation`` hook policy, a finished Job
    (complete or failed) is deleted, its pods with it (in the background), and the Job is created anew;
    a Job still running is applied onto (a no-op when unchanged). ``timeout`` bounds the wait for the
    old Job to be gone, read on ``clock``.
    """
    name = job["metadata"]["name"]
    ref = _Ref("Job", "batch/v1", name, namespace, "jobs")
    with _Cluster(context, kubeconfig) as cluster:
        old = cluster.call("get", ref, cluster.batch.read_namespaced_job, name, namespace, missing_ok=True,
                           _preload_content=False)
        finished = _job_finished(old) if old is not None else None
        if finished:
            say(f"{ref}: the previous run is {finished.lower()}; deleting it so that the Job runs again")
            cluster.call("delete", ref, cluster.batch.delete_namespaced_job, name, namespace, missing_ok=True,
                         propagation_policy="Background", _preload_content=False)
            _wait_gone(cluster, ref, clock() + timeout, say, clock)
    return apply([job], context, kubeconfig=kubeconfig, namespace=namespace, say=say)[0]


def secret_value(context: str, namespace: str, name: str, key: str, *, kubeconfig: str | None = None,
                 made_by: str = "") -> str:
    """The decoded value of ``key`` in Secret ``name``: pass it straight to where it is used, never print it.

    ``made_by`` says what creates the Secret (an ExternalSecret, an operator), for the error when it
    is absent. Messages name the Secret and its keys, never a value.
    """
    ref = _Ref("Secret", "v1", name, namespace, "secrets")
    with _Cluster(context, kubeconfig) as cluster:
        secret = cluster.call("get", ref, cluster.core.read_namespaced_secret, name, namespace, missing_ok=True,
                              _preload_content=False)
        look = cluster.kubectl(namespace, "get secret", name)
    if secret is None:
        raise SecretUnavailable(f"Secret {namespace}/{name} does not exist in the cluster of context '{context}'"
                                + (f": {made_by}" if made_by else "") + f"; `{look}` checks it")
    data = secret.get("data") or {}
    if key not in data:
        raise SecretUnavailable(f"Secret {namespace}/{name} has no key '{key}' (its keys: "
                                f"{', '.join(sorted(data)) or 'none'})" + (f"; {made_by}" if made_by else ""))
    return base64.b64decode(data[key]).decode()


# --------------------------------------------------------------------------- port-forward


def _backend(service: dict[str, Any], pods: list[dict[str, Any]], port: int) -> tuple[str, int]:
    """The pod a forward to ``service:port`` reaches, and its container port: what kubectl picks."""
    meta = service.get("metadata") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    ports = (service.get("spec") or {}).get("ports") or []
    match = next((p for p in ports if p.get("port") == port), None)
    if match is None:
        raise PortForwardError(f"service {where} has no port {port} (it has: "
                               f"{', '.join(str(p.get('port')) for p in ports) or 'none'})")
    target = match.get("targetPort", port)

    def ready(pod: dict[str, Any]) -> bool:
        status = pod.get("status") or {}
        return (status.get("phase") == "Running" and not (pod.get("metadata") or {}).get("deletionTimestamp")
                and any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []))

    candidates = sorted((p for p in pods if ready(p)), key=lambda p: p["metadata"]["name"])
    if not candidates:
        selector = _selector(service)
        raise PortForwardError(f"no ready pod behind service {where} (selector {selector or 'none'}): wait for "
                               f"the rollout first, and look at `kubectl -n {meta.get('namespace')} get pods -l "
                               f"{selector}`")
    pod = candidates[0]
    if isinstance(target, str):  # a named port: find it in the pod's containers
        named = [p.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or []
                 for p in c.get("ports") or [] if p.get("name") == target]
        if not named:
            raise PortForwardError(f"service {where} targets port '{target}', which no container of pod "
                                   f"{pod['metadata']['name']} declares")
        target = named[0]
    return pod["metadata"]["name"], int(target)


def _selector(service: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(((service.get("spec") or {}).get("selector") or {}).items()))


@contextmanager
def port_forward(context: str, namespace: str, service: str, port: int, *, kubeconfig: str | None = None,
                 say: Say = print) -> Iterator[str]:
    """Forward a local port to ``service:port``; yields ``http://127.0.0.1:PORT`` while the block runs.

    Like ``kubectl port-forward svc/...``, one ready pod behind the Service is chosen (here, so that
    its absence is a clear :class:`PortForwardError`), then ``kubectl port-forward pod/...`` runs for
    the block and is stopped at its end. For notebooks that reach the stack from outside the cluster
    when there is no gateway address.

    Exercised only against a real cluster: the test double speaks no port-forward streams, so only
    the choice of pod and port (and its errors) is tested.
    """
    ref = _Ref("Service", "v1", service, namespace, "services")
    with _Cluster(context, kubeconfig) as cluster:
        svc = cluster.call("get", ref, cluster.core.read_namespaced_service, service, namespace, missing_ok=True,
                           _preload_content=False)
        if svc is None:
            raise PortForwardError(f"no service {namespace}/{service} in the cluster of context '{context}'")
        selector = _selector(svc)
        if not selector:
            raise PortForwardError(f"service {namespace}/{service} has no selector: there is no pod to forward to")
        pods = cluster.call("list", _Ref("Pod", "v1", "", namespace, "pods"), cluster.core.list_namespaced_pod,
                            namespace, label_selector=selector, _preload_content=False) or {}
    pod, target = _backend(svc, pods.get("items") or [], port)
    from .manifests import kubectl

    command = [str(kubectl()), *(["--kubeconfig", kubeconfig] if kubeconfig else []), "--context", context,
               "-n", namespace, "port-forward", f"pod/{pod}", f":{target}", "--address", "127.0.0.1"]
    with _forwarding(command, say) as local:
        url = f"http://127.0.0.1:{local}"
        say(f"forwarding {url} -> service {namespace}/{service}:{port} (pod {pod}, port {target})")
        yield url


@contextmanager
def _forwarding(command: list[str], say: Say) -> Iterator[int]:
    """Run a ``kubectl port-forward`` for the block; yields the local port of its ``Forwarding from`` line.

    Its output goes to a file, not a pipe: a pipe that nobody reads would stall it once full of
    ``Handling connection`` lines (the file is read through its own handles, so reads never move
    where kubectl writes). If it never starts, or stops before the block ends (the pod went away),
    the end of that output is the error, or is said.
    """
    with tempfile.TemporaryDirectory(prefix="inferbook-port-forward-") as folder:
        log = Path(folder) / "kubectl.log"
        try:
            with log.open("a") as out:
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise PortForwardError(f"cannot run {command[0]}: {exc}. Fix: reinstall kubectl (make venv)") from None
        try:
            found: list[int] = []

            def failed(why: str) -> str:
                return f"`{shlex.join(command)}` {why}: {_tail(log.read_text()) or 'no output'}"

            def forwarding() -> str | None:
                if match := re.search(r"^Forwarding from 127\.0\.0\.1:(\d+) ", log.read_text(), re.MULTILINE):
                    found.append(int(match[1]))
                    return None
                if proc.poll() is not None:
                    raise PortForwardError(failed(f"failed (exit {proc.returncode})"))
                return "no 'Forwarding from' line yet"

            wait_for(forwarding, timeout=PORT_FORWARD_START_TIMEOUT, what="kubectl port-forward to start", say=say,
                     interval=0.1, error=PortForwardError,
                     message=lambda _: failed(f"did not start forwarding within {PORT_FORWARD_START_TIMEOUT:g} s"))
            yield found[0]
            if proc.poll() is not None:
                say(f"the port-forward stopped before the end (exit {proc.returncode}): {_tail(log.read_text())}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
