"""What the simulation says: the verdict on ADR-0014 computed from the results, the cold-start sensitivity,
the 100-replica benchmark and the checks with a known answer."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from . import traces
from .policies import CurveService, Settings, compare, dominated_by, policies, simulate, simulate_fluid
from .sim import Exponential, Fleet, Result, erlang_c

#: M/M/c known answer: 4 servers at 75% utilisation, enough customers to be within the tolerance for the seed.
MMC = {"servers": 4, "arrival_rate": 3.0, "service_rate": 1.0, "customers": 300_000}
#: Tolerances: the mean wait in queue within 5% of Erlang C's, the utilisation within 1 point.
WAIT_TOLERANCE, UTILISATION_TOLERANCE = 0.05, 0.01
#: The fluid model stands in for the per-request one at scale when their shares within the objective agree to this
#: many points on every trace and policy of the run.
FLUID_TOLERANCE_POINTS = 5.0
#: The policies that check covers: the one the 100-replica day runs (ADR-0014's), and the fixed fleet. The reactive
#: policies on a small fleet can differ more (the table shows it): below saturation a fluid has no queue, so a policy
#: that reads one reacts later than it does to the per-request model's random bunching.
FLUID_CHECKED = ("queue depth", "fixed fleet")


def queue_policy(s: Settings) -> str:
    return next(name for name in policies(s) if name.startswith("queue depth"))


def verdict(results: dict[tuple[str, str], Result], s: Settings, objective_s: float, cold_start_min: float) -> str:
    """Whether the results support ADR-0014's queue depth, trace by trace, in sentences that follow from them."""
    mine = queue_policy(s)
    kinds = list(dict.fromkeys(kind for kind, _ in results))
    lines, supported = [], 0
    for kind in kinds:
        me = results[(kind, mine)]
        beaten = dominated_by(results, kind, mine, objective_s)
        others = "; ".join(f"{name.split(' (')[0]}: {r.within(objective_s):.1%} within, {r.gpu_seconds / 3600:.2f} "
                           f"GPU-hours" for (k, name), r in results.items() if k == kind and name != mine)
        state = ("not beaten by another autoscaling policy" if not beaten
                 else "beaten by " + ", ".join(b.split(" (")[0] for b in beaten))
        supported += not beaten
        lines.append(f"- {kind}: queue depth answered {me.within(objective_s):.1%} of requests within the objective "
                     f"for {me.gpu_seconds / 3600:.2f} GPU-hours ({me.shed} shed), {state} ({others}).")
    head = (f"At a cold start of {cold_start_min:g} min, the simulation supports ADR-0014's queue depth on "
            f"{supported} of {len(kinds)} traces" + (" (on each, no other autoscaling policy served more requests "
                                                      "within the objective for as few GPU-hours)."
                                                      if supported == len(kinds) else "."))
    return "\n".join([head, *lines])


def cold_start_table(service: CurveService, made: dict[str, traces.Trace], s: Settings, objective_s: float,
                     kind: str = "diurnal") -> tuple[pd.DataFrame, str]:
    """Each policy's share within the objective and GPU-hours on one trace, per cold start; and a sentence on how
    the queue policy's standing moves with it."""
    rows, standing = [], []
    mine = queue_policy(s)
    for minutes in s.cold_starts_min:
        results = compare(service, made, s, minutes, kinds=(kind,))
        for (_, name), r in results.items():
            rows.append({"cold start (min)": minutes, "policy": name.split(" (")[0],
                         "within objective": f"{r.within(objective_s):.1%}",
                         "GPU-hours": round(r.gpu_seconds / 3600, 2),
                         "shed": r.shed})
        beaten = dominated_by(results, kind, mine, objective_s)
        standing.append((minutes, results[(kind, mine)].within(objective_s), beaten))
    first, last = standing[0], standing[-1]
    holds = [m for m, _, b in standing if not b]
    sentence = (f"On the {kind} trace, as the cold start grows from {first[0]:g} to {last[0]:g} min, queue depth's "
                f"share within the objective moves from {first[1]:.1%} to {last[1]:.1%}; it is unbeaten by another "
                f"autoscaling policy at " + (", ".join(f"{m:g}" for m in holds) + " min" if holds else "no cold start")
                + " of those compared.")
    return pd.DataFrame(rows).set_index(["cold start (min)", "policy"]), sentence


