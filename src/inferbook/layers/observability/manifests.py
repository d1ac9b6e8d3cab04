"""The observability layer's manifests: the SLO rules, the dashboards, and what a profile sets in them.

The base ``manifests/observability/monitoring`` holds the PrometheusRule ``inferbook-slo`` (ADR-0003's
objectives, SLIs and alerts), one ConfigMap per Grafana dashboard, and the spend dashboard's PostgreSQL
datasource (an ExternalSecret that writes Grafana's provisioning file, pointing at the ledger's read-only
Service in the profile's namespace); components add the scrapes the other layers cannot write themselves
(KServe's predictor pods, dcgm-exporter). The profile's ``slo`` section becomes the objective series of the
rules, so the alerts, the dashboards, the chapter's SLO table and the benchmarks chapter's knee compare
against one number; the end-to-end alert states the answer length it holds for, the profile's
``benchmarks.output_tokens``. Readers of the rendered objects (the local Prometheus, the chapter) use
:func:`rule_groups`, :func:`dashboards` and :func:`ledger_datasource` rather than knowing the objects' layout.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from ...manifests import LayerManifests, ManifestError, Selection, find, guarded_replace, json6902, pointer
from ...profile import Profile
from ..llm_gateway.manifests import GATEWAY_DB_CLUSTER

LAYER = "observability"
#: The PrometheusRule of the SLOs, and the group whose rules are the objectives.
RULE_NAME = "inferbook-slo"
OBJECTIVE_GROUP = "inferbook-slo.objectives"
OBJECTIVE_RECORD = "inferbook:slo_objective"
#: The end-to-end alert, and the answer length its base description states (ADR-0003's 128 output tokens).
E2E_ALERT = "InferbookEndToEndLatencySLO"
E2E_BASE_SHAPE = "(requests of up to 128 output tokens)"
#: The label kube-prometheus-stack's Grafana sidecar loads dashboards by.
DASHBOARD_LABEL = "grafana_dashboard"
#: The spend dashboard's datasource: the ExternalSecret that writes it, its file, and the uid the panels name.
LEDGER_DATASOURCE = "inferbook-datasource-litellm-ledger"
LEDGER_DATASOURCE_FILE = "litellm-ledger.yaml"
LEDGER_DATASOURCE_UID = "litellm-ledger"
#: The label kube-prometheus-stack's Grafana sidecar loads datasources by (ConfigMaps and Secrets).
DATASOURCE_LABEL = "grafana_datasource"
#: The ledger's Service in the datasource's URL: CloudNativePG's ``<cluster>-ro`` or ``-r``, in a namespace.
_LEDGER_HOST = re.compile(rf"\b{GATEWAY_DB_CLUSTER}-ro?\.[a-z0-9-]+\.svc\.cluster\.local\b")
#: The dcgm-exporter pods' label per GPU stack (ADR-0001): the standalone chart's, or the GPU Operator's.
DCGM_POD_LABELS = {"gke-managed": {"app.kubernetes.io/name": "dcgm-exporter"},
                   "operator": {"app": "nvidia-dcgm-exporter"}}


@dataclass(frozen=True)
class Objective:
    """One SLO of ADR-0003 as the profile sets it: the ``sli`` label of its objective series, in base units."""

    sli: str
    title: str
    #: The recording rule that holds the observed SLI.
    record: str
    target: float
    unit: str  # "s" or "ratio"

    @property
    def shown(self) -> str:
        """The target as a reader reads it: milliseconds or seconds, or a percentage."""
        if self.unit == "ratio":
            return f"< {self.target:.0%}"
        return f"< {self.target * 1000:g} ms" if self.target < 1 else f"< {self.target:g} s"


def objectives(profile: Profile) -> list[Objective]:
    """The profile's objectives (``slo``, defaults from ADR-0003), in the order of the rules' objective group."""
    slo = profile.data["slo"]
    return [
        Objective("ttft_p95_seconds", "time to first token, p95", "inferbook:vllm_ttft_seconds:p95_5m",
                  slo["ttft_p95_ms"] / 1000, "s"),
        Objective("itl_p95_seconds", "inter-token latency, p95", "inferbook:vllm_itl_seconds:p95_5m",
                  slo["itl_p95_ms"] / 1000, "s"),
        Objective("e2e_p95_seconds", "end-to-end latency, p95", "inferbook:vllm_e2e_seconds:p95_5m",
                  slo["e2e_p95_ms"] / 1000, "s"),
        Objective("kv_cache_usage_ratio", "KV-cache fill, max", "inferbook:vllm_kv_cache_usage:max",
                  slo["kv_cache_usage_max"], "ratio"),
    ]


def selection(profile: Profile) -> Selection:
    """The SLO rules and dashboards; the scrapes of KServe's pods and of the GPUs where they exist."""
    components: list[tuple[str, str]] = []
    if "kserve" in profile.features:
        components.append(("kserve-metrics", "features.kserve is on: scrape the predictor pods KServe creates"))
    if profile.data["gpu"]["type"] != "none":
        components.append(("gpu-metrics", f"gpu.type: {profile.data['gpu']['type']}, scrape dcgm-exporter "
                                          f"({profile.data['gpu']['stack']} stack) for the GPU dashboard"))
    return Selection(layer=LAYER, base="observability/monitoring",
                     base_reason="SLO recording and alert rules (ADR-0003), dashboards as ConfigMaps (ADR-0015)",
                     components=tuple(components))


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    """The profile's objectives into the rules' objective group; the GPU stack's dcgm-exporter pod label."""
    rule = find(base_objects, "PrometheusRule", RULE_NAME)
    groups = rule["spec"]["groups"]
    g = next((i for i, group in enumerate(groups) if group.get("name") == OBJECTIVE_GROUP), None)
    if g is None:
        raise ManifestError(f"PrometheusRule {RULE_NAME} has no group '{OBJECTIVE_GROUP}'. "
                            "Fix: restore it in manifests/observability/monitoring/prometheusrule.yaml")
    rules = groups[g]["rules"]
    ops: list[dict[str, Any]] = []
    for objective in objectives(profile):
        r = next((i for i, rule in enumerate(rules) if rule.get("record") == OBJECTIVE_RECORD
                  and (rule.get("labels") or {}).get("sli") == objective.sli), None)
        if r is None:
            raise ManifestError(f"the rules have no objective for sli={objective.sli}. Fix: restore its "
                                f"{OBJECTIVE_RECORD} rule in manifests/observability/monitoring/prometheusrule.yaml")
        ops += guarded_replace(f"/spec/groups/{g}/rules/{r}/expr", rules[r]["expr"], f"vector({objective.target:g})")
    out = [json6902("PrometheusRule", "monitoring.coreos.com", RULE_NAME, ops + _e2e_shape(groups, profile)),
           json6902("ExternalSecret", "external-secrets.io", LEDGER_DATASOURCE,
                    _ledger_host(base_objects, profile))]
    stack = profile.data["gpu"]["stack"]
    if "gpu-metrics" in selection.component_names and stack in DCGM_POD_LABELS:
        select = [{"op": "replace", "path": "/spec/selector/matchLabels", "value": DCGM_POD_LABELS[stack]}]
        out.append(json6902("PodMonitor", "monitoring.coreos.com", "dcgm-exporter", select))
    return out


