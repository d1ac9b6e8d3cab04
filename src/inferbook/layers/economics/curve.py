"""The curve the money is computed from: a replica's output throughput (and TTFT) against concurrency.

Two sources, never mixed: the run's own direct sweep (``bench-inferbook-direct.json``, written by the benchmarks
chapter and read back with :meth:`~inferbook.layers.benchmarks.result.Sweep.read`), or the seed's published L4
figures (``stored_l4.yaml``), which the GPU profiles use because they cannot run here. Each curve carries the
label every table shows beside its figures, so a stored figure never reads as a measured one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ... import targets
from ...errors import InferbookError
from ...profile import Profile
from ..benchmarks.report import knee as sweep_knee
from ..benchmarks.result import Sweep

#: The benchmarks chapter's artefact of the direct sweep (the curve of one serving replica, no gateway).
DIRECT_ARTEFACT = "bench-inferbook-direct.json"
#: What an interpolated figure is called wherever it appears.
MODEL_NOTE = "linear interpolation between the curve's levels (a model, not a measurement)"


class CurveError(InferbookError):
    """No curve to compute from, or one that cannot serve (no level with a throughput)."""


@dataclass(frozen=True)
class Point:
    """One level of the curve: concurrency, output tokens/s of the replica, and TTFT p95 when known."""

    concurrency: int
    output_tokens_per_s: float
    ttft_p95_ms: float | None = None


@dataclass(frozen=True)
class Curve:
    """A replica's curve, its provenance label and shape, and its knee under the profile's objectives."""

    label: str
    hardware: str
    input_tokens: int
    output_tokens: int
    points: tuple[Point, ...]
    knee: int | None
    knee_rule: str

    def __post_init__(self) -> None:
        if not self.points or any(p.output_tokens_per_s <= 0 for p in self.points):
            raise CurveError(f"curve '{self.label}' has a level without throughput: "
                             f"{[(p.concurrency, p.output_tokens_per_s) for p in self.points]}. Fix: rerun the "
                             f"benchmarks chapter; a level that served nothing cannot price a token")

    @property
    def measured(self) -> bool:
        return self.label.startswith("measured")

    @property
    def levels(self) -> list[int]:
        return [p.concurrency for p in self.points]

    def point(self, concurrency: int) -> Point | None:
        return next((p for p in self.points if p.concurrency == concurrency), None)

    @property
    def knee_point(self) -> Point | None:
        return None if self.knee is None else self.point(self.knee)

    @property
    def max_concurrency(self) -> int:
        return self.points[-1].concurrency

    def throughput(self, concurrency: float) -> float:
        """Output tokens/s at ``concurrency``: a level's figure, else :data:`MODEL_NOTE`; beyond the last level,
        the last level's (the replica is saturated: more concurrency only queues)."""
        return self._interpolate(concurrency, [p.output_tokens_per_s for p in self.points])

    def ttft_ms(self, concurrency: float) -> float | None:
        """TTFT p95 at ``concurrency`` from the levels that have one (interpolated as :meth:`throughput`)."""
        known = [p for p in self.points if p.ttft_p95_ms is not None]
        if not known:
            return None
        if len(known) == 1:
            return known[0].ttft_p95_ms
        xs = [p.concurrency for p in known]
        return _lerp(xs, [p.ttft_p95_ms for p in known], concurrency)  # type: ignore[misc]

    def _interpolate(self, concurrency: float, ys: list[float]) -> float:
        return _lerp(self.levels, ys, concurrency)


def describe(curve: Curve) -> str:
    """One sentence: which curve prices the tokens, on what, with what shape, and where its knee is."""
    levels = ", ".join(f"{p.concurrency}: {p.output_tokens_per_s:,.1f}" for p in curve.points)
    knee = (f"the knee is concurrency {curve.knee} ({curve.knee_rule})" if curve.knee is not None
            else f"no level meets the objectives, so there is no knee ({curve.knee_rule})")
    return (f"Curve: {curve.label}, {curve.hardware}, {curve.input_tokens} tokens in / {curve.output_tokens} out; "
            f"output tok/s by concurrency {levels}; {knee}.")


