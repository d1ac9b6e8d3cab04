"""The local target: the embedded stack, the layers' processes on this machine; no API server to apply to."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from .base import Change, NoPart, Target

if TYPE_CHECKING:
    from ..layer import Layer


class LocalTarget(Target):
    """Layers with processes run them (their ``local`` part); objects are planned, never applied: there is no cluster.

    ``apply`` answers the plan (action ``not applied: no cluster``) so that a cluster-only chapter shows what it would
    send; its behaviour is then proven only on a kube target, which :meth:`limits` says in one line.
    """

    kind = "local"
    applies = False
    local_processes = True

    def part(self, layer: "Layer") -> Any:
        if layer.local is None:
            raise NoPart(f"layer {layer.name} runs nothing on the local target: it is cluster-only. Its chapter "
                         f"renders, validates and plans it here; run it on a kube profile (kind, gke-l4) to apply it")
        return layer.local(self.profile, self.layout, say=self.say)

    def apply(self, objects: list[dict[str, Any]], layer: str = "") -> list[Change]:
        return self.plan(objects, layer, action="not applied: no cluster")

    def wait(self, objects: list[dict[str, Any]], timeout: float) -> list[Change]:
        return []  # nothing was applied: a process's own start waits for it (LocalLayer.start)

    def expose(self, namespace: str, service: str, port: int) -> AbstractContextManager[str]:
        return nullcontext(f"http://127.0.0.1:{port}")  # the local processes listen on this machine already

    def teardown(self, objects: list[dict[str, Any]], layer: str = "") -> list[Change]:
        return self.plan(objects, layer, action="nothing to delete: not applied")

    def limits(self) -> str:
        return ("local target: no API server here, so the objects are rendered, validated against their schemas and "
                "planned, not applied; what they do (admission, scaling, sync) is proven on a kube profile")
