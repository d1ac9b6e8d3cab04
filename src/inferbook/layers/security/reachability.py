"""Who can reach whom under a set of NetworkPolicies: an evaluator of ours of the Kubernetes semantics.

Not a CNI: it reads the policy objects and answers, for a connection (source pod, destination pod, port,
protocol), what an enforcing network plugin would do, following the API's documented semantics:

- a pod is isolated for ingress (egress) when at least one NetworkPolicy in its namespace selects it
  (``podSelector``) and lists ``Ingress`` (``Egress``) in ``policyTypes`` (``policyTypes`` absent: Ingress,
  plus Egress when the policy has ``egress`` rules);
- a non-isolated direction allows everything; an isolated one allows what the union of the rules of the
  policies selecting the pod allows;
- a rule allows a connection when one of its peers (``from`` / ``to``; absent or empty: every peer) matches
  the other pod, and one of its ``ports`` (absent or empty: every port) matches the port and protocol
  (numeric port, optional ``endPort``, or a named port the destination's container declares);
- a peer is a ``podSelector`` in the policy's namespace, a ``namespaceSelector`` (its pods, or those the
  ``podSelector`` beside it selects), or an ``ipBlock``;
- a connection is allowed iff the source's egress allows it AND the destination's ingress allows it.

Simplifications, stated: pods have no IP here, so an ``ipBlock`` matches no pod (most plugins match pod IPs
in a block; the book's blocks only name the API server and the internet, on ports no pod here listens on);
selectors take ``matchLabels`` and ``matchExpressions`` (In, NotIn, Exists, DoesNotExist); a namespace's
labels are ``kubernetes.io/metadata.name`` plus those given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ...errors import InferbookError


class PolicyError(InferbookError):
    """A NetworkPolicy uses a form the evaluator does not know: it says which, rather than guess."""


@dataclass(frozen=True)
class Pod:
    """A pod as the policies see it: where it runs, its labels, and its named ports (name -> number)."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A label selector against labels; ``{}`` selects everything, ``None`` (absent) too."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise PolicyError(f"unknown selector operator {op!r}; a label selector takes In, NotIn, Exists, "
                              "DoesNotExist")
    return True


def _types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


class Evaluator:
    """The NetworkPolicies of a cluster and the labels of its namespaces; answers :meth:`allowed`."""

    def __init__(self, policies: Iterable[Mapping[str, Any]], namespace_labels: Mapping[str, Mapping[str, str]]
                 | None = None, default_namespace: str = "default") -> None:
        self.policies = [p for p in policies if p.get("kind") == "NetworkPolicy"]
        self.default_namespace = default_namespace
        self.namespace_labels = {k: dict(v) for k, v in (namespace_labels or {}).items()}

    def _ns(self, policy: Mapping[str, Any]) -> str:
        return str((policy.get("metadata") or {}).get("namespace") or self.default_namespace)

    def _labels_of_namespace(self, namespace: str) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": namespace, **self.namespace_labels.get(namespace, {})}

    def selecting(self, pod: Pod, direction: str) -> list[Mapping[str, Any]]:
        """The policies that isolate ``pod`` for ``direction`` (Ingress | Egress)."""
        return [p for p in self.policies if self._ns(p) == pod.namespace and direction in _types(p)
                and selects((p.get("spec") or {}).get("podSelector"), pod.labels)]

    def _peer_matches(self, peer: Mapping[str, Any], policy_ns: str, other: Pod) -> bool:
        if "ipBlock" in peer:
            return False  # pods carry no IP here (module docstring)
        if "namespaceSelector" in peer:
            if not selects(peer["namespaceSelector"], self._labels_of_namespace(other.namespace)):
                return False
        elif other.namespace != policy_ns:
            return False
        return selects(peer.get("podSelector"), other.labels)

    @staticmethod
    def _port_matches(rule_port: Mapping[str, Any], port: int, protocol: str, destination: Pod) -> bool:
        if rule_port.get("protocol", "TCP") != protocol:
            return False
        wanted = rule_port.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str) and not wanted.isdigit():
            return destination.ports.get(wanted) == port
        low = int(wanted)
        return low <= port <= int(rule_port.get("endPort", low))

    def _direction_allows(self, pod: Pod, other: Pod, direction: str, port: int, protocol: str,
                          destination: Pod) -> tuple[bool, str]:
        isolating = self.selecting(pod, direction)
        if not isolating:
            return True, f"{pod.id} not isolated for {direction.lower()}"
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in isolating:
            for rule in (policy.get("spec") or {}).get(key) or []:
                peers = rule.get(peers_key) or []
                if peers and not any(self._peer_matches(p, self._ns(policy), other) for p in peers):
                    continue
                ports = rule.get("ports") or []
                if ports and not any(self._port_matches(p, port, protocol, destination) for p in ports):
                    continue
                return True, f"{direction.lower()} allowed by {self._ns(policy)}/{policy['metadata']['name']}"
        names = ", ".join(p["metadata"]["name"] for p in isolating)
        return False, f"{direction.lower()} of {pod.id} denied (isolated by {names}; no rule matches)"

    def allowed(self, source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> tuple[bool, str]:
        """Whether ``source`` may open ``port``/``protocol`` on ``destination``, and which policy decided."""
        out, why_out = self._direction_allows(source, destination, "Egress", port, protocol, destination)
        if not out:
            return False, why_out
        into, why_in = self._direction_allows(destination, source, "Ingress", port, protocol, destination)
        return into, why_in if not into else f"{why_out}; {why_in}"
