"""The OpenCost part of the security chapter: which Prometheus it reads, and how cost lands on tenants and models.

OpenCost allocates each pod's cost to its namespace and labels. A tenant's own pods run in the tenant's
namespace (``tenants.team``), so their cost is the tenant's; the engines are shared in the serving namespace,
so their cost is the model's (``app.kubernetes.io/name`` names the engine, the workload the model it serves), to
be split among tenants by LiteLLM's spend ledger (ADR-0015), not by OpenCost.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..security.manifests import serving_namespace, tenant_namespace
from .manifests import LAYER, MANIFESTS, NAME, PROMETHEUS_ENDPOINT

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def render(profile: Any, layout: Any) -> list[dict[str, Any]]:
    """The layer's objects, or none when the profile does not enable it."""
    return MANIFESTS.render(profile, layout) if LAYER in profile.features else []


def prometheus_of(objects: list[dict[str, Any]]) -> str:
    """The Prometheus endpoint the rendered OpenCost reads."""
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == NAME:
            env = {e["name"]: e.get("value") for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}
            return str(env["PROMETHEUS_SERVER_ENDPOINT"])
    return ""


def attribution(stack: list[dict[str, Any]], profile: Any, objects: list[dict[str, Any]]) -> pd.DataFrame:
    """Each workload of the profile, the keys OpenCost allocates its cost by, and who pays."""
    if not objects:
        return pd.DataFrame([{"workload": "-", "namespace": "-", "engine label": "-",
                              "cost goes to": "features.opencost is off on this profile"}])
    serving, tenant = serving_namespace(profile), tenant_namespace(profile)
    rows = []
    for obj in stack:
        if obj.get("kind") in WORKLOADS:
            ns = obj["metadata"].get("namespace") or serving
            labels = (obj["spec"]["template"].get("metadata") or {}).get("labels") or {}
            component = labels.get("app.kubernetes.io/component", "")
            who = (f"tenant {tenant} (its namespace)" if ns == tenant else
                   "the model it serves (shared; split per tenant by LiteLLM spend)" if component == "serving" else
                   "the platform (shared)")
            rows.append({"workload": f"{obj['kind']}/{obj['metadata']['name']}", "namespace": ns,
                         "engine label": labels.get("app.kubernetes.io/name", "-"), "cost goes to": who})
    rows.append({"workload": "(any pod of the tenant)", "namespace": tenant, "engine label": "-",
                 "cost goes to": f"tenant {tenant} (its namespace)"})
    frame = pd.DataFrame(rows)
    frame.attrs["prometheus"] = prometheus_of(objects) or PROMETHEUS_ENDPOINT
    return frame


def proofs() -> pd.DataFrame:
    """OpenCost proves nothing live of its own here: its allocation needs a day of usage to read."""
    return pd.DataFrame(columns=["proof", "result", "pass"])
