"""Economics: cost per token, the lab's month and the break-even against a hosted API (``92-economics``).

No manifests and no process of its own: it reads the curve the benchmarks chapter measured in the same run (or,
for the GPU profiles that cannot run here, the seed's stored L4 figures) and the profile's ``economics:`` prices.
:mod:`.curve` is the curve and its provenance, :mod:`.inputs` the prices and the usage pattern, :mod:`.cost` the
arithmetic, the plot and the checks.
"""

from __future__ import annotations

from ...layer import Layer
from .cost import figures, monthly, per_level, plot, verify
from .curve import Curve, CurveError, describe, stored
from .curve import load as curve  # economics.curve(profile, artifacts)
from .inputs import Inputs

__all__ = ["DECLARATION", "Curve", "CurveError", "Inputs", "curve", "describe", "figures", "monthly", "per_level",
           "plot", "stored", "verify"]

DECLARATION = Layer(
    name="economics",
    summary="cost per million tokens on the measured curve, the lab's month, the break-even against a hosted API",
)
