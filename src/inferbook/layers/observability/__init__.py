"""Observability: the SLOs of ADR-0003 as Prometheus rules, scrapes of vLLM and LiteLLM, dashboards as code
(chapter ``60-observability``).

The rules and dashboards live once in the manifests (:mod:`.manifests`): a cluster's kube-prometheus-stack
loads them (:mod:`.cluster`); on the local target Debian's Prometheus runs as a process and loads the same
rules, extracted from the rendered PrometheusRule (:mod:`.local`). Either way the chapter gets a
:class:`~.endpoint.PrometheusEndpoint`, drives a short load (:mod:`.load`), and reads the SLO table
(:mod:`.slo`) and every dashboard panel (:mod:`.dashboards`) from the live Prometheus. The spend dashboard's
panels are SQL on LiteLLM's ledger (ADR-0015): :mod:`.spend` runs them as the ledger's read-only role.
"""

from __future__ import annotations

from . import dashboards, load, slo, spend
from .declaration import DECLARATION
from .endpoint import PrometheusEndpoint
from .local import LocalPrometheus
from .manifests import objectives
from .steps import (
    alerts,
    check_rules,
    next_scrape,
    provision,
    rules_table,
    run_dashboards,
    verify,
    wait_for_scrape,
    wait_for_targets,
)

__all__ = ["DECLARATION", "LocalPrometheus", "PrometheusEndpoint", "alerts", "check_rules", "dashboards", "load",
           "next_scrape", "objectives", "provision", "rules_table", "run_dashboards", "slo", "spend", "verify",
           "wait_for_scrape", "wait_for_targets"]
