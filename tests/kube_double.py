"""FakeKubeApiServer: a TEST DOUBLE of the Kubernetes API server, for tests of ``inferbook.kube``.

No API server can run on the project's machines (no kind, k3s, envtest or Docker; see
``../shared/notes/offline-recipes.md``), so the apply path is tested against this double: an
in-memory HTTP server in a thread that speaks just enough of the real protocol for the official
``kubernetes`` client to talk to it unchanged (a kubeconfig points at it, bearer token and all).

What it implements, as the real server does:

- ``/version``; discovery: ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``
  (``APIVersions``, ``APIGroupList``, ``APIResourceList`` with kind, plural, scope and verbs);
- GET of one object, GET of a collection (list), and ``?watch=true`` streams (chunked JSON lines,
  synthetic ADDED events for the current state when no resourceVersion is given, then changes,
  closed after ``timeoutSeconds``); ``fieldSelector=metadata.name=X`` and ``metadata.namespace=X``;
- GET with ``Accept: ...;as=PartialObjectMetadata`` answers the object's metadata only;
- PATCH with ``Content-Type: application/apply-patch+yaml`` (server-side apply): creates (201) or
  updates (200) the object; ``fieldManager`` is required; each manager's last applied
  configuration is kept, the object is the merge of all of them, so a field a manager stops
  applying disappears; a field another manager set to a different value is a 409 Conflict unless
  ``force=true``, which takes it over; ``metadata.uid``, ``creationTimestamp``, ``resourceVersion``
  (bumped on every real change, not on a no-op apply), ``generation`` (bumped when anything outside
  metadata and status changes) and a ``managedFields`` entry per manager are kept; ``status`` is
  never taken from an apply; a Deployment's ``spec.replicas`` defaults to 1;
- DELETE (200 with the deleted object); deleting a Namespace deletes what is in it;
- namespaced writes into a Namespace that does not exist are 404 ``namespaces "x" not found``;
- object names that are not DNS-1123 subdomains are 422 Invalid, with a cause;
- errors are ``Status`` objects with the real reasons and messages (NotFound, Forbidden, Invalid,
  Conflict, Unauthorized, UnsupportedMediaType, MethodNotAllowed);
- a wrong bearer token is 401;
- applying a CustomResourceDefinition makes its kind served (discovery and paths), with
  ``Established`` and ``NamesAccepted`` conditions True; deleting it removes the kind and its objects.

Switches for tests: :meth:`uninstall` (a CRD that is not installed: 404 on the type and absent from
discovery), :meth:`forbid` (403 for a verb on a resource), :meth:`reject` (422 with given causes),
:meth:`terminate_namespace` (a Namespace stuck in Terminating: creating in it is 403 NamespaceTerminating),
:meth:`set_status`, :meth:`roll_out`, :meth:`stall` and :meth:`fail_progress` (a Deployment's status,
as its controller would write it), :meth:`complete_job` and :meth:`fail_job` (a Job's, likewise),
:meth:`install` (serve a custom resource type, as when an operator's CRDs are installed: CloudNativePG's
:data:`CNPG_CLUSTER`, :data:`EXTERNAL_SECRET`), :meth:`seed` (an object applied by another field
manager), :meth:`virtual_time` and :meth:`release_time` (watches on a virtual clock, see below), and
:attr:`requests` (every request received: method, path, query, content type, body).

Virtual time, so that no test of a wait depends on the wall clock: after :meth:`virtual_time`, a watch
runs out its ``timeoutSeconds`` on a virtual clock, which is what the client's waits read too (they take
``clock=``). While time *runs*, a watch that has delivered everything there is ends at once and moves the
clock to its start plus its ``timeoutSeconds``, as if nothing had happened for that long: a wait that
times out does so deterministically, in no real time. While time is *held*, the clock stands still and
an idle watch waits (in real time) for a change a test makes from another thread; a wait that returns
then proves that a watch delivered the change, since no watch timeout and no poll interval could pass.
Held time runs again on :meth:`release_time`, or by itself after a guard of real seconds, so that a
wait that misses the change fails its test instead of hanging it. Made for one waiting client: a watch
the client leaves early stays open while time is held and, while time runs, still moves the clock when
it ends, so let time run only for waits that end by timing out.

What it does NOT do (the gap to a real API server; only a real cluster tests these):
no controllers at all (nothing creates ReplicaSets or Pods, no status changes unless a test sets
them, no garbage collection, Namespaces are deleted at once instead of going through Terminating);
no admission (no webhooks, no defaulting beyond Deployment replicas, no quota, no PodSecurity);
no schema validation of objects (only the name check); no RBAC other than :meth:`forbid` (and
apply-that-creates is authorised as ``patch`` only); list-merge semantics of server-side apply are
simplified (lists are atomic, no merge keys, so two managers owning items of one list conflict);
field ownership is tracked as leaf paths, not as the real ``FieldsV1`` sets (``managedFields``
entries carry an empty ``fieldsV1``); one version per kind (no conversion); no label selectors,
pagination, ``dryRun``, POST, PUT, JSON/merge patches, subresources (``/status``, ``/scale``),
bookmarks, 410 Gone for old resourceVersions, aggregated discovery, websockets (``exec``,
``port-forward``), TLS or client certificates. It tests request shape, ordering, idempotency and
error handling of the client code, not cluster behaviour.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import yaml

TOKEN = "test-token"
APPLY_PATCH = "application/apply-patch+yaml"
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class ApiType:
    """One served resource type: what discovery lists and what a path names."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``deployments.apps``, or ``services`` for the core group: how the server names a type in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def discovery_entry(self) -> dict[str, Any]:
        return {
            "name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
            "kind": self.kind, "shortNames": list(self.short_names),
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }


