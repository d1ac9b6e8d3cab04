"""The llm-gateway layer's declaration (:class:`~inferbook.layer.Layer`): its parts per target, ports, owner.

In a module of its own so that the chapter's steps can ask a target for the layer's part
(``targets.of(...).part(DECLARATION)``) without importing the package, which imports the steps.
"""

from __future__ import annotations

from ...layer import Layer, lazy
from ...profile import Profile
from ...secrets import SecretStore
from .endpoint import proxy_healthy
from .local import LocalGateway
from .manifests import LAYER, MANIFESTS, MASTER_KEY_SECRET
from .postgres import LocalPostgres

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


#: The layer's declaration but for its commands, which the package adds (they import the steps, which ask a target
#: for the layer's part by this declaration).
PARTS = Layer(
    name=LAYER,
    summary="LiteLLM: virtual keys, budgets, rate limits, a spend ledger in Postgres",
    manifests=MANIFESTS,
    local=LocalGateway,
    cluster=lazy(f"{__package__}.cluster", "ClusterGateway"),
    ports=(LAYER, LEDGER_PORT),
    owner=_owner,
)
