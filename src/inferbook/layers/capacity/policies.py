"""The replica's service from the curve, the autoscaling policies compared, and running them side by side.

The service is a model of the measured (or stored) curve, labelled as one: a replica runs up to the curve's highest
level at once; a request started with ``k`` in flight takes ``k x output tokens / throughput(k)`` seconds (Little's
law on the closed-loop curve) and its first token comes after the curve's TTFT p95 at ``k``; between levels the
curve is interpolated linearly (:data:`inferbook.layers.economics.curve.MODEL_NOTE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...profile import REPLICA_FLOOR, Profile
from ..economics.curve import Curve
from . import traces
from .fluid import FluidFleet, FluidResult
from .sim import Fleet, Policy, Result, Signals


@dataclass
class CurveService:
    """One replica as the curve says it serves (deterministic: every request at a level takes the same time)."""

    curve: Curve

    @property
    def slots(self) -> int:
        return self.curve.max_concurrency

    @property
    def label(self) -> str:
        return f"{self.curve.label}, up to {self.slots} at once; between levels: linear interpolation (a model)"

    def e2e_s(self, k: float) -> float:
        return k * self.curve.output_tokens / self.curve.throughput(k)

    def ttft_s(self, k: float) -> float:
        ttft = self.curve.ttft_ms(k)
        e2e = self.e2e_s(k)
        return min(e2e, ttft / 1000) if ttft is not None else e2e / self.curve.output_tokens

    def times(self, k: int, rng: np.random.Generator) -> tuple[float, float]:
        return self.ttft_s(k), self.e2e_s(k)

    def knee_rate(self) -> float:
        """Requests/s one replica completes at the knee (or its highest level when there is no knee)."""
        k = self.curve.knee or self.slots
        return k / self.e2e_s(k)

    def table(self) -> pd.DataFrame:
        rows = [{"concurrency": p.concurrency, "output tok/s": round(p.output_tokens_per_s, 1),
                 "request time (s)": round(self.e2e_s(p.concurrency), 3),
                 "TTFT (s)": round(self.ttft_s(p.concurrency), 3),
                 "requests/s per replica": round(p.concurrency / self.e2e_s(p.concurrency), 2),
                 "knee": "knee" if p.concurrency == self.curve.knee else ""} for p in self.curve.points]
        return pd.DataFrame(rows).set_index("concurrency")


@dataclass(frozen=True)
class Settings:
    """The profile's ``capacity:`` with the floor and the concurrency target resolved."""

    seed: int
    hours: float
    peak_replicas: float
    max_replicas: int
    min_replicas: int
    queue_target: float
    utilisation_target: float
    concurrency_target: float
    interval_s: float
    cooldown_s: float
    queue_timeout_s: float
    cold_starts_min: tuple[float, ...]

    @classmethod
    def from_profile(cls, profile: Profile, curve: Curve) -> "Settings":
        c = profile.data["capacity"]
        floor = c["min_replicas"] if c["min_replicas"] is not None else REPLICA_FLOOR[profile.tier]
        return cls(seed=c["seed"], hours=c["hours"], peak_replicas=c["peak_replicas"], max_replicas=c["max_replicas"],
                   min_replicas=floor, queue_target=c["queue_target"], utilisation_target=c["utilisation_target"],
                   concurrency_target=c["concurrency_target"] or float(curve.knee or curve.max_concurrency),
                   interval_s=c["interval_seconds"], cooldown_s=c["cooldown_seconds"],
                   queue_timeout_s=c["queue_timeout_seconds"], cold_starts_min=tuple(c["cold_start_minutes"]))


def policies(s: Settings) -> dict[str, Policy | None]:
    """The policies compared; None is the fixed fleet (``max_replicas`` from the start, never scaled)."""
    floor = s.min_replicas

    def queue(x: Signals) -> int:  # ADR-0014: KEDA on sum(vllm:num_requests_waiting), target per replica
        return max(floor, math.ceil(x.waiting / s.queue_target))

    def utilisation(x: Signals) -> int:  # HPA-style on the busy share of ready replicas
        if x.ready == 0:
            return max(floor, 1 if x.waiting else 0)
        return max(floor, math.ceil(x.ready * x.busy_share / s.utilisation_target))

    def concurrency(x: Signals) -> int:  # requests in the system per replica
        return max(floor, math.ceil((x.in_flight + x.waiting) / s.concurrency_target))

    return {f"queue depth (KEDA, {s.queue_target:g} waiting per replica; ADR-0014)": queue,
            f"GPU utilisation ({s.utilisation_target:.0%} busy)": utilisation,
            f"concurrency ({s.concurrency_target:g} in flight per replica)": concurrency,
            f"fixed fleet ({s.max_replicas} replicas)": None}


