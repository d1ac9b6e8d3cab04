"""Where the tenant gateway answers, on either target, and the health check that tells our proxy from others."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from ...endpoints import Held
from ...jsonapi import call_json
from .admin import Admin


def proxy_healthy(base: str, master_key: str) -> bool:
    """A LiteLLM proxy answers at ``base`` with its database connected and accepts ``master_key``."""
    try:
        status, ready = call_json("GET", f"{base}/health/readiness", timeout=5)
        if status != 200 or ready.get("db") != "connected":
            return False
        status, _ = call_json("GET", f"{base}/v1/models", master_key, timeout=10)
    except (OSError, ValueError):
        return False
    return status == 200



@dataclass
class GatewayEndpoint(Held):
    """Where the tenant gateway answers, on either target; the master key is read when asked, never stored.

    ``closer`` ends what keeps the endpoint reachable (the port-forward on a cluster); nothing locally.
    """

    url: str
    base: str
    master_key: Callable[[], str] = field(repr=False)
    where: str
    status: dict[str, Any]
    closer: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def admin(self) -> Admin:
        """The proxy's admin API (teams, keys), authenticated with the master key."""
        return Admin(self.base, self.master_key())

    def table(self) -> pd.DataFrame:
        """The endpoint as the chapter shows it: where, how it got there, how healthy (never a key)."""
        s = self.status
        started = "no, reused a healthy proxy" if s.get("reused") else "yes"
        rows = [("target", self.where), ("url", self.url), ("healthy", s.get("healthy")),
                ("database", s.get("database")), ("started by this run", started)]
        if "applied" in s:
            rows.append(("objects applied", s["applied"]))
        if "migration" in s:
            rows.append(("schema migration", s["migration"]))
        if s.get("startup_s"):
            rows.append(("time to healthy", f"{s['startup_s']:.0f} s"))
        if s.get("rss_mb"):
            rows.append(("resident memory", f"{s['rss_mb']} MB"))
        return pd.DataFrame(rows, columns=["", "value"]).set_index("")
