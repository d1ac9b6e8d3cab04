"""The security chapter's steps: the reachability matrix and checks, the admission verdicts, the verification.

Offline on every target: the NetworkPolicies are evaluated (:mod:`.reachability`) over the pods the profile's
layers make (:mod:`.inventory`), and the Kyverno policies (:mod:`.admission`) over good and bad pods and the
layers' own pod templates. The live proof on a cluster is the layer's cluster part (:mod:`.cluster`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

from ...layer import Layer
from ...profile import Profile
from ...validate import ValidationReport
from . import admission, inventory
from .manifests import DIGEST_POLICY, GPU_POLICY, QUEUE_LABEL, failure_action, serving_namespace, tenant_namespace
from .probes import DIGEST_IMAGE, PROOFS, TAG_IMAGE
from .probes import pod as _pod
from .reachability import Evaluator, Pod


def rendered_stack(enabled: Iterable[Layer], profile: Profile, layout: Any) -> list[dict[str, Any]]:
    """The objects of the layers ``enabled`` (the registry's ``layers.enabled(profile)``, this one among them).

    ``enabled`` is passed on as the book a generating layer (gitops) reads: it only lists the others.
    """
    enabled = list(enabled)
    return [obj for layer in enabled for obj in layer.render(profile, layout, enabled)]


def evaluator(objects: Iterable[dict[str, Any]], profile: Profile) -> Evaluator:
    """The NetworkPolicies among ``objects``, with the serving namespace as the default of those without one."""
    return Evaluator(list(objects), default_namespace=serving_namespace(profile))


def matrix(ev: Evaluator, pods: list[Pod]) -> pd.DataFrame:
    """Source (rows) x destination (columns): True when the source may open the destination's main port."""
    data = {}
    for dst in pods:
        port, protocol = inventory.main_port(dst)
        data[f"{dst.name} :{port}"] = {src.name: ev.allowed(src, dst, port, protocol)[0] for src in pods}
    frame = pd.DataFrame(data)
    frame.index.name = "from \\ to"
    return frame


def plot_matrix(frame: pd.DataFrame) -> Any:
    """The matrix as a heatmap: green allowed, grey denied."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    figure, ax = plt.subplots(figsize=(1 + 0.55 * len(frame.columns), 1 + 0.4 * len(frame.index)))
    ax.imshow(frame.astype(int).to_numpy(), cmap=ListedColormap(["#dddddd", "#3a9d4a"]), vmin=0, vmax=1)
    ax.set_xticks(range(len(frame.columns)), frame.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(frame.index)), frame.index, fontsize=8)
    ax.set_xlabel("destination (its port)")
    ax.set_ylabel("source")
    ax.set_title("Who may open a connection to whom (green: allowed)", fontsize=10)
    figure.tight_layout()
    plt.close(figure)
    return figure


@dataclass(frozen=True)
class Path:
    """A connection the chapter checks: source and destination pods (by name), port, and what must happen."""

    what: str
    source: str
    destination: str
    port: int
    expected: bool
    protocol: str = "TCP"


def paths(pods: list[Pod]) -> list[Path]:
    """The ADR's checks that apply to this profile's pods (a row needs both of its pods rendered)."""
    names = inventory.by_name(pods)
    wanted = [
        Path("tenant pod -> vLLM", inventory.TENANT_POD, "vllm", 8000, False),
        Path("unlabelled pod in the serving namespace -> vLLM", inventory.STRAY_POD, "vllm", 8000, False),
        Path("gateway (LiteLLM) -> vLLM", "litellm", "vllm", 8000, True),
        Path("tenant pod -> gateway (LiteLLM)", inventory.TENANT_POD, "litellm", 4000, True),
        Path("tenant pod -> inference gateway", inventory.TENANT_POD, "inference-gateway-proxy", 80, False),
        Path("tenant pod -> endpoint picker", inventory.TENANT_POD, "vllm-epp", 9002, False),
        Path("gateway (LiteLLM) -> inference gateway", "litellm", "inference-gateway-proxy", 80, True),
        Path("inference gateway -> vLLM", "inference-gateway-proxy", "vllm", 8000, True),
        Path("Prometheus -> vLLM metrics", "prometheus", "vllm", 8000, True),
        Path("Prometheus -> LiteLLM metrics", "prometheus", "litellm", 4000, True),
        Path("LiteLLM -> Postgres", "litellm", "litellm-db-1", 5432, True),
        Path("migration Job -> Postgres", "litellm-migrate", "litellm-db-1", 5432, True),
        Path("tenant pod -> Postgres", inventory.TENANT_POD, "litellm-db-1", 5432, False),
        Path("vLLM -> Postgres", "vllm", "litellm-db-1", 5432, False),
        Path("portal (oauth2-proxy) -> LiteLLM", "oauth2-proxy", "litellm", 4000, True),
        Path("portal (oauth2-proxy) -> Dex", "oauth2-proxy", "dex", 5556, True),
        Path("portal (oauth2-proxy) -> vLLM", "oauth2-proxy", "vllm", 8000, False),
        Path("Prometheus -> OpenCost", "prometheus", "opencost", 9003, True),
        Path("OpenCost -> Prometheus", "opencost", "prometheus", 9090, True),
        Path("tenant pod -> OpenCost", inventory.TENANT_POD, "opencost", 9003, False),
        Path("MCP gateway -> Dex (its keys)", "mcp-gateway-proxy", "dex", 5556, True),
        Path("MCP gateway -> vLLM", "mcp-gateway-proxy", "vllm", 8000, False),
        Path("tenant pod -> DNS", inventory.TENANT_POD, "coredns", 53, True, "UDP"),
        Path("vLLM -> DNS", "vllm", "coredns", 53, True, "UDP"),
    ]
    return [p for p in wanted if p.source in names and p.destination in names]


def reachability(ev: Evaluator, pods: list[Pod]) -> pd.DataFrame:
    """One row per checked connection: expected, evaluated, the policy that decided, pass."""
    names = inventory.by_name(pods)
    rows = []
    for p in paths(pods):
        ok, why = ev.allowed(names[p.source], names[p.destination], p.port, p.protocol)
        rows.append({"connection": p.what, "from": names[p.source].id, "to": f"{names[p.destination].id}:{p.port}"
                     f"/{p.protocol}", "expected": "allowed" if p.expected else "denied",
                     "evaluated": "allowed" if ok else "denied", "why": why, "pass": ok == p.expected})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- admission


@dataclass(frozen=True)
class Case:
    """A pod submitted to admission and what must come of it on an Enforce tier (admitted or denied)."""

    what: str
    pod: dict[str, Any]
    denied_by: str  # the policy that must deny it ("" when it must be admitted)


def cases(profile: Profile) -> list[Case]:
    """Good and bad pods for both policies, in the namespaces they cover."""
    serving, tenant = serving_namespace(profile), tenant_namespace(profile)
    serving_labels = {"app.kubernetes.io/component": "serving"}
    return [
        Case("GPU pod without a queue label (tenant namespace)",
             _pod("gpu-unlabelled", tenant, {}, DIGEST_IMAGE, True), GPU_POLICY[1]),
        Case("GPU pod with a queue label (tenant namespace)",
             _pod("gpu-queued", tenant, {QUEUE_LABEL: "team-queue"}, DIGEST_IMAGE, True), ""),
        Case("GPU pod without a queue label (serving namespace)",
             _pod("gpu-unlabelled", serving, {}, DIGEST_IMAGE, True), GPU_POLICY[1]),
        Case("pod without a GPU, no queue label", _pod("cpu-only", tenant, {}, DIGEST_IMAGE, False), ""),
        Case("GPU pod without a label outside the managed namespaces",
             _pod("gpu-elsewhere", "default", {}, DIGEST_IMAGE, True), ""),
        Case("serving pod with a tag-only image", _pod("engine-by-tag", serving, serving_labels, TAG_IMAGE, False),
             DIGEST_POLICY[1]),
        Case("serving pod with a digest-pinned image",
             _pod("engine-by-digest", serving, serving_labels, DIGEST_IMAGE, False), ""),
    ]


def kyverno_policies(objects: Iterable[dict[str, Any]], profile: Profile) -> list[dict[str, Any]]:
    """The rendered Kyverno policies, each with its namespace (a Policy's is the serving namespace)."""
    out = []
    for obj in objects:
        if obj.get("kind") in ("ClusterPolicy", "Policy") and str(obj.get("apiVersion", "")).startswith("kyverno.io"):
            if obj["kind"] == "Policy" and not obj["metadata"].get("namespace"):
                obj = {**obj, "metadata": {**obj["metadata"], "namespace": serving_namespace(profile)}}
            out.append(obj)
    return out


def admit(policies: list[dict[str, Any]], pod: dict[str, Any], namespace: str) -> tuple[bool, list[admission.Verdict]]:
    """Kyverno's answer to one pod: admitted unless an Enforce rule fails; every rule's verdict."""
    verdicts = [v for policy in policies for v in admission.evaluate(policy, pod, namespace)]
    return all(v.admitted for v in verdicts), verdicts


def _violations(verdicts: list[admission.Verdict]) -> str:
    failed = [f"{v.policy} ({v.action})" for v in verdicts if v.result == "fail"]
    return ", ".join(failed) or "-"


def verdicts(policies: list[dict[str, Any]], profile: Profile) -> pd.DataFrame:
    """The policy verdict table: each case, the rules it violates, admitted or not on this tier, and as expected.

    On an Audit tier a violation is admitted and reported; the expectation follows the tier's failureAction.
    """
    enforce = failure_action(profile) == "Enforce"
    rows = []
    for case in cases(profile):
        ok, vs = admit(policies, case.pod, case.pod["metadata"]["namespace"])
        violated = {v.policy for v in vs if v.result == "fail"}
        expect_violation = bool(case.denied_by)
        rows.append({"pod": case.what, "namespace": case.pod["metadata"]["namespace"],
                     "violates": _violations(vs), "admission": "admitted" if ok else "denied",
                     "expected": ("denied" if enforce else "admitted, reported") if expect_violation else "admitted",
                     "pass": (case.denied_by in violated) == expect_violation and ok == (not (expect_violation
                                                                                              and enforce))
                     and (not expect_violation or violated == {case.denied_by})})
    return pd.DataFrame(rows)


def workload_verdicts(policies: list[dict[str, Any]], objects: Iterable[dict[str, Any]],
                      profile: Profile) -> pd.DataFrame:
    """The layers' own pod templates through the same policies (Kyverno's autogen reads them the same way)."""
    rows = []
    for obj in objects:
        if obj.get("kind") in inventory.WORKLOADS:
            pod, ns = admission.as_pod(obj)
            ns = ns or serving_namespace(profile)
            ok, vs = admit(policies, pod, ns)
            rows.append({"workload": f"{obj['kind']}/{obj['metadata']['name']}", "namespace": ns,
                         "violates": _violations(vs), "admission": "admitted" if ok else "denied"})
    return pd.DataFrame(rows, columns=["workload", "namespace", "violates", "admission"])


# --------------------------------------------------------------------------- live proof and verification


def live(target: Any, declaration: Layer, objects: list[dict[str, Any]]) -> pd.DataFrame:
    """On a target with a cluster part: its proof rows; elsewhere one row per proof saying it needs a cluster."""
    if target.has_part(declaration):
        return target.part(declaration).prove(objects)
    return pd.DataFrame([{"proof": p, "result": "needs a cluster", "pass": True} for p in PROOFS])


def verify(report: ValidationReport, reach: pd.DataFrame, verdict_table: pd.DataFrame, workloads: pd.DataFrame,
           proof: pd.DataFrame, others: Iterable[tuple[str, ValidationReport, pd.DataFrame]] = ()
           ) -> list[dict[str, Any]]:
    """The chapter's verification rows: schemas, each checked connection, each admission case, the layers' own
    pod templates through the gate (a GPU engine without a queue label is refused on an Enforce tier: the row
    fails rather than let the policy take the engines down), and the live proofs or what needs a cluster."""
    rows = [{"check": "the layer's objects validate against their schemas", "expected": "0 failed",
             "observed": report.summary(), "pass": not report.failures}]
    for _, r in reach.iterrows():
        rows.append({"check": r["connection"], "expected": r["expected"], "observed": r["evaluated"],
                     "pass": bool(r["pass"])})
    for _, r in verdict_table.iterrows():
        rows.append({"check": f"admission: {r['pod']}", "expected": r["expected"],
                     "observed": f"{r['admission']} ({r['violates']})", "pass": bool(r["pass"])})
    denied = workloads.loc[workloads["admission"] != "admitted", "workload"].tolist()
    rows.append({"check": "the layers' own pod templates pass admission on this tier", "expected": "all admitted",
                 "observed": f"{len(workloads) - len(denied)} of {len(workloads)} admitted"
                             + (f"; denied: {', '.join(denied)}" if denied else ""), "pass": not denied})
    for _, r in proof.iterrows():
        rows.append({"check": f"live: {r['proof']}", "expected": "as on paper" if r["result"] != "needs a cluster"
                     else "needs a cluster", "observed": r["result"], "pass": bool(r["pass"])})
    for name, other_report, other_proof in others:
        rows.append({"check": f"the {name} layer's objects validate", "expected": "0 failed",
                     "observed": other_report.summary(), "pass": not other_report.failures})
        rows += [{"check": f"live ({name}): {r['proof']}", "expected": "as on paper" if r["result"] !=
                  "needs a cluster" else "needs a cluster", "observed": r["result"], "pass": bool(r["pass"])}
                 for _, r in other_proof.iterrows()]
    return rows
