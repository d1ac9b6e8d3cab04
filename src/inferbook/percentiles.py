"""Percentiles as every figure of the book states them: linear interpolation between closest ranks.

One definition for every layer that reports latencies (the benchmark sweeps, the gateway's own cost), so
that two tables of the book never disagree on what "p95" means.
"""

from __future__ import annotations

import math
from typing import Iterable

#: Stated in every JSON artefact and in the chapters.
METHOD = "linear interpolation between closest ranks (numpy/pandas default, Hyndman-Fan type 7)"


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` by linear interpolation; None when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])
