"""The platform chapter's steps beyond rendering: the live proof on any target, and the verification.

:func:`prove` is the one call for the proof whatever the target: it asks the target for the layer's part and,
where there is none (the local target, a dry run), answers the same rows with what each check needs, and what
Kueue is expected to do, computed offline from the rendered quota. The chapter never branches on the target.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...layer import Layer
from ...profile import Profile
from ...targets import NoPart, Target
from . import admission
from .manifests import GPU_RESOURCE, QUEUE_LABEL, SECRET_STORE, gpu_quota, kueue_on
from .proof import OVER, WITHIN, proof_jobs


def expected_proof(profile: Profile, objects: list[dict[str, Any]]) -> pd.DataFrame:
    """What Kueue does with the proof's two Jobs on an idle cluster, from the rendered quota alone."""
    queues = [o for o in objects if o.get("kind") in ("ClusterQueue", "LocalQueue")]
    return admission.table(queues + proof_jobs(profile))


def prove(declaration: Layer, target: Target, objects: list[dict[str, Any]]) -> pd.DataFrame:
    """The live proof's rows (check, expected, observed, pass): run by the layer's cluster part where the target
    has one; elsewhere the rows say what each check needs, with the verdicts the offline evaluation expects."""
    try:
        part = target.part(declaration)
    except NoPart as why:
        return _needs_a_cluster(target.profile, objects, str(why))
    return part.prove(objects)


def _needs_a_cluster(profile: Profile, objects: list[dict[str, Any]], why: str) -> pd.DataFrame:
    store = profile.data["platform"]["secret_store"]["provider"]
    rows = []
    if kueue_on(profile):
        expected = expected_proof(profile, objects).set_index("workload")["verdict"]
        quota = gpu_quota(profile)
        rows += [
            {"check": f"a Job asking 1 {GPU_RESOURCE} of {quota} is admitted and runs",
             "expected": expected.get(f"Job/{WITHIN}", "-")},
            {"check": f"a Job asking {quota + 1} {GPU_RESOURCE} (beyond the quota of {quota}) is held",
             "expected": expected.get(f"Job/{OVER}", "-")},
        ]
    else:
        rows.append({"check": "Kueue admits within the quota, holds beyond it",
                     "expected": "no Kueue on a CPU profile"})
    rows.append({"check": f"ClusterSecretStore {SECRET_STORE} ({store}) is Ready", "expected": "Ready=True"})
    for row in rows:
        row.update(observed=f"needs a cluster: {why}", passed="not run here")
    return pd.DataFrame(rows).rename(columns={"passed": "pass"})


def verify(profile: Profile, objects: list[dict[str, Any]], workloads: list[dict[str, Any]],
           proof: pd.DataFrame) -> list[dict[str, Any]]:
    """The chapter's checks: the quota is the hardware, every GPU workload queues and fits, the store and the GPU
    stack are the profile's; plus each row of the live proof that ran (a row not run here is not a check)."""
    everything = objects + workloads
    limit = admission.quota(everything)
    slots = gpu_quota(profile) if kueue_on(profile) else None
    pods = admission.queued_pods(everything)
    table = admission.table(everything)
    unlabelled = [f"{p.workload}/{p.pod}" for p in pods if p.requests[GPU_RESOURCE] and not p.queue]
    refused = table[(table["verdict"] != "admitted") & (table["workload"] != "-")] if limit is not None \
        else table.iloc[0:0]
    store = next((o for o in objects if o.get("kind") == "ClusterSecretStore"), {})
    stack = next((o for o in objects if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == "gpu-stack"), {})
    rows = [
        {"check": f"the ClusterQueue's {GPU_RESOURCE} quota is the GPU slots (count x time-slicing)",
         "expected": slots if slots is not None else "no ClusterQueue (no GPU)",
         "observed": int(limit[GPU_RESOURCE]) if limit else "no ClusterQueue (no GPU)",
         "pass": (int(limit[GPU_RESOURCE]) if limit else None) == slots},
        {"check": f"every GPU workload carries {QUEUE_LABEL}", "expected": "none without it",
         "observed": ", ".join(unlabelled) or "none without it", "pass": not unlabelled},
        {"check": "the book's queued pods fit the quota (replicas, rollout surge, canary)",
         "expected": "all admitted" if limit is not None else "nothing queued (no GPU)",
         "observed": "; ".join(f"{r.workload} {r.pod}: {r.verdict}" for r in refused.itertuples())
         or ("all admitted" if limit is not None else "nothing queued (no GPU)"),
         "pass": refused.empty},
        {"check": f"ClusterSecretStore {SECRET_STORE} uses the profile's provider",
         "expected": profile.data["platform"]["secret_store"]["provider"],
         "observed": ", ".join(((store.get("spec") or {}).get("provider") or {}).keys()) or "no store rendered",
         "pass": list(((store.get("spec") or {}).get("provider") or {}).keys())
         == [profile.data["platform"]["secret_store"]["provider"]]},
        {"check": "the GPU stack recorded is gpu.stack", "expected": profile.data["gpu"]["stack"],
         "observed": (stack.get("data") or {}).get("stack", "no gpu-stack ConfigMap"),
         "pass": (stack.get("data") or {}).get("stack") == profile.data["gpu"]["stack"]},
    ]
    for row in proof.to_dict("records"):
        if isinstance(row.get("pass"), bool):
            rows.append({**row, "check": f"live: {row['check']}"})
    return rows
