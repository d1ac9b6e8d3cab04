"""Where the serving layer answers, on either target, and the probe that tells our vLLM from anything else."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import pandas as pd

from ...endpoints import Held
from ...jsonapi import call_json


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



@dataclass
class Endpoint(Held):
    """Where the serving layer answers, for the rest of the book; the key is fetched, never stored in outputs."""

    url: str
    base: str
    model: str
    target: str
    key_source: Callable[[], str]
    status: dict[str, Any]
    launch: Tabled | None = None  # the local launch command (local.LaunchSpec); None on a cluster
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