def simulate(service: CurveService, trace: traces.Trace, name: str, policy: Policy | None, s: Settings,
             cold_start_min: float) -> Result:
    """One trace under one policy."""
    fleet = Fleet(service, policy, initial=s.max_replicas if policy is None else s.min_replicas,
                  max_replicas=s.max_replicas, cold_start_s=cold_start_min * 60, interval_s=s.interval_s,
                  cooldown_s=s.cooldown_s, queue_timeout_s=s.queue_timeout_s, seed=s.seed, name=name)
    return fleet.run(trace.arrivals, trace.seconds)


def simulate_fluid(service: CurveService, kind: str, name: str, policy: Policy | None, s: Settings,
                   cold_start_min: float, *, hours: float | None = None, peak_replicas: float | None = None,
                   max_replicas: int | None = None) -> FluidResult:
    """The same trace's rate under one policy, in the fluid model (:mod:`.fluid`); a longer or larger run with
    ``hours``, ``peak_replicas`` and ``max_replicas``."""
    hours = s.hours if hours is None else hours
    ceiling = s.max_replicas if max_replicas is None else max_replicas
    peak = (s.peak_replicas if peak_replicas is None else peak_replicas) * service.knee_rate()
    fleet = FluidFleet(service, policy, initial=ceiling if policy is None else s.min_replicas, max_replicas=ceiling,
                       cold_start_s=cold_start_min * 60, interval_s=s.interval_s, cooldown_s=s.cooldown_s,
                       queue_timeout_s=s.queue_timeout_s, seed=s.seed, name=name)
    return fleet.run(traces.rate(kind, peak, hours * 3600, s.seed), hours * 3600)


def make_traces(service: CurveService, s: Settings) -> dict[str, traces.Trace]:
    peak = s.peak_replicas * service.knee_rate()
    return {kind: traces.make(kind, peak, s.hours * 3600, s.seed) for kind in traces.KINDS}


def compare(service: CurveService, made: dict[str, traces.Trace], s: Settings, cold_start_min: float,
            kinds: tuple[str, ...] = traces.KINDS) -> dict[tuple[str, str], Result]:
    """Every policy on every trace of ``kinds`` at one cold start: {(trace, policy): result}."""
    return {(kind, name): simulate(service, made[kind], name, policy, s, cold_start_min)
            for kind in kinds for name, policy in policies(s).items()}


def table(results: dict[tuple[str, str], Result], objective_s: float, price: float | None,
          price_field: str) -> pd.DataFrame:
    """Per trace and policy: SLO attainment, GPU-hours, cost, shed."""
    rows = []
    for (kind, name), r in results.items():
        p95 = r.ttft_p95_s()
        hours = r.gpu_seconds / 3600
        rows.append({"trace": kind, "policy": name, "requests": r.arrivals,
                     "TTFT p95 (s)": "-" if p95 is None else round(p95, 3),
                     "within objective": f"{r.within(objective_s):.1%}", "shed": r.shed, "unfinished": r.unfinished,
                     "GPU-hours": round(hours, 2),
                     "mean replicas": round(hours * 3600 / r.timeline[-1][0], 2) if r.timeline[-1][0] else "-",
                     "cost (USD, on-demand)": f"no price given: set {price_field}" if price is None
                     else round(hours * price, 2)})
    return pd.DataFrame(rows).set_index(["trace", "policy"])


def plot(results: dict[tuple[str, str], Result], title: str) -> Any:
    """Replicas over time, one panel per trace, one line per policy."""
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(kind for kind, _ in results))
    fig, axes = plt.subplots(len(kinds), 1, figsize=(12, 2.6 * len(kinds)), constrained_layout=True, squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds, strict=True):
        for (k, name), r in results.items():
            if k != kind:
                continue
            t = [x[0] / 60 for x in r.timeline]
            ax.step(t, [x[1] for x in r.timeline], where="post", label=name.split(" (")[0], linewidth=1.2)
        ax.set_title(f"{kind} trace")
        ax.set_ylabel("replicas")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("minutes")
    axes[0, 0].legend(fontsize="small", ncol=4)
    fig.suptitle(title)
    plt.close(fig)
    return fig


def dominated_by(results: dict[tuple[str, str], Result], kind: str, mine: str, objective_s: float) -> list[str]:
    """The autoscaled policies that beat ``mine`` on ``kind``: as many or more requests within the objective for
    fewer GPU-hours, or more within it (by half a point or more) for no more GPU-hours."""
    me = results[(kind, mine)]
    out = []
    for (k, name), r in results.items():
        if k != kind or name == mine or name.startswith("fixed"):
            continue
        a, b = r.within(objective_s), me.within(objective_s)
        if (a >= b and r.gpu_seconds < 0.98 * me.gpu_seconds) or (a >= b + 0.005 and r.gpu_seconds <= me.gpu_seconds):
            out.append(name)
    return out

