"""The tenant gateway: LiteLLM with virtual keys, budgets, rate limits and a Postgres spend ledger (``40-llm-gateway``).

On a cluster the rendered layer is applied in stages (:mod:`.cluster`); on the local target the same proxy
and config run as processes beside a local Postgres (:mod:`.local`, :mod:`.postgres`, with
:mod:`.prisma_offline` where Prisma's native engines cannot be fetched). Both give the chapter a
:class:`~.endpoint.GatewayEndpoint`; :mod:`.enforcement` proves what the gateway promises.
The proxy also runs inferbook's ledger guard (``proxy_hooks/ledger_guard.py``, shipped in the ConfigMap):
fail-open covers budgets and spend, never authentication; :mod:`.faults` stops the ledger to prove it.
"""

from __future__ import annotations

from dataclasses import replace

from .cli import commands
from .declaration import LEDGER_PORT, PARTS
from .endpoint import GatewayEndpoint
from .local import LocalGateway
from .steps import connect, provision

__all__ = ["DECLARATION", "LEDGER_PORT", "GatewayEndpoint", "LocalGateway", "connect", "provision"]

#: The layer with its own ``inferbook`` commands (the steps ask a target for its part by :data:`PARTS`, the same
#: declaration without them: the commands import the steps).
DECLARATION = replace(PARTS, commands=commands)