BUILTIN_TYPES: tuple[ApiType, ...] = (
    ApiType("", "v1", "Namespace", "namespaces", False, ("ns",)),
    ApiType("", "v1", "Service", "services", True, ("svc",)),
    ApiType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ("pvc",)),
    ApiType("", "v1", "Secret", "secrets", True),
    ApiType("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    ApiType("", "v1", "Pod", "pods", True, ("po",)),
    ApiType("apps", "v1", "Deployment", "deployments", True, ("deploy",)),
    ApiType("batch", "v1", "Job", "jobs", True),
    ApiType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",)),
    ApiType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False, ("crd",)),
)
#: Custom resource types served by default, as if their operators' CRDs were installed.
DEFAULT_CRD_TYPES: tuple[ApiType, ...] = (
    ApiType("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors", True, ("smon",)),
    ApiType("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices", True, ("isvc",)),
)
#: Custom resource types of operators a test installs with :meth:`FakeKubeApiServer.install`.
CNPG_CLUSTER = ApiType("postgresql.cnpg.io", "v1", "Cluster", "clusters", True)
EXTERNAL_SECRET = ApiType("external-secrets.io", "v1", "ExternalSecret", "externalsecrets", True, ("es",))


@dataclass
class RecordedRequest:
    """One request as the double received it."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    accept: str | None
    body: Any = None

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return f"{self.method} {self.path}{'?' + query if query else ''}"


@dataclass
class _Stored:
    object: dict[str, Any]
    managers: dict[str, dict[str, Any]] = field(default_factory=dict)  # field manager -> last applied config


@dataclass
class _Event:
    rv: int
    type: str
    api_type: ApiType
    namespace: str
    name: str
    object: dict[str, Any]


class _Reply(Exception):
    """Raised inside a handler to answer at once with a status code and a JSON body."""

    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(code)
        self.code = code
        self.body = body


def status_object(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``Status`` failure, shaped like the API server's."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details or {}, "code": code}


def _not_found_resource() -> _Reply:
    return _Reply(404, status_object(404, "NotFound", "the server could not find the requested resource"))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _leaves(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Leaf paths of a configuration (lists are atomic): the double's model of field ownership."""
    if isinstance(node, dict) and node:
        out: dict[tuple[str, ...], Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, (*prefix, str(key))))
        return out
    return {prefix: node}


def _drop_leaf(node: dict[str, Any], path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def _merge(into: dict[str, Any], config: dict[str, Any]) -> None:
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


_SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                    "deletionTimestamp", "selfLink")