def agreement(service: CurveService, s: Settings, results: dict[tuple[str, str], Result], objective_s: float,
              cold_start_min: float) -> pd.DataFrame:
    """The fluid model beside the per-request one on the same traces and policies: how far apart they are."""
    rows = []
    for (kind, name), r in results.items():
        f = simulate_fluid(service, kind, name, policies(s)[name], s, cold_start_min)
        rows.append({"trace": kind, "policy": name.split(" (")[0],
                     "within, per request": f"{r.within(objective_s):.1%}",
                     "within, fluid": f"{f.within(objective_s):.1%}",
                     "gap (points)": round(100 * (f.within(objective_s) - r.within(objective_s)), 1),
                     "GPU-hours, per request": round(r.gpu_seconds / 3600, 2),
                     "GPU-hours, fluid": round(f.gpu_seconds / 3600, 2)})
    return pd.DataFrame(rows).set_index(["trace", "policy"])


def benchmark(service: CurveService, s: Settings, replicas: int = 100, minutes: float = 10.0,
              hours: float = 24.0) -> pd.DataFrame:
    """The speed goal, a day of a ``replicas`` fleet on one core, measured two ways: the per-request model on
    ``minutes`` of a fixed fleet at 70% of its knee rate, its CPU time scaled to a day (its work is per request, so
    linear); and the fluid model on a whole day of the diurnal trace peaking at 90% of the fleet, autoscaled by
    ADR-0014's queue depth, timed end to end. Process time, so the figures are this core's."""
    trace = traces.make("steady", replicas * service.knee_rate(), minutes * 60, s.seed)
    fleet = Fleet(service, None, initial=replicas, max_replicas=replicas, cold_start_s=0, interval_s=s.interval_s,
                  cooldown_s=0, queue_timeout_s=s.queue_timeout_s, seed=s.seed, name="benchmark")
    started = time.process_time()
    result = fleet.run(trace.arrivals, trace.seconds)
    spent = time.process_time() - started
    day = spent * 86400 / trace.seconds
    mine = queue_policy(s)
    started = time.process_time()
    fluid = simulate_fluid(service, "diurnal", mine, policies(s)[mine], s, s.cold_starts_min[0], hours=hours,
                           peak_replicas=0.9 * replicas, max_replicas=replicas)
    fluid_spent = time.process_time() - started
    scaled_fluid = fluid_spent * 24 / hours
    goal = (f"met by the fluid model ({scaled_fluid:.1f} s a day)" if scaled_fluid < 60 and replicas >= 100
            else f"not met: the fluid model took {scaled_fluid:.1f} s a day at {replicas} replicas")
    goal += "" if day < 60 else f"; not by the per-request model ({day:,.0f} s)"
    rows = [("fleet", f"{replicas} replicas, {service.curve.label}"),
            ("per request: simulated", f"{minutes:g} min of steady traffic to a fixed fleet, {trace.requests:,} "
                                       f"requests ({trace.requests / trace.seconds:,.1f} req/s)"),
            ("per request: CPU seconds (this core, process time)", round(spent, 2)),
            ("per request: requests simulated per CPU second", f"{result.arrivals / spent:,.0f}" if spent else "-"),
            ("per request: a day, scaled linearly (CPU seconds)", round(day, 1)),
            ("fluid: simulated", f"{hours:g} h of the diurnal trace, {fluid.arrivals:,} requests, queue depth scaling "
                                 f"up to {max(x[1] for x in fluid.timeline)} replicas"),
            ("fluid: CPU seconds (this core, process time)", round(fluid_spent, 2)),
            ("goal: a 100-replica day under a minute on one core", goal)]
    return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")


def mmc(seed: int, customers: int = MMC["customers"]) -> dict[str, float]:
    """The M/M/c case: simulated mean wait and utilisation beside Erlang C's."""
    c, lam, mu = MMC["servers"], MMC["arrival_rate"], MMC["service_rate"]
    arrivals = np.cumsum(np.random.default_rng([seed, 1]).exponential(1 / lam, size=customers))
    fleet = Fleet(Exponential(mu), None, initial=c, max_replicas=c, cold_start_s=0, interval_s=arrivals[-1] + 1,
                  cooldown_s=0, queue_timeout_s=None, seed=seed, name="M/M/c")
    result = fleet.run(arrivals, float(arrivals[-1]) + 1)
    _, wait, rho = erlang_c(c, lam, mu)
    return {"wait_s": float(result.wait_s.mean()), "erlang_wait_s": wait,
            "utilisation": result.busy_seconds / (c * float(arrivals[-1])), "erlang_utilisation": rho}


