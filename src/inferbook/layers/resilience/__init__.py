"""Faults and load on the local stack: what breaks, what a client sees, how it recovers (``85-resilience``).

No manifests and no process of its own: it drills the layers before it. :mod:`.drills` kills or stops one
part at a time (vLLM mid-stream, the proxy, the ledger; the ledger's outage on the tier's budget mode) and
times the recovery its supervisor (or one ``inferbook up``) brings; :mod:`.load` runs concurrent streams and
checks the booked spend against the usage the clients saw.
"""

from __future__ import annotations

from ...layer import Layer
from .drills import (
    Drill,
    Stack,
    figure,
    kill_ledger,
    kill_proxy,
    kill_serving_mid_stream,
    ledger_outage,
    status_table,
    table,
    verify,
)
from .load import LoadResult, run_load

__all__ = ["DECLARATION", "Drill", "LoadResult", "Stack", "figure", "kill_ledger", "kill_proxy",
           "kill_serving_mid_stream", "ledger_outage", "run_load", "status_table", "table", "verify"]

DECLARATION = Layer(
    name="resilience",
    summary="fault drills (crash, outage) and a load run on the local stack",
)
