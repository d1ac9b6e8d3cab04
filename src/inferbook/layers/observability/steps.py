"""The observability chapter's steps on either target: Prometheus up, the rules checked, the scrape awaited,
the dashboards run, and the checks as rows."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml

from ... import targets
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from . import dashboards, promtool
from .declaration import DECLARATION
from .endpoint import PrometheusEndpoint
from .load import Load
from .manifests import objectives, rule_groups, rules_of
from .prometheus import Series
from .slo import objective_in_prometheus


def provision(profile: Profile, layout: Layout, objects: list[dict[str, Any]], say: Say = print,
              timeout: float = 120) -> PrometheusEndpoint:
    """Bring Prometheus up with the layer's rules: the local process, or the objects applied to a cluster."""

    return targets.of(profile, layout, say).part(DECLARATION).provision(objects, timeout=timeout)


def rules_table(objects: list[dict[str, Any]]) -> pd.DataFrame:
    """The SLO rules as a reader checks them: group, record or alert name, expression, for."""
    rows = [{"group": r["group"], "rule": r.get("record") or r.get("alert"), "type": "alert" if "alert" in r else
             "record", "expr": r["expr"], "labels": ", ".join(f"{k}={v}" for k, v in (r.get("labels") or {}).items()
                                                             if k != "severity"), "for": r.get("for", "-")}
            for r in rules_of(objects)]
    return pd.DataFrame(rows)


def check_rules(objects: list[dict[str, Any]], folder: Path) -> str:
    """The rendered rules as a rules file (``folder/observability-rules.yaml``), checked by ``promtool``."""
    path = Path(folder) / "observability-rules.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(rule_groups(objects), sort_keys=False, width=200), encoding="utf-8")
    return promtool.check_rules(path)


def wait_for_targets(endpoint: PrometheusEndpoint, jobs: tuple[str, ...] = ("vllm", "litellm"), say: Say = print,
                     timeout: float = 120) -> pd.DataFrame:
    """Wait until every job has been scraped and is up (so a load's first request is counted), then its targets."""
    selector = "|".join(jobs)
    endpoint.api.wait_for(f'up{{job=~"{selector}"}}',
                          lambda answer: {s.labels.get("job") for s in answer if s.last == 1} >= set(jobs),
                          timeout, say, f"the targets {', '.join(jobs)} up")
    return pd.DataFrame(endpoint.api.targets())


def wait_for_scrape(endpoint: PrometheusEndpoint, load: Load, say: Say = print, timeout: float | None = None) -> float:
    """Wait until every target was scraped, and the SLO rules evaluated, after the load ended: the returned
    moment (unix seconds) is when the SLIs include the whole load. Clocks: Prometheus' and ours must agree."""
    timeout = timeout or 6 * endpoint.scrape_interval_s + 30

    def after_load(answer: list[Series]) -> bool:
        return bool(answer) and all(s.last >= load.ended for s in answer)

    endpoint.api.wait_for('timestamp(up{job=~"vllm|litellm"})', after_load, timeout, say, "a scrape after the load")
    endpoint.api.wait_for("timestamp(inferbook:vllm_e2e_seconds:p95_5m)", after_load, timeout, say,
                          "the SLO rules evaluated on it")
    return time.time()


def next_scrape(endpoint: PrometheusEndpoint, say: Say = print) -> Callable[[], float]:
    """A wait for the gateway's next scrape after the moment it is called (for :func:`.load.drive`'s ``scraped``)."""
    def wait() -> float:
        now = time.time()
        endpoint.api.wait_for('timestamp(up{job="litellm"})', lambda answer: bool(answer) and
                              all(s.last >= now for s in answer), 6 * endpoint.scrape_interval_s + 30, say,
                              "a scrape of the gateway during the load")
        return time.time()
    return wait