def _e2e_shape(groups: list[dict[str, Any]], profile: Profile) -> list[dict[str, Any]]:
    """The end-to-end alert's description names the profile's answer length: its objective means something only
    for the benchmark shape it was set for (16 tokens out on ``local``, not ADR-0003's 128)."""
    found = [(g, r, (rule.get("annotations") or {}).get("description", "")) for g, group in enumerate(groups)
             for r, rule in enumerate(group.get("rules") or []) if rule.get("alert") == E2E_ALERT]
    if len(found) == 1 and E2E_BASE_SHAPE in found[0][2]:
        g, r, text = found[0]
        tokens = profile.data["benchmarks"]["output_tokens"]
        return guarded_replace(f"/spec/groups/{g}/rules/{r}/annotations/description", text,
                               text.replace(E2E_BASE_SHAPE, f"(requests of up to {tokens} output tokens)"))
    raise ManifestError(f"PrometheusRule {RULE_NAME} has no alert {E2E_ALERT} whose description says "
                        f"'{E2E_BASE_SHAPE}'. "
                        "Fix: restore it in manifests/observability/monitoring/prometheusrule.yaml")


def ledger_service(profile: Profile) -> str:
    """The ledger's Service the dashboards read: CloudNativePG's ``-ro`` (the replicas, off the primary LiteLLM
    writes to) where the Cluster has replicas, its ``-r`` (any instance) where it has one instance and ``-ro``
    would reach nothing. Either way the role is read-only."""
    return f"{GATEWAY_DB_CLUSTER}-ro" if int(profile.data["database"]["instances"]) > 1 else f"{GATEWAY_DB_CLUSTER}-r"


def _ledger_host(base_objects: list[dict[str, Any]], profile: Profile) -> list[dict[str, Any]]:
    """The datasource's host: :func:`ledger_service` in the profile's namespace, where the gateway layer runs."""
    path = f"/spec/target/template/data/{pointer(LEDGER_DATASOURCE_FILE)}"
    text = _datasource_template(base_objects)
    if len(_LEDGER_HOST.findall(text)) != 1:
        raise ManifestError(f"the datasource template of ExternalSecret {LEDGER_DATASOURCE} names the ledger's Service "
                            f"not once as {GATEWAY_DB_CLUSTER}-ro.NAMESPACE.svc.cluster.local. Fix: restore its url in "
                            "manifests/observability/monitoring/datasource-litellm-ledger.yaml")
    host = f"{ledger_service(profile)}.{profile.data['target']['namespace']}.svc.cluster.local"
    return guarded_replace(path, text, _LEDGER_HOST.sub(host, text))


