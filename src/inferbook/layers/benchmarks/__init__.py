"""Benchmarks: a closed-loop sweep of the running stack, GuideLLM beside it, the SLO verdict (``90-benchmarks``).

No manifests and no process of its own: it measures the layers below it, straight to vLLM and through the
gateway. :mod:`.workload` makes prompts of an exact token length, :mod:`.sweep` runs the levels and keeps
every request, :mod:`.result` writes the JSON (with its schema) and CSV, :mod:`.guidellm` runs the reference
harness of ADR-0032 and reads its report, :mod:`.paired` sets direct and the gateway side by side in alternating
slices at one level, :mod:`.report` gives the verdicts and the comparisons, :mod:`.book` says which of the
chapter's optional steps the profile's book set (``benchmarks.book``: quick or full) runs.
"""

from __future__ import annotations

from ...layer import Layer
from .cli import commands
from .paired import Paired
from .report import beside_reference, compare, figures, gateway_cost, knee, paired_level, plot, reference, slo_table
from .result import Sweep
from .session import Bench, verify
from .session import open_bench as open  # noqa: A001 - benchmarks.open, like chapter.open

__all__ = ["DECLARATION", "Bench", "Paired", "Sweep", "beside_reference", "compare", "figures", "gateway_cost", "knee",
           "open", "paired_level", "plot", "reference", "slo_table", "verify"]

DECLARATION = Layer(
    name="benchmarks",
    summary="a closed-loop sweep of serving and gateway, beside GuideLLM, with the SLO verdict",
    commands=commands,
)
