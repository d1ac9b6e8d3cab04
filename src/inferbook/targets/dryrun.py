"""The dry-run target: a cluster profile rendered and planned in the order it would be applied; nothing sent."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .base import Change, NoPart, Target

if TYPE_CHECKING:
    from ..layer import Layer


class DryRunTarget(Target):
    """For reviewing a kube profile on a machine with no cluster: every ``apply`` is a plan; no part runs."""

    kind = "dry-run"
    applies = False
    local_processes = False

    def part(self, layer: "Layer") -> Any:
        raise NoPart(f"dry run: layer {layer.name} is planned, not run; drop --dry-run to run it on its target")

    def apply(self, objects: list[dict[str, Any]], layer: str = "") -> list[Change]:
        return self.plan(objects, layer, action="would apply")

    def wait(self, objects: list[dict[str, Any]], timeout: float) -> list[Change]:
        return []

    def expose(self, namespace: str, service: str, port: int) -> AbstractContextManager[str]:
        raise NoPart(f"dry run: service {namespace}/{service} is not reachable; nothing was applied")

    def teardown(self, objects: list[dict[str, Any]], layer: str = "") -> list[Change]:
        return self.plan(objects, layer, action="would delete")

    def limits(self) -> str:
        return f"dry run of profile {self.profile.name}: planned in apply order, nothing sent to a cluster"
