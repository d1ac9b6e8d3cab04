"""A small client of Prometheus' HTTP API (``/api/v1``): queries, targets, rules, and waiting for a series.

The chapter and the tests ask a real Prometheus, on either target (the local process, or a cluster's
Prometheus through a port-forward); they read what it answers, never a copy of the scrape.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

from ... import waiting
from ...errors import InferbookError
from ...say import Say


class PrometheusError(InferbookError):
    """Prometheus refused a query or could not be reached."""


class SeriesDidNotAppear(PrometheusError):
    """A wait for a series ran out of time."""


@dataclass(frozen=True)
class Series:
    """One series of an answer: its labels and its (unix time, value) points; NaN where the value is NaN."""

    labels: dict[str, str]
    points: list[tuple[float, float]]

    @property
    def has_values(self) -> bool:
        """Whether any point is a number (a quantile of no traffic is NaN: that is no data)."""
        return any(not math.isnan(v) for _, v in self.points)

    @property
    def last(self) -> float:
        return self.points[-1][1] if self.points else math.nan


@dataclass(frozen=True)
class Prometheus:
    """The HTTP API of one Prometheus at ``base`` (``http://127.0.0.1:9090``)."""

    base: str
    timeout: float = 30

    def _get(self, path: str, **params: Any) -> Any:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310 (loopback or forward)
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                body = json.loads(error.read())
            except ValueError:
                body = {"error": f"HTTP {error.code}"}
            raise PrometheusError(f"Prometheus refused {path} {params.get('query', '')}: "
                                  f"{body.get('error', body)}") from None
        except (OSError, ValueError) as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.base}{path}: {exc}. Fix: start it (the "
                                  "observability chapter, or inferbook up), or check the port-forward") from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus answered {path} with {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def ready(self) -> bool:
        """Prometheus answers its readiness endpoint (it has loaded its config and its storage)."""
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=5) as response:  # noqa: S310
                return response.status == 200
        except (OSError, ValueError):
            return False

    def buildinfo(self) -> dict[str, Any]:
        return self._get("/api/v1/status/buildinfo")

    def query(self, expr: str, at: float | None = None) -> list[Series]:
        """An instant query: one point per series."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", **params)
        if data["resultType"] == "scalar":
            return [Series({}, [(float(data["result"][0]), float(data["result"][1]))])]
        return [Series(r["metric"], [(float(r["value"][0]), float(r["value"][1]))]) for r in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """A range query from ``start`` to ``end`` (unix seconds), one point every ``step`` seconds."""
        data = self._get("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return [Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets: job, scrape URL, health, last error."""
        return [{"job": t["labels"].get("job"), "url": t.get("scrapeUrl"), "health": t.get("health"),
                 "last_error": t.get("lastError") or "", "last_scrape": t.get("lastScrape")}
                for t in self._get("/api/v1/targets", state="active")["activeTargets"]]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule: its group, name, type, health and (for alerts) state."""
        rows = []
        for group in self._get("/api/v1/rules")["groups"]:
            for rule in group["rules"]:
                rows.append({"group": group["name"], "name": rule["name"], "type": rule["type"],
                             "health": rule.get("health"), "state": rule.get("state", "-"),
                             "last_error": rule.get("lastError") or ""})
        return rows

    def wait_for(self, expr: str, ready: Callable[[list[Series]], bool], timeout: float, say: Say,
                 what: str, poll: float = 1.0) -> list[Series]:
        """Poll ``expr`` until ``ready(answer)``; the answer. A readiness check, not a sleep: it returns at once
        when the series is there, and fails naming the query when it never comes."""
        last: list[list[Series]] = [[]]

        def shown() -> str | None:
            last[0] = self.query(expr)
            return None if ready(last[0]) else f"{len(last[0])} series, not yet ready" if last[0] else "no series yet"

        elapsed = waiting.wait_for(
            shown, timeout=timeout, what=what, say=lambda line: say(f"prometheus: {line}"), interval=poll,
            error=SeriesDidNotAppear,
            message=lambda _: f"Prometheus at {self.base} did not show {what} within {timeout:.0f} s (query: {expr}). "
                              "Fix: check its targets (/api/v1/targets) and the log")
        say(f"prometheus: {what} after {elapsed:.0f} s")
        return last[0]
