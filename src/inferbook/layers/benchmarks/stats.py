"""Percentiles, computed one stated way.

Two harnesses can disagree on a p95 from the same requests when they compute it differently, so the
method is named in every artefact. Ours is linear interpolation between the closest ranks, what numpy
(``method="linear"``) and pandas do by default, type 7 of Hyndman and Fan (1996): for sorted values
``x[0..n-1]`` the q-th percentile sits at rank ``h = (n - 1) * q / 100`` and is
``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. GuideLLM instead reports the
smallest value whose cumulative share reaches q (a lower, non-interpolated percentile), which is why a
p99 of a few dozen requests can differ between the two even on identical data.
"""

from __future__ import annotations

import math
from typing import Iterable

from ...percentiles import METHOD, percentile

__all__ = ["METHOD", "QUANTILES", "lower_percentile", "percentile", "summary"]

#: The percentiles every latency is summarised by.
QUANTILES = (50, 95, 99)


def lower_percentile(values: Iterable[float], q: float) -> float | None:
    """GuideLLM's percentile, for comparison: the smallest value whose cumulative share reaches ``q``%."""
    ordered = sorted(values)
    if not ordered:
        return None
    index = max(0, math.ceil(len(ordered) * q / 100 - 1e-9) - 1)
    return ordered[min(index, len(ordered) - 1)]


def summary(values: list[float]) -> dict[str, float | None]:
    """``{"p50", "p95", "p99", "mean"}`` of ``values`` (all None when there are none)."""
    result: dict[str, float | None] = {f"p{q}": percentile(values, q) for q in QUANTILES}
    result["mean"] = sum(values) / len(values) if values else None
    return result
