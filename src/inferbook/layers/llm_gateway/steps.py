"""The llm-gateway chapter's steps on either target: bring the gateway up, or reach the one that runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ... import targets
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from .declaration import PARTS
from .endpoint import GatewayEndpoint

if TYPE_CHECKING:
    from .cluster import ClusterGateway
    from .local import LocalGateway


def _part(profile: Profile, layout: Layout, say: Say) -> "LocalGateway | ClusterGateway":
    """The gateway's own part on the profile's target: its local processes, or its cluster steps."""

    return targets.of(profile, layout, say).part(PARTS)


def provision(profile: Profile, layout: Layout, objects: list[dict[str, Any]], say: Say = print,
              timeout: float = 900) -> GatewayEndpoint:
    """Bring the tenant gateway up on the profile's target and return its endpoint.

    A cluster gets the rendered ``objects`` applied in stages (:meth:`.cluster.ClusterGateway.provision`,
    imported only then: the local run never loads the cluster client); locally the proxy and its
    Postgres start as processes from the same manifests, or a healthy proxy of ours is reused.
    """
    return _part(profile, layout, say).provision(objects, timeout=timeout)


def connect(profile: Profile, layout: Layout, say: Say = print) -> GatewayEndpoint:
    """The running gateway of the profile, for chapters after llm-gateway; nothing is applied or started."""
    return _part(profile, layout, say).connect()