def _datasource_template(objects: Iterable[dict[str, Any]]) -> str:
    secret = find(objects, "ExternalSecret", LEDGER_DATASOURCE)
    text = (((secret.get("spec") or {}).get("target") or {}).get("template") or {}).get("data", {}).get(
        LEDGER_DATASOURCE_FILE)
    if not isinstance(text, str):
        raise ManifestError(f"ExternalSecret {LEDGER_DATASOURCE} has no template data key {LEDGER_DATASOURCE_FILE}. "
                            "Fix: restore manifests/observability/monitoring/datasource-litellm-ledger.yaml")
    return text


# --------------------------------------------------------------------------- readers of the rendered objects


def prometheus_rule(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "PrometheusRule", RULE_NAME)


def rule_groups(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The rendered PrometheusRule's groups as a Prometheus rules file (``{"groups": [...]}``)."""
    groups = prometheus_rule(objects)["spec"].get("groups") or []
    if not groups:
        raise ManifestError(f"PrometheusRule {RULE_NAME} has no groups. "
                            "Fix: restore manifests/observability/monitoring/prometheusrule.yaml")
    return {"groups": groups}


def rules_of(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule (recording or alert) of the SLO rules, with its group's name."""
    return [{"group": g["name"], **r} for g in rule_groups(objects)["groups"] for r in g.get("rules") or []]


def dashboards(objects: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Grafana dashboards of the rendered ConfigMaps labelled for the sidecar: file name -> dashboard."""
    found: dict[str, dict[str, Any]] = {}
    for obj in objects:
        if obj.get("kind") != "ConfigMap" or (obj["metadata"].get("labels") or {}).get(DASHBOARD_LABEL) != "1":
            continue
        for key, text in (obj.get("data") or {}).items():
            try:
                found[key] = json.loads(text)
            except ValueError as exc:
                raise ManifestError(f"ConfigMap {obj['metadata']['name']}: {key} is not JSON ({exc}). Fix: correct "
                                    f"manifests/observability/monitoring/dashboards/{key}") from None
    if not found:
        raise ManifestError(f"no ConfigMap labelled {DASHBOARD_LABEL}: \"1\" in the rendered objects. "
                            "Fix: restore the configMapGenerator in manifests/observability/monitoring")
    return found


#: The Go-template action that puts the password into the datasource file (External Secrets, engine v2).
_PASSWORD_ACTION = re.compile(r"\{\{[^}]*\.password[^}]*\}\}")


def ledger_datasource(objects: Iterable[dict[str, Any]], password: str = "") -> dict[str, Any]:
    """The spend dashboard's datasource as Grafana reads the provisioning file the ExternalSecret writes, with
    ``password`` where the operator puts the real one (its template quotes it as JSON, doubling ``$``)."""
    text = _datasource_template(objects)
    if len(_PASSWORD_ACTION.findall(text)) != 1:
        raise ManifestError(f"the datasource template of ExternalSecret {LEDGER_DATASOURCE} must take the password "
                            "once, as {{ .password ... }}. Fix: restore its secureJsonData.password")
    filled = _PASSWORD_ACTION.sub(lambda _: json.dumps(password.replace("$", "$$")), text)
    try:
        document = yaml.safe_load(filled)
    except yaml.YAMLError as exc:
        raise ManifestError(f"the datasource file of ExternalSecret {LEDGER_DATASOURCE} is not YAML once "
                            f"templated ({exc}). Fix: correct datasource-litellm-ledger.yaml") from None
    found = [d for d in (document or {}).get("datasources") or [] if d.get("uid") == LEDGER_DATASOURCE_UID]
    if len(found) != 1:
        raise ManifestError(f"the datasource file of ExternalSecret {LEDGER_DATASOURCE} defines no datasource with "
                            f"uid {LEDGER_DATASOURCE_UID}, which the spend dashboard names")
    return found[0]


#: A metric name in PromQL: what a dashboard's panels read (for "is it in the live scrape").
_METRIC = re.compile(r"\b((?:vllm|litellm|DCGM|inferbook)[:_][A-Za-z0-9_:]+)")


def metric_names(expr: str) -> list[str]:
    """The vLLM, LiteLLM, DCGM and inferbook metric names a PromQL expression reads, in order."""
    return list(dict.fromkeys(_METRIC.findall(expr)))


MANIFESTS = LayerManifests(LAYER, selection, patches, needed_by=", e.g. autoscaling")