def run_dashboards(endpoint: PrometheusEndpoint, objects: list[dict[str, Any]], profile: Profile, load: Load,
                   until: float) -> list[dashboards.Result]:
    """Every dashboard panel's queries, over the load's window (from a little before it) to ``until``.

    Prometheus evaluates a range query at start, start + step, ... up to the end: the window starts a whole
    number of steps before ``until``, so the last evaluation is ``until`` itself, and a series born in the last
    scrape before it (the counter of the load's last, refused request) is in the answer, not after its end.
    """
    from .manifests import dashboards as dashboards_of

    step = endpoint.scrape_interval_s
    start = until - math.ceil((until - load.started + 2 * step) / step) * step
    return dashboards.run(endpoint.api, dashboards.queries(dashboards_of(objects)), profile, start, until,
                          step, endpoint.rate_interval)


def verify(endpoint: PrometheusEndpoint, objects: list[dict[str, Any]], profile: Profile, checked: str,
           load: Load, results: list[dashboards.Result], at: float,
           spend_checks: pd.DataFrame | None = None) -> pd.DataFrame:
    """The chapter's checks as rows (expected, observed, pass); ``checked`` is promtool's report on the rules,
    ``spend_checks`` the spend dashboard's rows (:func:`.spend.checks`), which follow the others."""
    api = endpoint.api
    rows: list[dict[str, Any]] = []

    def row(check: str, expected: str, observed: str, ok: bool) -> None:
        rows.append({"check": check, "expected": expected, "observed": observed, "pass": bool(ok)})

    row("the rules pass promtool check rules", "SUCCESS", checked.splitlines()[-1].strip(), "SUCCESS" in checked)

    targets = api.targets()
    row("targets scraped", "vllm and litellm up", ", ".join(f"{t['job']} {t['health']}" for t in targets),
        {t["job"] for t in targets if t["health"] == "up"} >= {"vllm", "litellm"})
    loaded = api.rules()
    wanted = {r.get("record") or r.get("alert") for r in rules_of(objects)}
    healthy = {r["name"] for r in loaded if r["health"] == "ok"}
    row("SLO rules loaded from the PrometheusRule", f"{len(rules_of(objects))} rules, all healthy",
        f"{len(loaded)} loaded, {sum(r['health'] == 'ok' for r in loaded)} healthy", wanted <= healthy)
    for objective in objectives(profile):
        found = objective_in_prometheus(api, objective.sli, at)
        row(f"objective {objective.sli} in Prometheus", f"{objective.target:g} (the profile's slo)",
            f"{found:g}", math.isclose(found, objective.target, rel_tol=1e-9))
        if objective.unit == "s":
            value = [s.last for s in api.query(objective.record, at) if not math.isnan(s.last)]
            row(f"recording rule {objective.record} returns a value", "a number after the load",
                f"{value[0]:.3f} s" if value else "no data", bool(value))
    answered = sum(c.ok for c in load.calls)
    limit = int(load.tenants.settings["limited"]["rpm"])
    row("the load was answered", f"{len(load.calls)} chats through the gateway",
        f"{answered} answered in {load.seconds:.0f} s", answered == len(load.calls) > 0)
    row("a request past the rate limit is refused", f"{limit} x 200, then 429", ", ".join(map(str, load.limited)),
        load.limited == [200] * limit + [429])
    failed = [r for r in results if not r.ok]
    skipped = [r for r in results if r.skipped]
    row("every dashboard query returns data", f"{len(results) - len(skipped)} queries with series, "
        f"{len(skipped)} skipped with a reason", f"{len(results) - len(failed) - len(skipped)} with data"
        + (f"; no data: {'; '.join(f'{r.query.panel} ({r.query.ref})' for r in failed)}" if failed else ""),
        not failed)
    table = pd.DataFrame(rows).set_index("check")
    return table if spend_checks is None else pd.concat([table, spend_checks])


def alerts(endpoint: PrometheusEndpoint) -> pd.DataFrame:
    """The SLO alerts and their state (inactive, pending, firing) as Prometheus evaluates them now."""
    rows = [r for r in endpoint.api.rules() if r["type"] == "alerting"]
    return pd.DataFrame(rows)[["group", "name", "state", "health"]].set_index("name")
