"""The security layer's manifests (ADR-0029 SR1, SR2): one base, the profile's namespaces and tier patched in.

``manifests/security/policies`` holds the NetworkPolicies of the serving namespace (its objects carry no
namespace: the overlay puts them in ``target.namespace``), the tenant namespace's (written in namespace
``tenant``, renamed here to ``tenants.team``) and the Kyverno policies. What a profile changes: the tenant
namespace's name and the selectors naming it, the serving namespace named in the tenant's egress rule, the
namespaces the GPU gate covers, and each rule's failureAction from the tier (Enforce on prod, Audit below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...manifests import LayerManifests, Selection, find, guarded_replace, json6902
from ...profile import Profile

LAYER = "security"
#: The namespace the base writes the tenant's objects in, and the tenant NetworkPolicies there.
TENANT_PLACEHOLDER = "tenant"
TENANT_POLICIES = ("tenant-default-deny", "tenant-allow-dns", "tenant-to-gateway")
#: The Kyverno policies of the base (kind, name).
GPU_POLICY = ("ClusterPolicy", "require-gpu-queue-label")
DIGEST_POLICY = ("Policy", "require-image-digest")
KYVERNO_GROUP = "kyverno.io"
NETPOL_GROUP = "networking.k8s.io"
#: The label naming a pod's Kueue LocalQueue (ADR-0002), which the GPU gate demands.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def tenant_namespace(profile: Profile) -> str:
    """The tenant's namespace: the team of ``tenants.team`` (the schema's default ``demo``)."""
    return str(profile.data["tenants"]["team"])


def serving_namespace(profile: Profile) -> str:
    return str(profile.data["target"].get("namespace") or "inferbook")


def managed_namespaces(profile: Profile) -> list[str]:
    """The namespaces the book runs pods in: the serving namespace and the tenant's.

    Other namespaces the layers write into (``monitoring``: a Grafana datasource's ExternalSecret; the GPU
    Operator's, a ConfigMap) belong to the operators installed there; a default-deny there would cut those
    operators off, so they are not managed here.
    """
    return list(dict.fromkeys([serving_namespace(profile), tenant_namespace(profile)]))


def failure_action(profile: Profile) -> str:
    """Enforce (reject at admission) on the prod tier, Audit (admit and report) on cost and dev."""
    return "Enforce" if profile.data["tier"] == "prod" else "Audit"


def selection(profile: Profile) -> Selection:
    reason = (f"default-deny NetworkPolicies in {', '.join(managed_namespaces(profile))} with the request path's "
              f"allow-rules, and Kyverno's GPU gate and digest rule in {failure_action(profile)} mode "
              f"(tier {profile.data['tier']}; ADR-0029)")
    return Selection(layer=LAYER, base="security/policies", base_reason=reason, components=())


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    """Tenant namespace renamed, namespace selectors and the GPU gate's namespaces set, failureAction by tier."""
    tenant, serving = tenant_namespace(profile), serving_namespace(profile)
    out: list[dict[str, Any]] = []  # the tenant's Namespace is the platform layer's (one owner per object)
    for name in TENANT_POLICIES:
        out.append(json6902("NetworkPolicy", NETPOL_GROUP, name,
                            guarded_replace("/metadata/namespace", TENANT_PLACEHOLDER, tenant)))
    selector = "/spec/egress/0/to/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name"
    to_gateway = find(base_objects, "NetworkPolicy", "tenant-to-gateway")
    out.append(json6902("NetworkPolicy", NETPOL_GROUP, "tenant-to-gateway", guarded_replace(
        selector, to_gateway["spec"]["egress"][0]["to"][0]["namespaceSelector"]["matchLabels"][
            "kubernetes.io/metadata.name"], serving)))
    from_tenants = find(base_objects, "NetworkPolicy", "litellm-from-tenants")
    selector = "/spec/ingress/0/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name"
    out.append(json6902("NetworkPolicy", NETPOL_GROUP, "litellm-from-tenants", guarded_replace(
        selector, from_tenants["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"][
            "kubernetes.io/metadata.name"], tenant)))
    action = failure_action(profile)
    for kind, name in (GPU_POLICY, DIGEST_POLICY):
        policy = find(base_objects, kind, name)
        ops: list[dict[str, Any]] = []
        for i, rule in enumerate(policy["spec"]["rules"]):
            ops += guarded_replace(f"/spec/rules/{i}/validate/failureAction", rule["validate"]["failureAction"],
                                   action)
        if (kind, name) == GPU_POLICY:
            path = "/spec/rules/0/match/any/0/resources/namespaces"
            ops += guarded_replace(path, policy["spec"]["rules"][0]["match"]["any"][0]["resources"]["namespaces"],
                                   managed_namespaces(profile))
        out.append(json6902(kind, KYVERNO_GROUP, name, ops))
    return out


MANIFESTS = LayerManifests(LAYER, selection, patches)
