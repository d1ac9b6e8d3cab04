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

The package's modules, one job each: :mod:`.errors` (what goes wrong, each naming the fix), :mod:`.client`
(one cluster connection: discovery, watches, error translation), :mod:`.apply` (apply and delete in order),
:mod:`.waits` (rollouts, conditions, Jobs, Secrets), :mod:`.forward` (port-forward), :mod:`.timing` (the
timeouts and the progress interval, read at call time: a test shortens one on :mod:`.timing`). Everything
public is re-exported here: callers use ``from inferbook import kube`` and ``kube.<name>``.

Tested against ``tests/kube_double.py``, a test double of the API server (no cluster can run on the
project's machines); what it does not model (controllers, admission, RBAC, real field ownership) is
only exercised against a real cluster, and :func:`port_forward` only there.
"""

from __future__ import annotations

from . import timing
from .apply import FIELD_MANAGER, apply, delete, plan_order
from .client import CRD_PROVIDERS, AppliedObject, _Cluster, _Ref, table
from .errors import (
    ClusterUnreachable,
    ConditionFailed,
    ConditionTimeout,
    CrdNotEstablished,
    Forbidden,
    InvalidObject,
    JobFailed,
    KubeApiError,
    KubeConfigError,
    KubeError,
    MalformedObject,
    MissingCrd,
    MissingNamespace,
    PortForwardError,
    RolloutFailed,
    RolloutTimeout,
    SecretUnavailable,
    Unauthorized,
)
from .forward import _backend, port_forward
from .timing import (
    CRD_ESTABLISH_TIMEOUT,
    PORT_FORWARD_START_TIMEOUT,
    PROGRESS_EVERY,
    REQUEST_TIMEOUT,
    WATCH_READ_SLACK,
    Clock,
)
from .waits import run_job, secret_value, wait_condition, wait_job, wait_rollout, wait_status

__all__ = [
    "CRD_ESTABLISH_TIMEOUT", "CRD_PROVIDERS", "FIELD_MANAGER", "PORT_FORWARD_START_TIMEOUT", "PROGRESS_EVERY",
    "REQUEST_TIMEOUT", "WATCH_READ_SLACK", "AppliedObject", "Clock", "ClusterUnreachable", "ConditionFailed",
    "ConditionTimeout", "CrdNotEstablished", "Forbidden", "InvalidObject", "JobFailed", "KubeApiError",
    "KubeConfigError", "KubeError", "MalformedObject", "MissingCrd", "MissingNamespace", "PortForwardError",
    "RolloutFailed", "RolloutTimeout", "SecretUnavailable", "Unauthorized", "_Cluster", "_Ref", "_backend", "apply",
    "delete", "plan_order", "port_forward", "run_job", "secret_value", "table", "timing", "wait_condition",
    "wait_job", "wait_rollout", "wait_status",
]
