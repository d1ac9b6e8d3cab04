"""Where a layer answers, on either target: the endpoint types chapters hold and the probes behind them.

Target-neutral: the local processes (:mod:`inferbook.serving`, :mod:`inferbook.gateway`) and the
cluster clients (:mod:`inferbook.kube_serving`, :mod:`inferbook.kube_gateway`) both build these, so
both import this module and it imports neither. ``probe`` and ``proxy_healthy`` tell a healthy server
of ours from anything else holding its port.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import pandas as pd

from .gateway_admin import Admin
from .jsonapi import call_json


class Held:
    """An endpoint's lifetime: what keeps it reachable (a port-forward on a cluster, nothing locally) is
    released by :meth:`close` or at the end of a ``with`` block, and lasts as long as the endpoint is held.

    A chapter keeps the endpoint object for as long as it calls the layer; dropping it would let the
    port-forward's generator be finalised, closing the forward under the chapter.
    """

    closer: contextlib.ExitStack

    def close(self) -> None:
        """Stop the port-forward, if any (the layer itself keeps running)."""
        self.closer.close()

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tabled(Protocol):
    """Anything that shows itself as a table (a local launch command)."""

    def table(self) -> pd.DataFrame: ...


def probe(base: str, api_key: str) -> dict[str, Any] | None:
    """``{"version", "models"}`` when a vLLM that accepts ``api_key`` answers at ``base``, else None."""
    try:
        status, answer = call_json("GET", f"{base}/version", timeout=2)
        if status != 200 or "version" not in answer:
            return None
        status, models = call_json("GET", f"{base}/v1/models", api_key, timeout=2)
    except (OSError, ValueError):
        return None
    if status != 200:
        return None
    return {"version": answer["version"], "models": [m["id"] for m in models.get("data", [])]}


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
class Endpoint(Held):
    """Where the serving layer answers, for the rest of the book; the key is fetched, never stored in outputs."""

    url: str
    base: str
    model: str
    target: str
    key_source: Callable[[], str]
    status: dict[str, Any]
    launch: Tabled | None = None  # the local launch command (serving.LaunchSpec); None on a cluster
    closer: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def api_key(self) -> str:
        return self.key_source()

    def table(self) -> pd.DataFrame:
        s = self.status
        rows = [("target", self.target), ("url", self.url), ("model", self.model),
                ("healthy", s.get("healthy")), ("vLLM version", s.get("version")),
                ("started by this run", "no, reused a healthy server" if s.get("reused") else "yes"),
                ("time to healthy", f"{s['startup_s']:.0f} s" if s.get("startup_s") else "not recorded"),
                ("resident memory", f"{s['rss_mb']} MB" if s.get("rss_mb") else "-")]
        return pd.DataFrame(rows, columns=["", "value"]).set_index("")

    def launch_table(self) -> pd.DataFrame:
        if self.launch is None:
            return pd.DataFrame([{"kind": "-", "name": "-", "value": "applied to the cluster; no local process"}])
        return self.launch.table()

    def figures(self, calls: list[Any]) -> pd.DataFrame:
        """The numbers worth carrying into the closing notes: time to healthy, memory, speed."""
        streamed = next((c for c in calls if c.ttft_s is not None), None)
        rates = [c.tokens_per_s for c in calls if c.tokens_per_s]
        rows = [
            ("time to healthy (s)", round(self.status["startup_s"], 1) if self.status.get("startup_s") else None),
            ("resident memory (MB)", self.status.get("rss_mb")),
            ("time to first token, streamed (ms)", round(streamed.ttft_s * 1000) if streamed else None),
            ("best tokens/s (single stream)", max(rates) if rates else None),
        ]
        return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")


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

    def admin(self) -> "Admin":
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