def _lerp(xs: list[int], ys: list[float], x: float) -> float:
    """Linear interpolation on sorted ``xs``, clamped to the first and last value outside them."""
    if x <= xs[0]:
        return ys[0] * (x / xs[0]) if x < xs[0] else ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def from_sweep(sweep: Sweep, slo: dict[str, Any], hardware: str) -> Curve:
    """The curve of a measured direct sweep; its knee is the benchmarks chapter's (every objective, no error)."""
    points = tuple(Point(lv.concurrency, lv.output_tokens_per_s, lv.ttft_ms.get("p95"))
                   for lv in sorted(sweep.levels, key=lambda lv: lv.concurrency))
    return Curve(label=f"measured here (run of {sweep.started}, {sweep.target})", hardware=hardware,
                 input_tokens=sweep.shape.input_tokens, output_tokens=sweep.shape.output_tokens, points=points,
                 knee=sweep_knee(sweep, slo),
                 knee_rule="highest level meeting every objective (TTFT, ITL, E2E p95) with no error")


def stored() -> dict[str, Any]:
    """The seed's L4 figures and its monthly claim, as ``stored_l4.yaml`` keeps them with their provenance."""
    return yaml.safe_load(resources.files(__package__).joinpath("stored_l4.yaml").read_text(encoding="utf-8"))


def stored_l4(slo: dict[str, Any]) -> Curve:
    """The stored L4 curve; its knee is judged on TTFT p95 alone, the one objective the stored figures give."""
    data = stored()
    points = tuple(Point(lv["concurrency"], float(lv["output_tokens_per_s"]), lv.get("ttft_p95_ms"))
                   for lv in data["levels"])
    meeting = [p.concurrency for p in points if p.ttft_p95_ms is not None and p.ttft_p95_ms < slo["ttft_p95_ms"]]
    return Curve(label=data["label"], hardware=data["hardware"], input_tokens=data["input_tokens"],
                 output_tokens=data["output_tokens"], points=points, knee=max(meeting) if meeting else None,
                 knee_rule=f"highest stored level whose TTFT p95 is below {slo['ttft_p95_ms']:,} ms (the stored "
                           f"figures give no ITL or E2E)")


def hardware_of(profile: Profile) -> str:
    """What the profile's replica runs on, as the tables name it."""
    gpu = profile.data["gpu"]
    here = targets.kind_of(profile).local_processes  # the replica is a process on this machine
    if here or gpu["type"] == "none":
        return "this machine's CPU" if here else "CPU nodes"
    return f"1 x {gpu['type'].upper()} per replica"


def load(profile: Profile, artifacts: Path) -> Curve:
    """The profile's curve, as ``economics.curve`` chooses (``auto``: this run's measured sweep when there is one,
    else the stored L4 figures for an L4 profile; ``measured`` and ``stored`` insist)."""
    choice = profile.data["economics"]["curve"]
    path = Path(artifacts) / DIRECT_ARTEFACT
    slo = profile.data["slo"]
    is_l4 = profile.data["gpu"]["type"] == "l4"
    if choice == "stored" or (choice == "auto" and not path.is_file() and is_l4):
        if not is_l4:
            raise CurveError(f"profile {profile.name} runs on gpu.type {profile.data['gpu']['type']}, and the stored "
                             f"figures are an L4's. Fix: set economics.curve to measured (after the benchmarks "
                             f"chapter) or auto")
        return stored_l4(slo)
    if not path.is_file():
        raise CurveError(f"no measured curve: {path} does not exist, and profile {profile.name} has no stored "
                         f"figures (they are an L4's). Fix: run the benchmarks chapter first "
                         f"(`inferbook run --profile {profile.ref or profile.name}` runs it before this one)")
    return from_sweep(Sweep.read(path), slo, hardware_of(profile))
