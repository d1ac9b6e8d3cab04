"""The observability layer on a cluster: apply the rules, scrapes and dashboards, and reach the Prometheus.

Prometheus and Grafana are kube-prometheus-stack's (ADR-0015), installed beforehand like the other
operators; this layer applies what they load (the PrometheusRule, PodMonitors, dashboard ConfigMaps),
then port-forwards to the Prometheus the operator runs (its ``prometheus-operated`` Service) so the
chapter queries the same API as locally. Kept apart from :mod:`.local` so a local run never imports the
cluster client.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ... import kube
from ...profile import Profile
from ...say import Say
from .endpoint import PrometheusEndpoint
from .prometheus import PrometheusError

#: Where kube-prometheus-stack's operator runs Prometheus: the namespace the chart is installed in, and the
#: Service the operator makes for every Prometheus it runs.
PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_SERVICE = "prometheus-operated"
PROMETHEUS_PORT = 9090
#: kube-prometheus-stack's default scrape interval (the ServiceMonitors here ask for 30 s too).
SCRAPE_INTERVAL_S = 30


def provision_kube(profile: Profile, objects: list[dict[str, Any]], say: Say = print) -> PrometheusEndpoint:
    """Server-side apply the layer's objects, then reach the cluster's Prometheus (:func:`connect`)."""
    context = profile.data["target"]["context"]
    applied = kube.apply(objects, context, namespace=profile.data["target"]["namespace"], say=say)
    return connect(profile, say, {"applied": len(applied)})


def connect(profile: Profile, say: Say = print, facts: dict[str, Any] | None = None) -> PrometheusEndpoint:
    """Port-forward to the operator's Prometheus and check it answers."""
    context = profile.data["target"]["context"]
    stack = contextlib.ExitStack()
    base = stack.enter_context(kube.port_forward(context, PROMETHEUS_NAMESPACE, PROMETHEUS_SERVICE, PROMETHEUS_PORT,
                                                 say=say))
    endpoint = PrometheusEndpoint(base, f"cluster ({context})", {"reused": False, **(facts or {})},
                                  SCRAPE_INTERVAL_S, closer=stack)
    try:
        version = endpoint.api.buildinfo().get("version", "?")
    except PrometheusError:
        stack.close()
        raise
    endpoint.status.update(healthy=True, version=version)
    return endpoint
