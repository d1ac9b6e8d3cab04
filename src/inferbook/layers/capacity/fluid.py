"""The fleet as a fluid: the same replicas, policies and cold starts as :mod:`.sim`, in fixed time steps with
requests counted, not followed one by one.

Why a second model: the per-request simulation costs a few microseconds per request, and a day of a hundred L4
replicas is hundreds of millions of requests (an hour of CPU). Here each step draws the step's arrivals as one
Poisson count from the trace's rate, lets them into free slots (the least-loaded spread of :mod:`.sim`, averaged:
every ready replica runs ``in flight / ready``), queues the rest at the gateway as one cohort per step (first in,
first out, shed after the timeout), and completes ``in flight x step / request time(k)`` of what runs (Little's law
on the curve, as :class:`~.policies.CurveService`). Its cost is per step, not per request.

What it gives up: the spread of service times and of arrivals within a step (a request waits a whole number of
steps, or none), so tails near saturation are smoother than the per-request model's. The chapter runs both on the
same traces and shows how far apart they are; the verdict is the per-request model's.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from .sim import Policy, ScaleDownWindow, Signals, SimulationError

#: The default step is this fraction of the shortest request (one in flight), and at most a second.
STEPS_PER_REQUEST = 5


class FluidService(Protocol):
    """What the fluid model reads off a replica (:class:`~.policies.CurveService`): its slots, and the TTFT and
    request time of a request run with ``k`` in flight, ``k`` possibly fractional (an average over replicas)."""

    slots: int

    def ttft_s(self, k: float) -> float: ...

    def e2e_s(self, k: float) -> float: ...


@dataclass
class FluidResult:
    """One fluid run: the same figures as :class:`.sim.Result`, from weighted cohorts."""

    policy: str
    arrivals: int
    served: int
    shed: int
    unfinished: int
    ttft_s: np.ndarray  # one entry per admitted cohort
    weights: np.ndarray  # requests in that cohort
    gpu_seconds: float
    timeline: list[tuple[float, int, int]] = field(repr=False)

    def within(self, objective_s: float) -> float:
        """Share of all arrivals answered with TTFT within ``objective_s`` (shed and unfinished count as missed)."""
        if not self.arrivals:
            return 1.0
        return float(self.weights[self.ttft_s < objective_s].sum()) / self.arrivals

    def ttft_p95_s(self) -> float | None:
        """The weighted 95th percentile of the answered requests' TTFT (the smallest value at or above 95%)."""
        if not self.weights.size or self.weights.sum() <= 0:
            return None
        order = np.argsort(self.ttft_s, kind="stable")
        cumulative = np.cumsum(self.weights[order])
        return float(self.ttft_s[order][np.searchsorted(cumulative, 0.95 * cumulative[-1])])


