"""Capacity: the economics chapter's curve taken to a fleet, in a discrete-event simulation (``94-capacity``).

No manifests and no process of its own. :mod:`.traces` makes seeded arrivals (steady, diurnal, bursty), :mod:`.sim`
is the fleet in SimPy (a shared gateway queue, replicas with slots, cold starts, a policy deciding every interval)
and the M/M/c known answer, :mod:`.policies` the replica's service from the curve and the policies compared,
:mod:`.fluid` the same fleet stepped in time with requests counted (a day of a hundred replicas in seconds),
:mod:`.report` the verdict, the cold-start sensitivity, the two models side by side, the 100-replica benchmark and
the checks.
"""

from __future__ import annotations

from ...layer import Layer
from .policies import CurveService, Settings, compare, make_traces, plot, table
from .report import agreement, benchmark, cold_start_table, figures, verdict, verify
from .sim import erlang_c

__all__ = ["DECLARATION", "CurveService", "Settings", "agreement", "benchmark", "cold_start_table", "compare",
           "erlang_c", "figures", "make_traces", "plot", "table", "verdict", "verify"]

DECLARATION = Layer(
    name="capacity",
    summary="a discrete-event fleet simulation on the measured curve, comparing autoscaling policies",
)
