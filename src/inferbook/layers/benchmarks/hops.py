"""What each hop of the routed path costs: client -> gateway -> front -> router -> vLLM, in one run.

The routing chapter's figure, measured with the load harness the gateway's overhead uses (:mod:`.harness`): one-token
calls straight to replica ``a``, through the pool's router, through the front and the router, and through the
gateway (LiteLLM with a tenant key of its own) and all of them, taking turns call by call in a rotating order, so a
busy spell of the machine falls on every path alike. The front splits the chat model to the canary when there is
one; those calls end on another replica and are left out (their fingerprint says so), so every path ends on the
same replicas. The differences between neighbouring paths are the hops' costs.
"""

from __future__ import annotations

import time
from typing import Callable

import pandas as pd

from ...errors import InferbookError
from ...paths import Layout
from ...profile import Profile
from ..llm_gateway import LocalGateway
from ..llm_gateway.admin import Admin
from ..llm_gateway.manifests import serving_alias
from ..routing import REPLICAS, LocalRouting
from .harness import Call, Upstream, sequential, summary

Say = Callable[[str], None]


def paths(routing: LocalRouting, gateway: LocalGateway, key: str) -> dict[str, Upstream]:
    """The four paths, shortest first; ``key`` is a tenant key on the gateway's chat alias."""
    model, vllm_key = routing.served_name, routing.api_key()
    return {"direct (replica a)": Upstream(routing.serving.url, vllm_key, model),
            "router": Upstream(f"{routing.pool_base}/v1", vllm_key, model),
            "front + router": Upstream(routing.url, vllm_key, model),
            "gateway + front + router": Upstream(gateway.url, key, serving_alias(routing.profile))}


def in_pool(call: Call) -> bool:
    """A call answered by a replica of the chat pool (or by a server that does not say which)."""
    return call.ok and (call.fingerprint is None or call.fingerprint in REPLICAS)


def table(calls: dict[str, list[Call]]) -> pd.DataFrame:
    """Per path: calls kept, p50 and p95 wall-clock (ms), and what it adds over the path before it (p50)."""
    rows, before = [], None
    for path, made in calls.items():
        kept = [c.wall_ms for c in made if in_pool(c)]
        figures = summary(kept, (50, 95))
        p50 = figures["p50"]
        rows.append({"path": path, "calls": len(made), "kept": len(kept),
                     "failed": sum(not c.ok for c in made),
                     "p50 ms": None if p50 is None else round(p50, 1),
                     "p95 ms": None if figures["p95"] is None else round(figures["p95"], 1),
                     "added by this hop, p50 ms": None if before is None or p50 is None else round(p50 - before, 1)})
        before = p50
    return pd.DataFrame(rows).set_index("path")


def measure(profile: Profile, layout: Layout, calls: int = 20, warmup: int = 3, say: Say = print) -> pd.DataFrame:
    """The hops' table on the profile's running local stack (routing on); the tenant key is revoked afterwards."""
    if profile.target_kind != "local" or "routing" not in profile.features:
        raise InferbookError(f"the hops are measured on a local stack with routing on; profile {profile.name} "
                             "has none. Fix: a local profile with features.routing: true (-p features.routing=true)")
    routing, gateway = LocalRouting(profile, layout, say=say), LocalGateway(profile, layout, say=say)
    for layer in (routing, gateway):
        if not layer.healthy():
            raise InferbookError(layer.diagnosis() or f"{layer.layer} does not serve. Fix: inferbook up "
                                 f"--profile {profile.name}")
    admin = Admin(gateway.base, gateway.master_key())
    alias = f"bench-hops-{time.time_ns()}"
    key = admin.create_key(alias, [serving_alias(profile)], max_budget=1.0)
    try:
        say(f"hops: {calls} one-token calls per path after {warmup} warm-up, the four paths taking turns")
        return table(sequential(paths(routing, gateway, key), requests=calls, warmup=warmup))
    finally:
        admin.revoke(alias)