class FakeKubeApiServer:
    """A test double of the Kubernetes API server (see the module docstring for what it does and does not do).

    Use it as a context manager; :attr:`url` is its address and :meth:`write_kubeconfig` writes a
    kubeconfig whose context points at it.
    """

    def __init__(self, *, token: str = TOKEN, user: str = "system:serviceaccount:ci:inferbook") -> None:
        self.token = token
        self.user = user
        self.requests: list[RecordedRequest] = []
        self._types: dict[tuple[str, str], ApiType] = {}  # (group, plural) -> type
        for api_type in (*BUILTIN_TYPES, *DEFAULT_CRD_TYPES):
            self._types[(api_type.group, api_type.plural)] = api_type
        self._objects: dict[tuple[str, str, str, str], _Stored] = {}  # (group, plural, namespace, name)
        self._events: list[_Event] = []
        self._rv = 100
        self._forbidden: set[tuple[str, str, str, str | None]] = set()  # (verb, group, plural, name)
        self._rejected: dict[tuple[str, str, str], list[dict[str, str]]] = {}  # (group, plural, name) -> causes
        self._terminating: set[str] = set()
        self._cond = threading.Condition()
        self._closing = False
        self._now: float | None = None  # the virtual clock, once virtual_time() was called
        self._held_until: float | None = None  # held time: the real-time guard after which it runs again
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "FakeKubeApiServer":
        handler = type("Handler", (_Handler,), {"double": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-kube-apiserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "FakeKubeApiServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the double first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def write_kubeconfig(self, path: Path, context: str = "lab", token: str | None = None) -> Path:
        """A kubeconfig with one context, ``context``, pointing at this double."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": token or self.token}}],
            "contexts": [{"name": context, "context": {"cluster": "double", "user": "u"}}],
        }))
        return path

    # ------------------------------------------------------------------ switches for tests

    def uninstall(self, group: str, plural: str) -> None:
        """Make a type unknown, as when its CRD is not installed: absent from discovery, 404 on its paths."""
        with self._cond:
            self._types.pop((group, plural), None)
            for key in [k for k in self._objects if k[:2] == (group, plural)]:
                del self._objects[key]

    def install(self, *api_types: ApiType) -> None:
        """Serve these custom resource types, as when their operators' CRDs are installed."""
        with self._cond:
            for api_type in api_types:
                self._types[(api_type.group, api_type.plural)] = api_type

    def forbid(self, verb: str, plural: str, *, group: str = "", name: str | None = None) -> None:
        """Answer 403 Forbidden to ``verb`` (get, list, watch, patch, delete) on a type, or on one object of it."""
        self._forbidden.add((verb, group, plural, name))

    def reject(self, plural: str, name: str, causes: list[dict[str, str]], *, group: str = "") -> None:
        """Answer 422 Invalid to any apply of this object, with these ``{field, reason, message}`` causes."""
        self._rejected[(group, plural, name)] = causes

    def terminate_namespace(self, name: str) -> None:
        """Put a Namespace in Terminating, as a deletion waiting for its content does; it stays there."""
        with self._cond:
            stored = self._objects[("", "namespaces", "", name)]
            stored.object["metadata"]["deletionTimestamp"] = _now()
            stored.object["status"] = {"phase": "Terminating"}
            self._terminating.add(name)
            self._touch(self._types[("", "namespaces")], stored.object, "MODIFIED")

    def virtual_time(self, *, held: bool = False, guard: float = 15.0) -> Callable[[], float]:
        """Run watches on virtual time (see the module docstring); returns its clock, for the waits' ``clock=``.

        ``held``: the clock stands still until :meth:`release_time`, or until ``guard`` real seconds have
        passed (a guard against a hanging test, not a measurement). The guard is shorter than the client's
        read timeout of a watch (its timeoutSeconds plus ``kube.WATCH_READ_SLACK``), so that a wait that
        misses the change fails on the clock it reads, not on a dead-connection error.
        """
        with self._cond:
            if self._now is None:
                self._now = 1000.0
            self._held_until = time.monotonic() + guard if held else None
            self._cond.notify_all()
        return self.now

    def release_time(self) -> None:
        """Let held virtual time run: idle watches end, each moving the clock by its ``timeoutSeconds``."""
        with self._cond:
            self._held_until = None
            self._cond.notify_all()

    def now(self) -> float:
        """The virtual clock (seconds, only going forward)."""
        with self._cond:
            assert self._now is not None, "call virtual_time() first"
            return self._now

    def seed(self, obj: dict[str, Any], *, manager: str = "kubectl-client-side-apply") -> dict[str, Any]:
        """Store an object as if another field manager had applied it (no request is recorded)."""
        api_type = self._type_for_object(obj)
        namespace = obj.get("metadata", {}).get("namespace", "") if api_type.namespaced else ""
        with self._cond:
            _code, stored = self._apply(api_type, namespace, obj["metadata"]["name"], obj, manager, force=True)
        return stored

    def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any], *, group: str = "") -> None:
        """Replace an object's status, as its controller would (bumps resourceVersion, notifies watchers)."""
        with self._cond:
            stored = self._objects[(group, plural, namespace, name)]
            stored.object["status"] = copy.deepcopy(status)
            self._touch(self._types[(group, plural)], stored.object, "MODIFIED")

    def _deployment(self, namespace: str, name: str) -> tuple[dict[str, Any], int]:
        """The stored Deployment and its desired replicas (what the controller's status is written for)."""
        dep = self.get_object("deployments", namespace, name, group="apps")
        assert dep is not None, f"no deployment {namespace}/{name} in the double"
        return dep, dep["spec"].get("replicas", 1)

    def _deployment_status(self, namespace: str, name: str, counted: tuple[str, ...],
                           conditions: list[dict[str, str]]) -> None:
        """Every replica updated, and counted in ``counted`` (ready and available, or unavailable)."""
        dep, replicas = self._deployment(namespace, name)
        self.set_status("deployments", namespace, name, group="apps", status={
            "observedGeneration": dep["metadata"]["generation"], "replicas": replicas, "updatedReplicas": replicas,
            **{field: replicas for field in counted}, "conditions": conditions})

    def roll_out(self, namespace: str, name: str) -> None:
        """The Deployment controller's status once every replica is updated and available."""
        self._deployment_status(namespace, name, ("readyReplicas", "availableReplicas"), [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": f'ReplicaSet "{name}-5d4f8b7c9" has successfully progressed.'},
            ])

    def stall(self, namespace: str, name: str) -> None:
        """The status of a Deployment whose pods never become ready (a GPU pod stuck Pending, say)."""
        self._deployment_status(namespace, name, ("unavailableReplicas",), [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                 "message": "Deployment does not have minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                 "message": f'ReplicaSet "{name}-5d4f8b7c9" is progressing.'},
            ])

    def fail_progress(self, namespace: str, name: str) -> None:
        """The status of a Deployment past its progressDeadlineSeconds."""
        self.stall(namespace, name)
        status = self._deployment(namespace, name)[0]["status"]
        status["conditions"][1] = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                   "message": f'ReplicaSet "{name}-5d4f8b7c9" has timed out progressing.'}
        self.set_status("deployments", namespace, name, status, group="apps")

    def complete_job(self, namespace: str, name: str) -> None:
        """The Job controller's status once the Job's one pod succeeded."""
        self.set_status("jobs", namespace, name, group="batch", status={
            "startTime": _now(), "completionTime": _now(), "succeeded": 1, "ready": 0, "terminating": 0,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods"},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods"}]})

    def fail_job(self, namespace: str, name: str) -> None:
        """The Job controller's status once every attempt failed (past ``spec.backoffLimit``)."""
        job = self.get_object("jobs", namespace, name, group="batch")
        assert job is not None, f"no job {namespace}/{name} in the double"
        attempts = (job.get("spec") or {}).get("backoffLimit", 6) + 1
        self.set_status("jobs", namespace, name, group="batch", status={
            "startTime": _now(), "failed": attempts, "ready": 0, "terminating": 0,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}]})

    # ------------------------------------------------------------------ inspection for tests

    def get_object(self, plural: str, namespace: str | None, name: str, *, group: str = "") -> dict[str, Any] | None:
        with self._cond:
            stored = self._objects.get((group, plural, namespace or "", name))
            return copy.deepcopy(stored.object) if stored else None

    def object_keys(self) -> list[tuple[str, str, str, str]]:
        """(group, plural, namespace, name) of every stored object."""
        with self._cond:
            return sorted(self._objects)

    def writes(self) -> list[RecordedRequest]:
        """The PATCH and DELETE requests received, in order."""
        return [r for r in self.requests if r.method in {"PATCH", "DELETE", "POST", "PUT"}]

    # ------------------------------------------------------------------ the API

    def _type_for_object(self, obj: dict[str, Any]) -> ApiType:
        api_version = obj.get("apiVersion", "")
        group, _, version = api_version.rpartition("/")
        for api_type in self._types.values():
            if (api_type.group, api_type.version, api_type.kind) == (group, version, obj.get("kind")):
                return api_type
        raise KeyError(f"{api_version} {obj.get('kind')} is not served by the double")

    def _served(self, group: str, version: str) -> list[ApiType]:
        return [t for t in self._types.values() if t.group == group and t.version == version]

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _touch(self, api_type: ApiType, obj: dict[str, Any], event: str) -> None:
        """Give ``obj`` a new resourceVersion and record a watch event (caller holds the lock)."""
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        meta = obj["metadata"]
        self._events.append(_Event(rv, event, api_type, meta.get("namespace", ""), meta["name"], copy.deepcopy(obj)))
        self._cond.notify_all()

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        """Answer one request; returns (status code, JSON body) or (200, a watch generator)."""
        split = urlsplit(raw_path)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        content_type = headers.get("Content-Type")
        parsed: Any = None
        if body:
            try:
                parsed = yaml.safe_load(body.decode())
            except yaml.YAMLError:
                parsed = body.decode(errors="replace")
        self.requests.append(RecordedRequest(method, path, query, content_type, headers.get("Accept"), parsed))

        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, status_object(401, "Unauthorized", "Unauthorized")
        try:
            return self._route(method, path, query, content_type, headers.get("Accept") or "", parsed)
        except _Reply as reply:
            return reply.code, reply.body

    def _route(self, method: str, path: str, query: dict[str, str], content_type: str | None, accept: str,
               body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/version":
            return 200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0-fake", "gitCommit": "0" * 40,
                         "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                         "compiler": "gc", "platform": "linux/amd64"}
        if method == "GET" and path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if method == "GET" and path == "/apis":
            return 200, self._group_list()
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _not_found_resource()
        with self._cond:
            served = self._served(group, version)
        if not served:
            raise _not_found_resource()
        if not rest:
            if method != "GET":
                raise _Reply(405, status_object(405, "MethodNotAllowed", "the server does not allow this method"))
            return 200, {"kind": "APIResourceList", "apiVersion": "v1",
                         "groupVersion": f"{group}/{version}" if group else version,
                         "resources": [t.discovery_entry() for t in served]}

        namespace, plural, name = "", rest[0], None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, plural = rest[1], rest[2]
            name = rest[3] if len(rest) >= 4 else None
            if len(rest) > 4:
                raise _not_found_resource()  # subresources are not implemented by the double
        else:
            name = rest[1] if len(rest) >= 2 else None
            if len(rest) > 2:
                raise _not_found_resource()
        with self._cond:
            api_type = self._types.get((group, plural))
        if api_type is None or api_type.version != version or (namespace and not api_type.namespaced):
            raise _not_found_resource()

        verb = {"GET": "get" if name else ("watch" if query.get("watch") in {"true", "1"} else "list"),
                "PATCH": "patch", "DELETE": "delete", "POST": "create", "PUT": "update"}.get(method, method.lower())
        self._authorize(verb, api_type, namespace, name)

        if method == "GET" and name is None:
            if query.get("watch") in {"true", "1"}:
                return 200, self._watch(api_type, namespace, query)
            return 200, self._list(api_type, namespace, query)
        if name is None:
            raise _Reply(405, status_object(405, "MethodNotAllowed",
                                            f"the double does not implement {method} on a collection"))
        if method == "GET":
            return 200, self._get(api_type, namespace, name, accept)
        if method == "PATCH":
            return self._patch(api_type, namespace, name, query, content_type, body)
        if method == "DELETE":
            return 200, self._delete(api_type, namespace, name)
        raise _Reply(405, status_object(405, "MethodNotAllowed", f"the double does not implement {method}"))

    def _group_list(self) -> dict[str, Any]:
        with self._cond:
            versions: dict[str, list[str]] = {}
            for api_type in self._types.values():
                if api_type.group and api_type.version not in versions.setdefault(api_type.group, []):
                    versions[api_type.group].append(api_type.version)
        groups = []
        for group, names in sorted(versions.items()):
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in names]
            groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _authorize(self, verb: str, api_type: ApiType, namespace: str, name: str | None) -> None:
        if (verb, api_type.group, api_type.plural, None) in self._forbidden or \
                (verb, api_type.group, api_type.plural, name) in self._forbidden:
            what = f'{api_type.group_resource} "{name}"' if name else api_type.group_resource
            scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            raise _Reply(403, status_object(
                403, "Forbidden",
                f'{what} is forbidden: User "{self.user}" cannot {verb} resource "{api_type.plural}" '
                f'in API group "{api_type.group}"{scope}',
                {"name": name or "", "group": api_type.group, "kind": api_type.plural}))

    def _not_found(self, api_type: ApiType, name: str) -> _Reply:
        return _Reply(404, status_object(404, "NotFound", f'{api_type.group_resource} "{name}" not found',
                                         {"name": name, "group": api_type.group, "kind": api_type.plural}))

    def _get(self, api_type: ApiType, namespace: str, name: str, accept: str) -> dict[str, Any]:
        with self._cond:
            stored = self._objects.get((api_type.group, api_type.plural, namespace, name))
            if stored is None:
                raise self._not_found(api_type, name)
            obj = copy.deepcopy(stored.object)
        if "as=PartialObjectMetadata" in accept:
            return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
        return obj

    @staticmethod
    def _field_filter(query: dict[str, str]) -> dict[str, str]:
        wanted: dict[str, str] = {}
        for term in filter(None, query.get("fieldSelector", "").split(",")):
            key, _, value = term.partition("=")
            if key not in {"metadata.name", "metadata.namespace"}:
                raise _Reply(400, status_object(400, "BadRequest",
                                                f'field label not supported by the double: "{key}"'))
            wanted[key] = value.lstrip("=")
        return wanted

    @staticmethod
    def _matches(wanted: dict[str, str], namespace: str, name: str) -> bool:
        return wanted.get("metadata.name", name) == name and wanted.get("metadata.namespace", namespace) == namespace

    def _list(self, api_type: ApiType, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        wanted = self._field_filter(query)
        with self._cond:
            items = [copy.deepcopy(s.object) for (g, p, ns, n), s in sorted(self._objects.items())
                     if (g, p) == (api_type.group, api_type.plural) and (not namespace or ns == namespace)
                     and self._matches(wanted, ns, n)]
            rv = str(self._rv)
        return {"kind": f"{api_type.kind}List", "apiVersion": api_type.group_version,
                "metadata": {"resourceVersion": rv}, "items": items}

    def _watch(self, api_type: ApiType, namespace: str, query: dict[str, str]):
        wanted = self._field_filter(query)
        timeout = float(query.get("timeoutSeconds") or 60)
        since = query.get("resourceVersion") or ""

        def relevant(event: _Event) -> bool:
            return ((event.api_type.group, event.api_type.plural) == (api_type.group, api_type.plural)
                    and (not namespace or event.namespace == namespace)
                    and self._matches(wanted, event.namespace, event.name))

        def stream():
            deadline = time.monotonic() + timeout  # real time, when time is not virtual
            with self._cond:
                ends = None if self._now is None else self._now + timeout  # the virtual end of this watch
                if since in {"", "0"}:
                    initial = [{"type": "ADDED", "object": copy.deepcopy(s.object)}
                               for (g, p, ns, n), s in sorted(self._objects.items())
                               if (g, p) == (api_type.group, api_type.plural) and (not namespace or ns == namespace)
                               and self._matches(wanted, ns, n)]
                    index = len(self._events)
                else:
                    initial = []
                    index = next((i for i, e in enumerate(self._events) if e.rv > int(since)), len(self._events))
            for event in initial:
                yield event
            while True:
                with self._cond:
                    while index >= len(self._events) and not self._closing:
                        if ends is not None:
                            if self._time_runs():
                                break
                            self._cond.wait(max(0.0, self._held_until - time.monotonic()))
                            continue
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    new = self._events[index:]
                    index = len(self._events)
                    closing = self._closing
                    if ends is not None and not new and not closing:  # nothing left to deliver: its time is up
                        self._now = max(self._now, ends)
                        return
                for event in new:
                    if relevant(event):
                        yield {"type": event.type, "object": event.object}
                if closing or (ends is None and time.monotonic() >= deadline):
                    return

        return stream()

    def _time_runs(self) -> bool:
        """Whether virtual time runs (caller holds the lock); held time runs again once its guard passed."""
        if self._held_until is not None and time.monotonic() >= self._held_until:
            self._held_until = None
        return self._held_until is None

    def _patch(self, api_type: ApiType, namespace: str, name: str, query: dict[str, str],
               content_type: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        if (content_type or "").split(";")[0].strip() != APPLY_PATCH:
            raise _Reply(415, status_object(415, "UnsupportedMediaType",
                                            f"the double supports only {APPLY_PATCH} patches, not {content_type}"))
        manager = query.get("fieldManager", "")
        if not manager:
            raise _Reply(422, status_object(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                                            "Required value: is required for apply patch",
                                            {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                                                {"reason": "FieldValueRequired", "message": "Required value: is "
                                                 "required for apply patch", "field": "fieldManager"}]}))
        if not isinstance(body, dict):
            raise _Reply(400, status_object(400, "BadRequest", "error decoding YAML: the body is not an object"))
        if body.get("apiVersion") != api_type.group_version or body.get("kind") != api_type.kind:
            raise _Reply(400, status_object(400, "BadRequest",
                                            f"the body is {body.get('apiVersion')}, Kind={body.get('kind')}, "
                                            f"but the path serves {api_type.group_version}, Kind={api_type.kind}"))
        meta = body.get("metadata") or {}
        if meta.get("name") != name:
            raise _Reply(400, status_object(400, "BadRequest", "the name of the object "
                                            f"({meta.get('name')}) does not match the name on the URL ({name})"))
        if api_type.namespaced and meta.get("namespace", namespace) != namespace:
            raise _Reply(400, status_object(400, "BadRequest", "the namespace of the provided object does not "
                                            "match the namespace sent on the request"))
        causes = list(self._rejected.get((api_type.group, api_type.plural, name), []))
        if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
            causes.append({"reason": "FieldValueInvalid", "field": "metadata.name",
                           "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                                      "lower case alphanumeric characters, '-' or '.'"})
        if causes:
            detail = "; ".join(f"{c['field']}: {c['message']}" for c in causes)
            raise _Reply(422, status_object(
                422, "Invalid", f'{api_type.qualified_kind} "{name}" is invalid: {detail}',
                {"name": name, "group": api_type.group, "kind": api_type.kind, "causes": causes}))
        with self._cond:
            if api_type.namespaced and namespace in self._terminating and \
                    (api_type.group, api_type.plural, namespace, name) not in self._objects:
                raise _Reply(403, status_object(
                    403, "Forbidden", f'{api_type.group_resource} "{name}" is forbidden: unable to create new '
                    f"content in namespace {namespace} because it is being terminated",
                    {"name": name, "group": api_type.group, "kind": api_type.plural, "causes": [
                        {"reason": "NamespaceTerminating", "message": f"namespace {namespace} is being terminated",
                         "field": "metadata.namespace"}]}))
            if api_type.namespaced and ("", "namespaces", "", namespace) not in self._objects:
                raise _Reply(404, status_object(404, "NotFound", f'namespaces "{namespace}" not found',
                                                {"name": namespace, "kind": "namespaces"}))
            return self._apply(api_type, namespace, name, body, manager, force=query.get("force") == "true")

    def _apply(self, api_type: ApiType, namespace: str, name: str, config: dict[str, Any], manager: str,
               *, force: bool) -> tuple[int, dict[str, Any]]:
        """Server-side apply of ``config`` by ``manager`` (caller holds the lock); (201|200, object)."""
        config = copy.deepcopy(config)
        meta = config.setdefault("metadata", {})
        for key in _SERVER_METADATA:
            meta.pop(key, None)
        config.pop("status", None)
        if api_type.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        key = (api_type.group, api_type.plural, namespace, name)
        stored = self._objects.get(key)
        created = stored is None
        if stored is None:
            stored = _Stored(object={"apiVersion": api_type.group_version, "kind": api_type.kind, "metadata": {
                "name": name, **({"namespace": namespace} if api_type.namespaced else {}),
                "uid": str(uuid.uuid4()), "creationTimestamp": _now(), "generation": 1}})

        mine = _leaves(config)
        conflicts = []
        for other, other_config in stored.managers.items():
            if other == manager:
                continue
            theirs = _leaves(other_config)
            clashing = [path for path, value in mine.items() if path in theirs and theirs[path] != value]
            if clashing and not force:
                conflicts += [(other, ".".join(path)) for path in clashing]
        if conflicts:
            raise _Reply(409, status_object(
                409, "Conflict",
                f"Apply failed with {len(conflicts)} conflict(s): "
                + "; ".join(f'conflict with "{m}": .{p}' for m, p in conflicts),
                {"name": name, "group": api_type.group, "kind": api_type.plural,
                 "causes": [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": f".{p}"}
                            for m, p in conflicts]}))
        managers = {m: copy.deepcopy(c) for m, c in stored.managers.items() if m != manager}
        for other_config in managers.values():  # forced: the applier takes differing fields over
            theirs = _leaves(other_config)  # (a field both set to the same value stays shared, as in real SSA)
            for path, value in mine.items():
                if path in theirs and theirs[path] != value:
                    _drop_leaf(other_config, path)
        managers[manager] = config

        old = stored.object
        new: dict[str, Any] = {"apiVersion": api_type.group_version, "kind": api_type.kind, "metadata": {}}
        for applied in managers.values():
            _merge(new, applied)
        for key_name in ("uid", "creationTimestamp", "generation", "resourceVersion"):
            if key_name in old["metadata"]:
                new["metadata"][key_name] = old["metadata"][key_name]
        new["metadata"]["name"] = name
        if api_type.namespaced:
            new["metadata"]["namespace"] = namespace
        if api_type.kind == "Deployment":
            new.setdefault("spec", {}).setdefault("replicas", 1)
        if api_type.kind == "CustomResourceDefinition":
            new["status"] = {"conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted"}],
                "acceptedNames": (new.get("spec") or {}).get("names", {})}
        elif "status" in old:
            new["status"] = old["status"]
        new["metadata"]["managedFields"] = [
            {"manager": m, "operation": "Apply", "apiVersion": api_type.group_version, "time": _now(),
             "fieldsType": "FieldsV1", "fieldsV1": {}} for m in managers]

        def content(obj: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in obj.items() if k not in {"metadata", "status"}}

        def without_times(obj: dict[str, Any]) -> dict[str, Any]:
            trimmed = copy.deepcopy(obj)
            fields = trimmed["metadata"].get("managedFields", [])
            trimmed["metadata"]["managedFields"] = [{**m, "time": ""} for m in fields]
            return trimmed

        if not created and content(new) != content(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        stored.managers = managers
        if created or without_times(new) != without_times(old):
            stored.object = new
            self._objects[key] = stored
            self._touch(api_type, new, "ADDED" if created else "MODIFIED")
            if api_type.kind == "CustomResourceDefinition":
                self._register_crd(new)
        return (201 if created else 200), copy.deepcopy(stored.object)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        served = [v["name"] for v in spec.get("versions", []) if v.get("served", True)]
        if spec.get("group") and names.get("plural") and served:
            self._types[(spec["group"], names["plural"])] = ApiType(
                spec["group"], served[0], names["kind"], names["plural"], spec.get("scope") == "Namespaced",
                tuple(names.get("shortNames", ())))

    def _delete(self, api_type: ApiType, namespace: str, name: str) -> dict[str, Any]:
        with self._cond:
            stored = self._objects.pop((api_type.group, api_type.plural, namespace, name), None)
            if stored is None:
                raise self._not_found(api_type, name)
            self._touch(api_type, stored.object, "DELETED")
            if api_type.plural == "namespaces" and api_type.group == "":
                for key in [k for k in self._objects if k[2] == name]:
                    gone = self._objects.pop(key)
                    self._touch(self._types.get(key[:2], api_type), gone.object, "DELETED")
            if api_type.kind == "CustomResourceDefinition":
                spec = stored.object.get("spec") or {}
                plural = (spec.get("names") or {}).get("plural")
                self.uninstall(spec.get("group", ""), plural or "")  # re-entrant: Condition wraps an RLock
            return copy.deepcopy(stored.object)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 plumbing: keep-alive for ordinary answers, chunked transfer for watch streams."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: without this, 40 ms per answer
    double: FakeKubeApiServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        code, payload = self.double.handle(self.command, self.path, self.headers, body)
        if isinstance(payload, dict):
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in payload:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _serve  # noqa: N815 - http.server hook names

    def log_message(self, *args: object) -> None:
        pass
