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

import pandas as pd

from ...errors import InferbookError
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from ...targets import kind_of
from ..llm_gateway import LocalGateway
from ..llm_gateway.admin import Admin
from ..llm_gateway.manifests import serving_alias
from ..routing import REPLICAS, LocalRouting
from .harness import Call, Upstream, sequential, summary


def paths(routing: LocalRouting, gateway: LocalGateway | None = None, key: str = "") -> dict[str, Upstream]:
    """The paths, shortest first; with ``gateway``, the last goes through it with ``key``, a tenant key on its
    chat alias."""
    model, vllm_key = routing.served_name, routing.api_key()
    found = {"direct (replica a)": Upstream(routing.serving.url, vllm_key, model),
             "router": Upstream(f"{routing.pool_base}/v1", vllm_key, model),
             "front + router": Upstream(routing.url, vllm_key, model)}
    if gateway is not None:
        found["gateway + front + router"] = Upstream(gateway.url, key, serving_alias(routing.profile))
    return found


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


def measure(profile: Profile, layout: Layout, calls: int = 20, warmup: int = 3, gateway: bool = True,
            say: Say = print) -> pd.DataFrame:
    """The hops' table on the profile's running local stack (routing on). With ``gateway`` the gateway's hop is
    measured too (the llm-gateway chapter, once the gateway runs), with a tenant key revoked afterwards; the
    routing chapter, which comes before the gateway, measures the hops below it."""
    if not kind_of(profile).local_processes or "routing" not in profile.features:
        raise InferbookError(f"the hops are measured on a local stack with routing on; profile {profile.name} "
                             "has none. Fix: a local profile with features.routing: true (-p features.routing=true)")
    routing = LocalRouting(profile, layout, say=say)
    proxy = LocalGateway(profile, layout, say=say) if gateway else None
    for layer in (routing, *([proxy] if proxy else [])):
        if not layer.healthy():
            raise InferbookError(layer.diagnosis() or f"{layer.layer} does not serve. Fix: inferbook up "
                                 f"--profile {profile.name}")
    if proxy is None:
        say(f"hops: {calls} one-token calls per path after {warmup} warm-up, the three paths taking turns")
        return table(sequential(paths(routing), requests=calls, warmup=warmup))
    admin = Admin(proxy.base, proxy.master_key())
    alias = f"bench-hops-{time.time_ns()}"
    key = admin.create_key(alias, [serving_alias(profile)], max_budget=1.0)
    try:
        say(f"hops: {calls} one-token calls per path after {warmup} warm-up, the four paths taking turns")
        return table(sequential(paths(routing, proxy, key), requests=calls, warmup=warmup))
    finally:
        admin.revoke(alias)
