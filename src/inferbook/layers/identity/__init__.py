"""Identity (ADR-0026), in the security chapter: Dex as the one OIDC issuer, oauth2-proxy in front of LiteLLM's
admin UI and key portal, secrets from the store. Cluster-only: rendered, validated and summarised everywhere;
on a kube target its cluster part (:mod:`.cluster`) checks that the portal sends a visitor to Dex.
"""

from __future__ import annotations

from ...layer import Layer
from .cluster import IdentityCluster
from .manifests import LAYER, MANIFESTS

__all__ = ["DECLARATION", "IdentityCluster"]

DECLARATION = Layer(
    name=LAYER,
    summary="single sign-on: Dex as the OIDC issuer, oauth2-proxy in front of LiteLLM's admin UI and key portal",
    manifests=MANIFESTS,
    chapter="security",
    cluster=IdentityCluster,
)
