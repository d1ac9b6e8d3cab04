"""Seeded load traces: the arrival times of requests, steady, diurnal or bursty.

A trace is a rate over time made into arrivals by thinning a Poisson process (Lewis and Shedler), with numpy's
generator seeded from the trace's seed, so one seed gives one trace, byte for byte, on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import InferbookError

KINDS = ("steady", "diurnal", "bursty")
#: The diurnal trace's rate runs from this share of the peak (night) to the peak (afternoon).
DIURNAL_FLOOR = 0.1
#: The bursty trace: a base of this share of the peak, bursts at the peak.
BURST_BASE = 0.4
BURST_SECONDS = 120.0
BURSTS_PER_HOUR = 4.0


class TraceError(InferbookError):
    """A trace that cannot be made as asked."""


@dataclass(frozen=True)
class Trace:
    """A trace's kind, seed, length and peak rate, and its arrivals (seconds from its start, sorted)."""

    kind: str
    seed: int
    seconds: float
    peak_rate: float
    arrivals: np.ndarray
    rate: Callable[[np.ndarray], np.ndarray]

    @property
    def requests(self) -> int:
        return int(self.arrivals.size)

    def describe(self) -> dict[str, object]:
        return {"trace": self.kind, "seed": self.seed, "hours": round(self.seconds / 3600, 2),
                "requests": self.requests, "mean req/s": round(self.requests / self.seconds, 2),
                "peak req/s (the rate's)": round(self.peak_rate, 2), "shape": SHAPES[self.kind]}


SHAPES = {"steady": "a constant rate at 70% of the peak",
          "diurnal": f"one day's shape over the window: {DIURNAL_FLOOR:.0%} of the peak at the start and end, the "
                     f"peak in the middle (a cosine)",
          "bursty": f"{BURST_BASE:.0%} of the peak, with bursts at the peak of {BURST_SECONDS:.0f} s, "
                    f"{BURSTS_PER_HOUR:.0f} an hour on average at seeded times"}


def _rate(kind: str, peak: float, seconds: float, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """The trace's rate (requests/s) at an array of times."""
    if kind == "steady":
        return lambda t: np.full(np.shape(t), 0.7 * peak)
    if kind == "diurnal":
        low = DIURNAL_FLOOR
        return lambda t: peak * (low + (1 - low) * 0.5 * (1 - np.cos(2 * np.pi * np.asarray(t) / seconds)))
    count = rng.poisson(BURSTS_PER_HOUR * seconds / 3600)
    starts = np.sort(rng.uniform(0, seconds, size=count))

    def bursty(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        before = np.searchsorted(starts, t, side="right") - 1  # the last burst that started at or before t
        inside = (before >= 0) & (t < starts[np.clip(before, 0, None)] + BURST_SECONDS) if count else t < -1
        return np.where(inside, peak, BURST_BASE * peak)

    return bursty


def _seeded(kind: str, peak_rate: float, seconds: float, seed: int) -> tuple[np.random.Generator,
                                                                               Callable[[np.ndarray], np.ndarray]]:
    if kind not in KINDS:
        raise TraceError(f"no trace kind '{kind}'; the kinds are {', '.join(KINDS)}")
    if peak_rate <= 0 or seconds <= 0:
        raise TraceError(f"a trace needs a peak rate and a length above 0 (got {peak_rate} req/s, {seconds} s)")
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    return rng, _rate(kind, peak_rate, seconds, rng)


def rate(kind: str, peak_rate: float, seconds: float, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The rate of the trace :func:`make` would make (the same bursts for the same seed), without its arrivals:
    what the fluid model needs, where a day at a hundred replicas would be hundreds of millions of arrivals."""
    return _seeded(kind, peak_rate, seconds, seed)[1]


def make(kind: str, peak_rate: float, seconds: float, seed: int) -> Trace:
    """The arrivals of a ``kind`` trace peaking at ``peak_rate`` requests/s over ``seconds``, for ``seed``."""
    rng, rate = _seeded(kind, peak_rate, seconds, seed)
    # thinning: candidates at the peak rate, each kept with probability rate(t) / peak
    candidates = np.cumsum(rng.exponential(1 / peak_rate, size=int(peak_rate * seconds * 1.2) + 100))
    while candidates[-1] < seconds:  # rare: extend until the window is covered
        more = candidates[-1] + np.cumsum(rng.exponential(1 / peak_rate, size=int(peak_rate * seconds * 0.2) + 100))
        candidates = np.concatenate([candidates, more])
    candidates = candidates[candidates < seconds]
    keep = rng.uniform(size=candidates.size) * peak_rate < rate(candidates)
    return Trace(kind, seed, seconds, peak_rate, candidates[keep], rate)
