"""The tenant gateway: LiteLLM with virtual keys, budgets, rate limits and a Postgres spend ledger (``40-llm-gateway``).

On a cluster the rendered layer is applied in stages (:mod:`.cluster`); on the local target the same proxy
and config run as processes beside a local Postgres (:mod:`.local`, :mod:`.postgres`, with
:mod:`.prisma_offline` where Prisma's native engines cannot be fetched). Both give the chapter a
:class:`~.endpoint.GatewayEndpoint`; :mod:`.enforcement` proves what the gateway promises.
The proxy also runs inferbook's ledger guard (``proxy_hooks/ledger_guard.py``, shipped in the ConfigMap):
fail-open covers budgets and spend, never authentication; :mod:`.faults` stops the ledger to prove it.
"""

from __future__ import annotations

from ...layer import Layer
from ...profile import Profile
from ...secrets import SecretStore
from .cli import commands
from .endpoint import GatewayEndpoint, proxy_healthy
from .local import LocalGateway
from .manifests import LAYER, MANIFESTS, MASTER_KEY_SECRET
from .postgres import LocalPostgres
from .steps import connect, provision

__all__ = ["DECLARATION", "GatewayEndpoint", "LocalGateway", "connect", "provision"]
#: The local Postgres ledger's port key in ``local.ports``: part of this layer.
LEDGER_PORT = "postgres"


def _owner(profile: Profile, port_key: str) -> str | None:
    """This profile's own proxy or ledger on its port (preflight: reused, not in the way); secrets are only peeked."""
    store = SecretStore(profile.name)
    if port_key == LEDGER_PORT:
        return "this profile's Postgres ledger" if LocalPostgres(profile, store, say=lambda _: None).running() else None
    key = store.peek(MASTER_KEY_SECRET)
    if key and proxy_healthy(f"http://127.0.0.1:{profile.data['local']['ports'][port_key]}", key):
        return "this profile's LiteLLM proxy"
    return None


DECLARATION = Layer(
    name=LAYER,
    summary="LiteLLM: virtual keys, budgets, rate limits, a spend ledger in Postgres",
    manifests=MANIFESTS,
    local=LocalGateway,
    ports=(LAYER, LEDGER_PORT),
    owner=_owner,
    commands=commands,
)
