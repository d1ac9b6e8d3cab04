"""The kube client's errors: one class per thing that goes wrong, each message naming the fix.
"""

from __future__ import annotations

from ..errors import InferbookError

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
