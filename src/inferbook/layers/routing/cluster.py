"""The routing layer on a cluster: the Gateway, routes, pools and pickers applied server-side.

Kept apart from :mod:`.local` (the front, vllm-router and the second replica as processes) so that the two
parts have the same method names and a step asks the target for its part, never which target it is.
What GIE then does with the traffic (picking, failover) is its controllers' and is read from the cluster.
"""

from __future__ import annotations

from typing import Any

from ...layer import ClusterLayer
from .manifests import LAYER


class ClusterRouting(ClusterLayer):
    """The routing layer's steps on a kube target (``target.part(routing)``): :meth:`provision` as on
    :class:`~.local.LocalRouting`."""

    def provision(self, objects: list[dict[str, Any]], timeout: float = 900) -> dict[str, Any]:
        """Server-side apply the Gateway, routes, pools and pickers; the facts of the apply."""
        applied = self.target.apply(objects, LAYER)
        return {"applied": len(applied)}
