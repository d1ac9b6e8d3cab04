"""The observability layer on a cluster: apply the rules, scrapes and dashboards, and reach the Prometheus.

Prometheus and Grafana are kube-prometheus-stack's (ADR-0015), installed beforehand like the other
operators; this layer applies what they load (the PrometheusRule, PodMonitors, dashboard ConfigMaps),
then port-forwards to the Prometheus the operator runs (its ``prometheus-operated`` Service) so the
chapter queries the same API as locally. Kept apart from :mod:`.local` so a local run never imports the
cluster client.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ... import kube
from ...layer import ClusterLayer
from .endpoint import PrometheusEndpoint
from .manifests import LAYER, ledger_service
from .prometheus import PrometheusError

if TYPE_CHECKING:
    from .ledger import Ledger

#: Where kube-prometheus-stack's operator runs Prometheus: the namespace the chart is installed in, and the
#: Service the operator makes for every Prometheus it runs.
PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_SERVICE = "prometheus-operated"
PROMETHEUS_PORT = 9090
#: kube-prometheus-stack's default scrape interval (the ServiceMonitors here ask for 30 s too).
SCRAPE_INTERVAL_S = 30


class ClusterObservability(ClusterLayer):
    """The observability layer's steps on a kube target (``target.part(observability)``): the same method names
    as :class:`~.local.LocalPrometheus` (``provision``, ``ledger``)."""

    def provision(self, objects: list[dict[str, Any]], timeout: float = 120) -> PrometheusEndpoint:
        """Server-side apply the layer's objects, then reach the cluster's Prometheus (:meth:`connect`)."""
        applied = self.target.apply(objects, LAYER)
        return self.connect({"applied": len(applied)})

    def connect(self, facts: dict[str, Any] | None = None) -> PrometheusEndpoint:
        """Port-forward to the operator's Prometheus and check it answers."""
        stack = contextlib.ExitStack()
        base = stack.enter_context(self.target.expose(PROMETHEUS_NAMESPACE, PROMETHEUS_SERVICE, PROMETHEUS_PORT))
        endpoint = PrometheusEndpoint(base, f"cluster ({self.context})", {"reused": False, **(facts or {})},
                                      SCRAPE_INTERVAL_S, closer=stack)
        try:
            version = endpoint.api.buildinfo().get("version", "?")
        except PrometheusError:
            stack.close()
            raise
        endpoint.status.update(healthy=True, version=version)
        return endpoint

    def ledger(self, database: str, role: dict[str, Any], secret: str) -> "Ledger":
        """The gateway's ledger as the read-only ``role`` (the Cluster's managed role): a port-forward to the
        Service the datasource reads (:func:`.manifests.ledger_service`), the password from the Secret ``secret``
        the role's ExternalSecret writes."""
        from .ledger import POSTGRES_PORT, Ledger

        context, namespace, kubeconfig = self.context, self.namespace, self.kubeconfig
        service = ledger_service(self.profile)
        stack = contextlib.ExitStack()
        url = stack.enter_context(self.target.expose(namespace, service, POSTGRES_PORT))
        made_by = (f"the ExternalSecret {namespace}/{secret} creates it from the ClusterSecretStore; "
                   f"`kubectl --context {context} -n {namespace} describe externalsecret {secret}` says whether it "
                   "synced")

        def password() -> str:
            return kube.secret_value(context, namespace, secret, "password", kubeconfig=kubeconfig, made_by=made_by)

        return Ledger("127.0.0.1", int(urlsplit(url).port or 0), database, role["name"], password,
                      f"cluster ({context})", service=f"{namespace}/{service}", sslmode="require", closer=stack)
