"""The fleet: N replicas behind the gateway, a shared FIFO queue, a policy that scales them, in SimPy.

Each request arrives at the gateway (one SimPy event), goes to the ready replica with the fewest requests in flight
if one has a free slot, else waits in the gateway's queue (what a buffering proxy, KEDA's HTTP add-on, does while a
replica starts); a request that waited longer than the timeout is shed (the client gets a 429/503). A replica's
behaviour is a :class:`Service`: how many requests it runs at once (its slots) and how long one takes given how
many it runs. Policies decide every interval; a new replica is billed from the moment it is asked for and serves
only after its cold start (ADR-0025). Everything random is drawn from generators seeded by the run's seed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import simpy

from ...errors import InferbookError


class SimulationError(InferbookError):
    """A simulation asked for something it cannot do."""


class Service(Protocol):
    """How one replica serves: its slots, and (TTFT, total) seconds of a request started with ``k`` in flight."""

    slots: int
    label: str

    def times(self, k: int, rng: np.random.Generator) -> tuple[float, float]: ...


@dataclass
class Exponential:
    """One slot, exponential service of rate ``mu`` per second: the M/M/c queue's server (the known answer)."""

    mu: float
    slots: int = 1
    label: str = "exponential service (M/M/c)"

    def times(self, k: int, rng: np.random.Generator) -> tuple[float, float]:
        total = float(rng.exponential(1 / self.mu))
        return 0.0, total


@dataclass
class Replica:
    """One replica: when it serves, what it runs, whether it is leaving."""

    name: int
    ready_at: float
    active: int = 0
    draining: bool = False

    def ready(self, now: float) -> bool:
        return now >= self.ready_at and not self.draining


@dataclass
class Signals:
    """What a policy sees at a decision: the fleet and the gateway's queue."""

    now: float
    replicas: int  # existing (starting, ready, draining)
    ready: int
    waiting: int  # requests queued at the gateway (vLLM's num_requests_waiting, summed)
    in_flight: int  # requests running on replicas
    busy_share: float  # share of ready replicas running anything (what GPU utilisation reports)


#: A policy: the signals in, the replica count it wants out.
Policy = Callable[[Signals], int]


class ScaleDownWindow:
    """HPA's scale-down stabilisation, shared by both fleet models: up at once; down only to the highest count
    wanted within the last ``cooldown_s`` seconds."""

    def __init__(self, cooldown_s: float, max_replicas: int) -> None:
        self.cooldown_s, self.max_replicas = cooldown_s, max_replicas
        self._desired: deque[tuple[float, int]] = deque()

    def target(self, now: float, want: int, current: int) -> int:
        """The replica count to move to from ``current`` when a policy wants ``want`` (clipped to the ceiling)."""
        want = max(0, min(self.max_replicas, want))
        self._desired.append((now, want))
        while self._desired and self._desired[0][0] < now - self.cooldown_s:
            self._desired.popleft()
        return want if want >= current else max(w for _, w in self._desired)


@dataclass
class Result:
    """One simulation's outcome: per request, and the fleet over time."""

    policy: str
    arrivals: int
    served: int
    shed: int
    unfinished: int
    ttft_s: np.ndarray
    wait_s: np.ndarray
    gpu_seconds: float
    timeline: list[tuple[float, int, int]] = field(repr=False)  # (time, replicas existing, ready)
    busy_seconds: float = 0.0  # slot-seconds in service (utilisation of an M/M/c)
    slots: int = 1

    def within(self, objective_s: float) -> float:
        """Share of all arrivals answered with TTFT within ``objective_s`` (shed and unfinished count as missed)."""
        return float(np.count_nonzero(self.ttft_s < objective_s)) / self.arrivals if self.arrivals else 1.0

    def ttft_p95_s(self) -> float | None:
        from ...percentiles import percentile

        return percentile(self.ttft_s.tolist(), 95) if self.ttft_s.size else None


