"""What a layer asks of a target (:class:`Target`), and the record of one change to it (:class:`Change`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

import pandas as pd

from ..errors import InferbookError
from ..manifests import namespace_of
from ..paths import Layout
from ..profile import Profile
from ..say import Say

if TYPE_CHECKING:  # the declaration's type only: a target never imports a layer package
    from ..layer import Layer


class NoPart(InferbookError):
    """The layer has nothing to run on this target (a cluster-only layer on the local stack, say)."""


@dataclass(frozen=True)
class Change:
    """One object a target applied, deleted or planned: ``action`` says which and how it went."""

    kind: str
    name: str
    namespace: str | None
    action: str
    api_version: str = ""
    #: The layer (or feature) the object belongs to, when the caller says.
    layer: str = ""

    def row(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "namespace": self.namespace or "-", "layer": self.layer or "-",
                "action": self.action}


def changes_table(changes: Iterable[Change]) -> pd.DataFrame:
    """Changes as the chapters show them: kind, name, namespace, layer, action."""
    rows = [c.row() for c in changes]
    return pd.DataFrame(rows, columns=["kind", "name", "namespace", "layer", "action"])


class Target(ABC):
    """Where a profile's layers go. Each method is what a layer may ask; the kind of target says what it means.

    ``part(layer)`` is the layer's own code for this target: the :class:`~inferbook.layer.LocalLayer` the
    declaration's ``local`` builds, or what its ``cluster`` hook builds. :class:`NoPart` when it has none here.
    """

    #: The ``target.kind`` a profile names this target by.
    kind: ClassVar[str]
    #: Whether objects reach an API server (a cluster) on this target: what a chapter may promise to prove live.
    applies: ClassVar[bool]
    #: Whether the layers run as processes on this machine (their ``local`` parts): what only the embedded stack
    #: has (fault drills, the hops' table, a port on 127.0.0.1 per layer, this machine's CPU serving).
    local_processes: ClassVar[bool]

    def __init__(self, profile: Profile, layout: Layout, say: Say = print) -> None:
        self.profile = profile
        self.layout = layout
        self.say = say

    @property
    def namespace(self) -> str:
        """The namespace namespaced objects without one go to (the profile's ``target.namespace``)."""
        return str(self.profile.data["target"].get("namespace") or "inferbook")

    @abstractmethod
    def part(self, layer: "Layer") -> Any:
        """The layer's implementation on this target; :class:`NoPart` naming what it needs when it has none."""

    def has_part(self, layer: "Layer") -> bool:
        """Whether the layer runs something of its own on this target (no exception: a question)."""
        try:
            self.part(layer)
        except NoPart:
            return False
        return True

    @abstractmethod
    def apply(self, objects: list[dict[str, Any]], layer: str = "") -> list[Change]:
        """Make ``objects`` exist on the target (or say what would): one :class:`Change` per object."""

    @abstractmethod
    def wait(self, objects: list[dict[str, Any]], timeout: float) -> list[Change]:
        """Wait until the workloads among ``objects`` are ready; one :class:`Change` per object waited for."""

    @abstractmethod
    def expose(self, namespace: str, service: str, port: int) -> AbstractContextManager[str]:
        """A base URL on this machine that reaches ``service:port`` for the ``with`` block."""

    @abstractmethod
    def teardown(self, objects: list[dict[str, Any]], layer: str = "") -> list[Change]:
        """Remove what :meth:`apply` made of ``objects`` (only those): one :class:`Change` per object."""

    @abstractmethod
    def limits(self) -> str:
        """One line: what this target cannot show of a cluster-only layer ("" when it shows everything)."""

    def plan(self, objects: list[dict[str, Any]], layer: str = "", action: str = "planned") -> list[Change]:
        """What :meth:`apply` would send, in its order, without sending it: kind, name, namespace, layer."""
        from ..kube import plan_order  # the apply order is the kube client's; it needs no cluster to compute

        return [Change(o["kind"], o["metadata"]["name"], namespace_of(o, self.namespace), action,
                       o.get("apiVersion", ""), layer) for o in plan_order(objects)]

    def describe(self) -> str:
        """One line naming the target, for a chapter's first output."""
        return f"{self.kind} target of profile {self.profile.name}"