class FluidFleet:
    """One trace's rate under one policy, stepped every ``step_s`` seconds."""

    def __init__(self, service: FluidService, policy: Policy | None, *, initial: int, max_replicas: int,
                 cold_start_s: float, interval_s: float, cooldown_s: float, queue_timeout_s: float | None,
                 seed: int, step_s: float | None = None, name: str = "") -> None:
        if initial > max_replicas:
            raise SimulationError(f"initial replicas {initial} above the ceiling {max_replicas}")
        if step_s is None:  # slots free up only between steps: a step well under the shortest request keeps the
            step_s = min(1.0, service.e2e_s(1.0) / STEPS_PER_REQUEST)  # capacity the curve's, not slots per step
        if step_s <= 0 or interval_s < step_s:
            raise SimulationError(f"the fluid model needs 0 < step ({step_s} s) <= decision interval ({interval_s} s)")
        self.service, self.policy, self.name = service, policy, name
        self.max_replicas, self.cold_start_s, self.step = max_replicas, cold_start_s, step_s
        self.interval_s, self.cooldown_s, self.timeout = interval_s, cooldown_s, queue_timeout_s
        self.rng = np.random.default_rng([seed, 11])
        self.ready_at: list[float] = [0.0] * initial  # one entry per replica: when it serves
        self._window = ScaleDownWindow(cooldown_s, max_replicas)

    def _scale(self, now: float, want: int, in_flight: float) -> tuple[float, float]:
        """Apply a decision as :meth:`.sim.Fleet._scale` does (up at once, down to the highest count wanted within
        the cooldown); replicas leave starting ones first. Returns (in flight handed back as served by the ready
        replicas that left, GPU-seconds those spend draining it)."""
        target = self._window.target(now, want, len(self.ready_at))
        while len(self.ready_at) < target:
            self.ready_at.append(now + self.cold_start_s)
        drained = drain_seconds = 0.0
        if len(self.ready_at) > target:
            ready = sum(1 for r in self.ready_at if r <= now)
            self.ready_at.sort(reverse=True)  # the latest to be ready leave first
            leaving = self.ready_at[: len(self.ready_at) - target]
            del self.ready_at[: len(self.ready_at) - target]
            gone = sum(1 for r in leaving if r <= now)
            if gone and ready:  # a leaving replica finishes its share of what runs, billed while it does
                drained = in_flight * gone / ready
                k = in_flight / ready
                drain_seconds = gone * self.service.e2e_s(max(1.0, k)) if k > 0 else 0.0
        return drained, drain_seconds

    def run(self, rate: Callable[[np.ndarray], np.ndarray], seconds: float) -> FluidResult:
        """Step through ``seconds`` of traffic at ``rate`` (requests/s at an array of times)."""
        service, step = self.service, self.step
        slots = service.slots
        steps = int(math.ceil(seconds / step))
        starts = np.arange(steps) * step
        spans = np.minimum(step, seconds - starts)  # the last step ends with the window
        counts = self.rng.poisson(np.maximum(rate(starts + spans / 2), 0) * spans).tolist()
        last_span = float(spans[-1])
        queue: deque[list[float]] = deque()  # [arrival time, requests]
        in_flight = served = shed = gpu_seconds = 0.0
        ttfts: list[float] = []
        weights: list[float] = []
        timeline: list[tuple[float, int, int]] = []
        next_decision = 0.0
        e2e, first = service.e2e_s, service.ttft_s
        for i in range(steps):
            now = i * step
            ready = sum(1 for r in self.ready_at if r <= now)
            if now >= next_decision:
                if self.policy is not None:
                    waiting = sum(c[1] for c in queue)
                    busy = min(1.0, in_flight / ready) if ready else 0.0
                    signals = Signals(now, len(self.ready_at), ready, int(round(waiting)), int(round(in_flight)),
                                      busy)
                    drained, drain_seconds = self._scale(now, self.policy(signals), in_flight)
                    in_flight -= drained
                    served += drained
                    gpu_seconds += drain_seconds
                    ready = sum(1 for r in self.ready_at if r <= now)
                timeline.append((now, len(self.ready_at), ready))
                next_decision += self.interval_s
            span = step if i < steps - 1 else last_span
            gpu_seconds += len(self.ready_at) * span
            # completions over the step, at the concurrency each ready replica runs
            if in_flight > 0 and ready:
                k = in_flight / ready
                done = min(in_flight, in_flight * span / e2e(max(1.0, min(k, slots))))
                in_flight -= done
                served += done
            if counts[i]:
                queue.append([now, float(counts[i])])
            # admission: the queue's head into free slots; TTFT at the concurrency after admission
            free = ready * slots - in_flight
            while queue and free > 1e-9:
                cohort = queue[0]
                if self.timeout is not None and now - cohort[0] > self.timeout:
                    shed += cohort[1]
                    queue.popleft()
                    continue
                take = min(cohort[1], free)
                in_flight += take
                free -= take
                ttfts.append(now - cohort[0] + first(max(1.0, in_flight / ready)))
                weights.append(take)
                cohort[1] -= take
                if cohort[1] <= 1e-9:
                    queue.popleft()
            while queue and self.timeout is not None and now - queue[0][0] > self.timeout:
                shed += queue.popleft()[1]
        arrivals = int(sum(counts))
        return FluidResult(policy=self.name, arrivals=arrivals, served=int(round(served)), shed=int(round(shed)),
                           unfinished=max(0, arrivals - int(round(served)) - int(round(shed))),
                           ttft_s=np.asarray(ttfts), weights=np.asarray(weights), gpu_seconds=gpu_seconds,
                           timeline=timeline)