class Fleet:
    """The simulation of one trace under one policy."""

    def __init__(self, service: Service, policy: Policy | None, *, initial: int, max_replicas: int,
                 cold_start_s: float, interval_s: float, cooldown_s: float, queue_timeout_s: float | None,
                 seed: int, name: str = "") -> None:
        if initial > max_replicas:
            raise SimulationError(f"initial replicas {initial} above the ceiling {max_replicas}")
        self.service, self.policy, self.name = service, policy, name
        self.max_replicas, self.cold_start_s = max_replicas, cold_start_s
        self.interval_s, self.cooldown_s, self.timeout = interval_s, cooldown_s, queue_timeout_s
        self.rng = np.random.default_rng([seed, 7])
        self.env = simpy.Environment()
        self.replicas: list[Replica] = [Replica(i, 0.0) for i in range(initial)]
        self._next_name = initial
        self.queue: deque[tuple[int, float]] = deque()  # (request index, arrival time)
        self.in_flight = 0
        self._window = ScaleDownWindow(cooldown_s, max_replicas)
        self._gpu_seconds = 0.0
        self._gpu_since = 0.0
        self._busy = 0.0
        self.timeline: list[tuple[float, int, int]] = []

    # ------------------------------------------------------------------ requests

    def _arrivals(self, times: np.ndarray):  # type: ignore[no-untyped-def]
        env, last = self.env, 0.0
        for index, at in enumerate(times.tolist()):
            yield env.timeout(at - last)
            last = at
            self.queue.append((index, at))
            self._dispatch()

    def _pick(self) -> Replica | None:
        now, slots, best = self.env.now, self.service.slots, None
        for replica in self.replicas:
            if replica.active < slots and replica.ready(now) and (best is None or replica.active < best.active):
                best = replica
        return best

    def _dispatch(self) -> None:
        now = self.env.now
        while self.queue:
            index, arrived = self.queue[0]
            if self.timeout is not None and now - arrived > self.timeout:
                self.queue.popleft()
                self.shed += 1
                continue
            replica = self._pick()
            if replica is None:
                return
            self.queue.popleft()
            replica.active += 1
            self.in_flight += 1
            first, total = self.service.times(replica.active, self.rng)
            self.wait[index] = now - arrived
            self.ttft[index] = now - arrived + first
            self._busy += total
            self.env.timeout(total).callbacks.append(lambda _e, r=replica: self._done(r))

    def _done(self, replica: Replica) -> None:
        replica.active -= 1
        self.in_flight -= 1
        self.served += 1
        if replica.draining and replica.active == 0:
            self._remove(replica)
        self._dispatch()

    # ------------------------------------------------------------------ the fleet

    def _bill(self) -> None:
        now = self.env.now
        self._gpu_seconds += len(self.replicas) * (now - self._gpu_since)
        self._gpu_since = now

    def _remove(self, replica: Replica) -> None:
        self._bill()
        self.replicas.remove(replica)

    def _signals(self) -> Signals:
        now = self.env.now
        ready = [r for r in self.replicas if r.ready(now)]
        busy = sum(1 for r in ready if r.active > 0)
        return Signals(now, len(self.replicas), len(ready), len(self.queue), self.in_flight,
                       busy / len(ready) if ready else 0.0)

    def _scale(self, want: int) -> None:
        now = self.env.now
        target = self._window.target(now, want, len(self.replicas))
        self._bill()
        while len(self.replicas) < target:
            self.replicas.append(Replica(self._next_name, now + self.cold_start_s))
            self._next_name += 1
            self.env.timeout(self.cold_start_s).callbacks.append(lambda _e: self._dispatch())
        for replica in sorted(self.replicas, key=lambda r: (r.ready(now), r.active), reverse=False):
            if len(self.replicas) - sum(1 for r in self.replicas if r.draining) <= target:
                break
            if replica.draining:
                continue
            if replica.active == 0:
                self.replicas.remove(replica)
            else:
                replica.draining = True

    def _decide(self, until: float):  # type: ignore[no-untyped-def]
        while self.env.now < until:
            if self.policy is not None:
                self._dispatch()  # sheds what timed out, so the queue the policy sees is the live one
                self._scale(self.policy(self._signals()))
            self.timeline.append((self.env.now, len(self.replicas), sum(1 for r in self.replicas
                                                                        if r.ready(self.env.now))))
            yield self.env.timeout(self.interval_s)

    def run(self, arrivals: np.ndarray, seconds: float) -> Result:
        """Simulate ``arrivals`` (sorted seconds) for ``seconds``; requests still running at the end are unfinished."""
        self.served = self.shed = 0
        self.ttft = np.full(arrivals.size, np.inf)
        self.wait = np.full(arrivals.size, np.inf)
        self.env.process(self._arrivals(arrivals))
        self.env.process(self._decide(seconds))
        self.env.run(until=seconds)
        self._bill()
        answered = np.isfinite(self.ttft)
        return Result(policy=self.name, arrivals=int(arrivals.size), served=self.served, shed=self.shed,
                      unfinished=int(arrivals.size) - self.served - self.shed, ttft_s=self.ttft[answered],
                      wait_s=self.wait[answered], gpu_seconds=self._gpu_seconds, timeline=self.timeline,
                      busy_seconds=self._busy, slots=self.service.slots)


def erlang_c(servers: int, arrival_rate: float, service_rate: float) -> tuple[float, float, float]:
    """The M/M/c queue's known answer: (probability of waiting, mean wait in queue in seconds, utilisation)."""
    a = arrival_rate / service_rate
    rho = a / servers
    if rho >= 1:
        raise SimulationError(f"an M/M/{servers} queue at utilisation {rho:.2f} has no steady state: keep it below 1")
    head = sum(a**k / math.factorial(k) for k in range(servers))
    tail = a**servers / math.factorial(servers) / (1 - rho)
    wait_probability = tail / (head + tail)
    return wait_probability, wait_probability / (servers * service_rate - arrival_rate), rho