def verify(service: CurveService, s: Settings, results: dict[tuple[str, str], Result],
           agreed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Known answers and bookkeeping: M/M/c against Erlang C, a fixed fleet below capacity sheds nothing, the same
    seed gives the same results, every request is served, shed or still running at the end; and, given
    :func:`agreement`'s table, the fluid model within :data:`FLUID_TOLERANCE_POINTS` of the per-request one."""
    rows = []
    m = mmc(s.seed, customers=100_000)
    rel = abs(m["wait_s"] / m["erlang_wait_s"] - 1)
    rows.append({"check": "M/M/4 at 75%: mean wait in queue", "expected": f"{m['erlang_wait_s']:.4f} s (Erlang C) "
                 f"within {WAIT_TOLERANCE:.0%}", "observed": f"{m['wait_s']:.4f} s ({rel:.1%} off)",
                 "pass": rel <= WAIT_TOLERANCE})
    rows.append({"check": "M/M/4 at 75%: utilisation", "expected": f"{m['erlang_utilisation']:.3f} within "
                 f"{UTILISATION_TOLERANCE}", "observed": f"{m['utilisation']:.3f}",
                 "pass": abs(m["utilisation"] - m["erlang_utilisation"]) <= UTILISATION_TOLERANCE})
    below = traces.make("steady", 0.5 * s.max_replicas * service.knee_rate() / 0.7, 600, s.seed)
    fixed = simulate(service, below, "fixed", None, s, 0)
    rows.append({"check": "a fixed fleet under steady load below capacity sheds nothing",
                 "expected": "0 shed (load: 50% of the fleet's knee rate)", "observed": f"{fixed.shed} shed of "
                 f"{fixed.arrivals:,}", "pass": fixed.shed == 0 and fixed.arrivals > 0})
    kind, name = next(iter(results))
    again = simulate(service, traces.make(kind, s.peak_replicas * service.knee_rate(), s.hours * 3600, s.seed), name,
                     policies(s)[name], s, s.cold_starts_min[len(s.cold_starts_min) // 2])
    first = results[(kind, name)]
    same = np.array_equal(first.ttft_s, again.ttft_s) and first.gpu_seconds == again.gpu_seconds
    rows.append({"check": "same seed, same results", "expected": f"{kind} / {name.split(' (')[0]} run twice: identical",
                 "observed": "identical" if same else "different", "pass": same})
    ok = all(r.served + r.shed + r.unfinished == r.arrivals and r.unfinished >= 0 for r in results.values())
    rows.append({"check": "every request accounted for", "expected": "served + shed + running at the end = arrivals",
                 "observed": f"{len(results)} runs", "pass": ok})
    if agreed is not None:  # the policies the fluid model is used for at scale: ADR-0014's, and the fixed reference
        used = agreed[agreed.index.get_level_values("policy").isin(FLUID_CHECKED)]
        worst = float(used["gap (points)"].abs().max())
        rows.append({"check": "the fluid model agrees with the per-request one",
                     "expected": f"share within the objective within {FLUID_TOLERANCE_POINTS:g} points "
                                 f"({' and '.join(FLUID_CHECKED)}, every trace)",
                     "observed": f"largest gap {worst:.1f} points over {len(used)} runs",
                     "pass": worst <= FLUID_TOLERANCE_POINTS})
    return pd.DataFrame(rows).set_index("check")


def figures(results: dict[tuple[str, str], Result], s: Settings, objective_s: float, sentence: str,
            bench: pd.DataFrame) -> pd.DataFrame:
    mine = queue_policy(s)
    rows: list[tuple[str, Any]] = []
    for kind in dict.fromkeys(k for k, _ in results):
        r = results[(kind, mine)]
        rows.append((f"queue depth on {kind}: within objective / GPU-hours / shed",
                     f"{r.within(objective_s):.1%} / {r.gpu_seconds / 3600:.2f} / {r.shed}"))
    rows.append(("cold start sensitivity", sentence))
    rows.append(("100-replica day on one core", bench.loc["goal: a 100-replica day under a minute on one core",
                                                          "value"]))
    return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")
