"""The SLO table: each objective of ADR-0003 (as the profile sets it) beside what Prometheus observed.

Read from the recording rules of the PrometheusRule, the same series the alerts fire on: the p95 SLIs
over 5 minutes, and over the load's window the most requests waiting and the fullest KV cache. The
objective column is the profile's; the chapter checks that Prometheus' objective series hold the same
number, so alerts and this table cannot disagree.
"""

from __future__ import annotations

import math

import pandas as pd

from ...profile import Profile
from .manifests import OBJECTIVE_RECORD, Objective, objectives
from .prometheus import Prometheus

#: The source metric of each SLI (vLLM V1 names, ADR-0003).
SOURCES = {
    "ttft_p95_seconds": "vllm:time_to_first_token_seconds",
    "itl_p95_seconds": "vllm:inter_token_latency_seconds",
    "e2e_p95_seconds": "vllm:e2e_request_latency_seconds",
    "kv_cache_usage_ratio": "vllm:kv_cache_usage_perc",
}
WAITING_RECORD = "inferbook:vllm_requests_waiting:sum"


def _shown(value: float, unit: str) -> str:
    if math.isnan(value):
        return "no data"
    if unit == "ratio":
        return f"{value:.1%}"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _max(prometheus: Prometheus, expr: str, at: float) -> float:
    values = [s.last for s in prometheus.query(expr, at) if not math.isnan(s.last)]
    return max(values) if values else math.nan


def observed(prometheus: Prometheus, objective: Objective, at: float, window_s: int) -> float:
    """The SLI at ``at``: a p95 recording rule's value; the KV fill's maximum over the window."""
    if objective.unit == "ratio":
        return _max(prometheus, f"max_over_time({objective.record}[{window_s}s])", at)
    return _max(prometheus, objective.record, at)


def objective_in_prometheus(prometheus: Prometheus, sli: str, at: float) -> float:
    return _max(prometheus, f'{OBJECTIVE_RECORD}{{sli="{sli}"}}', at)


def table(prometheus: Prometheus, profile: Profile, at: float, window_s: int) -> pd.DataFrame:
    """One row per SLI: source metric, objective (profile), observed, verdict; and the saturation row."""
    rows = []
    for objective in objectives(profile):
        value = observed(prometheus, objective, at, window_s)
        verdict = "no data" if math.isnan(value) else ("met" if value < objective.target else "missed")
        rows.append({"SLI": objective.title, "metric": SOURCES[objective.sli], "objective": objective.shown,
                     "observed": _shown(value, objective.unit), "verdict": verdict})
    waiting = _max(prometheus, f"max_over_time({WAITING_RECORD}[{window_s}s])", at)
    rows.append({"SLI": "requests waiting, max", "metric": "vllm:num_requests_waiting",
                 "objective": "not > 0 for 5 min", "observed": "no data" if math.isnan(waiting) else f"{waiting:g}",
                 "verdict": "no data" if math.isnan(waiting) else ("met" if waiting == 0 else
                                                                   "waiting (the alert fires after 5 min)")})
    return pd.DataFrame(rows).set_index("SLI")


#: The gateway's histograms, per alias: what a tenant of an engine without latency histograms saw (llama-server).
GATEWAY_SOURCES = {"time to first token, p95": "litellm_llm_api_time_to_first_token_metric",
                   "end-to-end latency, p95": "litellm_request_total_latency_metric"}


def gateway_table(prometheus: Prometheus, at: float, alias: str) -> pd.DataFrame:
    """The p95s of ``alias`` from the gateway's own histograms, over every request since the proxy started.

    For the coder on llama.cpp, which exposes counters and gauges only: its latency is read where every request
    passes. Cumulative, not a 5-minute rate: the coder's traffic (the experience chapter's chat, autocomplete,
    agent runs and protocols) came before this chapter's Prometheus. Mixed answer lengths, so no objective is
    judged here; the PrometheusRule records the same p95s over 5 minutes for alerts on a cluster.
    """
    rows = []
    for sli, metric in GATEWAY_SOURCES.items():
        expr = f'histogram_quantile(0.95, sum by (le) ({metric}_bucket{{model_group="{alias}"}}))'
        value = _max(prometheus, expr, at)
        count = _max(prometheus, f'sum({metric}_count{{model_group="{alias}"}})', at)
        rows.append({"SLI": sli, "metric": metric, "requests": "no data" if math.isnan(count) else f"{count:g}",
                     "observed": _shown(value, "seconds")})
    return pd.DataFrame(rows).set_index("SLI")
