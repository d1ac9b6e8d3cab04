"""The dashboards as code, run: every panel's PromQL against a live Prometheus, as frames a chapter can draw.

The Grafana dashboards are JSON in the manifests (ConfigMaps for Grafana's sidecar). Here each panel's
queries run as Grafana would run them (its ``$__rate_interval`` and variables given concrete values,
every variable at "All"), over a window of a live Prometheus; a query that returns nothing, or only NaN
(a quantile of no traffic), fails the check. So a reader sees the dashboards in the book, and each query
is proven against live data. Panels a target cannot have data for (DCGM without a GPU) are skipped with
the reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ...profile import Profile
from .manifests import metric_names
from .prometheus import Prometheus, PrometheusError, Series

#: A ``$var`` or ``${var}`` of Grafana in a panel's PromQL.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


#: Grafana's unit ids as a plot's axis says them.
UNITS = {"s": "s", "percentunit": "fraction, 1 = 100%", "percent": "%", "currencyUSD": "USD", "reqps": "requests/s",
         "celsius": "degrees C", "watt": "W"}


@dataclass(frozen=True)
class Query:
    """One target of one panel: where it is, its PromQL as written, and its legend template."""

    dashboard: str
    panel: str
    ref: str
    expr: str
    legend: str
    unit: str

    @property
    def needs_gpu(self) -> bool:
        return any(name.startswith("DCGM") for name in metric_names(self.expr))


@dataclass
class Result:
    """A query's outcome: the series it returned over the window, or why it was skipped or failed."""

    query: Query
    promql: str
    series: list[Series] = field(default_factory=list)
    skipped: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """Passed: skipped with a reason, or at least one series with a value (not only NaN)."""
        return bool(self.skipped) or (not self.error and any(s.has_values for s in self.series))

    @property
    def verdict(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        if self.error:
            return f"error: {self.error}"
        with_values = sum(s.has_values for s in self.series)
        return f"{with_values} series" if with_values else "no data"

    def frame(self) -> pd.DataFrame:
        """Time (UTC) down, one column per series named by the panel's legend; NaN where a series has no value."""
        columns = {}
        for s in self.series:
            if s.has_values:
                columns[legend(self.query.legend, s.labels)] = pd.Series(
                    {pd.Timestamp(t, unit="s", tz="UTC"): v for t, v in s.points})
        return pd.DataFrame(columns).sort_index()


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legend format: ``{{label}}`` replaced by the series' label value."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template).strip()
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"


def queries(dashboards: dict[str, dict[str, Any]]) -> list[Query]:
    """Every panel target of every dashboard, in dashboard and panel order."""
    found = []
    for name, board in dashboards.items():
        for panel in board.get("panels") or []:
            unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit", "")
            for target in panel.get("targets") or []:
                if target.get("expr"):
                    found.append(Query(board.get("title", name), panel.get("title", "?"), target.get("refId", "?"),
                                       target["expr"], target.get("legendFormat", ""), unit))
    return found


def promql(expr: str, rate_interval: str, variables: dict[str, str] | None = None) -> str:
    """``expr`` as Prometheus takes it: Grafana's interval variables as durations, every other variable at
    "All" (``.*``, which the dashboards use in ``=~`` matchers)."""
    values = {"__rate_interval": rate_interval, "__interval": rate_interval, "__range": rate_interval,
              **(variables or {})}
    return _VARIABLE.sub(lambda m: values.get(m[1] or m[2], ".*"), expr)


def skip_reason(query: Query, profile: Profile) -> str:
    """Why a query cannot have data on this profile's target ('' when it must)."""
    if query.needs_gpu and profile.data["gpu"]["type"] == "none":
        return "gpu.type: none, so no GPU and no dcgm-exporter to scrape"
    return ""


def run(prometheus: Prometheus, all_queries: list[Query], profile: Profile, start: float, end: float,
        step: float, rate_interval: str) -> list[Result]:
    """Each query over ``start``..``end`` (unix seconds); a refused query is a failed result, not an exception."""
    results = []
    for query in all_queries:
        text = promql(query.expr, rate_interval)
        result = Result(query, text, skipped=skip_reason(query, profile))
        if not result.skipped:
            try:
                result.series = prometheus.query_range(text, start, end, step)
            except PrometheusError as exc:
                result.error = str(exc)
        results.append(result)
    return results


def table(results: list[Result]) -> pd.DataFrame:
    """One row per query: dashboard, panel, the PromQL run, what came back, pass."""
    rows = [{"dashboard": r.query.dashboard, "panel": r.query.panel, "query": r.promql, "returned": r.verdict,
             "pass": r.ok} for r in results]
    return pd.DataFrame(rows)


def plot(results: list[Result], dashboard: str, columns: int = 2) -> Any:
    """One dashboard's panels as a matplotlib figure: a line per series, its panels in their JSON order."""
    import matplotlib.pyplot as plt  # imported when drawing: the rest of the layer does not need it
    from matplotlib import dates

    panels: dict[str, list[Result]] = {}
    for r in results:
        if r.query.dashboard == dashboard and not r.skipped:
            panels.setdefault(r.query.panel, []).append(r)
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 2.8 * rows), squeeze=False)
    frames = {id(r): r.frame() for group in panels.values() for r in group}
    times = [t for frame in frames.values() for t in (frame.index.min(), frame.index.max()) if not frame.empty]
    for ax, (title, panel_results) in zip(axes.flat, panels.items(), strict=False):
        for r in panel_results:
            frame = frames[id(r)]
            for column in frame.columns:
                style = "--" if column.startswith(("objective", "ceiling", "allowed")) else "-"
                ax.plot(frame.index, frame[column], style, label=column, marker="." if len(frame) < 30 else None)
        unit = UNITS.get(panel_results[0].query.unit, "")
        ax.set_title(title + (f" ({unit})" if unit else ""), fontsize=10)
        ax.tick_params(labelsize=8)
        if times:  # one time axis for the whole dashboard, as Grafana draws it
            ax.set_xlim(min(times), max(times))
        ax.xaxis.set_major_formatter(dates.DateFormatter("%H:%M:%S"))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(dashboard, fontsize=12)
    figure.tight_layout()
    plt.close(figure)  # shown once, as the cell's value, not again by the inline backend
    return figure
