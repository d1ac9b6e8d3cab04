"""The identity part of the security chapter: Dex's rendered config, the portal's URLs, the live redirect."""

from __future__ import annotations

from typing import Any

import pandas as pd
import yaml

from ...layer import Layer
from .cluster import PROOFS
from .manifests import DEX_CONFIGMAP, PORTAL


def summary(objects: list[dict[str, Any]]) -> pd.DataFrame:
    """What the rendered layer says about sign-in: issuer, connector, client, where secrets come from."""
    config = yaml.safe_load(next(o for o in objects if o["kind"] == "ConfigMap"
                                 and o["metadata"]["name"] == DEX_CONFIGMAP)["data"]["config.yaml"])
    portal = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == PORTAL)
    args = dict(a.split("=", 1) for a in portal["spec"]["template"]["spec"]["containers"][0]["args"] if "=" in a)
    connectors = [c["type"] for c in config.get("connectors", [])] + (
        ["static password (hash from the secret store)"] if config.get("enablePasswordDB") else [])
    secrets = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "ExternalSecret")
    rows = [("issuer", config["issuer"]), ("connector", ", ".join(connectors)),
            ("portal client", config["staticClients"][0]["id"]),
            ("portal redirect", config["staticClients"][0]["redirectURIs"][0]),
            ("portal upstream", args["--upstream"]), ("login URL (browser)", args["--login-url"]),
            ("token URL (in cluster)", args["--redeem-url"]), ("secrets (ExternalSecret)", ", ".join(secrets)),
            ("Secret objects rendered", str(sum(o["kind"] == "Secret" for o in objects)))]
    return pd.DataFrame(rows, columns=["setting", "value"])


def live(target: Any, declaration: Layer, objects: list[dict[str, Any]]) -> pd.DataFrame:
    """The live redirect on a target with a cluster part; elsewhere a row saying it needs a cluster."""
    if target.has_part(declaration):
        return target.part(declaration).prove(objects)
    return pd.DataFrame([{"proof": p, "result": "needs a cluster", "pass": True} for p in PROOFS])


def render(profile: Any, layout: Any) -> list[dict[str, Any]]:
    """The layer's objects, or none when the profile does not enable it (the chapter then says so)."""
    from .manifests import LAYER, MANIFESTS

    return MANIFESTS.render(profile, layout) if LAYER in profile.features else []


def plan(target: Any, objects: list[dict[str, Any]]) -> pd.DataFrame:
    """What the target does with the layer's objects (a kube target applies them)."""
    from ...targets import changes_table

    return changes_table(target.apply(objects, "identity") if objects else [])


def overview(objects: list[dict[str, Any]]) -> pd.DataFrame:
    """:func:`summary`, or one row saying the feature is off."""
    if not objects:
        return pd.DataFrame([("identity", "features.identity is off on this profile: nothing rendered")],
                            columns=["setting", "value"])
    return summary(objects)


def proof(target: Any, declaration: Layer, objects: list[dict[str, Any]]) -> pd.DataFrame:
    """:func:`live`, or one row saying the feature is off."""
    if not objects:
        return pd.DataFrame([{"proof": PROOFS[0], "result": "features.identity is off", "pass": True}])
    return live(target, declaration, objects)
