"""The identity layer on a cluster: after its objects roll out, the portal must send a visitor to Dex."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...layer import ClusterLayer
from .manifests import PORTAL, PORTAL_PORT
from .portal import check_redirect, redirect_of

PROOFS = ("the portal sends an unauthenticated visit to Dex",)


class IdentityCluster(ClusterLayer):
    """Waits for Dex and the portal, then checks the portal's redirect through a port-forward."""

    def prove(self, objects: list[dict[str, Any]], timeout: float = 300.0) -> pd.DataFrame:
        self.target.wait(objects, timeout)
        with self.target.expose(self.target.namespace, PORTAL, PORTAL_PORT) as base:
            status, location = redirect_of(base)
        return pd.DataFrame([check_redirect(self.profile, status, location)])
