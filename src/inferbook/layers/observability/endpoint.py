"""Where Prometheus answers, on either target: the local process, or a cluster's Prometheus through a port-forward."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ...endpoints import Held
from .prometheus import Prometheus


@dataclass
class PrometheusEndpoint(Held):
    """A Prometheus the chapter queries; ``closer`` ends the port-forward on a cluster (nothing locally)."""

    base: str
    where: str
    status: dict[str, Any]
    #: The scrape interval the rate windows and the waits are sized for.
    scrape_interval_s: int
    closer: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @property
    def api(self) -> Prometheus:
        return Prometheus(self.base)

    @property
    def rate_interval(self) -> str:
        """Grafana's ``$__rate_interval`` for this scrape interval: at least four scrapes (Grafana's rule), and
        30 s at least, so a load of one request every few seconds draws a line rather than dots."""
        return f"{max(4 * self.scrape_interval_s, 30)}s"

    def table(self) -> pd.DataFrame:
        """The endpoint as the chapter shows it: where, version, how it got there, what it scrapes."""
        s = self.status
        started = "no, reused a healthy Prometheus" if s.get("reused") else "yes"
        rows = [("target", self.where), ("url", self.base), ("healthy", s.get("healthy")),
                ("version", s.get("version", "-")), ("started by this run", started),
                ("scrape interval", f"{self.scrape_interval_s} s")]
        if "applied" in s:
            rows.append(("objects applied", s["applied"]))
        if s.get("data"):
            rows.append(("data", s["data"]))
        if s.get("startup_s"):
            rows.append(("time to healthy", f"{s['startup_s']:.0f} s"))
        if s.get("rss_mb"):
            rows.append(("resident memory", f"{s['rss_mb']} MB"))
        return pd.DataFrame(rows, columns=["", "value"]).set_index("")
