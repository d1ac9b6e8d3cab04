"""The llm-gateway chapter's steps on either target: bring the gateway up, or reach the one that runs."""

from __future__ import annotations

from typing import Any

from ...errors import InferbookError
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from . import manifests
from .endpoint import GatewayEndpoint
from .local import LocalGateway


def provision(profile: Profile, layout: Layout, objects: list[dict[str, Any]], say: Say = print,
              timeout: float = 900) -> GatewayEndpoint:
    """Bring the tenant gateway up on the profile's target and return its endpoint.

    A cluster gets the rendered ``objects`` applied (:func:`.cluster.provision_kube`,
    imported only then: the local run never loads the cluster client); locally the proxy and its
    Postgres start as processes from the same manifests, or a healthy proxy of ours is reused.
    """
    if profile.target_kind == "kube":
        from .cluster import provision_kube

        return provision_kube(profile, objects, say=say, timeout=timeout)
    local = LocalGateway(profile, layout, say=say)
    status = local.bring_up(timeout)
    return GatewayEndpoint(local.url, local.base, local.master_key, "local process", status)


def connect(profile: Profile, layout: Layout, say: Say = print) -> GatewayEndpoint:
    """The running gateway of the profile, for chapters after llm-gateway; nothing is applied or started."""
    if profile.target_kind == "kube":
        from .cluster import connect as connect_kube

        return connect_kube(profile, manifests.MANIFESTS.render(profile, layout), say=say)
    local = LocalGateway(profile, layout, say=say)
    problem = local.diagnosis()
    if problem:
        raise InferbookError(problem)
    return GatewayEndpoint(local.url, local.base, local.master_key, "local process", {**local.status(), "reused": True})
