"""The kube target: server-side apply to the cluster of the profile's context, waits, port-forwards, teardown."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .base import Change, NoPart, Target

if TYPE_CHECKING:
    from ..layer import Layer

#: Kinds whose readiness :meth:`KubeTarget.wait` awaits (a rollout); other kinds are ready once applied.
ROLLOUT_KINDS = ("Deployment", "StatefulSet")


class KubeTarget(Target):
    """A real cluster: the objects are applied with :func:`inferbook.kube.apply` and proven there."""

    kind = "kube"
    applies = True
    local_processes = False

    @property
    def context(self) -> str:
        return str(self.profile.data["target"]["context"])

    @property
    def kubeconfig(self) -> str | None:
        value = self.profile.data["target"].get("kubeconfig")
        return str(value) if value else None

    def part(self, layer: "Layer") -> Any:
        if layer.cluster is None:
            raise NoPart(f"layer {layer.name} has no cluster steps of its own: applying its objects is all it does")
        return layer.cluster(self.profile, self.layout, target=self, say=self.say)

    def apply(self, objects: list[dict[str, Any]], layer: str = "") -> list[Change]:
        from .. import kube  # the cluster client only where a cluster is the target

        applied = kube.apply(objects, self.context, kubeconfig=self.kubeconfig, namespace=self.namespace,
                             say=self.say)
        return [Change(a.kind, a.name, a.namespace, a.action, a.api_version, layer) for a in applied]

    def wait(self, objects: list[dict[str, Any]], timeout: float) -> list[Change]:
        from .. import kube

        done = []
        for obj in objects:
            if obj.get("kind") in ROLLOUT_KINDS:
                ns = obj["metadata"].get("namespace") or self.namespace
                kube.wait_rollout(self.context, ns, obj["metadata"]["name"], timeout=timeout,
                                  kubeconfig=self.kubeconfig, say=self.say)
                done.append(Change(obj["kind"], obj["metadata"]["name"], ns, "ready", obj.get("apiVersion", "")))
        return done

    def expose(self, namespace: str, service: str, port: int) -> AbstractContextManager[str]:
        from .. import kube

        return kube.port_forward(self.context, namespace, service, port, kubeconfig=self.kubeconfig, say=self.say)

    def teardown(self, objects: list[dict[str, Any]], layer: str = "") -> list[Change]:
        from .. import kube

        deleted = kube.delete(objects, self.context, kubeconfig=self.kubeconfig, namespace=self.namespace,
                              say=self.say)
        return [Change(d.kind, d.name, d.namespace, d.action, d.api_version, layer) for d in deleted]

    def limits(self) -> str:
        return ""

    def describe(self) -> str:
        return f"kube target: context {self.context}, namespace {self.namespace}"
