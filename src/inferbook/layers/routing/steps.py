"""The routing chapter's steps: bring the layer up on the profile's target, and the checks that end the chapter."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ... import targets
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from .experiments import Canary, Failover, PolicyRun
from .local import REPLICAS, LocalRouting


def provision(profile: Profile, layout: Layout, objects: list[dict[str, Any]], say: Say = print,
              timeout: float = 900) -> LocalRouting | dict[str, Any]:
    """Bring routing up: server-side apply on a cluster (the Gateway, routes, pools and pickers), or the router
    and the second replica as supervised processes locally. Returns the local layer, or the cluster's facts."""
    from . import DECLARATION  # the declaration lives in the package, which imports this module

    return targets.of(profile, layout, say).part(DECLARATION).provision(objects, timeout=timeout)  # type: ignore[no-any-return]


def status_table(routing: LocalRouting) -> pd.DataFrame:
    """The router and both replicas, as ``inferbook status`` reports them, and the router's view of each."""
    health = routing.workers_health()
    rows = []
    for name, url in routing.replica_urls.items():
        owner = routing.serving.process if name == REPLICAS[0] else routing.replica
        facts = owner.facts()
        rows.append({"part": name, "url": url, "process": facts["process"], "serving pid": facts["pid"],
                     "router sees it healthy": {1.0: "yes", 0.0: "no"}.get(health.get(url, -1), "not listed")})
    for replica in routing.replicas[1:]:  # the canary: behind the front, not in the router's pool
        facts = replica.process.facts()
        rows.append({"part": replica.name, "url": replica.base, "process": facts["process"],
                     "serving pid": facts["pid"], "router sees it healthy": "not in its pool"})
    for part, process, url in (("vllm-router", routing.router, routing.pool_base), ("front", routing.front,
                                                                                     routing.base)):
        facts = process.facts()
        rows.append({"part": part, "url": url, "process": facts["process"], "serving pid": facts["pid"],
                     "router sees it healthy": "-"})
    return pd.DataFrame(rows).set_index("part")


def verify(routing: LocalRouting, runs: list[PolicyRun], failover: Failover, models: pd.DataFrame | None = None,
           canary: Canary | None = None) -> list[dict[str, Any]]:
    """The chapter's checks: models reach their pools, unknown ones get a named 404, the canary gets its share,
    every request of the side-by-side run was answered, affinity held, the cache paid off, failover was clean."""
    rows: list[dict[str, Any]] = []

    def row(check: str, expected: str, observed: str, ok: bool) -> None:
        rows.append({"check": check, "expected": expected, "observed": observed, "pass": bool(ok)})

    status = routing.status()
    row("the routing layer serves", "healthy", status["state"], status["healthy"])
    if models is not None:
        for model, found in models.iterrows():
            if found["route"] == "none":
                row(f"a model with no route ({model})", "404 naming the routed models", f"{found['status']}: "
                    f"{found['error'][:60]}", found["status"] == 404 and "no route for model" in found["error"])
            else:
                row(f"{model} reaches its route", found["route"], f"{found['status']}, {found['answered by']}",
                    found["status"] == 200)
    if canary is not None:
        for pool, share in canary.expected.items():
            got = canary.observed.get(pool, 0)
            low, high = _binomial_band(canary.calls, share)
            row(f"canary split: {pool}", f"{100 * share:.0f}% (here {low}-{high} of {canary.calls})",
                f"{got} of {canary.calls}", canary.failed == 0 and low <= got <= high)
    by_policy = {r.policy: r for r in runs}
    for run in runs:
        failed = [c for c in run.calls if not c.ok]
        row(f"{run.policy}: every request answered", "0 failed", f"{len(failed)} failed of {len(run.calls)}",
            not failed)
    aware = by_policy.get("cache_aware")
    if aware is not None:
        groups: dict[int, set[str]] = {}
        for c in aware.calls:
            if c.ok:
                groups.setdefault(c.group, set()).add(c.replica or "?")
        split = {g: sorted(r) for g, r in groups.items()}
        row("cache_aware keeps each document on one replica", "1 replica per document",
            "; ".join(f"document {g}: {', '.join(r)}" for g, r in split.items()),
            bool(groups) and all(len(r) == 1 for r in groups.values()))
        follow = [c for c in aware.calls if c.ok and c.index > 0]
        hits = sum(1 for c in follow if c.cached_tokens)
        row("cache_aware: follow-ups hit the prefix cache", "every follow-up", f"{hits} of {len(follow)}",
            bool(follow) and hits == len(follow))
        used = {c.replica for c in aware.calls if c.ok}
        row("both replicas serve", ", ".join(REPLICAS), ", ".join(sorted(x or "?" for x in used)),
            set(REPLICAS) <= used)
    after = [c for c in failover.calls if c.started >= failover.kill_at + (failover.detect_s or 0) and not c.ok]
    row("failover: no error once the router knew", "0 failed after detection", f"{len(after)} failed",
        failover.detect_s is not None and not after)
    row("failover: the killed replica rejoined", "rejoined", "rejoined" if failover.rejoin_s is not None
        else "not within the drill", failover.rejoin_s is not None)
    row("failover: nothing left unsupervised", "0 processes", str(failover.leftovers), failover.leftovers == 0)
    return rows


def _binomial_band(calls: int, share: float) -> tuple[int, int]:
    """The counts a fair weighted choice lands in with about 99.9% probability (mean +- 3.3 standard deviations):
    outside it, the split is not the stated weights."""
    import math

    mean, sd = calls * share, math.sqrt(calls * share * (1 - share))
    return max(0, math.floor(mean - 3.3 * sd)), min(calls, math.ceil(mean + 3.3 * sd))
